"""The order in which one epoch visits the training images: a plain shuffle or progressively balanced sampling.

Progressively balanced sampling (Kang et al., "Decoupling Representation and Classifier for Long-Tailed
Recognition", ICLR 2020, arXiv 2019): at epoch ``e`` of ``E`` class ``c`` is drawn with probability

    p_c(e) = (1 - e / E) * n_c / N + (e / E) * 1 / C

(instance-balanced at the start, moving linearly towards class-balanced); classes without training images
(``n_c = 0``) get probability 0 and the others are renormalised.

Counts are exact, as in the LA-Net authors' release: class ``c`` gets ``m_c = round(p_c(e) * N)`` slots of the
epoch (largest-remainder rounding, so they sum to ``N``). Within a class, images are taken without replacement
from a shuffled cycle that continues across epochs: every image of a class is visited once before any is
visited twice. So epoch 0 (``p = n_c / N``) visits every image exactly once, and in later epochs a majority class
whose ``m_c < n_c`` resumes where the previous epoch stopped, so no image's per-sample state (LA-Net's EMA
memory) goes stale for more than about ``n_c / m_c`` epochs. (Drawing with replacement, as before, left about a
third of the images unseen in each epoch.) Both modes return ``N`` indices, so an epoch has the same number of
steps either way.
"""

from __future__ import annotations

import numpy as np

from ..errors import LanetError


def class_probabilities(labels: np.ndarray, num_classes: int, epoch: int, epochs: int) -> np.ndarray:
    """``num_classes`` probabilities of progressively balanced sampling at ``epoch`` (0-based) of ``epochs``."""
    labels = np.asarray(labels, dtype=np.int64)
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
    t = min(1.0, epoch / epochs)
    prob = (1 - t) * counts / max(counts.sum(), 1.0) + t / num_classes
    prob[counts == 0] = 0.0  # absent classes cannot be drawn; the rest renormalised
    total = prob.sum()
    return prob / total if total > 0 else prob


def epoch_order(labels: np.ndarray, num_classes: int, epoch: int, epochs: int, seed: int,
                balanced: bool) -> np.ndarray:
    """Indices (into ``labels``) of the ``N = len(labels)`` images visited in ``epoch`` (0-based) of ``epochs``.

    ``balanced=False``: a seeded permutation of ``0 .. N-1``. ``balanced=True``: exact progressively balanced
    class counts, images taken from per-class cycles without replacement (see the module docstring; ``epoch >=
    epochs`` counts as fully class-balanced). The result depends only on ``(labels, num_classes, epoch, epochs,
    seed, balanced)``, so every process of a distributed run computes the same order.
    """
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise LanetError(f"labels must be one-dimensional, got shape {labels.shape}")
    labels = labels.astype(np.int64)
    if epochs < 1 or epoch < 0:
        raise LanetError(f"epoch must be >= 0 and epochs >= 1, got epoch {epoch} of {epochs}")
    if num_classes < 1:
        raise LanetError(f"num_classes must be positive, got {num_classes}")
    n = len(labels)
    if n and (labels.min() < 0 or labels.max() >= num_classes):
        raise LanetError(f"labels must lie in 0..{num_classes - 1}")
    rng = np.random.default_rng(np.random.SeedSequence([int(seed) % 2**63, int(epoch), int(balanced)]))
    if not balanced or n == 0:
        return rng.permutation(n).astype(np.int64)
    return _balanced_order(labels, num_classes, epoch, epochs, seed, rng)


def class_counts(labels: np.ndarray, num_classes: int, epoch: int, epochs: int) -> np.ndarray:
    """Exact number of slots per class in ``epoch``: ``p_c(e) * N`` rounded by largest remainder (sums to N)."""
    n = len(labels)
    want = class_probabilities(labels, num_classes, epoch, epochs) * n
    counts = np.floor(want).astype(np.int64)
    short = n - int(counts.sum())
    if short > 0:  # the largest remainders get one more (ties: lower class id), never an absent class
        order = np.lexsort((np.arange(num_classes), -(want - counts)))
        counts[order[:short]] += 1
    return counts


def _balanced_order(labels: np.ndarray, num_classes: int, epoch: int, epochs: int, seed: int,
                    rng: np.random.Generator) -> np.ndarray:
    n_per_class = np.bincount(labels, minlength=num_classes)
    # position of this epoch in each class's endless cycle: the slots all earlier epochs took
    start = np.zeros(num_classes, dtype=np.int64)
    for e in range(epoch):
        start += class_counts(labels, num_classes, e, epochs)
    take = class_counts(labels, num_classes, epoch, epochs)
    picks = []
    for c in range(num_classes):
        if take[c] == 0 or n_per_class[c] == 0:
            continue
        members = np.flatnonzero(labels == c)
        first, last = start[c] // n_per_class[c], (start[c] + take[c] - 1) // n_per_class[c]
        # cycle k of class c is a permutation seeded by (seed, class, k): the same on every process and resume
        cycles = [members[np.random.default_rng(np.random.SeedSequence([int(seed) % 2**63, 7919, c, k]))
                          .permutation(len(members))] for k in range(first, last + 1)]
        offset = start[c] - first * n_per_class[c]
        picks.append(np.concatenate(cycles)[offset:offset + take[c]])
    order = np.concatenate(picks) if picks else np.zeros(0, dtype=np.int64)
    return order[rng.permutation(len(order))].astype(np.int64)
