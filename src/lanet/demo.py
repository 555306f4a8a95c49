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
from .train.checkpoint import atomic_write_json
from .train.trainer import train

DEMO_METHODS = ("baseline", "lanet")


#: CPU threads of the demo: fixed, because the thread count changes how CPU kernels split their sums (and so the
#: last bits of every step, which training amplifies); torch's default is every core, which varies by machine.
DEMO_THREADS = 2


def demo_config(method: str, epochs: int, size: int, device: str, threads: int = DEMO_THREADS) -> Config:
    cfg = Config()
    cfg.data.name = "synthetic"
    cfg.data.synthetic_size = size
    cfg.data.image_size = 48
    cfg.model.width = 32  # ResNet-18 layout at half width: about 4x cheaper, so the demo fits a laptop CPU
    cfg.noise.type, cfg.noise.rate = "symmetric", 0.3
    cfg.train.epochs = epochs
    cfg.train.batch_size = 64
    cfg.train.lr = 1e-3
    cfg.train.device = device
    cfg.train.threads = threads
    cfg.train.eval_batch_size = 500
    cfg.method.name = method
    return cfg


def run_demo(out: str | Path = "runs/demo", methods: list[str] | None = None, epochs: int = 0, size: int = 0,
             device: str = "auto", progress: bool = True, threads: int = DEMO_THREADS) -> dict[str, Any]:
    """Train each method on the same noisy synthetic data; write OUT/summary.json; print a comparison.

    The numbers are bit-identical on reruns with the same torch build, thread count (``threads``, fixed at 2
    by default) and CPU instruction set (``environment`` in the summary records all three; see the README's
    "Reproducibility" section for what else they depend on)."""
    out = Path(out)
    names = methods or [m for m in DEMO_METHODS if m in available()]
    epochs = epochs or 8
    size = size or 6000
    results: dict[str, Any] = {}
    for name in names:
        run_dir = out / name
        t0 = time.time()
        with run_lock(run_dir):  # another demo writing here is an error, not a deleted run
            for old in run_dir.iterdir():  # the demo always starts fresh
                if old.is_dir():
                    shutil.rmtree(old)
                elif old.name != LOCK_NAME:
                    old.unlink()
            s = train(demo_config(name, epochs, size, device, threads), run_dir, progress=progress)
        results[name] = {k: s[k] for k in ("test_accuracy", "test_accuracy_val_selected", "mean_class_accuracy",
                                           "realised_noise_rate", "train_images_per_second", "epochs")}
        results[name]["wall_seconds"] = time.time() - t0
        results[name]["run_dir"] = str(run_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json({"dataset": "synthetic", "size": size, "noise": {"type": "symmetric", "rate": 0.3},
                       "methods": results, "environment": environment()}, out / "summary.json")
    print(f"\nsynthetic faces ({size} images), 30% symmetric label noise, {epochs} epochs; clean test accuracy:")
    print(f"{'method':<12}{'final':>10}{'val-selected':>14}{'mean class':>12}{'img/s':>8}{'wall s':>8}")
    for name, r in results.items():
        sel = r["test_accuracy_val_selected"]
        print(f"{name:<12}{100 * r['test_accuracy']:>9.2f}%{(100 * sel if sel is not None else float('nan')):>13.2f}%"
              f"{100 * r['mean_class_accuracy']:>11.2f}%{r['train_images_per_second']:>8.0f}{r['wall_seconds']:>8.0f}")
    print(f"written {out / 'summary.json'}")
    return json.loads((out / "summary.json").read_text())


def environment() -> dict[str, Any]:
    """What the demo's numbers depend on besides its arguments: torch build, threads, CPU kernels."""
    import os
    import platform

    import torch

    return {"torch": torch.__version__, "threads": torch.get_num_threads(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(), "machine": platform.machine(),
            "env": {k: os.environ[k] for k in ("ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY", "MKL_CBWR",
                                               "OMP_NUM_THREADS") if k in os.environ}}
