"""Training configuration: typed dataclasses with the paper's defaults (DESIGN.md §5), named presets for the paper's
code, and the resolution order defaults → preset → config file → ``--set key=value`` → command-line options.

The paper's text is the default. Its code (FTA, a CLAN fork) differs in places; ``preset = "paper-code"`` switches all
of them on at once, and each one is also a key of its own (see ``PRESETS``). Every run saves the resolved config.

Keys are dotted (``loss.lambda_norm``). Configs written before the ``speed`` section existed name its keys at the top
level (``amp``, ``channels_last`` …); ``KEY_ALIASES`` maps those names to ``speed.*`` wherever keys are read
(``--set``, ``--config`` files, a run's ``config.json``, ``config_from_dict``, ``build_config``).
"""
from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import math
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ftadapt.config_rules import METHODS, VALUE_RULES
from ftadapt.errors import UsageError
from ftadapt.machine import loader_workers
from ftadapt.presets import PRESETS

DATASET_KINDS = ("gta5", "cityscapes", "synthia")
INIT_NONE = "none"  # ``init = "none"``: random initial weights on purpose (an R101 run must say so, training.loop)


def parse_dataset_spec(spec: str) -> tuple[str, Path]:
    """Parse ``KIND:ROOT`` (e.g. ``gta5:/data/GTA5``) into (kind, root); a UsageError for anything else."""
    kind, sep, root = spec.partition(":")
    if not sep or not root or kind not in DATASET_KINDS:
        raise UsageError(f"{spec!r}: expected KIND:ROOT with KIND one of {', '.join(DATASET_KINDS)} "
                         "(e.g. cityscapes:/data/Cityscapes)")
    return kind, Path(root)


@dataclass
class DataConfig:
    """The datasets (``KIND:ROOT``), input sizes and loading. Sizes are (W, H) as in the paper."""

    source: str = ""  # labelled source, "gta5:ROOT" or "synthia:ROOT"; a resume may point it elsewhere
    target: str = ""  # unlabelled target, "cityscapes:ROOT" ("": none; methods using the target need it)
    source_size: tuple[int, int] = (1280, 720)  # GTA5 protocol resize; source logits are upsampled to this size
    target_size: tuple[int, int] = (1024, 512)  # Cityscapes protocol resize ("crop 512×1024" in the paper)
    # "clan": CLAN's random image scale (×1.1 / ×0.8) and mirror; "maxsquare": mirror and Gaussian blur (MaxSquare's);
    # "none". Both domains. (Configs before this key took true / false: "clan" / "none".)
    augment: str = "clan"
    source_list: str = ""  # a list file selecting source images (e.g. MaxSquare's 12,403-image GTA5 train split)
    target_list: str = ""  # a list file selecting target train images
    batch_size: int = 1
    # Loader processes per domain. One core prepares ~12 Cityscapes / ~16 GTA5 samples per second (PNG decoding
    # dominates; ftadapt bench loader-speed), so 28 steps/s needs 3 per domain; 0: in the training process. The
    # default is sized to the machine (``ftadapt.machine.loader_workers``: 1 on 2 cores, 4 from 9 cores on).
    num_workers: int = field(default_factory=loader_workers)


@dataclass
class OptimConfig:
    """G: SGD with 10× lr on the heads; D: Adam. Both follow the same warm-up + poly schedule."""

    lr: float = 2.5e-4
    momentum: float = 0.9
    weight_decay: float = 5e-4
    power: float = 0.9  # poly decay: lr · (1 − i/steps)^power
    warmup_steps: int = 0  # linear warm-up from 0 (paper code: 5000)
    d_lr: float = 5e-5  # paper text; the code uses 1e-4
    d_betas: tuple[float, float] = (0.9, 0.99)
    d_weight_decay: float = 5e-4  # the paper claims it for both optimizers; the code has none on D


@dataclass
class LossConfig:
    """Weights of the loss terms (methods.md §3). A term a method does not use ignores its keys."""

    seg: str = "ce"  # "ce" (paper text) or "focal" (CLAN / FTA code)
    focal_gamma: float = 2.0
    aux_weight: float = 0.1  # multi-level heads: CE(main) + aux_weight · CE(aux)
    lambda_norm: float = 1.5e-4
    delta_r: float = 0.12
    norm_damping: float = 1.0  # factor 1 − k·i/steps on the norm term (the paper: damped, k = 1; its code: 1.5; 0 off)
    lambda_adv: float = 1e-3
    lambda_weight: float = 0.01  # paper code: 0.009
    lambda_local: float = 40.0
    epsilon: float = 0.4
    adv_damping: bool = True  # factor 1 − i/steps on the adversarial and weight terms (the paper and its code)
    adv_preheat_steps: int = 0  # G's adversarial term: plain (unweighted) BCE before this step (CLAN code: 5000)
    d_preheat_steps: int = 0  # D's target term: plain BCE before this step (CLAN code and the paper's code: 5000)
    lambda_target: float = 0.1  # MaxSquare target term
    iw_ratio: float = 0.0  # > 0: image-wise class-balanced MaxSquare with this ratio (MaxSquare's IW uses 0.2)
    self_guidance: bool = False  # MaxSquare's multi-level self-produced guidance (multi heads only)
    guidance_threshold: float = 0.95


