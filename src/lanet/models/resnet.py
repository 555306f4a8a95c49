"""ResNet-18/50 written for FER inputs from 48x48 to 224x224, grayscale or RGB, with no torchvision.

Layer names follow the common ResNet convention (``conv1``, ``bn1``, ``layer1..4``, ``fc``) so checkpoints
distributed by FER projects (MS-Celeb-1M ResNet-18 and the like) load by key mapping
(:func:`load_pretrained`). ``forward_features`` / ``forward_head`` split as in timm.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import LanetError

if TYPE_CHECKING:
    from .dlib_resnet import DlibResNet


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = F.relu(self.bn1(self.conv1(x)), inplace=True)
        out = self.bn2(self.conv2(out))
        return F.relu(out + identity, inplace=True)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = F.relu(self.bn1(self.conv1(x)), inplace=True)
        out = F.relu(self.bn2(self.conv2(out)), inplace=True)
        out = self.bn3(self.conv3(out))
        return F.relu(out + identity, inplace=True)


def make_layer(block: type, inplanes: int, planes: int, blocks: int, stride: int) -> nn.Sequential:
    downsample = None
    if stride != 1 or inplanes != planes * block.expansion:
        downsample = nn.Sequential(nn.Conv2d(inplanes, planes * block.expansion, 1, stride, bias=False),
                                   nn.BatchNorm2d(planes * block.expansion))
    layers = [block(inplanes, planes, stride, downsample)]
    layers += [block(planes * block.expansion, planes) for _ in range(1, blocks)]
    return nn.Sequential(*layers)


class ResNet(nn.Module):
    """ResNet classifier. ``forward(x)`` gives N x num_classes logits for N x in_chans x H x W input."""

    def __init__(self, block: type, layers: list[int], num_classes: int = 8, in_chans: int = 3,
                 dropout: float = 0.0, width: int = 64):
        super().__init__()
        w, e = width, block.expansion
        self.block = block
        self.layers_cfg = list(layers)
        self.in_chans = in_chans
        self.num_classes = num_classes
        self.width = width
        self.conv1 = nn.Conv2d(in_chans, w, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(w)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = make_layer(block, w, w, layers[0], 1)
        self.layer2 = make_layer(block, w * e, 2 * w, layers[1], 2)
        self.layer3 = make_layer(block, 2 * w * e, 4 * w, layers[2], 2)
        self.layer4 = make_layer(block, 4 * w * e, 8 * w, layers[3], 2)
        self.num_features = 8 * w * e
        self.stage_channels = (w * e, 2 * w * e, 4 * w * e, 8 * w * e)  # outputs of layer1..4
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.fc = nn.Linear(self.num_features, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        # zero-init the last BN of each residual branch: every block starts as identity
        for m in self.modules():
            if isinstance(m, Bottleneck):
                nn.init.zeros_(m.bn3.weight)
            elif isinstance(m, BasicBlock):
                nn.init.zeros_(m.bn2.weight)

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        return self.maxpool(F.relu(self.bn1(self.conv1(x)), inplace=True))  # N x width x H/4 x W/4

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer1(self.stem(x))
        return self.layer4(self.layer3(self.layer2(x)))  # N x F x H/32 x W/32

    def pool(self, fmap: torch.Tensor) -> torch.Tensor:
        return torch.flatten(F.adaptive_avg_pool2d(fmap, 1), 1)  # N x F

    def forward_head(self, feat: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dropout(feat))  # N x num_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.pool(self.forward_features(x)))


ARCHS: dict[str, Callable[..., ResNet]] = {
    "resnet18": lambda **kw: ResNet(BasicBlock, [2, 2, 2, 2], **kw),
    "resnet34": lambda **kw: ResNet(BasicBlock, [3, 4, 6, 3], **kw),
    "resnet50": lambda **kw: ResNet(Bottleneck, [3, 4, 6, 3], **kw),
}


def create_model(arch: str, num_classes: int, in_chans: int, dropout: float = 0.0, pretrained: str = "",
                 width: int = 64) -> ResNet | DlibResNet:
    """Create a backbone + classifier by name; ``pretrained`` is a checkpoint loaded with :func:`load_pretrained`.

    ``width`` is the base channel count of the ResNets (64 for the standard networks; 32 gives a ~4x cheaper
    network of the same depth for laptop-scale runs; pretrained checkpoints need 64). The ``dlib_resnet*``
    architectures (:mod:`lanet.models.dlib_resnet`: dlib's face-recognition ResNet, fixed widths, ``width`` does
    not apply) also take ``pretrained="dlib"``: the weights installed with ``face_recognition_models``."""
    from .dlib_resnet import VARIANTS, create_dlib_resnet  # imported here: dlib_resnet builds on this module

    if arch in VARIANTS:
        return create_dlib_resnet(arch, num_classes, in_chans, dropout, pretrained)
    if arch not in ARCHS:
        raise LanetError(f"unknown architecture {arch!r}; expected one of {', '.join([*ARCHS, *VARIANTS])}")
    if width < 8 or width % 8:
        raise LanetError(f"model.width must be a multiple of 8 and at least 8, got {width}")
    if pretrained == "dlib":
        raise LanetError(f"model.pretrained=dlib is dlib's face-recognition ResNet: it needs --arch dlib_resnet or "
                         f"dlib_resnet_small, not {arch}")
    model = ARCHS[arch](num_classes=num_classes, in_chans=in_chans, dropout=dropout, width=width)
    if pretrained:
        load_pretrained(model, pretrained)
    return model


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
