"""The fully-convolutional domain discriminator of AdaptSegNet / CLAN / Feature-To-Adapt (``FCDiscriminator``)."""
from __future__ import annotations

from torch import Tensor, nn


class FCDiscriminator(nn.Module):
    """Five 4×4 stride-2 convs (ndf, 2·ndf, 4·ndf, 8·ndf, 1 channels), LeakyReLU(0.2) after the first four.

    Reads the softmax of full-resolution segmentation logits and returns raw domain logits (no sigmoid) at 1/32 of the
    input size: 512×1024 → 16×32, 720×1280 → 22×40. Key names ``conv1``…``conv4``, ``classifier`` are the official
    ones; default PyTorch init, as in the reference. The trainer makes it as wide as G (``ndf`` = G's ``width``): the
    reference's 64 for the real ResNets, 8 for the tiny test and demo model, whose D would otherwise cost several
    times its G.
    """

    def __init__(self, num_classes: int = 19, ndf: int = 64) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(num_classes, ndf, 4, stride=2, padding=1)
        self.conv2 = nn.Conv2d(ndf, ndf * 2, 4, stride=2, padding=1)
        self.conv3 = nn.Conv2d(ndf * 2, ndf * 4, 4, stride=2, padding=1)
        self.conv4 = nn.Conv2d(ndf * 4, ndf * 8, 4, stride=2, padding=1)
        self.classifier = nn.Conv2d(ndf * 8, 1, 4, stride=2, padding=1)
        self.leaky_relu = nn.LeakyReLU(0.2, inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        """Shape: N×num_classes×H×W → N×1×⌊H/32⌋×⌊W/32⌋ (each conv halves with floor)."""
        x = self.leaky_relu(self.conv1(x))
        for conv in (self.conv2, self.conv3, self.conv4):
            x = self.leaky_relu(conv(x))
        return self.classifier(x)
