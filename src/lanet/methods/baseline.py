"""Baseline: a ResNet trained with plain cross-entropy on the (possibly noisy) labels (LA-Net Table 2, row 1)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..models.factory import create_model
from ..models.resnet import ResNet
from .base import Batch, Method, MethodSpec
from .registry import register


@register
class Baseline(Method):
    """Cross-entropy on the given (possibly noisy) labels: the row every table compares against."""

    name = "baseline"

    @dataclass
    class Params:
        label_smoothing: float = 0.0

    def __init__(self, spec: MethodSpec, params: dict | None = None):
        super().__init__(spec, params)
        self.model = create_model(spec.arch, spec.num_classes, spec.in_chans, spec.dropout, spec.pretrained,
                                  spec.width)

    def forward(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        logits = self.model(batch.images)  # N x C
        loss = F.cross_entropy(logits, batch.labels, label_smoothing=self.params.label_smoothing)
        return loss, {"ce": loss.detach()}

    def export(self) -> ResNet:
        return self.model
