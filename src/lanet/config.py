"""Configuration as plain data: nested dataclasses, loadable from YAML, overridable with ``key=value``.

Every field carries its help text in ``metadata["help"]``; the CLI prints the whole reference from it
(``lanet train --help``), so the documentation cannot drift from the code.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

import yaml

from .errors import LanetError


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
    image_size: int = _f(48, "network input size in pixels (48 .. 224); images are resized on the fly")
    channels: int = _f(0, "1 = grayscale, 3 = RGB, 0 = the dataset's own")
    labels: str = _f("", "CSV (header name,label) whose labels replace the training labels")
    landmarks: str = _f("auto", "auto (ground truth, else cached/extracted with dlib) | none | path to a landmark "
                        "file (.csv name,x0,y0,...; or .npz with names + landmarks)")
    cache_dir: str = _f("", "where decoded images and landmarks are cached (default ~/.cache/lanet)")
    val_fraction: float = _f(0.0, "for datasets without a validation split: fraction of train held out as val")
    limit: int = _f(0, "keep at most this many images per split (0 = all); for smoke tests")
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
                   ">= 103 px) | dlib_resnet_small (48-96 px); dlib_resnet[_small]_affine keep dlib's fixed-statistics "
                   "affine layers instead of BatchNorm")
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
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))


def _coerce(value: Any, like: Any, key: str) -> Any:
    """Convert a YAML/CLI value to the type of the field's default."""
    if isinstance(value, str) and not isinstance(like, str):
        try:
            value = yaml.safe_load(value)
        except yaml.YAMLError as exc:
            raise LanetError(f"cannot parse value for {key}: {value!r}") from exc
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
        target[last] = yaml.safe_load(raw) if raw.strip() else ""
        return
    if not is_dataclass(target) or last not in {f.name for f in fields(target)}:
        raise LanetError(f"unknown configuration key {key!r}")
    setattr(target, last, _coerce(raw, getattr(target, last), key))


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Defaults, then the YAML file (if any), then ``key=value`` overrides in order."""
    cfg = Config()
    if path:
        p = Path(path)
        if not p.is_file():
            raise LanetError(f"config file not found: {p}")
        try:
            data = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as exc:
            raise LanetError(f"{p}: not valid YAML ({exc})") from exc
        if not isinstance(data, dict):
            raise LanetError(f"{p}: top level must be a mapping")
        apply_dict(cfg, data)
    for item in overrides or []:
        set_override(cfg, item)
    return cfg


def config_from_dict(data: dict[str, Any]) -> Config:
    cfg = Config()
    apply_dict(cfg, data)
    return cfg


def reference() -> str:
    """Every configuration key with its default and help, for ``--help`` and the README."""
    lines = []
    for sec in fields(Config):
        lines.append(f"{sec.name}:")
        for f in fields(sec.default_factory()):  # type: ignore[misc]
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
            lines.append(f"  {sec.name}.{f.name} = {json.dumps(default)}  # {f.metadata.get('help', '')}")
    return "\n".join(lines)
