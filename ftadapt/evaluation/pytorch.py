"""PyTorch predictors: one DeepLab-v2 model under a head rule (optionally with flip TTA), a weighted ensemble, and
the exported graph's own module.

The first two see the image at the protocol's input size (PIL BICUBIC from the decoded file, RGB → BGR − mean: the
training pipeline's own ``ftadapt.data.transforms``), compute stride-8 scores, upsample them bilinearly with
align_corners=True to the ground truth's resolution and take the argmax (DESIGN.md §5). ``GraphPredictor`` runs a
module that takes camera frames itself — ``ftadapt.export.onnx_graph.SegmentationGraph``, the module an export turns
into ONNX — fed the decoded frame as it is, like the exported file: the same pre-processing as the deployment.

- Head rules: "sum" adds both heads (CLAN), "main" takes the main head (multi-level models); default: the model's own.
- ``flip``: the paper's test-time augmentation, the mean of softmax(image) and the mirrored softmax(mirrored image).
  Where each view's softmax is taken follows the protocol (``Protocol.flip_softmax``, carried to ``predict`` with
  the prepared input, :class:`ModelInput`): at stride 8, then the mean is upsampled (adaptsegnet: FeatureToAdapt's
  evaluate.py), or after upsampling the logits to the input size (maxsquare: MaxSquare's model and evaluate.py).
- An ensemble's scores are its fused scores (:class:`ftadapt.ensemble.Ensemble`: probabilities, logits, or
  flip-averaged probabilities), each member under its own head rule: exactly what the exported graph computes, up to
  its pre-processing. They are always fused at stride 8, under either protocol (as the FeatureToAdapt code fuses).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor, nn

from ftadapt.checkpoint import load_model_and_meta
from ftadapt.data.transforms import image_to_tensor, resize_image
from ftadapt.devices import DeviceLike, torch_device
from ftadapt.ensemble import Ensemble
from ftadapt.errors import UsageError
from ftadapt.evaluation.evaluate import Predictor, require_full_resolution
from ftadapt.evaluation.frames import Sample
from ftadapt.evaluation.protocols import FLIP_SOFTMAX_AFTER_UPSAMPLING, FLIP_SOFTMAX_AT_STRIDE_8, Protocol
from ftadapt.models.deeplab import HEAD_RULES, combine_heads, upsample_logits
from ftadapt.run_folder import checkpoint_name, resolve_checkpoint


def model_input(sample: Sample, size: tuple[int, int]) -> Tensor:
    """The protocol input of a decoded frame, computed once per frame and size (shared by every model predictor).

    Shape: → float32 1×3×H×W (BGR − mean) with (W, H) = ``size``.
    """
    key = ("model_input", tuple(size))
    if key not in sample.cache:
        sample.cache[key] = image_to_tensor(resize_image(sample.rgb, size))[None]
    return sample.cache[key]


class ModelInput(NamedTuple):
    """What ``prepare`` hands to ``predict``: the model input and where the protocol takes flip TTA's softmax.

    Shape: image float32 1×3×H×W (BGR − mean)."""

    image: Tensor
    flip_softmax: str = FLIP_SOFTMAX_AT_STRIDE_8


class _TorchPredictor(Predictor):
    """Shared machinery: the input in the decoding thread, scores → upsample → argmax in the calling thread."""

    def __init__(self, module: nn.Module, *, name: str, device: DeviceLike | torch.device) -> None:
        self.name = name
        self.device = torch_device(device)
        self.module = module.to(self.device).eval()

    def prepare(self, sample: Sample, protocol: Protocol) -> ModelInput:
        return ModelInput(model_input(sample, protocol.input_size), protocol.flip_softmax)

    def scores(self, image: Tensor, flip_softmax: str = FLIP_SOFTMAX_AT_STRIDE_8) -> Tensor:
        """Class scores (logits or probabilities), FP32, at stride 8 — or, with flip TTA and ``flip_softmax``
        "after upsampling", at the input size. Shape: 1×3×h×w → 1×C×h'×w'."""
        raise NotImplementedError

    @torch.inference_mode()
    def predict(self, sample: Sample, prepared: ModelInput | Tensor) -> np.ndarray:
        """``prepared``: a :class:`ModelInput`, or the bare input tensor (flip's softmax then at stride 8)."""
        if not isinstance(prepared, ModelInput):
            prepared = ModelInput(prepared)
        scores = self.scores(prepared.image.to(self.device), prepared.flip_softmax)
        pred = upsample_logits(scores, sample.label.shape).argmax(dim=1)[0]
        return pred.to(torch.uint8).cpu().numpy()


class ModelPredictor(_TorchPredictor):
    """A DeepLab-v2 model (in eval mode) under ``rule`` (None: the model's own) with optional ``flip`` TTA;
    ``details`` (e.g. the checkpoint it came from) are added to the result's protocol record."""

    def __init__(self, model: nn.Module, *, name: str = "model", rule: str | None = None, flip: bool = False,
                 device: DeviceLike | torch.device = None, details: dict[str, Any] | None = None) -> None:
        if rule is not None and rule not in HEAD_RULES:
            raise UsageError(f"head rule {rule!r}: expected one of {', '.join(HEAD_RULES)}")
        super().__init__(model, name=name, device=device)
        self.rule = rule or model.config.head_rule
        self.flip = flip
        self.details = dict(details or {})

    def scores(self, image: Tensor, flip_softmax: str = FLIP_SOFTMAX_AT_STRIDE_8) -> Tensor:
        """Without flip the logits at stride 8. With flip the mean of the two views' softmaxes: at stride 8, or with
        ``flip_softmax`` "after upsampling" of the logits upsampled to the input size first (bilinear,
        align_corners=True; MaxSquare's order). Shape: 1×3×H×W → 1×C×h×w (stride 8) or 1×C×H×W."""
        if flip_softmax not in (FLIP_SOFTMAX_AT_STRIDE_8, FLIP_SOFTMAX_AFTER_UPSAMPLING):
            raise UsageError(f"flip softmax {flip_softmax!r}: expected {FLIP_SOFTMAX_AT_STRIDE_8!r} or "
                             f"{FLIP_SOFTMAX_AFTER_UPSAMPLING!r}")
        logits = combine_heads(self.module(image).logits, self.rule).float()
        if not self.flip:
            return logits
        mirrored = combine_heads(self.module(image.flip(-1)).logits, self.rule).float().flip(-1)
        if flip_softmax == FLIP_SOFTMAX_AFTER_UPSAMPLING:
            logits, mirrored = (upsample_logits(t, image.shape[-2:]) for t in (logits, mirrored))
        return (logits.softmax(dim=1) + mirrored.softmax(dim=1)) / 2

    def describe(self) -> dict[str, Any]:
        return {"heads": self.rule, "flip": self.flip, **self.details}

    @classmethod
    def from_checkpoint(cls, path: str | Path, *, name: str | None = None, **options: Any) -> ModelPredictor:
        """The model of a checkpoint folder (or a run folder's newest checkpoint), named and described by it."""
        path = resolve_checkpoint(path)
        device = torch_device(options.pop("device", None))
        model, meta = load_model_and_meta(path, device=device)
        details = {"checkpoint": str(path), "method": meta.get("method"), "step": meta.get("step")}
        return cls(model, name=name or checkpoint_name(path), device=device, details=details, **options)


class EnsemblePredictor(_TorchPredictor):
    """An :class:`~ftadapt.ensemble.Ensemble`'s fused scores, each member under its own head rule."""

    def __init__(self, ensemble: Ensemble, *, name: str = "ensemble", device: DeviceLike | torch.device = None) -> None:
        super().__init__(ensemble, name=name, device=device)

    def scores(self, image: Tensor, flip_softmax: str = FLIP_SOFTMAX_AT_STRIDE_8) -> Tensor:
        """The fused scores at stride 8, whatever ``flip_softmax`` says (the ensemble fuses at stride 8)."""
        return self.module.fused(image)

    def describe(self) -> dict[str, Any]:
        ensemble = self.module
        names = [i.name for i in ensemble.infos] or [f"member{k + 1}" for k in range(len(ensemble.members))]
        members = [{"name": n, "weight": float(w), "head_rule": r}
                   for n, w, r in zip(names, ensemble.weights.tolist(), ensemble.rules)]
        flip = {"flip_softmax": FLIP_SOFTMAX_AT_STRIDE_8} if ensemble.flip else {}
        return {"heads": "per member", "flip": ensemble.flip, **flip, "fusion": ensemble.fusion, "ensemble": members}

    def member_predictors(self) -> list[ModelPredictor]:
        """Each member alone under its head rule (with the ensemble's flip, whatever the fusion, "fta-code"
        included), named as in the ensemble: to be scored beside it."""
        ensemble = self.module
        names = [i.name for i in ensemble.infos] or [f"member{k + 1}" for k in range(len(ensemble.members))]
        return [ModelPredictor(member, name=name, rule=rule, flip=ensemble.flip, device=self.device)
                for name, member, rule in zip(names, ensemble.members, ensemble.rules)]


class GraphPredictor(Predictor):
    """The labels of ``graph``, a module taking uint8 RGB frames N×H×W×3 and returning int32 labels N×H×W at the
    frame's own size (``SegmentationGraph``), on ``device``; ``details`` go into the result's protocol record."""

    def __init__(self, graph: nn.Module, *, name: str, device: DeviceLike | torch.device = None,
                 details: dict[str, Any] | None = None) -> None:
        self.name = name
        self.device = torch_device(device)
        self.module = graph.to(self.device).eval()
        self.details = dict(details or {})

    def prepare(self, sample: Sample, protocol: Protocol) -> Tensor:
        """Shape: → uint8 1×H×W×3, the decoded frame as it is."""
        require_full_resolution(protocol, self.name)
        return torch.from_numpy(np.array(sample.rgb))[None]

    @torch.inference_mode()
    def predict(self, sample: Sample, prepared: Tensor) -> np.ndarray:
        return self.module(prepared.to(self.device))[0].to(torch.uint8).cpu().numpy()

    def describe(self) -> dict[str, Any]:
        return {"device": str(self.device), "preprocessing": "the graph's own (bilinear half-pixel resize)",
                **self.details}


__all__ = ["ModelPredictor", "EnsemblePredictor", "GraphPredictor", "ModelInput", "model_input"]
