"""Atomic writes: a file is either the old complete version or the new complete version, never half."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from ..fileutil import atomic_open


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    with atomic_open(path, "wb") as fh:
        torch.save(obj, fh)


def atomic_write_text(text: str, path: str | Path) -> None:
    with atomic_open(path, "w") as fh:
        fh.write(text)


def atomic_write_json(obj: Any, path: str | Path) -> None:
    atomic_write_text(json.dumps(obj, indent=2) + "\n", path)
