"""ResNet-18/50 written for FER inputs from 48x48 to 224x224, grayscale or RGB, with no torchvision.

Layer names follow the common ResNet convention (``conv1``, ``bn1``, ``layer1..4``, ``fc``) so checkpoints
distributed by FER projects (MS-Celeb-1M ResNet-18 and the like) load by key mapping
(:func:`lanet.models.state.load_pretrained`). ``forward_features`` / ``forward_head`` split as in timm.
Models are built by name with :func:`lanet.models.factory.create_model` (also importable from here).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from .state import (  # checkpoint loading, shared with dlib_resnet; these names stay importable from here
    _normalise_key,  # noqa: F401 - re-exported
    adapt_input_conv,  # noqa: F401 - re-exported
    load_pretrained,  # noqa: F401 - re-exported
    load_state_dict_into,  # noqa: F401 - re-exported
    map_state_dict,  # noqa: F401 - re-exported
    read_state_dict,  # noqa: F401 - re-exported
)


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