@dataclass
class EvalConfig:
    """Periodic evaluation on target val (``eval_every`` > 0). Selection on it is reported as "oracle"."""

    split: str = "val"
    size: tuple[int, int] = (1024, 512)
    flip: bool = False


@dataclass
class SpeedConfig:
    """How fast a step runs, not what it computes (up to floating-point order): a resume may change any of them."""

    amp: str = "off"  # "off" or "bf16" (autocast)
    channels_last: bool = False
    cudnn_benchmark: bool = True
    compile: str = "off"  # torch.compile of G: "off", "default" or "reduce-overhead" (CUDA graphs); one graph per shape
    cuda_graphs: bool = False  # replay G's forward + backward as CUDA graphs, one pair per input shape (no compile)
    channel_multiple: int = 0  # > 1: run the convs with 3/19/1 channels (stem, heads, D) zero-padded to multiples of it
    space_to_batch: bool = False  # run the dilated backbone convs as ordinary convs over their d² sub-grids


@dataclass
class TrainConfig:
    """Everything that defines a training run."""

    method: str = "source-only"
    model: str = "deeplabv2-r101"
    preset: str = "paper"  # "paper" (the text), "paper-code", "clan-code", "maxsquare-code" (ftadapt.presets)
    steps: int = 100_000  # poly horizon and number of steps
    seed: int = 1234
    device: str = "auto"  # "auto", "cpu", "cuda", "cuda:1" …
    # Fresh runs start from these weights: a checkpoint folder or an official .pth ("" or "none": random init).
    init: str = ""
    sync_bn: bool = False  # several processes: BN statistics over all ranks' images (CUDA only; not the reference)
    # Backbone BN weight and bias frozen in training: "all" (AdaptSegNet, CLAN, FTA) or "stem" (MaxSquare).
    freeze_bn_affine: str = "all"
    checkpoint_every: int = 2000
    keep_checkpoints: int = 0  # > 0: keep only the newest K checkpoints (plus last / oracle_best); 0 keeps every one
    log_every: int = 10
    eval_every: int = 0
    check_data: bool = True  # run the dataset doctor on the roots before a fresh run (it reads every label once)
    tensorboard: bool = True  # TensorBoard events beside metrics.jsonl (when tensorboard is installed)
    stop_at: int = 0  # > 0: stop (with a checkpoint) after this step, e.g. to split a run into jobs; resume later
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    speed: SpeedConfig = field(default_factory=SpeedConfig)

    @property
    def init_weights(self) -> Path | None:
        """The checkpoint folder or ``.pth`` G starts from, or None for a random initialisation (``""`` or
        :data:`INIT_NONE`). Every reader of ``init`` goes through this, so "none" is never looked up as a file."""
        return None if self.init in ("", INIT_NONE) else Path(self.init)

    def __post_init__(self) -> None:
        """Refuse values the run cannot use, naming the key and the allowed range (not torch's error, later)."""
        for key, value in flatten(self).items():
            numbers = value if isinstance(value, tuple) else (value,)
            if any(isinstance(v, float) and not math.isfinite(v) for v in numbers):
                raise UsageError(f"config {key}={value!r} is invalid: expected a finite number")
            rule = VALUE_RULES.get(key)
            if rule is not None and not rule[0](value, self):
                raise UsageError(f"config {key}={value!r} is invalid: expected {rule[1].format(cfg=self)}")


# Keys that may change when a run is resumed: they decide where and how fast it runs, not what it learns. The dataset
# roots and the init weights are among them: a moved dataset must not block a resume, and a resume never reads init.
RESUMABLE_KEYS = frozenset({"device", "init", "checkpoint_every", "keep_checkpoints", "log_every", "eval_every",
                            "check_data", "tensorboard", "stop_at", "data.source", "data.target", "data.num_workers",
                            "eval.split", "eval.size", "eval.flip",
                            *(f"speed.{f.name}" for f in dataclasses.fields(SpeedConfig))})

# The one alias table: old key name → current one. Configs written before the ``speed`` section (ftadapt ≤ 0.1.0 run
# folders) hold its keys at the top level; they keep loading and resuming.
KEY_ALIASES: dict[str, str] = {
    "amp": "speed.amp", "channels_last": "speed.channels_last", "cudnn_benchmark": "speed.cudnn_benchmark",
    "compile": "speed.compile", "cuda_graphs": "speed.cuda_graphs", "channel_multiple": "speed.channel_multiple",
    "space_to_batch": "speed.space_to_batch",
}

