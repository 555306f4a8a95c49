"""Loading foreign checkpoints into lanet's backbones by key mapping, shared by :mod:`lanet.models.resnet` and
:mod:`lanet.models.dlib_resnet`: reading a state dict out of a checkpoint file (:func:`read_state_dict`), mapping
its keys onto a model's (:func:`map_state_dict`: ``module.`` and similar prefixes, torchvision trunks saved as
``nn.Sequential``, Caffe stem names; :func:`adapt_input_conv` for another number of input channels) and loading
it (:func:`load_state_dict_into`, :func:`load_pretrained`).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.nn as nn

from ..errors import LanetError

#: Prefixes that wrappers put before parameter names (DataParallel's ``module.``, ...), stripped in any order.
_PREFIXES = ("module.", "model.", "backbone.", "base.", "encoder.", "features.", "net.", "resnet.")
#: Keys that wrap the state dict inside a checkpoint (training scripts save ``{"state_dict": ..., "epoch": ...}``).
_WRAPPERS = ("state_dict", "model_state_dict", "model", "net", "model_state", "network", "module", "weights")
#: ``nn.Sequential(*list(torchvision_resnet.children()))`` numbers the children; FER code often saves the trunk so.
_CHILDREN = {"0": "conv1", "1": "bn1", "4": "layer1", "5": "layer2", "6": "layer3", "7": "layer4", "9": "fc"}


def _normalise_key(key: str) -> str:
    changed = True
    while changed:
        changed = False
        for p in _PREFIXES:
            if key.startswith(p):
                key = key[len(p):]
                changed = True
    head, dot, rest = key.partition(".")
    if dot and head in _CHILDREN:  # "features.4.0.conv1.weight" -> "layer1.0.conv1.weight"
        key = f"{_CHILDREN[head]}.{rest}"
    # Caffe-converted and some FER checkpoints name the stem bn "bn_conv1" or put it in a "stem" Sequential
    key = key.replace("bn_conv1.", "bn1.").replace("stem.0.", "conv1.").replace("stem.1.", "bn1.")
    return key


def adapt_input_conv(weight: torch.Tensor, in_chans: int) -> torch.Tensor:
    """Turn a conv1 weight made for k input channels into one for ``in_chans`` (sum for 3->1, tile 1->3)."""
    k = weight.shape[1]
    if k == in_chans:
        return weight
    if in_chans == 1:
        return weight.sum(1, keepdim=True)
    reps = -(-in_chans // k)
    return weight.repeat(1, reps, 1, 1)[:, :in_chans] * (k / in_chans)


def map_state_dict(model: nn.Module, state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Map a foreign state dict onto ``model``'s keys; returns (mapped, skipped keys with reasons)."""
    own = model.state_dict()
    mapped: dict[str, torch.Tensor] = {}
    skipped: list[str] = []
    for key, value in state.items():
        if not torch.is_tensor(value):
            continue
        k = _normalise_key(key)
        if k not in own:
            skipped.append(f"{key} (no such parameter)")
            continue
        if k == "conv1.weight" and value.ndim == 4:
            value = adapt_input_conv(value, own[k].shape[1])
        if value.shape != own[k].shape:
            skipped.append(f"{key} (shape {tuple(value.shape)} != {tuple(own[k].shape)})")
            continue
        mapped[k] = value
    return mapped, skipped


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The state dict stored in a checkpoint file, unwrapped from ``state_dict`` / ``model`` / ... dicts.

    Loaded with ``torch.load(weights_only=True)``: tensors and plain containers only, never arbitrary objects.
    Raises LanetError when the file is missing, unreadable or holds no tensors."""
    path = Path(path)
    if not path.is_file():
        raise LanetError(f"pretrained checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure is a user error here
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        hint = (" (a pickled model object cannot be loaded safely: save model.state_dict() instead)"
                if "weights_only" in str(exc) or "Unsupported global" in str(exc) else "")
        raise LanetError(f"cannot read pretrained checkpoint {path}: {first}{hint}") from exc
    for _ in range(4):  # wrappers may nest: {"checkpoint": {"state_dict": ...}} is rare, two levels are not
        inner = next((ckpt[k] for k in _WRAPPERS if isinstance(ckpt, dict) and isinstance(ckpt.get(k), dict)), None)
        if inner is None:
            break
        ckpt = inner
    if not isinstance(ckpt, dict) or not any(torch.is_tensor(v) for v in ckpt.values()):
        raise LanetError(f"{path}: expected a state dict (a dict of tensors, possibly under 'state_dict' or 'model')")
    return ckpt


def load_state_dict_into(model: nn.Module, state: dict[str, torch.Tensor], path: str | Path,
                         strict_backbone: bool = True, optional: tuple[str, ...] = ()) -> list[str]:
    """Load ``state`` into ``model`` by key mapping (:func:`map_state_dict`); the classifier ``fc`` is skipped
    when its shape differs (another number of classes), with a one-line message on stderr.

    Raises LanetError (naming ``path``) when ``strict_backbone`` and a backbone tensor is missing; keys ending in
    one of ``optional`` may be missing. Returns the skipped checkpoint keys with reasons."""
    mapped, skipped = map_state_dict(model, state)
    own = model.state_dict()
    missing = [k for k in own if k not in mapped and not k.startswith("fc.")
               and not k.endswith(("num_batches_tracked", *optional))]
    if strict_backbone and missing:
        raise LanetError(f"{path}: checkpoint lacks {len(missing)} backbone tensors, e.g. {missing[:3]}")
    model.load_state_dict(mapped, strict=False)
    theirs = next((v for k, v in state.items() if _normalise_key(k) == "fc.weight" and torch.is_tensor(v)), None)
    if theirs is not None and "fc.weight" in own and "fc.weight" not in mapped:
        print(f"{path}: classifier not loaded ({theirs.shape[0]} classes in the file, the model has "
              f"{own['fc.weight'].shape[0]}): fc starts from random initialisation; {len(mapped)} tensors loaded, "
              f"{len(skipped)} skipped", file=sys.stderr, flush=True)
    return skipped


def load_pretrained(model: nn.Module, path: str | Path, strict_backbone: bool = True) -> list[str]:
    """Load a pretrained checkpoint by key mapping. The classifier is skipped when its shape differs.

    Accepts a raw state dict or one wrapped under ``state_dict`` / ``model_state_dict`` / ``model`` / ``net`` /
    ... (as training scripts save them), with ``module.`` (DataParallel) and similar prefixes, torchvision names
    or a torchvision trunk saved as ``nn.Sequential`` (``features.4.0.conv1.weight``). Raises LanetError when the
    file is missing/unreadable or (``strict_backbone``) when a backbone weight is missing from the checkpoint.
    Returns the list of skipped checkpoint keys.
    """
    return load_state_dict_into(model, read_state_dict(path), path, strict_backbone)
