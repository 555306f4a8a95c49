"""Load an exported classifier (``model_final.pt`` / ``model_val_selected.pt`` of a run directory)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..errors import LanetError
from .resnet import ResNet, create_model


def load_classifier(path: str | Path, device: str | torch.device = "cpu") -> tuple[ResNet, dict[str, Any]]:
    """Return (model in eval mode, payload metadata without the weights)."""
    path = Path(path)
    if not path.is_file():
        raise LanetError(f"model file not found: {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001
        raise LanetError(f"cannot read model file {path}: {exc}") from exc
    if not isinstance(payload, dict) or payload.get("format") != "lanet-classifier-v1":
        raise LanetError(f"{path} is not an exported lanet classifier")
    model = create_model(payload["arch"], payload["num_classes"], payload["in_chans"], width=payload.get("width", 64))
    model.load_state_dict(payload["state_dict"])
    meta = {k: v for k, v in payload.items() if k != "state_dict"}
    return model.to(device).eval(), meta
