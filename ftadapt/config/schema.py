"""The sections of the training config: dataclasses with the paper's defaults (DESIGN.md §5), each key declared once,
with the values it allows and whether a resume may change it.

The paper's text is the default. Its code (FTA, a CLAN fork) differs in places; ``preset = "paper-code"`` switches all
of them on at once (``ftadapt.config.presets``), and each one is also a key of its own.

A key is a field made by :func:`key`: its default, a :class:`Rule` for the values it allows, and ``resumable`` when it
decides where and how fast a run goes rather than what it learns (a resume may change it, and the config hash leaves
it out). Each section checks its own keys when it is built and names them in full (``config optim.lr=-1.0 is invalid:
expected a positive number``), so a bad value is refused before any work rather than by torch, later;
:class:`TrainConfig` adds the checks that read several keys.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from ftadapt.config.methods import METHODS
from ftadapt.config.presets import PRESETS
from ftadapt.devices import SPELLINGS, parse_device
from ftadapt.errors import UsageError
from ftadapt.machine import loader_workers

DATASET_KINDS = ("gta5", "cityscapes", "synthia")
INIT_NONE = "none"  # ``init = "none"``: random initial weights on purpose (an R101 run must say so, training.loop)


@dataclass(frozen=True)
class Rule:
    """The values a key allows, which ``expected`` names for the error message: those ``test`` accepts, or, for a
    key with several spellings, those ``normalise`` turns into the one spelling the config keeps (it raises
    UsageError for the others)."""

    expected: str
    test: Callable[[Any], bool] | None = None
    normalise: Callable[[Any], Any] | None = None


def one_of(*choices: str) -> Rule:
    return Rule(f"one of {', '.join(choices)}", lambda v: v in choices)


POSITIVE = Rule("a positive number", lambda v: v > 0)
NON_NEGATIVE = Rule("≥ 0", lambda v: v >= 0)
FRACTION = Rule("a number in [0, 1)", lambda v: 0 <= v < 1)
SIZE = Rule("W×H with both at least 1, e.g. 1024x512", lambda v: min(v) >= 1)
# numpy seeds its generators with 32-bit words: a seed is a whole number in [0, SEED_MAX] (every --seed option too).
SEED_MAX = 2**32 - 1
SEED = Rule(f"a whole number from 0 to {SEED_MAX} (2**32 - 1)", lambda v: 0 <= v <= SEED_MAX)
DEVICE = Rule(f"{SPELLINGS} (e.g. cuda:1)", normalise=lambda v: str(parse_device(v)))


def key(default: Any = dataclasses.MISSING, rule: Rule | None = None, *, resumable: bool = False,
        factory: Callable[[], Any] | None = None) -> Any:
    """A config key: a dataclass field with its default (or ``factory``), its rule and whether it is resumable."""
    metadata = {"rule": rule, "resumable": resumable}
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


def invalid(name: str, value: Any, expected: str) -> UsageError:
    return UsageError(f"config {name}={value!r} is invalid: expected {expected}")


class Section:
    """A section of the config; ``SECTION`` is its name in dotted keys ("" for the top level). Built, it refuses a
    value its keys do not allow (every float must also be finite) and keeps each value in its normal spelling."""

    SECTION: ClassVar[str] = ""

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Section):
                continue
            name = f"{self.SECTION}.{f.name}" if self.SECTION else f.name
            if any(isinstance(v, float) and not math.isfinite(v) for v in (value if isinstance(value, tuple)
                                                                            else (value,))):
                raise invalid(name, value, "a finite number")
            rule = f.metadata.get("rule")
            if rule is None:
                continue
            if rule.normalise is not None:
                try:
                    setattr(self, f.name, rule.normalise(value))
                except UsageError:
                    raise invalid(name, value, rule.expected) from None
            elif not rule.test(value):
                raise invalid(name, value, rule.expected)


def parse_dataset_spec(spec: str) -> tuple[str, Path]:
    """Parse ``KIND:ROOT`` (e.g. ``gta5:/data/GTA5``) into (kind, root); a UsageError for anything else."""
    kind, sep, root = spec.partition(":")
    if not sep or not root or kind not in DATASET_KINDS:
        raise UsageError(f"{spec!r}: expected KIND:ROOT with KIND one of {', '.join(DATASET_KINDS)} "
                         "(e.g. cityscapes:/data/Cityscapes)")
    return kind, Path(root)


@dataclass
class DataConfig(Section):
    """The datasets (``KIND:ROOT``), input sizes and loading. Sizes are (W, H) as in the paper."""

    SECTION: ClassVar[str] = "data"
    # The labelled source, "gta5:ROOT" or "synthia:ROOT" ("cityscapes:ROOT", its labelled train split, for the oracle:
    # source-only), and the unlabelled target, "cityscapes:ROOT" ("": none; methods using the target need it). A
    # resume may point them elsewhere.
    source: str = key("", resumable=True)
    target: str = key("", resumable=True)
    source_size: tuple[int, int] = key((1280, 720), SIZE)  # GTA5 protocol resize; source logits are upsampled to it
    target_size: tuple[int, int] = key((1024, 512), SIZE)  # Cityscapes protocol resize ("crop 512×1024" in the paper)
    # "clan": CLAN's random image scale (×1.1 / ×0.8) and mirror; "maxsquare": mirror and Gaussian blur (MaxSquare's);
    # "none". Both domains.
    augment: str = key("clan", one_of("clan", "maxsquare", "none"))
    source_list: str = key("")  # a list file selecting source images (e.g. MaxSquare's 12,403-image GTA5 train split)
    target_list: str = key("")  # a list file selecting target train images
    batch_size: int = key(1, POSITIVE)
    # Loader processes per domain. One core prepares ~12 Cityscapes / ~16 GTA5 samples per second (PNG decoding
    # dominates; ftadapt bench loader-speed), so 28 steps/s needs 3 per domain; 0: in the training process. The
    # default is sized to the machine (``ftadapt.machine.loader_workers``: 1 on 2 cores, 4 from 9 cores on).
    num_workers: int = key(rule=Rule("≥ 0 (0: load in the training process)", lambda v: v >= 0), resumable=True,
                           factory=loader_workers)


@dataclass
class OptimConfig(Section):
    """G: SGD with 10× lr on the heads; D: Adam. Both follow the same warm-up + poly schedule."""

    SECTION: ClassVar[str] = "optim"
    lr: float = key(2.5e-4, POSITIVE)
    momentum: float = key(0.9, FRACTION)
    weight_decay: float = key(5e-4, NON_NEGATIVE)
    power: float = key(0.9, NON_NEGATIVE)  # poly decay: lr · (1 − i/steps)^power
    warmup_steps: int = key(0, NON_NEGATIVE)  # linear warm-up from 0 of both optimizers (CLAN code: 5000; FTA: 7500)
    d_lr: float = key(5e-5, POSITIVE)  # paper text; the code uses 1e-4
    d_betas: tuple[float, float] = key((0.9, 0.99), Rule("two numbers in [0, 1), e.g. 0.9,0.99",
                                                         lambda v: all(0 <= b < 1 for b in v)))
    d_weight_decay: float = key(5e-4, NON_NEGATIVE)  # the paper claims it for both optimizers; the code has none on D


@dataclass
class LossConfig(Section):
    """Weights of the loss terms (methods.md §3). A term a method does not use ignores its keys."""

    SECTION: ClassVar[str] = "loss"
    seg: str = key("ce", one_of("ce", "focal"))  # "ce" (paper text) or "focal" (CLAN / FTA code)
    focal_gamma: float = key(2.0, NON_NEGATIVE)
    aux_weight: float = key(0.1, NON_NEGATIVE)  # multi-level heads: CE(main) + aux_weight · CE(aux)
    lambda_norm: float = key(1.5e-4, NON_NEGATIVE)
    delta_r: float = key(0.12, NON_NEGATIVE)
    # Factor 1 − k·i/N on the norm term, N = damping_steps (the paper: damped, k = 1; its code: 1.5; 0 off).
    norm_damping: float = key(1.0, NON_NEGATIVE)
    # Horizon N of every damping factor (norm: 1 − k·i/N; adversarial and weight: 1 − i/N); 0: the run's steps, as in
    # the paper's text. FTA's code damps over its constant NUM_STEPS = 150,000 whatever the run's length.
    damping_steps: int = key(0, Rule("≥ 0 (0: the run's steps)", lambda v: v >= 0))
    lambda_adv: float = key(1e-3, NON_NEGATIVE)
    lambda_weight: float = key(0.01, NON_NEGATIVE)  # paper code: 0.009
    lambda_local: float = key(40.0, NON_NEGATIVE)
    epsilon: float = key(0.4, NON_NEGATIVE)
    adv_damping: bool = key(True)  # factor 1 − i/N on the adversarial and weight terms (the paper and its code)
    adv_preheat_steps: int = key(0, NON_NEGATIVE)  # G's adversarial term: plain BCE before this step (CLAN code: 5000)
    d_preheat_steps: int = key(0, NON_NEGATIVE)  # D's target term: plain BCE before this step (CLAN 5000, FTA 7500)
    lambda_target: float = key(0.1, NON_NEGATIVE)  # MaxSquare target term
    # > 0: image-wise class-balanced MaxSquare with this ratio (MaxSquare's IW uses 0.2).
    iw_ratio: float = key(0.0, Rule("a number in [0, 1] (0: off)", lambda v: 0 <= v <= 1))
    self_guidance: bool = key(False)  # MaxSquare's multi-level self-produced guidance (multi heads only)
    guidance_threshold: float = key(0.95, Rule("a probability in [0, 1]", lambda v: 0 <= v <= 1))


@dataclass
class EvalConfig(Section):
    """Periodic evaluation on target val (``eval_every`` > 0). Selection on it is reported as "oracle"."""

    SECTION: ClassVar[str] = "eval"
    split: str = key("val", resumable=True)
    size: tuple[int, int] = key((1024, 512), SIZE, resumable=True)
    flip: bool = key(False, resumable=True)


@dataclass
class SpeedConfig(Section):
    """How fast a step runs, not what it computes (up to floating-point order): a resume may change any of them."""

    SECTION: ClassVar[str] = "speed"
    amp: str = key("off", one_of("off", "bf16"), resumable=True)  # bf16 autocast
    channels_last: bool = key(False, resumable=True)
    cudnn_benchmark: bool = key(True, resumable=True)
    # torch.compile of G: "reduce-overhead" replays CUDA graphs; one graph per input shape.
    compile: str = key("off", one_of("off", "default", "reduce-overhead"), resumable=True)


@dataclass
class TrainConfig(Section):
    """Everything that defines a training run."""

    method: str = key("source-only", one_of(*METHODS))
    model: str = key("deeplabv2-r101")
    # "paper" (the text), "paper-code", "clan-code", "maxsquare-code" (ftadapt.config.presets)
    preset: str = key("paper", one_of(*PRESETS))
    steps: int = key(100_000, POSITIVE)  # poly horizon and number of steps
    seed: int = key(1234, SEED)
    device: str = key("auto", DEVICE, resumable=True)  # ftadapt.devices: "auto", "cpu", "cuda", "cuda:1" …
    # Fresh runs start from these weights: a checkpoint folder or an official .pth ("" or "none": random init).
    init: str = key("", resumable=True)
    sync_bn: bool = key(False)  # several processes: BN statistics over all ranks' images (CUDA only; not the reference)
    # Backbone BN weight and bias frozen in training: "all" (AdaptSegNet, CLAN, FTA) or "stem" (MaxSquare).
    freeze_bn_affine: str = key("all", one_of("all", "stem"))
    checkpoint_every: int = key(2000, Rule("≥ 0 (0: only at the end)", lambda v: v >= 0), resumable=True)
    # > 0: keep only the newest K checkpoints (plus last / oracle_best); 0 keeps every one
    keep_checkpoints: int = key(0, Rule("≥ 0 (0: keep every checkpoint)", lambda v: v >= 0), resumable=True)
    log_every: int = key(10, POSITIVE, resumable=True)
    eval_every: int = key(0, NON_NEGATIVE, resumable=True)
    # Run the dataset doctor on the roots before a fresh run (it reads every label once).
    check_data: bool = key(True, resumable=True)
    tensorboard: bool = key(True, resumable=True)  # TensorBoard events beside metrics.jsonl (when installed)
    # > 0: stop (with a checkpoint) after this step, e.g. to split a run into jobs; resume later
    stop_at: int = key(0, Rule("≥ 0 (0: off)", lambda v: v >= 0), resumable=True)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    speed: SpeedConfig = field(default_factory=SpeedConfig)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.stop_at > self.steps:
            raise invalid("stop_at", self.stop_at, f"at most steps ({self.steps}), or 0 (off)")

    @property
    def init_weights(self) -> Path | None:
        """The checkpoint folder or ``.pth`` G starts from, or None for a random initialisation (``""`` or
        :data:`INIT_NONE`). Every reader of ``init`` goes through this, so "none" is never looked up as a file."""
        return None if self.init in ("", INIT_NONE) else Path(self.init)


__all__ = ["TrainConfig", "DataConfig", "OptimConfig", "LossConfig", "EvalConfig", "SpeedConfig", "Section", "Rule",
           "key", "DATASET_KINDS", "INIT_NONE", "SEED_MAX", "parse_dataset_spec"]
