"""Configuration as plain data: nested dataclasses, loadable from YAML, overridable with ``key=value``.

Every field carries its help text in ``metadata["help"]``; the CLI prints the whole reference from it
(``lanet train --help``), so the documentation cannot drift from the code.

This module imports neither :mod:`lanet.data` nor :mod:`lanet.methods`: it checks the values that need no
registry (:func:`check_model_train` and the range helpers); :func:`lanet.runconfig.validate_config` checks a
whole configuration, each registry validating its own sections.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

import yaml

from .errors import LanetError


class _Loader(yaml.SafeLoader):
    """YAML's safe loader, except that ``1e-4``, ``5E3`` and ``-2e-1`` are numbers (YAML 1.1 wants ``1.0e-4``) and
    that numbers are decimal only: YAML 1.1 reads ``0x10`` as 16, ``010`` as 8 and ``1:30`` as 90, which no one
    means by ``--epochs 0x10``; here they stay text, so the key that wants a number names them."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag not in ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float")]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:int", re.compile(r"^[-+]?(?:0|[1-9][0-9_]*)$"), list("-+0123456789"))
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^(?:[-+]?[0-9][0-9_]*\.[0-9_]*(?:[eE][-+]?[0-9]+)?|[-+]?\.[0-9][0-9_]*(?:[eE][-+]?[0-9]+)?"
               r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"),
    list("-+0123456789."))
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."))


def yaml_load(text: str) -> Any:
    """Parse YAML text as the configuration does (safe types; scientific notation is a number)."""
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader


def _f(default: Any, help: str, **kw: Any) -> Any:  # noqa: A002 - "help" reads best at call sites
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: json.loads(json.dumps(d)), metadata={"help": help}, **kw)
    return field(default=default, metadata={"help": help}, **kw)


@dataclass
class DataConfig:
    name: str = _f("synthetic", "dataset: synthetic | ferplus | rafdb | affectnet7 | affectnet8 | csv | folders")
    root: str = _f("", "dataset folder (ferplus: the folder holding FER2013Train/..., or fer2013.csv + fer2013new.csv; "
                   "csv: the CSV file; folders: the folder of class sub-folders)")
    protocol: str = _f("paper", "FERPlus labels: paper (top vote among 8 emotions, unknown/NF dropped) | majority "
                       "(FERPlus reference: single votes dropped, top emotion must hold > 50%)")
    load_size: int = _f(0, "size images are stored at in memory (0 = the dataset's native size: 48 FERPlus, "
                        "100 RAF-DB aligned, 112 AffectNet/csv/folders)")
    image_size: int = _f(48, "network input size in pixels (32 .. 512; the paper uses 224); images are resized on "
                         "the fly")
    channels: int = _f(0, "1 = grayscale, 3 = RGB, 0 = the dataset's own")
    labels: str = _f("", "CSV (header name,label) whose labels replace the training labels (names the dataset "
                     "dropped are ignored and counted)")
    landmarks: str = _f("auto", "auto (ground truth, else cached/extracted with dlib) | none | path to a landmark "
                        "file (.csv name,x0,y0,...; or .npz with names + landmarks)")
    cache_dir: str = _f("", "where decoded images and landmarks are cached (default ~/.cache/lanet)")
    val_fraction: float = _f(0.0, "for datasets without a validation split: fraction of train held out as val")
    limit: int = _f(0, "keep at most this many images per split (0 = all); for smoke tests")
    train_limit: int = _f(0, "keep only the first N training images (0 = all); val and test stay complete, so a "
                          "small-data protocol is still scored on the whole test split")
    synthetic_size: int = _f(6000, "synthetic dataset: number of images (split 70/10/20)")
    synthetic_seed: int = _f(0, "synthetic dataset: generator seed")


@dataclass
class NoiseConfig:
    type: str = _f("none", "none | symmetric | asymmetric (paper Table 5) | annotator (one of the image's own votes)")
    rate: float = _f(0.0, "fraction of training labels to corrupt (symmetric/asymmetric)")
    seed: int = _f(-1, "noise seed (-1 = train.seed)")


@dataclass
class AugmentConfig:
    crop_scale: list = _f([0.75, 1.0], "random resized crop: area fraction range")
    crop_ratio: list = _f([0.75, 1.3333], "random resized crop: aspect ratio range")
    flip: float = _f(0.5, "horizontal flip probability (landmarks mirrored, left/right points swapped)")
    color_jitter: float = _f(0.4, "brightness/contrast/saturation jitter strength (0 = off)")
    erasing: float = _f(0.2, "random erasing probability")
    erasing_scale: list = _f([0.02, 0.2], "random erasing: area fraction range")
    balanced: bool = _f(False, "progressively balanced sampling (Kang et al. 2019)")


