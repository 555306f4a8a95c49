"""LA-Net's expression-landmark contrastive loss (eq. 8-13) as pure functions: pseudo-labels from the EMA targets
(:func:`pseudo_labels`, eq. 8), the positive pairs they select (:func:`positive_mask`, eq. 9), the projection
heads (:func:`projection_head`, eq. 10) and one direction of the loss against the other modality's keys and
queue (:func:`el_term`, eq. 11/12). The momentum encoder and the queues live in
:class:`lanet.methods.lanet.LANet`.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn


def projection_head(dim_in: int, dim_out: int) -> nn.Sequential:
    """Two-layer perceptron g of eq. 10 (outputs are L2-normalised by the caller)."""
    return nn.Sequential(nn.Linear(dim_in, dim_in), nn.ReLU(inplace=True), nn.Linear(dim_in, dim_out))


def pseudo_labels(target: torch.Tensor, delta: float, index: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Eq. 8: argmax of the target where its max >= delta; otherwise an id unique to the sample
    (num_classes + its training index), which can equal neither a class id nor another sample's id."""
    conf, arg = target.max(1)
    return torch.where(conf >= delta, arg, num_classes + index)


def positive_mask(anchor_labels: torch.Tensor, key_labels: torch.Tensor) -> torch.Tensor:
    """Eq. 9: N x M bool, True where key j shares anchor i's pseudo-label (i's own view included)."""
    return anchor_labels[:, None] == key_labels[None, :]


def el_term(q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor, anchor_labels: torch.Tensor,
            key_labels: torch.Tensor, queue_labels: torch.Tensor, tau: float, batch_negatives: bool = False
            ) -> torch.Tensor:
    """One of eq. 11/12: queries q (N x D) of one modality against keys k (M x D) of the other modality and
    that modality's queue (Q x D); all rows L2-normalised.

    For anchor i and each positive j (same pseudo-label) the logits are [q_i.k_j, q_i.negatives] / tau with
    the positive at position 0; negatives are the queue entries whose label differs from i's (and, with
    ``batch_negatives``, the in-batch keys whose label differs). The loss is averaged over positives, then
    anchors. Computed in the stable form -s_ij + logaddexp(s_ij, logsumexp(negatives_i)).
    """
    if q.ndim != 2 or k.ndim != 2 or queue.ndim != 2 or q.shape[1] != k.shape[1] or q.shape[1] != queue.shape[1]:
        raise ValueError(f"expected q N x D, k M x D, queue Q x D; got {tuple(q.shape)}, {tuple(k.shape)}, "
                         f"{tuple(queue.shape)}")
    pos = positive_mask(anchor_labels, key_labels)  # N x M
    s_batch = q @ k.T / tau  # N x M
    s_queue = q @ queue.T / tau  # N x Q
    s_queue = s_queue.masked_fill(anchor_labels[:, None] == queue_labels[None, :], -math.inf)
    neg = s_queue
    if batch_negatives:
        neg = torch.cat([s_queue, s_batch.masked_fill(pos, -math.inf)], dim=1)
    lse_neg = torch.logsumexp(neg, dim=1, keepdim=True)  # N x 1 (-inf when no negative survives)
    per_pair = -s_batch + torch.logaddexp(s_batch, lse_neg)  # N x M, -log softmax of the positive
    per_anchor = (per_pair * pos).sum(1) / pos.sum(1).clamp(min=1)
    return per_anchor.mean()
