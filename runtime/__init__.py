"""ftadapt.runtime: the embeddable segmentation runtime (numpy in, numpy out, no torch)."""