@dataclass
class ModelConfig:
    arch: str = _f("resnet18", "backbone: resnet18 | resnet50 | dlib_resnet (dlib's face-recognition ResNet, inputs "
                   ">= 103 px) | dlib_resnet_small (48-96 px) | dlib_resnet_small_os16 (its 256 stages unstrided: "
                   "a 3x3 last map at 48 px); dlib_resnet[_small]_affine keep dlib's fixed-statistics affine layers "
                   "instead of BatchNorm")
    pretrained: str = _f("", "path to a state dict (e.g. MS-Celeb-1M ResNet-18) loaded by key mapping, or dlib: "
                         "the face-recognition weights installed with face_recognition_models (dlib_* archs)")
    dropout: float = _f(0.0, "dropout before the classifier")
    width: int = _f(64, "base channel count (64 = the standard ResNet; 32 is ~4x cheaper, for laptop-scale runs)")


@dataclass
class TrainConfig:
    epochs: int = _f(10, "training epochs")
    batch_size: int = _f(64, "global batch size (split across processes under torchrun)")
    lr: float = _f(1e-3, "Adam learning rate, decayed linearly to 0 per step")
    weight_decay: float = _f(0.0, "Adam weight decay")
    warmup_steps: int = _f(0, "linear warm-up steps before the decay")
    seed: int = _f(0, "seed for model init, sampling, augmentation")
    device: str = _f("auto", "auto | cpu | cuda")
    amp: bool = _f(True, "bf16 autocast on CUDA (ignored on CPU)")
    eval_batch_size: int = _f(256, "batch size for evaluation")
    threads: int = _f(0, "torch CPU threads (0 = all cores)")
    deterministic: str = _f("auto", "auto | on | off: torch deterministic algorithms; auto = on for CPU (bit-identical "
                                    "reruns at a fixed thread count), off on CUDA (speed)")
    channels_last: bool = _f(True, "channels-last memory format for the network and its inputs (same maths; "
                             "~1.2x faster CE and ~1.3x faster LA-Net steps on a 2-core CPU at 48 px)")
    log_every: int = _f(20, "progress bar refresh interval in steps")
    checkpoint: bool = _f(True, "write RUN_DIR/checkpoint.pt every epoch (atomically)")
    precise_bn: int = _f(0, "before each evaluation, recompute BatchNorm statistics over this many training images "
                         "(seeded shuffle, no augmentation; precise BN) and log the running-statistics accuracy as "
                         "test_accuracy_running_bn; 0 = off (the running averages)")
    running_bn_test: bool = _f(True, "with train.precise_bn on, also evaluate test with the running averages "
                               "(test_accuracy_running_bn): one more test pass per epoch, a diagnostic that changes "
                               "no other number")


