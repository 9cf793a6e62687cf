"""The module that becomes the ONNX graph: camera frames in, label maps out, everything between inside.

``SegmentationGraph`` is exported as it is and is also the PyTorch reference every parity check compares against.
Its steps, in order (DESIGN.md §4 "Exported artifact"):

1. ``image`` uint8 RGB N×H×W×3 → float32 N×3×H×W, RGB → BGR, minus ``IMG_MEAN_BGR`` (no /255: the Caffe protocol).
2. Resize to the working size (W×H, default 1024×512) — **bilinear, half-pixel centres (align_corners=False), no
   antialias**. The training protocol resizes images with PIL BICUBIC, which a graph cannot reproduce portably
   (PIL antialiases when it shrinks; ONNX ``Resize(antialias=1)`` is not supported by TensorRT's parser). For the
   Cityscapes 2048×1024 → 1024×512 case bilinear half-pixel is a 2×2 box average. ``ftadapt.bench.export_speed``
   measures the impact against PIL BICUBIC; on synthetic street scenes at 2048×1024 the network input differs by
   0.69 intensity levels on average (p99 2.5), and a weakly trained tiny model (source-only, 11 % mIoU) at a 2×
   downscale (512×256 → 256×128) gave 99.71 % identical labels and the same mIoU to 0.01 with either
   pre-processing. Parity checks of a deployed graph therefore compare it with this module (same pre-processing),
   not with the PIL pipeline. Frames already at the working size are not resampled (the resize is the identity).
3. The ensemble (``ftadapt.ensemble``): each member's logits under its head rule, in FP32, fused at stride 8 as the
   ensemble says — Σ w·softmax (default), Σ w·logits, or Σ w·(flip-averaged softmax), the members then also running
   on the mirrored frame, in the same batch. Fusion "fta-code" (the emulation of a bug of the authors' evaluation)
   is refused: it is for reproducing a published number, never for deployment.
4. Bilinear upsample (align_corners=True, as the evaluation protocol) of the fused scores to H×W; with logits fusion
   a softmax over the classes then turns them into probabilities (the argmax is unchanged).
5. argmax over classes cast to int32 → ``labels`` N×H×W; ``probs`` N×C×H×W (FP32) only when asked.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ftadapt.ensemble import EXPORT_FUSIONS, Ensemble
from ftadapt.errors import UsageError
from ftadapt.export.fp16 import half_ensemble
from ftadapt.protocol import CITYSCAPES_SIZE, IMG_MEAN_BGR

PRECISIONS = ("fp32", "fp16")
IMAGE_RESIZE = "bilinear, half-pixel centres (align_corners=False), no antialias"
PROBS_UPSAMPLE = "bilinear, align_corners=True"


class SegmentationGraph(nn.Module):
    """Pre-processing, ensemble, fusion, upsample and argmax in one module (see the module docstring).

    ``working_size`` is (W, H). ``with_probs`` adds the fused probabilities as a second output.
    """

    def __init__(self, ensemble: Ensemble, working_size: tuple[int, int] = CITYSCAPES_SIZE, *,
                 with_probs: bool = False) -> None:
        require_exportable(ensemble)
        super().__init__()
        self.ensemble = ensemble
        self.working_size = (int(working_size[0]), int(working_size[1]))
        self.with_probs = with_probs
        self.register_buffer("mean_bgr", torch.tensor(IMG_MEAN_BGR, dtype=torch.float32).view(1, 3, 1, 1))

    def preprocess(self, image: Tensor) -> Tensor:
        """Shape: uint8 N×H×W×3 (RGB) → float32 N×3×h×w (BGR − mean) at the working size (w, h).

        The cast comes first: TensorRT takes UINT8 only as a network input that feeds a Cast directly (DESIGN.md §7).
        """
        x = image.float().permute(0, 3, 1, 2).flip(1) - self.mean_bgr
        w, h = self.working_size
        return F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False)

    def fused_probs(self, image: Tensor) -> Tensor:
        """The ensemble's fused probabilities at the frame's own size.

        Shape: uint8 N×H×W×3 → float32 N×C×H×W.
        """
        scores = self.ensemble.fused(self.preprocess(image))
        scores = F.interpolate(scores, size=image.shape[1:3], mode="bilinear", align_corners=True)
        return scores.softmax(dim=1) if self.ensemble.fusion == "logits" else scores

    def forward(self, image: Tensor) -> Tensor | tuple[Tensor, Tensor]:
        """Shape: image uint8 N×H×W×3 → labels int32 N×H×W (and probs float32 N×C×H×W with ``with_probs``)."""
        probs = self.fused_probs(image)
        labels = probs.argmax(dim=1).to(torch.int32)
        return (labels, probs) if self.with_probs else labels


def require_exportable(ensemble: Ensemble) -> None:
    """UsageError unless ``ensemble`` fuses in a mode an export may carry (``EXPORT_FUSIONS``: probs, logits)."""
    if ensemble.fusion not in EXPORT_FUSIONS:
        raise UsageError(f"fusion {ensemble.fusion!r} emulates a bug of the authors' evaluate.py for `ftadapt eval` "
                         f"only and is never exported; export with fusion {' or '.join(map(repr, EXPORT_FUSIONS))}")


def build_graph(ensemble: Ensemble, *, precision: str = "fp32", working_size: tuple[int, int] = CITYSCAPES_SIZE,
                with_probs: bool = False) -> SegmentationGraph:
    """The graph module for ``precision``: "fp32" uses ``ensemble`` as it is, "fp16" a BN-folded half copy. Raises
    UsageError for an ensemble fusing "fta-code" (evaluation only)."""
    require_exportable(ensemble)
    if precision not in PRECISIONS:
        raise UsageError(f"precision {precision!r}: expected one of {', '.join(PRECISIONS)}")
    if precision == "fp16":
        ensemble = half_ensemble(ensemble)
    return SegmentationGraph(ensemble, working_size, with_probs=with_probs).eval()


__all__ = ["SegmentationGraph", "build_graph", "require_exportable", "PRECISIONS", "IMAGE_RESIZE", "PROBS_UPSAMPLE"]
