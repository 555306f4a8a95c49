"""The presets of ``lanet bench``: the configuration every run of a grid shares, and its default seeds."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import LanetError


@dataclass(frozen=True)
class Preset:
    """The configuration shared by every run of a grid (nested dict applied onto the defaults) and its seeds."""

    name: str
    description: str
    config: dict[str, Any]
    seeds: tuple[int, ...]


PRESETS: dict[str, Preset] = {
    "smoke": Preset(
        "smoke", "seconds on one CPU thread: 300 synthetic faces at 32 px, ResNet-18 at width 16, 1 epoch; "
        "proves the harness end to end (CI runs it through tests/test_bench.py)",
        {"data": {"name": "synthetic", "synthetic_size": 300, "load_size": 32, "image_size": 32},
         "model": {"arch": "resnet18", "width": 16},
         "train": {"epochs": 1, "batch_size": 32, "lr": 1e-3, "threads": 1, "device": "cpu",
                   "eval_batch_size": 256, "log_every": 5}},
        (0, 1)),
    "cpu": Preset(
        "cpu", "a 2-core CPU: all of FERPlus at its native 48 px, ResNet-18 at width 32, batch 64, 5 epochs "
        "(a baseline + LA-Net pair at one noise level in well under 90 minutes)",
        {"data": {"name": "ferplus", "root": "../shared/data/ferplus", "image_size": 48},
         "model": {"arch": "resnet18", "width": 32},
         "train": {"epochs": 5, "batch_size": 64, "lr": 1e-3, "device": "auto", "eval_batch_size": 512}},
        (0,)),
    "cpu-face": Preset(
        "cpu-face", "a 2-core CPU where label noise bites: the first 2,000 FERPlus training images (val and test "
        "complete), dlib's face ResNet (small variant, face-recognition weights, installs offline) at 64 px, "
        "batch 64, Adam 3e-4 decayed linearly to 0, 40 epochs, so cross-entropy peaks and then memorises the "
        "noisy labels (a baseline run about 9 minutes, LA-Net about 15)",
        {"data": {"name": "ferplus", "root": "../shared/data/ferplus", "image_size": 64, "train_limit": 2000},
         "model": {"arch": "dlib_resnet_small", "pretrained": "dlib"},
         "train": {"epochs": 40, "batch_size": 64, "lr": 3e-4, "device": "auto"}},
        (0, 1, 2)),
    "faithful": Preset(
        "faithful", "the paper's recipe where a 2-core CPU allows it, the same for every method: the first 2,000 "
        "FERPlus training images (val and test complete) at their native 48 px, dlib's face ResNet with both 256 "
        "stages unstrided (dlib_resnet_small_os16: a 3 x 3 last map, so EAC's attention maps have area), "
        "progressively balanced sampling, batch 128, Adam 1e-3 reached by a 5-epoch linear warm-up (80 steps; "
        "without it every method starts by predicting one class, and EAC stays there for 18-27 epochs) and then "
        "decayed linearly to 0, 80 epochs; K, omega, tau, "
        "delta, alpha, beta as published; BatchNorm statistics re-estimated on the 2,000 training images before "
        "each evaluation (train.precise_bn: the running averages swing test accuracy by about 5 points an epoch; "
        "the extra test pass that shows it is skipped, train.running_bn_test=false)",
        {"data": {"name": "ferplus", "root": "../shared/data/ferplus", "image_size": 48, "train_limit": 2000},
         "augment": {"balanced": True},
         "model": {"arch": "dlib_resnet_small_os16", "pretrained": "dlib"},
         "train": {"epochs": 80, "batch_size": 128, "lr": 1e-3, "warmup_steps": 80, "device": "auto",
                   "precise_bn": 2000, "running_bn_test": False}},
        (0, 1, 2)),
    "paper": Preset(
        "paper", "the paper's recipe for GPUs: FERPlus at 224 px RGB, ResNet-18 (width 64), batch 128, 80 epochs, "
        "Adam 1e-3 decayed linearly to 0, progressively balanced sampling (set -o model.pretrained=FILE for "
        "MS-Celeb-1M weights)",
        {"data": {"name": "ferplus", "root": "../shared/data/ferplus", "image_size": 224, "channels": 3},
         "augment": {"balanced": True},
         "model": {"arch": "resnet18", "width": 64},
         "train": {"epochs": 80, "batch_size": 128, "lr": 1e-3, "device": "auto", "amp": True,
                   "eval_batch_size": 512}},
        (0, 1, 2)),
}


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise LanetError(f"unknown preset {name!r}; available: {', '.join(PRESETS)}")
    return PRESETS[name]
