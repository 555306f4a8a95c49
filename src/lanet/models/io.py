"""Load an exported classifier (``model_final.pt`` / ``model_val_selected.pt`` of a run directory)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..errors import LanetError
from ..fileutil import load_torch_file
from .factory import create_model


def load_classifier(path: str | Path, device: str | torch.device = "cpu") -> tuple[torch.nn.Module, dict[str, Any]]:
    """Return (model in eval mode, payload metadata without the weights).

    Most methods export a plain ResNet; a method whose inference path is its own module (``module: method``
    in the payload, e.g. RUL's mean head) is rebuilt through the method registry.
    """
    path = Path(path)
    if not path.is_file():
        raise LanetError(f"model file not found: {path}")
    payload = load_torch_file(path, "lanet model file")
    if not isinstance(payload, dict) or payload.get("format") != "lanet-classifier-v1":
        what = f"format {payload.get('format')!r}" if isinstance(payload, dict) and "format" in payload else \
            "a plain state dict or another tool's checkpoint" if isinstance(payload, dict) else type(payload).__name__
        raise LanetError(f"{path} is not an exported lanet classifier ({what}); use model_final.pt or "
                         "model_val_selected.pt from a lanet run directory")
    from ..validate import check_model_meta

    payload = check_model_meta(payload, path)
    if not isinstance(payload.get("arch"), str):
        raise LanetError(f"{path}: arch must be an architecture name, got {payload.get('arch')!r}")
    if not isinstance(payload.get("state_dict"), dict):
        raise LanetError(f"{path}: state_dict must be a mapping of tensors")
    width = payload.get("width", 64)
    if payload.get("module", "resnet") not in ("resnet", "method"):
        raise LanetError(f"{path}: module must be resnet or method, got {payload.get('module')!r}")
    if payload.get("module", "resnet") == "method":
        import numpy as np

        from ..methods.base import MethodSpec
        from ..methods.registry import get_method_class

        spec = MethodSpec(num_classes=payload["num_classes"], num_train=1, in_chans=payload["in_chans"],
                          image_size=payload["image_size"], num_landmarks=0, arch=payload["arch"], pretrained="",
                          dropout=0.0, epochs=1, width=width, train_labels=np.zeros(1, dtype=np.int64))
        model: torch.nn.Module = get_method_class(payload["method"])(spec, payload.get("method_params") or {}).export()
    else:
        model = create_model(payload["arch"], payload["num_classes"], payload["in_chans"], width=width)
    try:
        model.load_state_dict(payload["state_dict"])
    except (RuntimeError, TypeError, ValueError, AttributeError) as exc:
        raise LanetError(f"{path}: weights do not fit the {payload.get('method', 'resnet')} classifier: "
                         f"{str(exc).splitlines()[0]}") from exc
    meta = {k: v for k, v in payload.items() if k != "state_dict"}
    return model.to(device).eval(), meta
