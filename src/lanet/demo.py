"""``lanet demo``: the built-in synthetic faces, 30% symmetric label noise, each method trained in turn."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

from .config import Config
from .fileutil import LOCK_NAME, run_lock
from .methods.registry import available
from .train.checkpoint import atomic_write_json, metrics_by_epoch
from .train.trainer import train

DEMO_METHODS = ("baseline", "lanet")


#: CPU threads of the demo: fixed, because the thread count changes how CPU kernels split their sums (and so the
#: last bits of every step, which training amplifies); torch's default is every core, which varies by machine.
DEMO_THREADS = 2


#: The demo's protocol, fixed by argument, not by test accuracy. Label noise only costs cross-entropy (CE) a
#: clear margin once the network can memorise the flipped labels, which needs a model that learns fast and a
#: small training set seen many times: the face-pretrained dlib ResNet (installed with ``lanet[landmarks]``),
#: 1,500 training faces, 30 epochs. Validation (500 faces) and test (1,000 faces) come from the same
#: generator and are never trained on; the curve printed at the end shows CE's peak and fall.
DEMO_SIZE = 5000  # synthetic faces generated (70/10/20 train/val/test), of which ...
DEMO_TRAIN = 1500  # ... the first 1,500 training faces are used
DEMO_EPOCHS = 30


def demo_config(method: str, epochs: int, size: int, device: str, threads: int = DEMO_THREADS,
                train_limit: int = DEMO_TRAIN) -> Config:
    cfg = Config()
    cfg.data.name = "synthetic"
    cfg.data.synthetic_size = size
    cfg.data.train_limit = train_limit
    cfg.data.image_size = 48
    cfg.model.arch = "dlib_resnet_small"  # dlib's face-recognition ResNet: features that transfer to faces
    cfg.model.pretrained = "dlib"
    cfg.noise.type, cfg.noise.rate = "symmetric", 0.3
    cfg.train.epochs = epochs
    cfg.train.batch_size = 64
    cfg.train.lr = 3e-4  # the pretrained network's rate (benchmarks/dlib_backbone.py); 1e-3 erases its features
    cfg.train.device = device
    cfg.train.threads = threads
    cfg.train.eval_batch_size = 500
    cfg.method.name = method
    return cfg


def run_demo(out: str | Path = "runs/demo", methods: list[str] | None = None, epochs: int = 0, size: int = 0,
             device: str = "auto", progress: bool = True, threads: int = DEMO_THREADS,
             train_limit: int = DEMO_TRAIN) -> dict[str, Any]:
    """Train each method on the same noisy synthetic data; write OUT/summary.json; print a comparison.

    The numbers are bit-identical on reruns with the same torch build, thread count (``threads``, fixed at 2
    by default) and CPU instruction set (``environment`` in the summary records all three; see docs/reproducibility.md
    for what else they depend on)."""
    out = Path(out)
    names = methods or [m for m in DEMO_METHODS if m in available()]
    epochs = epochs or DEMO_EPOCHS
    size = size or DEMO_SIZE
    results: dict[str, Any] = {}
    curves: dict[str, dict[int, dict[str, Any]]] = {}
    for name in names:
        run_dir = out / name
        t0 = time.time()
        with run_lock(run_dir):  # another demo writing here is an error, not a deleted run
            for old in run_dir.iterdir():  # the demo always starts fresh
                if old.is_dir():
                    shutil.rmtree(old)
                elif old.name != LOCK_NAME:
                    old.unlink()
            s = train(demo_config(name, epochs, size, device, threads, train_limit), run_dir, progress=progress)
        results[name] = {k: s[k] for k in ("test_accuracy", "test_accuracy_val_selected", "mean_class_accuracy",
                                           "realised_noise_rate", "train_images_per_second", "epochs")}
        curves[name] = metrics_by_epoch(run_dir / "metrics.jsonl")
        peak_epoch = peak_epoch_of(curves[name])
        results[name]["test_accuracy_peak"] = curves[name][peak_epoch]["test_accuracy"]
        results[name]["test_peak_epoch"] = peak_epoch + 1
        results[name]["test_accuracy_by_epoch"] = [curves[name][e]["test_accuracy"] for e in sorted(curves[name])]
        results[name]["wall_seconds"] = time.time() - t0
        results[name]["run_dir"] = str(run_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json({"dataset": "synthetic", "size": size, "train_images": train_limit,
                       "noise": {"type": "symmetric", "rate": 0.3}, "methods": results,
                       "environment": environment()}, out / "summary.json")
    print_curves(curves)
    print(f"\nsynthetic faces ({train_limit} training images), 30% symmetric label noise, {epochs} epochs; "
          "clean test accuracy:")
    print(f"{'method':<12}{'final':>9}{'val-selected':>14}{'peak (epoch)':>15}{'mean class':>12}{'img/s':>7}"
          f"{'wall s':>8}")
    for name, r in results.items():
        sel = r["test_accuracy_val_selected"]
        peak = f"{100 * r['test_accuracy_peak']:.2f}% ({r['test_peak_epoch']})"
        print(f"{name:<12}{100 * r['test_accuracy']:>8.2f}%{(100 * sel if sel is not None else float('nan')):>13.2f}%"
              f"{peak:>15}{100 * r['mean_class_accuracy']:>11.2f}%{r['train_images_per_second']:>7.0f}"
              f"{r['wall_seconds']:>8.0f}")
    print("final: after the last epoch; val-selected: at the epoch of best validation accuracy; peak: the best "
          "test accuracy over epochs (a memorisation diagnostic, chosen on test, never a result)")
    print(f"written {out / 'summary.json'}")
    return json.loads((out / "summary.json").read_text())


def peak_epoch_of(curve: dict[int, dict[str, Any]]) -> int:
    """The epoch (0-based) of a run's best test accuracy."""
    return max(curve, key=lambda e: curve[e]["test_accuracy"])


def print_curves(curves: dict[str, dict[int, dict[str, Any]]]) -> None:
    """Per-epoch clean test accuracy of each method side by side, each method's peak marked with ``*``."""
    names = list(curves)
    epochs = sorted(set().union(*(c.keys() for c in curves.values()))) if curves else []
    peaks = {n: peak_epoch_of(c) for n, c in curves.items() if c}
    print("\nclean test accuracy per epoch (* = the method's peak):")
    print(f"{'epoch':>5}" + "".join(f"{n:>12}" for n in names))
    for e in epochs:
        cells = []
        for n in names:
            line = curves[n].get(e)
            cells.append(f"{100 * line['test_accuracy']:>10.2f}%{'*' if peaks.get(n) == e else ' '}" if line
                         else f"{'-':>12}")
        print(f"{e + 1:>5}" + "".join(cells))


def environment() -> dict[str, Any]:
    """What the demo's numbers depend on besides its arguments: torch build, threads, CPU kernels."""
    import os
    import platform

    import torch

    return {"torch": torch.__version__, "threads": torch.get_num_threads(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(), "machine": platform.machine(),
            "env": {k: os.environ[k] for k in ("ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY", "MKL_CBWR",
                                               "OMP_NUM_THREADS") if k in os.environ}}
