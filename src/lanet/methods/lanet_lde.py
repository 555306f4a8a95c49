"""LA-Net's label distribution estimation (eq. 1-5, the target of L_kl in eq. 7), as pure functions and the
contribution-score network; :class:`lanet.methods.lanet.LANet` wires them to its encoders and memory.

Neighbours by cosine similarity (:func:`knn` in the global batch, :func:`knn_memory` in a memory of the whole
training set), contribution scores (:class:`ContributionScore`), their normalisation into aggregation weights
(:func:`normalised_weights`, eq. 4; :func:`softmax_weights`, a variant), the aggregation (:func:`aggregate`),
target sharpening (:func:`sharpen`, a variant) and the per-sample EMA target (:func:`ema_target`, eq. 5).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import LanetError


class ContributionScore(nn.Module):
    """Pairwise contribution score c_ij of neighbour j to sample i (eq. 3).

    One linear layer whose output halves play g1 (for i) and g2 (for j); the pair is concatenated and passed
    through f: d -> d/2 -> d/4 -> 2 with a softmax whose first output is the score (a two-way sigmoid).
    """

    def __init__(self, dim: int):
        super().__init__()
        if dim % 4:
            raise ValueError(f"feature dimension {dim} must be divisible by 4")
        self.half = dim // 2
        self.g = nn.Linear(dim, dim)
        self.f = nn.Sequential(nn.Linear(dim, dim // 2), nn.ReLU(inplace=True), nn.Linear(dim // 2, dim // 4),
                               nn.ReLU(inplace=True), nn.Linear(dim // 4, 2))

    def forward(self, feat_i: torch.Tensor, feat_all: torch.Tensor, neighbours: torch.Tensor) -> torch.Tensor:
        """feat_i: N x d anchors, feat_all: M x d candidates, neighbours: N x K indices into feat_all -> N x K."""
        g2 = self.g(feat_all)[:, self.half:]  # M x d/2
        return self._score(feat_i, g2[neighbours])

    def score_rows(self, feat_i: torch.Tensor, feat_nb: torch.Tensor) -> torch.Tensor:
        """The same score for neighbours given as rows: feat_i N x d, feat_nb N x K x d -> N x K (used with a
        memory of the whole training set, where projecting every row each step would be wasted)."""
        return self._score(feat_i, self.g(feat_nb)[..., self.half:])

    def _score(self, feat_i: torch.Tensor, g2_nb: torch.Tensor) -> torch.Tensor:
        g1 = self.g(feat_i)[:, : self.half]  # N x d/2
        n, k = g2_nb.shape[:2]
        pair = torch.cat([g1[:, None, :].expand(n, k, self.half), g2_nb], dim=-1)  # N x K x d
        return self.f(pair).softmax(-1)[..., 0]  # N x K



def knn(feat_i: torch.Tensor, feat_all: torch.Tensor, k: int, self_index: torch.Tensor) -> torch.Tensor:
    """Eq. 1-2: indices (N x K) of the K most cosine-similar rows of ``feat_all`` for each row of ``feat_i``,
    the sample itself (``self_index[i]``, its row in ``feat_all``) excluded."""
    a = F.normalize(feat_i.detach().float(), dim=1)
    b = F.normalize(feat_all.detach().float(), dim=1)
    sim = a @ b.T  # N x M
    sim[torch.arange(len(a), device=sim.device), self_index] = -math.inf
    if k > sim.shape[1] - 1:
        raise LanetError(f"K={k} neighbours need a batch of at least {k + 1} images, got {sim.shape[1]}")
    return sim.topk(k, dim=1).indices


def normalised_weights(scores: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Contribution scores N x K -> aggregation weights N x K that sum to exactly 1 per row (eq. 4).

    ``eps / K`` is added to every score before dividing by the row sum, so the weights are a convex combination of
    the K neighbours whatever the scores: ``(c_ik + eps/K) / (sum_k c_ik + eps)``. (The authors' release differs:
    it adds ``eps / B`` over its whole B-image batch mask, the sample itself included, so once the scores collapse
    its target tends to the batch-mean prediction rather than to the mean of the K neighbours.) Dividing by
    ``sum + eps`` alone (without the per-weight eps) lets the weights sum to ``S / (S + eps)``, far below 1 once
    the score networks output tiny scores; the KL term then rewards shrinking the target, the scores collapse to
    ~1e-9 and the label distributions leak their mass. With all scores 0 the weights are uniform (1/K).
    Computed in float32 even under autocast, so the row sums stay within float rounding of 1.
    """
    scores = scores.float()
    k = scores.shape[1]
    w = scores + eps / k
    return w / w.sum(1, keepdim=True)  # N x K, rows sum to 1


def aggregate(scores: torch.Tensor, probs: torch.Tensor, neighbours: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Normalised neighbourhood aggregation, one term of eq. 4: sum_k w_ik p_k with w = normalised c -> N x C."""
    w = normalised_weights(scores, eps)  # N x K
    return (w[..., None] * probs[neighbours].float()).sum(1)  # N x C


def softmax_weights(scores: torch.Tensor, temperature: float) -> torch.Tensor:
    """Variant of eq. 4's normalisation (switch ``score_temperature``): w_ik = softmax_k(c_ik / T), N x K.

    Rows sum to 1 whatever the scores, and equal scores give uniform weights as in eq. 4; unlike c / sum(c) the
    ratio of two weights is exp((c_i - c_j) / T), so scores in (0, 1) can still single out a neighbour after the
    score networks have drifted towards a common value (with T = 0.1 a score gap of 0.3 weighs 20x)."""
    return (scores.float() / temperature).softmax(1)


def sharpen(dist: torch.Tensor, temperature: float) -> torch.Tensor:
    """Target sharpening (switch ``sharpen``): p^(1/T) renormalised per row, N x C; T = 1 leaves p unchanged,
    T < 1 moves mass to the largest entry while keeping its argmax. Computed in log space for stability."""
    if temperature == 1.0:
        return dist
    return F.softmax(dist.clamp(min=1e-12).log() / temperature, dim=1)


def knn_memory(feat_i: torch.Tensor, bank: torch.Tensor, k: int, self_index: torch.Tensor,
               seen: torch.Tensor) -> torch.Tensor:
    """Eq. 1-2 against a memory of the whole training set (switch ``neighbours=memory``): indices N x K into
    ``bank`` (num_train x d) of the K most cosine-similar rows that were ever written (``seen``), the sample's own
    row (``self_index``, training indices) excluded."""
    a = F.normalize(feat_i.detach().float(), dim=1)
    b = F.normalize(bank.float(), dim=1)
    sim = a @ b.T  # N x num_train
    sim = sim.masked_fill(~seen[None, :], -math.inf)
    sim[torch.arange(len(a), device=sim.device), self_index] = -math.inf
    available = int(seen.sum()) - 1
    if k > available:
        raise LanetError(f"K={k} neighbours need at least {k + 1} remembered images, got {available + 1}")
    return sim.topk(k, dim=1).indices


def ema_target(memory: torch.Tensor, current: torch.Tensor, omega: float) -> torch.Tensor:
    """Eq. 5: d^[e] = omega * d^[e-1] + (1 - omega) * d (gradient flows through ``current`` only)."""
    return omega * memory + (1.0 - omega) * current
