"""SCN: Self-Cure Network (Wang, Peng, Yang, Meng & Qiao, "Suppressing Uncertainties for Large-Scale Facial
Expression Recognition", CVPR 2020).

Three modules over one ResNet, all at training time only:

* Self-attention importance weighting: ``a = sigmoid(Linear(F -> 1)(x))`` on the pooled backbone feature ``x``
  (N x F); the classifier's logits are multiplied by ``a`` before cross-entropy (weighted logits).
* Rank regularisation: sort ``a`` in the mini-batch, the top ``beta`` fraction is the high-importance group,
  the rest the low group; ``L_RR = max(0, margin_1 - (mean_high - mean_low))``. Loss = CE + ``rr_weight`` * L_RR.
* Relabelling from epoch ``relabel_epoch`` on: where ``max_c p_c - p_label > margin_2`` the stored training label
  becomes the argmax. The paper restricts this to the low-importance group (default); ``relabel_all=true`` applies
  it to every sample of the batch, as the authors' release does.

Inference is the plain classifier (:meth:`SCN.export` returns the ResNet): importance weights and relabelling
only shape training, as in the paper.

Details decided here (the paper and release leave them open or they differ from this project's trainer):

* Group sizes: ``k_high = int(N * beta)`` (floor, as in the release), clamped to ``1 .. N - 1`` so both groups
  are non-empty; a batch of one sample has no rank regularisation and no relabelling.
* The importance head sees the pooled feature without dropout (the paper's formula; the release's dropout rate
  defaults to 0); ``attention_dropout`` adds dropout before it. ``model.dropout`` still applies before ``fc``.
* Relabelling uses the softmax of the *weighted* logits (what the release computes its loss on) and runs inside
  the training step after the loss is formed, under ``no_grad``: the step's loss uses the labels as they were
  before the step, later epochs see the new ones. Ties are impossible to relabel: ``max - p_label > 0`` only
  when the argmax differs from the stored label.
* ``relabel_epoch`` counts epochs from 1, like the release's loop and this project's logs (``epoch 10/70``):
  relabelling is active when ``batch.epoch + 1 >= relabel_epoch`` (``batch.epoch`` is 0-based).
* The relabelled training labels live in the buffer ``train_labels`` (num_train, initialised from the noisy
  training labels), indexed with ``batch.index``: relabels persist across epochs and through checkpoints and
  ``--resume``. The loss uses this buffer, not ``batch.labels``. Under torchrun the importance groups are formed
  within each process's share of the batch (as the release's single-GPU batch) and the relabels of the global
  batch are gathered so every process keeps the same buffer.
* The release trains with SGD and exponential decay; this project's trainer (Adam, linear decay) is shared by
  every method, so those recipe details are not reproduced.

Diagnostics per epoch: ``relabelled_fraction`` (relabels this epoch / samples seen), ``labels_changed_total``
(fraction of the buffer that differs from the given training labels), ``importance_high`` / ``importance_low``
(mean weight of each group), and, where the dataset's labels are known (diagnostics only), ``relabel_to_clean``
(fraction of this epoch's relabels that moved to the dataset label).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import LanetError
from ..models.factory import create_model
from ..models.resnet import ResNet
from ..train.distributed import all_gather_cat
from .base import Batch, Method, MethodSpec
from .registry import register


def split_groups(weights: torch.Tensor, beta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices of the high-importance group (the ``int(N * beta)`` largest weights, clamped to 1 .. N-1) and of
    the low group (the rest). ``weights``: N importance weights (N >= 2). Returns (high K, low N-K) index tensors."""
    n = weights.shape[0]
    k = min(max(int(n * beta), 1), n - 1)
    order = torch.argsort(weights.detach(), descending=True, stable=True)
    return order[:k], order[k:]


def rank_regularisation(weights: torch.Tensor, beta: float, margin: float) -> torch.Tensor:
    """L_RR = max(0, margin - (mean of the high group - mean of the low group)) for N importance weights;
    0 for N < 2."""
    if weights.shape[0] < 2:
        return weights.sum() * 0.0
    high, low = split_groups(weights, beta)
    return F.relu(margin - (weights[high].mean() - weights[low].mean()))