# Values of keys whose type changed: data.augment was true / false before augmentation styles existed.
LEGACY_VALUES: dict[str, dict[bool, str]] = {"data.augment": {True: "clan", False: "none"}}
LEGACY_HASH_VALUES = {key: {new: old for old, new in values.items()} for key, values in LEGACY_VALUES.items()}

# Keys added after runs were first recorded, at the value those runs had: left out of ``config_hash`` at that value,
# so older runs keep their hash (a ``None`` value: left out when equal to the key it was split from).
ADDED_KEYS: dict[str, Any] = {"sync_bn": False, "freeze_bn_affine": "all", "data.source_list": "",
                              "data.target_list": "", "loss.d_preheat_steps": None}

# The architecture of each method's reference code, used when the model is not given: MaxSquare's released models are
# multi-level with the reduced ASPP; CLAN, the paper and the others use two full-ASPP heads on layer4.
DEFAULT_MODELS = {"maxsquare": "deeplabv2-r101-multi-reduced", "maxsquare-norm": "deeplabv2-r101-multi-reduced"}


def flatten(cfg: Any, prefix: str = "") -> dict[str, Any]:
    """Dotted keys → values of a (nested) dataclass, e.g. ``{"loss.lambda_norm": 0.00015, ...}``."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            out.update(flatten(value, f"{prefix}{f.name}."))
        else:
            out[prefix + f.name] = value
    return out


def canonical_key(key: str) -> str:
    """``key`` with an old name replaced by the current one (``amp`` → ``speed.amp``, see ``KEY_ALIASES``)."""
    return KEY_ALIASES.get(key, key)


def get_key(cfg: Any, key: str) -> Any:
    """The value of a dotted key, e.g. ``get_key(cfg, "loss.lambda_norm")`` (old names accepted)."""
    for part in canonical_key(key).split("."):
        cfg = getattr(cfg, part)
    return cfg


def _field_types(cls: type, prefix: str = "") -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        if dataclasses.is_dataclass(hint):
            out.update(_field_types(hint, f"{prefix}{f.name}."))
        else:
            out[prefix + f.name] = hint
    return out


KEY_TYPES = _field_types(TrainConfig)


def _convert(key: str, value: Any, hint: Any) -> Any:
    """Coerce a command-line string or a JSON/TOML value to the field's type, or raise a UsageError."""
    def bad(expected: str) -> UsageError:
        return UsageError(f"config {key}={value!r}: expected {expected}")

    if typing.get_origin(hint) is tuple:
        n, elem = len(typing.get_args(hint)), typing.get_args(hint)[0]
        if isinstance(value, str):
            value = value.replace("x", ",").strip("()[] ").split(",")
        if not isinstance(value, (list, tuple)) or len(value) != n:
            raise bad(f"{n} numbers, e.g. {'512x256' if elem is int else '0.9,0.99'}")
        return tuple(_convert(key, v, elem) for v in value)
    if key in LEGACY_VALUES and str(value).lower() in ("true", "false"):
        value = str(value).lower() == "true"
    if hint is bool:
        if isinstance(value, bool):
            return value
        lowered = str(value).lower()
        if lowered in ("true", "1", "yes", "on"):
            return True
        if lowered in ("false", "0", "no", "off"):
            return False
        raise bad("true or false")
    if hint in (int, float):
        if isinstance(value, bool) or (hint is int and isinstance(value, float) and not value.is_integer()):
            raise bad(hint.__name__)
        try:
            return float(value) if hint is float else int(value)
        except ValueError:
            raise bad(f"a number ({hint.__name__})") from None
    if hint is str:
        return LEGACY_VALUES.get(key, {}).get(value, value) if isinstance(value, bool) else str(value)
    raise AssertionError(f"unsupported config type {hint} for {key}")


def _check_key(key: str) -> str:
    """The current name of ``key``, or a UsageError suggesting close matches."""
    key = canonical_key(key)
    if key not in KEY_TYPES:
        close = difflib.get_close_matches(key, list(KEY_TYPES), n=3, cutoff=0.5)
        hint = f"; did you mean {' or '.join(close)}?" if close else f"; valid keys: {', '.join(KEY_TYPES)}"
        raise UsageError(f"unknown config key {key!r}{hint}")
    return key


def typed_value(key: str, value: Any) -> Any:
    """``value`` of ``key`` as a config holds it, from a ``--set`` string or an option's value alike."""
    return _convert(_check_key(key), value, KEY_TYPES[_check_key(key)])


