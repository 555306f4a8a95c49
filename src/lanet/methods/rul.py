"""RUL: Relative Uncertainty Learning (Zhang, Wang & Deng, "Relative Uncertainty Learning for Facial Expression
Recognition", NeurIPS 2021).

Two heads on the *un-pooled* last feature map of a ResNet (F x h x w), each BatchNorm2d (no affine) -> dropout
0.4 -> flatten -> Linear(F*h*w -> 64) -> BatchNorm1d(64), give a mean embedding ``mu`` and a log-variance. The
uncertainty of sample i is ``u_i = mean_d exp(logvar_id)``. Each training batch is paired with a random
permutation j of itself and the embeddings are mixed by relative uncertainty::

    w_i = u_i / (u_i + u_j),  w_j = u_j / (u_i + u_j),  z = w_i * mu_i + w_j * mu_j
    L = 0.5 * CE(fc(z), y_i) + 0.5 * CE(fc(z), y_j)          (fc: Linear(64 -> C))

At test time ``fc(mu)`` classifies (no mixing, no uncertainty).

Details decided here:

* The weights follow the uncertainty values as released (the sample with the larger ``u`` gets the larger
  weight), per the project's facts note; the loss halves are fixed at 0.5 as the facts state.
* The permutation comes from a ``torch.Generator`` seeded with ``batch.step`` (deterministic, identical across
  resumes); it is drawn on the CPU and moved to the device. Under torchrun each process mixes its own share.
  A sample may be paired with itself (then z = mu_i and both CE terms use y_i), as with ``torch.randperm``.
* The heads' Linear input size ``F*h*w`` depends on ``data.image_size``: it is measured by a dummy forward of the
  backbone at construction (in eval mode, so no BatchNorm statistics move).
* BatchNorm epsilons are PyTorch's defaults; BatchNorm1d keeps its affine parameters (default), BatchNorm2d has
  none (the facts). ``model.dropout`` is not used: the heads carry their own dropout (``head_dropout``, 0.4).
* The ResNet's own ``fc`` (pooled feature -> classes) is replaced by an identity: RUL never uses it, and unused
  parameters would trouble DistributedDataParallel.
* Per-part learning rates (:meth:`RUL.param_groups`): the backbone at the trainer's ``train.lr``, the two heads and
  the classifier at ``head_lr_mult`` (10) times it, as the release (2e-4 / 2e-3). The trainer's linear decay keeps
  the ratio. The release's SGD/Adam schedule and its Gaussian-noise augmentation are not reproduced (the trainer
  and augmentation are shared by every method).

Export: RUL's inference path is not a plain ResNet classifier. :meth:`RUL.export` returns a
:class:`RULClassifier` (backbone trunk + mu head + fc, sharing the method's weights) whose ``forward(images)``
gives logits; the trainer's evaluation uses it as is. Its state dict (keys ``backbone.*``, ``mu_head.*``,
``fc.*``) does not fit the ResNet that :func:`lanet.models.io.load_classifier` rebuilds, so loading a RUL
``model_final.pt`` with it fails loudly (strict ``load_state_dict``) rather than mis-loading; a loader for these
exports is a change to ``lanet.train.trainer.export_payload`` / ``lanet.models.io`` still to be made.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import LanetError
from ..models.factory import create_model
from ..models.resnet import ResNet
from .base import Batch, Method, MethodSpec
from .registry import register


def uncertainty_head(in_channels: int, spatial: int, dim: int, dropout: float) -> nn.Sequential:
    """BatchNorm2d (no affine) -> dropout -> flatten -> Linear(in_channels*spatial -> dim) -> BatchNorm1d(dim):
    N x in_channels x h x w (h*w = spatial) -> N x dim."""
    return nn.Sequential(nn.BatchNorm2d(in_channels, affine=False), nn.Dropout(dropout), nn.Flatten(1),
                         nn.Linear(in_channels * spatial, dim), nn.BatchNorm1d(dim))


def uncertainty(logvar: torch.Tensor) -> torch.Tensor:
    """u = mean over dims of exp(logvar): N x D -> N."""
    return logvar.exp().mean(1)


def relative_uncertainty_mix(mu: torch.Tensor, logvar: torch.Tensor, perm: torch.Tensor
                             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mix each sample's embedding with its partner ``perm[i]`` by relative uncertainty.

    mu, logvar: N x D; perm: N indices. Returns (z N x D, w_i N, w_j N) with w_i = u_i / (u_i + u_j),
    w_j = u_j / (u_i + u_j) and z = w_i mu_i + w_j mu_{perm[i]}.
    """
    # stable form of u_i / (u_i + u_j): sigmoid(log u_i - log u_j) with log u = logsumexp(logvar) - log D, so
    # the two weights sum to 1 even where exp(logvar) under- or overflows
    log_u = torch.logsumexp(logvar.float(), dim=1) - math.log(logvar.shape[1])  # N
    wi = torch.sigmoid(log_u - log_u[perm])
    wj = 1.0 - wi
    return wi[:, None] * mu + wj[:, None] * mu[perm], wi, wj