def relabel_rule(probs: torch.Tensor, labels: torch.Tensor, margin: float,
                 eligible: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """SCN's relabelling: probs N x C, labels N. A sample is relabelled where ``max_c p - p_label > margin`` (and
    ``eligible``, N bool, where given). Returns (new labels N, relabelled mask N bool)."""
    pmax, arg = probs.max(1)
    pgt = probs.gather(1, labels[:, None]).squeeze(1)
    change = (pmax - pgt) > margin
    if eligible is not None:
        change = change & eligible
    return torch.where(change, arg, labels), change


@register
class SCN(Method):
    """Self-Cure Network (CVPR 2020): importance-weighted logits, rank regularisation, relabelling."""

    name = "scn"

    @dataclass
    class Params:
        beta: float = 0.7  # fraction of the batch in the high-importance group
        margin_1: float = 0.15  # rank-regularisation margin
        margin_2: float = 0.2  # relabelling margin
        relabel_epoch: int = 10  # first epoch (counted from 1) with relabelling
        relabel_all: bool = False  # false: low-importance group only (paper); true: whole batch (release)
        rr_weight: float = 1.0  # weight of L_RR (1 in paper and release)
        attention_dropout: float = 0.0  # dropout before the importance head (release option, default off)

    @classmethod
    def check_config(cls, params: Params, cfg: Any) -> None:
        """Rank regularisation splits each batch into a high and a low group: at least 2 images per batch."""
        if cfg.train.batch_size < 2:
            raise LanetError(f"SCN splits each batch into two importance groups: train.batch_size must be >= 2, "
                             f"got {cfg.train.batch_size}")

    def __init__(self, spec: MethodSpec, params: dict | None = None):
        super().__init__(spec, params)
        p = self.params
        if not 0 < p.beta < 1 or p.margin_1 < 0 or p.margin_2 < 0 or not 0 <= p.attention_dropout < 1:
            raise LanetError(f"invalid SCN hyperparameters: {p}")
        if spec.train_labels is None:
            raise LanetError("SCN needs the training labels (MethodSpec.train_labels) for relabelling")
        self.model = create_model(spec.arch, spec.num_classes, spec.in_chans, spec.dropout, spec.pretrained,
                                  spec.width)
        self.attention = nn.Sequential(nn.Dropout(p.attention_dropout) if p.attention_dropout > 0 else nn.Identity(),
                                       nn.Linear(self.model.num_features, 1))
        labels = torch.as_tensor(np.asarray(spec.train_labels), dtype=torch.long)
        if labels.shape != (spec.num_train,):
            raise LanetError(f"SCN: {labels.shape[0]} training labels for {spec.num_train} training images")
        self.register_buffer("train_labels", labels.clone())  # num_train, relabelled in place
        self.register_buffer("given_labels", labels.clone(), persistent=False)  # for the diagnostics only
        self._diag: dict[str, float] = {}

    def weighted_logits(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """images N x C x S x S -> (weighted logits N x num_classes, importance weights N)."""
        feat = self.model.pool(self.model.forward_features(images))  # N x F
        a = torch.sigmoid(self.attention(feat)).squeeze(1)  # N
        return a[:, None] * self.model.forward_head(feat), a

    def forward(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        p = self.params
        logits, a = self.weighted_logits(batch.images)
        labels = self.train_labels[batch.index]  # N, the current (possibly relabelled) labels
        ce = F.cross_entropy(logits, labels)
        rr = rank_regularisation(a, p.beta, p.margin_1)
        loss = ce + p.rr_weight * rr
        with torch.no_grad():
            if len(a) >= 2:
                high, low = split_groups(a, p.beta)
                self._accumulate("importance_high", a[high].mean())
                self._accumulate("importance_low", a[low].mean())
            if batch.epoch + 1 >= p.relabel_epoch and len(a) >= 2:
                self._relabel(logits.detach().float().softmax(1), labels, a, batch)
        return loss, {"ce": ce.detach(), "rr": rr.detach()}

    @torch.no_grad()
    def _relabel(self, probs: torch.Tensor, labels: torch.Tensor, a: torch.Tensor, batch: Batch) -> None:
        eligible = None
        if not self.params.relabel_all:
            eligible = torch.zeros_like(labels, dtype=torch.bool)
            eligible[split_groups(a, self.params.beta)[1]] = True
        new, changed = relabel_rule(probs, labels, self.params.margin_2, eligible)
        self.train_labels[all_gather_cat(batch.index)] = all_gather_cat(new)
        self._add("relabelled", float(changed.sum()), float(len(changed)))
        if batch.clean_labels is not None:
            self._add("relabel_to_clean", float((changed & (new == batch.clean_labels)).sum()), float(changed.sum()))

    # ---------------------------------------------------------------------------------------- reporting
    def _accumulate(self, key: str, value: torch.Tensor) -> None:
        self._add(key, float(value), 1.0)

    def _add(self, key: str, num: float, den: float) -> None:
        self._diag[key] = self._diag.get(key, 0.0) + num
        self._diag[key + "#"] = self._diag.get(key + "#", 0.0) + den

    def epoch_diagnostics(self) -> dict[str, float]:
        out = {k: v / self._diag[k + "#"] for k, v in self._diag.items()
               if not k.endswith("#") and self._diag[k + "#"] > 0}
        if "relabelled" in out:
            out["relabelled_fraction"] = out.pop("relabelled")
        out["labels_changed_total"] = float((self.train_labels != self.given_labels).float().mean())
        self._diag = {}
        return out

    def export(self) -> ResNet:
        return self.model
