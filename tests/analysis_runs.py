"""Tiny finished runs for the report and audit tests, trained once per test session (seconds on one thread).

``lanet``: LA-Net (saves label_distributions.npz); ``baseline``: CE; both with 30% symmetric noise on 240
synthetic faces (which carry simulated annotator votes). ``clean``: CE on the dataset's own labels, 1 epoch.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from helpers import tiny_config

from lanet.train.trainer import train

_RUNS: dict[str, Path] = {}


def tiny_runs(tmp_path_factory) -> dict[str, Path]:
    if not _RUNS:
        root = tmp_path_factory.mktemp("analysis_runs")
        specs = (("lanet", "lanet", 2, "symmetric"), ("baseline", "baseline", 2, "symmetric"),
                 ("clean", "baseline", 1, "none"))
        for name, method, epochs, noise in specs:
            cfg = tiny_config(method, epochs=epochs, size=240, width=8)
            if noise == "none":
                cfg.noise.type, cfg.noise.rate = "none", 0.0
            train(cfg, root / name, progress=False)
            _RUNS[name] = root / name
    return _RUNS


def copy_run(src: Path, dst: Path, drop: tuple[str, ...] = ()) -> Path:
    """A copy of the run directory ``src`` without the files named in ``drop``."""
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns(".lock", "checkpoint.pt", *drop))
    return dst