def mixed_loss(logits: torch.Tensor, labels: torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
    """0.5 * CE(logits, y_i) + 0.5 * CE(logits, y_perm[i]) for logits N x C of the mixed embeddings."""
    return 0.5 * F.cross_entropy(logits, labels) + 0.5 * F.cross_entropy(logits, labels[perm])


def step_permutation(n: int, step: int) -> torch.Tensor:
    """The pairing of training step ``step``: a random permutation of n from a generator seeded with the step."""
    g = torch.Generator().manual_seed(1_000_003 * 7 + int(step))
    return torch.randperm(n, generator=g)


class RULClassifier(nn.Module):
    """RUL's inference path: ``fc(mu_head(backbone.forward_features(x)))``. images N x C x S x S -> N x classes.

    Holds the method's own modules (weights are shared, not copied)."""

    def __init__(self, backbone: ResNet, mu_head: nn.Module, fc: nn.Linear):
        super().__init__()
        self.backbone = backbone
        self.mu_head = mu_head
        self.fc = fc

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.fc(self.mu_head(self.backbone.forward_features(images)))


@register
class RUL(Method):
    """Relative Uncertainty Learning (NeurIPS 2021): uncertainty-weighted feature mixing between pairs."""

    name = "rul"

    @dataclass
    class Params:
        embed_dim: int = 64  # size of mu / logvar
        head_dropout: float = 0.4  # dropout inside both heads
        head_lr_mult: float = 10.0  # learning rate of heads and classifier / backbone learning rate

    def __init__(self, spec: MethodSpec, params: dict | None = None):
        super().__init__(spec, params)
        p = self.params
        if p.embed_dim < 1 or not 0 <= p.head_dropout < 1 or p.head_lr_mult <= 0:
            raise LanetError(f"invalid RUL hyperparameters: {p}")
        backbone = create_model(spec.arch, spec.num_classes, spec.in_chans, 0.0, spec.pretrained, spec.width)
        backbone.fc = nn.Identity()  # type: ignore[assignment]  # unused by RUL
        backbone.eval()
        with torch.no_grad():
            fmap = backbone.forward_features(torch.zeros(1, spec.in_chans, spec.image_size, spec.image_size))
        backbone.train()
        channels, spatial = fmap.shape[1], fmap.shape[2] * fmap.shape[3]  # F, h*w
        self.backbone = backbone
        self.mu_head = uncertainty_head(channels, spatial, p.embed_dim, p.head_dropout)
        self.logvar_head = uncertainty_head(channels, spatial, p.embed_dim, p.head_dropout)
        self.fc = nn.Linear(p.embed_dim, spec.num_classes)

    def embed(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """images N x C x S x S -> (mu N x D, logvar N x D)."""
        fmap = self.backbone.forward_features(images)  # N x F x h x w
        return self.mu_head(fmap), self.logvar_head(fmap)

    def forward(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        mu, logvar = self.embed(batch.images)
        perm = step_permutation(len(mu), batch.step).to(mu.device)
        z, wi, _ = relative_uncertainty_mix(mu.float(), logvar.float(), perm)
        loss = mixed_loss(self.fc(z), batch.labels, perm)
        with torch.no_grad():
            u = uncertainty(logvar.float())
            logs = {"ce_mixed": loss.detach(), "uncertainty": u.mean(), "mix_weight_self": wi.mean()}
        return loss, logs

    def export(self) -> RULClassifier:  # type: ignore[override]  # not a ResNet: see the module docstring
        # built on demand around the method's own modules, so the method's state dict holds each weight once
        return RULClassifier(self.backbone, self.mu_head, self.fc)

    def param_groups(self, lr: float) -> list[dict[str, Any]]:
        """Backbone at ``lr``; mu/logvar heads and the classifier at ``head_lr_mult * lr``."""
        heads = [*self.mu_head.parameters(), *self.logvar_head.parameters(), *self.fc.parameters()]
        return [{"params": [q for q in self.backbone.parameters() if q.requires_grad], "lr": lr},
                {"params": [q for q in heads if q.requires_grad], "lr": lr * self.params.head_lr_mult}]
