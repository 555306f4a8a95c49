"""Atomic writes (a file is either the old complete version or the new complete version, never half) and the
training checkpoint, which holds tensors and plain Python types only so that it loads with
``torch.load(weights_only=True)``: nothing in a run directory can run code."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import LanetError
from ..fileutil import atomic_open, load_torch_file, read_text
from ..validate import CHECKPOINT_KEYS, check_checkpoint  # noqa: F401 - CHECKPOINT_KEYS re-exported


class _WriteRecorder(io.RawIOBase):
    """A file wrapper that remembers the OSError of a failed write: torch turns it (e.g. a full disk) into an
    opaque RuntimeError, and :func:`atomic_torch_save` re-raises the original, which names the reason."""

    def __init__(self, fh: Any) -> None:
        super().__init__()
        self.fh, self.error = fh, None

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        try:
            return self.fh.write(data)
        except OSError as exc:
            self.error = exc
            raise

    def flush(self) -> None:
        self.fh.flush()


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` atomically; a failed write raises the OSError (e.g. ENOSPC) naming ``path``."""
    with atomic_open(path, "wb") as fh:
        rec = _WriteRecorder(fh)
        try:
            torch.save(obj, rec)
        except RuntimeError:
            if rec.error is not None:
                raise rec.error from None
            raise


def atomic_write_text(text: str, path: str | Path) -> None:
    with atomic_open(path, "w") as fh:
        fh.write(text)


def atomic_write_json(obj: Any, path: str | Path) -> None:
    atomic_write_text(json.dumps(obj, indent=2) + "\n", path)


def plain(obj: Any) -> Any:
    """``obj`` with numpy arrays as tensors and numpy scalars as Python numbers (what weights_only loads)."""
    if isinstance(obj, dict):
        return {k: plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(plain(v) for v in obj)
    if isinstance(obj, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(obj))
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def save_checkpoint(path: str | Path, method_state: dict[str, Any], optimizer_state: dict[str, Any], epoch: int,
                    best_val: float) -> None:
    """The state after ``epoch`` (0-based): method, optimiser, torch RNG; tensors and plain types only."""
    atomic_torch_save(plain({"format": "lanet-checkpoint-v1", "method": method_state, "optimizer": optimizer_state,
                             "epoch": int(epoch), "best_val": float(best_val), "torch_rng": torch.get_rng_state()}),
                      path)


def load_checkpoint(path: str | Path, map_location: Any = "cpu") -> dict[str, Any]:
    """Read a checkpoint with ``weights_only=True``; a crafted, truncated or foreign file is a one-line
    :class:`LanetError`, and so is a value of the wrong type (:func:`lanet.validate.check_checkpoint`)."""
    return check_checkpoint(load_torch_file(path, "lanet checkpoint", map_location=map_location), path)


def metrics_by_epoch(path: Path) -> dict[int, dict[str, Any]]:
    """The lines of a run's ``metrics.jsonl`` keyed by their (0-based) epoch; a later line of an epoch wins. A
    damaged last line (a writer killed mid-line by an older version) is dropped; any other bad line is an error."""
    lines = read_text(path).splitlines()
    by_epoch: dict[int, dict[str, Any]] = {}
    for no, text in enumerate(lines, 1):
        if not text.strip():
            continue
        try:
            line = json.loads(text)
            epoch = line["epoch"]
        except (ValueError, KeyError, TypeError) as exc:
            if no == len(lines):
                break
            raise LanetError(f"{path}:{no}: not a metrics line (a JSON object with an epoch)") from exc
        if isinstance(epoch, int):
            by_epoch[epoch] = line
    return by_epoch