def parse_set(items: list[str] | tuple[str, ...]) -> dict[str, str]:
    """``["loss.lambda_norm=2e-4", "amp=bf16"]`` → ``{"loss.lambda_norm": "2e-4", "speed.amp": "bf16"}`` (current key
    names; values typed later)."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--set {item!r}: expected KEY=VALUE, e.g. --set loss.lambda_norm=0.0002")
        out[_check_key(key.strip())] = value.strip()
    return out


def _flatten_mapping(data: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out.update(_flatten_mapping(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = value
    return out


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Read a JSON or TOML config file (nested tables or dotted keys) into flat dotted keys (current names)."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"config file {path} does not exist")
    text = path.read_text()
    try:
        data = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        kind = "TOML" if path.suffix == ".toml" else "JSON"
        raise UsageError(f"config file {path} is not valid {kind}: {exc}") from None
    if not isinstance(data, dict):
        raise UsageError(f"config file {path} must hold a table/object of keys")
    return {_check_key(key): value for key, value in _flatten_mapping(data).items()}


def build_config(overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Resolve a TrainConfig: defaults, then the preset named in ``overrides`` (if any), then the other overrides.
    Without a ``model`` key the method's reference architecture is used (``DEFAULT_MODELS``).

    ``overrides`` maps dotted keys (old names accepted, see ``KEY_ALIASES``) to values (strings from ``--set`` or
    typed values from a file), applied in order. Explicit keys always beat the preset, wherever they appear.
    """
    overrides = dict(overrides or {})
    preset = str(overrides.get("preset", "paper"))
    if preset not in PRESETS:
        raise UsageError(f"unknown preset {preset!r}; valid presets: {', '.join(PRESETS)}")
    values = flatten(TrainConfig())
    for key, value in {**PRESETS[preset], **overrides}.items():
        key = _check_key(key)
        values[key] = _convert(key, value, KEY_TYPES[key])
    if "model" not in overrides:
        values["model"] = DEFAULT_MODELS.get(values["method"], values["model"])
    return _from_flat(values)


def _from_flat(values: dict[str, Any]) -> TrainConfig:
    nested: dict[str, Any] = {}
    for key, value in values.items():
        head, _, tail = key.partition(".")
        if tail:
            nested.setdefault(head, {})[tail] = value
        else:
            nested[head] = value
    hints = typing.get_type_hints(TrainConfig)
    kwargs = {k: hints[k](**v) if isinstance(v, dict) else v for k, v in nested.items()}
    return TrainConfig(**kwargs)


def config_to_dict(cfg: TrainConfig) -> dict[str, Any]:
    """Nested plain dict (tuples as lists): what ``config.json`` holds and ``--config`` reads back."""
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


def config_from_dict(data: dict[str, Any]) -> TrainConfig:
    """Inverse of ``config_to_dict`` (unknown keys are an error). An older layout reads as it meant: top-level speed
    keys are aliases, ``data.augment`` true/false are "clan"/"none", keys recorded since take their defaults, and
    without ``loss.d_preheat_steps`` the D term warms up with the G term (one ``adv_preheat_steps`` served both)."""
    flat = {canonical_key(k): v for k, v in _flatten_mapping(data).items()}
    if "loss.adv_preheat_steps" in flat:
        flat.setdefault("loss.d_preheat_steps", flat["loss.adv_preheat_steps"])
    return build_config(flat)


def config_hash(cfg: TrainConfig) -> str:
    """sha256 of everything that defines what a run learns (all keys except ``RESUMABLE_KEYS``). Keys added later are
    left out at the value earlier runs had, and changed value types hash as before (``ADDED_KEYS``,
    ``LEGACY_VALUES``), so those runs keep their hash."""
    flat = flatten(cfg)
    added = {**ADDED_KEYS, "loss.d_preheat_steps": flat["loss.adv_preheat_steps"]}
    flat = {k: LEGACY_HASH_VALUES.get(k, {}).get(v, v) for k, v in flat.items()
            if k not in RESUMABLE_KEYS and not (k in added and v == added[k])}
    return hashlib.sha256(json.dumps(flat, sort_keys=True, default=list).encode()).hexdigest()[:16]


def config_diff(old: TrainConfig, new: TrainConfig) -> list[str]:
    """Human-readable differences ``key: old → new`` in the keys that make two runs incompatible."""
    a, b = flatten(old), flatten(new)
    return [f"{k}: {a[k]!r} → {b[k]!r}" for k in a if k not in RESUMABLE_KEYS and a[k] != b[k]]


__all__ = ["TrainConfig", "DataConfig", "OptimConfig", "LossConfig", "EvalConfig", "SpeedConfig", "METHODS",
           "DATASET_KINDS", "PRESETS", "RESUMABLE_KEYS", "KEY_ALIASES", "build_config", "config_from_dict",
           "config_to_dict", "config_hash", "config_diff", "parse_set", "read_config_file", "parse_dataset_spec",
           "flatten", "get_key", "canonical_key", "typed_value"]
