"""Checks of values read back from files that ``weights_only`` loading cannot judge: it refuses code, but a
crafted or damaged file can still hold a string where a number belongs, a size that would allocate 160 GB, or an
RNG state of the wrong length. Each check raises a one-line :class:`LanetError` naming the file and the key.

* :func:`check_model_meta`: the metadata of an exported classifier (a ``.pt`` payload, ONNX ``metadata_props``,
  TorchScript ``lanet.json``), before anything is built from it.
* :func:`check_checkpoint`: a training checkpoint, before anything is restored from it.

Configuration values are checked by :func:`lanet.runconfig.validate_config`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from .errors import LanetError

#: Bounds of exported-model metadata (the configuration's own bounds, plus room for stored sizes).
MODEL_IMAGE_SIZE = (32, 512)  # = lanet.config.IMAGE_SIZE_RANGE
MODEL_SOURCE_SIZE = (16, 1024)  # data.load_size range
MODEL_WIDTH = (8, 256)  # = lanet.config.WIDTH_RANGE
MAX_CLASSES = 1000
#: The keys :func:`lanet.train.checkpoint.save_checkpoint` writes and :func:`check_checkpoint` requires.
CHECKPOINT_KEYS = ("method", "optimizer", "epoch", "best_val", "torch_rng")


def _bad(path: str | Path, key: str, want: str, value: Any) -> LanetError:
    shown = repr(value)
    if len(shown) > 60:
        shown = shown[:57] + "..."
    return LanetError(f"{path}: {key} must be {want}, got {shown}")


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _int_in(meta: dict[str, Any], key: str, lo: int, hi: int, path: str | Path) -> None:
    v = meta[key]
    if not is_int(v) or not lo <= v <= hi:
        raise _bad(path, key, f"an integer in [{lo}, {hi}]", v)


def check_model_meta(meta: Any, path: str | Path) -> dict[str, Any]:
    """``meta`` (an exported classifier's metadata) with the crop defaults filled in, once every key a predictor,
    ``lanet export`` or ``lanet evaluate`` reads has the right type and range."""
    from .predict.crop import with_defaults

    if not isinstance(meta, dict):
        raise LanetError(f"{path}: model metadata must be a mapping, got {type(meta).__name__}")
    missing = [k for k in ("class_names", "num_classes", "in_chans", "image_size", "mean", "std") if k not in meta]
    if missing:
        raise LanetError(f"{path}: model metadata lacks {', '.join(missing)}")
    meta = with_defaults(meta)
    _int_in(meta, "num_classes", 2, MAX_CLASSES, path)
    names = meta["class_names"]
    if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) and n for n in names):
        raise _bad(path, "class_names", "a list of class names", names)
    if len(names) != meta["num_classes"]:
        raise LanetError(f"{path}: model metadata names {len(names)} classes for {meta['num_classes']} outputs")
    if meta["in_chans"] not in (1, 3) or not is_int(meta["in_chans"]):
        raise _bad(path, "in_chans", "1 or 3", meta["in_chans"])
    _int_in(meta, "image_size", *MODEL_IMAGE_SIZE, path)
    _int_in(meta, "source_size", *MODEL_SOURCE_SIZE, path)
    for key in ("mean", "std"):
        v = meta[key]
        if (not isinstance(v, (list, tuple)) or len(v) != meta["in_chans"] or not all(is_number(x) for x in v)
                or (key == "std" and min(v) <= 0)):
            want = f"{meta['in_chans']} finite number(s)" + (" > 0" if key == "std" else "")
            raise _bad(path, key, want, v)
    for key, lo, hi in (("crop_margin", 0.0, 1.0), ("crop_offset_y", -1.0, 1.0)):
        v = meta[key]
        if not is_number(v) or not lo <= v <= hi:
            raise _bad(path, key, f"a number in [{lo:g}, {hi:g}]", v)
    if "width" in meta:
        v = meta["width"]
        if not is_int(v) or not MODEL_WIDTH[0] <= v <= MODEL_WIDTH[1] or v % 8:
            raise _bad(path, "width", f"a multiple of 8 in [{MODEL_WIDTH[0]}, {MODEL_WIDTH[1]}]", v)
    for key in ("arch", "method", "module", "format"):
        if key in meta and not isinstance(meta[key], str):
            raise _bad(path, key, "a string", meta[key])
    if "epoch" in meta and (not is_int(meta["epoch"]) or meta["epoch"] < 0):
        raise _bad(path, "epoch", "an integer >= 0", meta["epoch"])
    if "method_params" in meta and meta["method_params"] is not None and not isinstance(meta["method_params"], dict):
        raise _bad(path, "method_params", "a mapping", meta["method_params"])
    return meta


def check_checkpoint(state: Any, path: str | Path) -> dict[str, Any]:
    """``state`` (a loaded training checkpoint), once the values :func:`lanet.train.trainer.restore_checkpoint`
    uses have the right types: epoch, best_val, the method and optimiser states, and the CPU RNG state (a uint8
    tensor of the length this torch uses)."""
    import torch

    missing = [k for k in CHECKPOINT_KEYS if not isinstance(state, dict) or k not in state]
    if missing:
        raise LanetError(f"{path} is not a lanet training checkpoint (missing {', '.join(missing)})")
    if not is_int(state["epoch"]) or state["epoch"] < 0:
        raise _bad(path, "epoch", "an integer >= 0", state["epoch"])
    if not is_number(state["best_val"]) or not -1 <= state["best_val"] <= 1:
        raise _bad(path, "best_val", "a number in [-1, 1]", state["best_val"])
    if not isinstance(state["method"], dict):
        raise _bad(path, "method", "a mapping of tensors", state["method"])
    opt = state["optimizer"]
    if not isinstance(opt, dict) or not isinstance(opt.get("state"), dict) or \
            not isinstance(opt.get("param_groups"), list) or not all(isinstance(g, dict) for g in opt["param_groups"]):
        raise _bad(path, "optimizer", "an optimiser state (a mapping with state and param_groups)", opt)
    rng = state["torch_rng"]
    want = torch.get_rng_state()
    if not isinstance(rng, torch.Tensor) or rng.dtype != want.dtype or rng.shape != want.shape:
        got = f"a {rng.dtype} tensor of shape {tuple(rng.shape)}" if isinstance(rng, torch.Tensor) else \
            type(rng).__name__
        raise LanetError(f"{path}: torch_rng must be a {want.dtype} tensor of shape {tuple(want.shape)} (the CPU "
                         f"random-number state), got {got}")
    return state
