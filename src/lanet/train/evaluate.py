"""``lanet evaluate RUN_DIR``: re-evaluate a saved run's exported classifiers on its dataset's splits."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..data.loaders import load_faceset
from ..errors import LanetError
from ..models.io import load_classifier
from ..runconfig import read_run_config
from .checkpoint import atomic_write_json
from .trainer import evaluate, make_augment, resolve_device


def evaluate_run(run_dir: str | Path, device: str = "auto", root: str = "", batch_size: int = 256) -> dict[str, Any]:
    """Evaluate ``model_final.pt`` and ``model_val_selected.pt`` (where present) on val and test.

    ``root`` points at the dataset when it has moved since training. Writes RUN_DIR/evaluation.json.
    """
    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise LanetError(f"{run_dir} is not a run directory (config.yaml missing)")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise LanetError(f"--batch-size must be a positive integer, got {batch_size!r}")
    cfg = read_run_config(run_dir)
    if root:
        cfg.data.root = root
    dev = resolve_device(device)
    fs = load_faceset(cfg.data)
    aug = make_augment(cfg, fs)
    results: dict[str, Any] = {}
    for tag in ("final", "val_selected"):
        path = run_dir / f"model_{tag}.pt"
        if not path.is_file():
            continue
        model, meta = load_classifier(path, dev)
        if meta["num_classes"] != fs.num_classes or meta["in_chans"] != fs.channels:
            raise LanetError(f"{path}: a classifier of {meta['num_classes']} classes on {meta['in_chans']} channel(s), "
                             f"but the run's dataset has {fs.num_classes} classes and {fs.channels} channel(s)")
        entry: dict[str, Any] = {"epoch": meta["epoch"] + 1}
        for split in ("val", "test"):
            idx = fs.indices(split)
            if len(idx):
                entry[split] = evaluate(model, fs, idx, aug, dev, batch_size)
        results[tag] = entry
    if not results:
        raise LanetError(f"{run_dir} holds no exported model (model_final.pt); did the run finish?")
    atomic_write_json(results, run_dir / "evaluation.json")
    return results