@dataclass
class MethodConfig:
    name: str = _f("baseline", "training method, by registered name (lanet lists them)")
    params: dict = _f({}, "method hyperparameters, overriding the method's defaults (e.g. method.params.K=8)")


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    noise: NoiseConfig = field(default_factory=NoiseConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    method: MethodConfig = field(default_factory=MethodConfig)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def save(self, path: str | Path) -> None:
        """Write the configuration as YAML, atomically (a reader never sees half a file)."""
        from .fileutil import atomic_open

        with atomic_open(path, "w") as fh:
            fh.write(yaml.safe_dump(self.to_dict(), sort_keys=False))


def _coerce(value: Any, like: Any, key: str) -> Any:
    """Convert a YAML/CLI value to the type of the field's default."""
    if isinstance(value, str) and not isinstance(like, str):
        try:
            value = yaml_load(value)
        except yaml.YAMLError as exc:
            raise LanetError(f"cannot parse value for {key}: {value!r}") from exc
    if isinstance(value, str) and isinstance(like, (int, float)) and not isinstance(like, bool):
        try:  # a numeric string from a YAML file or the Python API ("1e-4", "inf")
            value = float(value)
        except ValueError:
            pass
    if isinstance(like, bool):
        if not isinstance(value, bool):
            raise LanetError(f"{key} must be true or false, got {value!r}")
        return value
    if isinstance(like, int) and not isinstance(like, bool):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if not isinstance(value, int) or isinstance(value, bool):
            raise LanetError(f"{key} must be an integer, got {value!r}")
        return value
    if isinstance(like, float):
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise LanetError(f"{key} must be a number, got {value!r}")
        return float(value)
    if isinstance(like, str):
        return "" if value is None else str(value)
    if isinstance(like, list):
        if not isinstance(value, list):
            raise LanetError(f"{key} must be a list, got {value!r}")
        return value
    return value


def apply_dict(cfg: Any, data: dict[str, Any], prefix: str = "") -> None:
    """Recursively set fields of dataclass ``cfg`` from nested ``data``; unknown keys are errors."""
    names = {f.name: f for f in fields(cfg)}
    for key, value in data.items():
        full = f"{prefix}{key}"
        if key not in names:
            raise LanetError(f"unknown configuration key {full!r}; known: {', '.join(sorted(names))}")
        current = getattr(cfg, key)
        if is_dataclass(current):
            if not isinstance(value, dict):
                raise LanetError(f"{full} must be a mapping")
            apply_dict(current, value, f"{full}.")
        elif isinstance(current, dict):
            if not isinstance(value, dict):
                raise LanetError(f"{full} must be a mapping")
            current.update(value)
        else:
            setattr(cfg, key, _coerce(value, current, full))


def set_override(cfg: Config, assignment: str) -> None:
    """Apply one ``section.key=value`` override (``method.params.K=12`` reaches into the params dict)."""
    if "=" not in assignment:
        raise LanetError(f"override {assignment!r} must look like section.key=value")
    key, raw = assignment.split("=", 1)
    parts = key.strip().split(".")
    target: Any = cfg
    for i, part in enumerate(parts[:-1]):
        if isinstance(target, dict):
            target = target.setdefault(part, {})
        elif is_dataclass(target) and part in {f.name for f in fields(target)}:
            target = getattr(target, part)
        else:
            raise LanetError(f"unknown configuration key {'.'.join(parts[: i + 1])!r}")
    last = parts[-1]
    if isinstance(target, dict):
        try:
            target[last] = yaml_load(raw) if raw.strip() else ""
        except yaml.YAMLError as exc:
            raise LanetError(f"cannot parse value for {key}: {raw!r}") from exc
        return
    if not is_dataclass(target) or last not in {f.name for f in fields(target)}:
        raise LanetError(f"unknown configuration key {key!r}")
    if is_dataclass(getattr(target, last)):
        keys = ", ".join(f"{key}.{f.name}" for f in fields(getattr(target, last))[:3])
        raise LanetError(f"{key} is a section, not a value; set one of its keys ({keys}, ...; see lanet config)")
    setattr(target, last, _coerce(raw, getattr(target, last), key))


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Defaults, then the YAML file (if any), then ``key=value`` overrides in order."""
    cfg = Config()
    if path:
        p = Path(path)
        if not p.is_file():
            raise LanetError(f"config file not found: {p}")
        try:
            apply_dict(cfg, read_yaml_mapping(p, empty_ok=True))
        except LanetError as exc:
            raise LanetError(exc.args[0] if str(exc).startswith(str(p)) else f"{p}: {exc}") from exc
    for item in overrides or []:
        set_override(cfg, item)
    return cfg


def config_from_dict(data: dict[str, Any]) -> Config:
    cfg = Config()
    apply_dict(cfg, data)
    return cfg


def reference() -> str:
    """Every configuration key with its default and help, for ``--help`` and docs/configuration.md."""
    lines = []
    for sec in fields(Config):
        lines.append(f"{sec.name}:")
        for f in fields(sec.default_factory()):  # type: ignore[misc]
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
            lines.append(f"  {sec.name}.{f.name} = {json.dumps(default)}  # {f.metadata.get('help', '')}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- files
def read_yaml_mapping(path: str | Path, empty_ok: bool = False) -> dict[str, Any]:
    """The mapping in a YAML file; a missing, unreadable, empty (unless ``empty_ok``), malformed or non-mapping
    file is a one-line :class:`LanetError` naming the file (and the line of a syntax error)."""
    from .fileutil import read_text

    p = Path(path)
    try:
        text = read_text(p)
    except FileNotFoundError as exc:
        raise LanetError(f"config file not found: {p}") from exc
    except OSError as exc:
        raise LanetError(f"cannot read {p}: {exc.strerror or exc}") from exc
    try:
        data = yaml_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{p}:{mark.line + 1}" if mark is not None else str(p)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise LanetError(f"{where}: not valid YAML ({problem})") from exc
    if data is None:
        if empty_ok:
            return {}
        raise LanetError(f"{p} is empty")
    if not isinstance(data, dict):
        raise LanetError(f"{p}: top level must be a mapping of sections, got {type(data).__name__}")
    return data


# ---------------------------------------------------------------------------------------------- comparing
#: keys that do not change a run's numbers: a resumed run takes them from the command, a benchmark ignores them
RUN_INDEPENDENT_KEYS: frozenset[str] = frozenset(
    {"train.device", "train.threads", "train.log_every", "data.root", "data.cache_dir"})


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"train": {"lr": 1}}`` -> ``{"train.lr": 1}``; method parameters become ``method.params.NAME``."""
    out: dict[str, Any] = {}
    for k, v in data.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(flatten(v, f"{key}."))
        else:
            out[key] = v
    return out


def explicit_keys(path: str | Path | None, overrides: list[str]) -> set[str]:
    """The keys a YAML file and ``key=value`` overrides set (what a user asked for, as opposed to defaults)."""
    keys = set(flatten(read_yaml_mapping(path, empty_ok=True))) if path else set()
    keys.update(item.split("=", 1)[0].strip() for item in overrides if "=" in item)
    return keys


# ---------------------------------------------------------------------------------------------- validation
def number(key: str, value: Any, integer: bool = False) -> float:
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds):
        raise LanetError(f"{key} must be {'an integer' if integer else 'a number'}, got {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise LanetError(f"{key} must be finite, got {value!r}")
    return value


def _text(x: float) -> str:
    return str(x) if isinstance(x, int) else f"{x:g}"


def at_least(key: str, value: Any, lo: float, integer: bool = True, why: str = "") -> None:
    if number(key, value, integer) < lo:
        raise LanetError(f"{key} must be >= {lo:g}{why}, got {value!r}")


def between(key: str, value: Any, lo: float, hi: float, integer: bool = False, hi_open: bool = False,
            lo_open: bool = False) -> None:
    v = number(key, value, integer)
    if v < lo or v > hi or (lo_open and v == lo) or (hi_open and v == hi):
        raise LanetError(f"{key} must be in {'(' if lo_open else '['}{_text(lo)}, {_text(hi)}"
                         f"{')' if hi_open else ']'}, got {value!r}")


def one_of(key: str, value: Any, choices: Any) -> None:
    if value not in choices:
        raise LanetError(f"{key} must be one of {', '.join(map(str, choices))}; got {value!r}")


IMAGE_SIZE_RANGE = (32, 512)  # data.image_size: smaller loses the face, larger is not a CPU/GPU-sized network
WIDTH_RANGE = (8, 256)  # model.width: 256 is a ResNet-18 of 180 M parameters (4x the standard 64 in each layer)
MAX_SYNTHETIC = 1_000_000  # data.synthetic_size
MAX_SYNTHETIC_BYTES = 8 * 2**30  # the generated images in memory
MAX_SEED = 2**32 - 1
MAX_THREADS = 4096  # train.threads of a saved run (read on another machine); a command's own is <= the cores


def cpu_cores() -> int:
    """The CPU cores this process sees (``os.cpu_count``)."""
    return os.cpu_count() or 1


def check_model_train(cfg: Config, machine: bool = True) -> None:
    """The model and train sections, which need no registry: every value's type and range; the first bad key raises
    a one-line :class:`LanetError` naming it. ``machine``: ``train.threads`` at most this machine's cores (off for a
    saved run's configuration, which another machine may have written). Part of
    :func:`lanet.runconfig.validate_config`, which also checks the data, noise, augment and method sections
    against their registries."""
    m, t = cfg.model, cfg.train
    between("model.dropout", m.dropout, 0.0, 1.0, hi_open=True)
    between("model.width", m.width, *WIDTH_RANGE, integer=True)
    if m.width % 8:
        raise LanetError(f"model.width must be a multiple of 8, got {m.width!r}")

    between("train.epochs", t.epochs, 1, 100_000, integer=True)
    between("train.batch_size", t.batch_size, 1, 1_000_000, integer=True)
    between("train.lr", t.lr, 0.0, 1.0, lo_open=True)  # Adam: 1e-3 is typical, above 1 every run diverges
    between("train.weight_decay", t.weight_decay, 0.0, 1.0)
    between("train.warmup_steps", t.warmup_steps, 0, 10**9, integer=True)
    between("train.seed", t.seed, 0, MAX_SEED, integer=True)
    one_of("train.device", t.device, ("auto", "cpu", "cuda"))
    between("train.eval_batch_size", t.eval_batch_size, 1, 1_000_000, integer=True)
    cores = cpu_cores() if machine else MAX_THREADS
    if number("train.threads", t.threads, integer=True) < 0 or t.threads > cores:
        what = f"the {cores} CPU core(s) this machine has" if machine else "all cores"
        raise LanetError(f"train.threads must be in [0, {cores}] (0 = {what}), got {t.threads!r}")
    one_of("train.deterministic", t.deterministic, ("auto", "on", "off"))
    at_least("train.log_every", t.log_every, 1)
    at_least("train.precise_bn", t.precise_bn, 0, why=" (0 = off)")
    for key in ("amp", "channels_last", "checkpoint"):
        if not isinstance(getattr(t, key), bool):
            raise LanetError(f"train.{key} must be true or false, got {getattr(t, key)!r}")
