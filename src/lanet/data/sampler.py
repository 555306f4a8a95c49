"""The order in which one epoch visits the training images: a plain shuffle or progressively balanced sampling.

Progressively balanced sampling (Kang et al., "Decoupling Representation and Classifier for Long-Tailed
Recognition", ICLR 2020, arXiv 2019): at epoch ``e`` of ``E`` class ``c`` is drawn with probability

    p_c(e) = (1 - e / E) * n_c / N + (e / E) * 1 / C

(instance-balanced at the start, moving linearly towards class-balanced); classes without training images
(``n_c = 0``) get probability 0 and the others are renormalised. Then an image is drawn uniformly within the
class, with replacement. Both modes return ``N`` indices, so an epoch has the same number of steps either way.
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

    ``balanced=False``: a seeded permutation of ``0 .. N-1``. ``balanced=True``: ``N`` draws with replacement
    from progressively balanced class probabilities (see the module docstring; ``epoch >= epochs`` counts as
    fully class-balanced). The result depends only on ``(labels, num_classes, epoch, epochs, seed, balanced)``,
    so every process of a distributed run computes the same order.
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
    prob = class_probabilities(labels, num_classes, epoch, epochs)
    by_class = np.argsort(labels, kind="stable")  # indices grouped by class
    counts = np.bincount(labels, minlength=num_classes)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    cls = rng.choice(num_classes, size=n, p=prob)
    within = np.minimum((rng.random(n) * counts[cls]).astype(np.int64), counts[cls] - 1)
    return by_class[starts[cls] + within].astype(np.int64)
