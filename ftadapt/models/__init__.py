"""DeepLab-v2 (Caffe-style ResNet + ASPP), the FC discriminator, the model registry and official-checkpoint import."""
