"""Table 6's maths: Jensen-Shannon divergences between learned label distributions and human votes."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import LanetError

LN2 = math.log(2.0)


def _kl_rows(p: np.ndarray, m: np.ndarray) -> np.ndarray:
    pos = p > 0
    ratio = np.where(pos, p, 1.0) / np.where(pos, m, 1.0)
    return np.where(pos, p * np.log(ratio), 0.0).sum(-1)


def js_divergence(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Jensen–Shannon divergence (eq. 15, natural log) between the distributions in the last axis of ``p`` and ``q``.

    Rows are normalised to sum to 1 first. ``0 <= JS <= ln 2``; ``JS([1, 0], [0, 1]) = ln 2``.
    """
    p = np.asarray(p, dtype=np.float64)
    q = np.asarray(q, dtype=np.float64)
    if p.shape != q.shape:
        raise ValueError(f"shapes differ: {p.shape} vs {q.shape}")
    if (p < 0).any() or (q < 0).any():
        raise ValueError("distributions must be non-negative")
    p = p / np.maximum(p.sum(-1, keepdims=True), 1e-300)
    q = q / np.maximum(q.sum(-1, keepdims=True), 1e-300)
    m = 0.5 * (p + q)
    return 0.5 * _kl_rows(p, m) + 0.5 * _kl_rows(q, m)


def label_distribution_js(run_dir: str | Path, faceset: Any) -> dict[str, Any]:
    """Mean JS divergences of one LA-Net run's training images against their human vote distributions.

    Reads ``label_distributions.npz`` (``distributions``, ``train_labels``, ``names``) and matches its rows to
    ``faceset``'s training images by name. Images without votes are left out (``images_without_votes``).
    """
    path = Path(run_dir) / "label_distributions.npz"
    if faceset.votes is None:
        raise LanetError(f"dataset {faceset.name!r} has no annotator votes; Table 6 needs them")
    with np.load(path, allow_pickle=False) as z:
        dist, train_labels, names = z["distributions"], z["train_labels"], z["names"]
    train_idx = faceset.indices("train")
    if len(names) == len(dist):
        where = {str(n): int(i) for n, i in zip(faceset.names[train_idx], train_idx)}
        missing = [str(n) for n in names if str(n) not in where]
        if missing:
            raise LanetError(f"{path}: {len(missing)} image names (e.g. {missing[0]!r}) are not training images "
                             f"of {faceset.name}; was the dataset changed since the run?")
        idx = np.array([where[str(n)] for n in names], dtype=np.int64)
    elif len(dist) == len(train_idx):
        idx = train_idx  # no names saved: the training-split order
    else:
        raise LanetError(f"{path}: {len(dist)} distributions for {len(train_idx)} training images and no names")
    c = faceset.num_classes
    if dist.shape[1] != c:
        raise LanetError(f"{path}: {dist.shape[1]} classes, dataset has {c}")
    # rows are normalised before anything is read off them: runs made before the eq. 4 fix saved rows that sum
    # to 0.2-0.4, whose maximum would make the smoothed control far too soft; the raw sums are reported
    dist = np.asarray(dist, dtype=np.float64)
    if (dist < 0).any() or not np.isfinite(dist).all():
        raise LanetError(f"{path}: label distributions hold negative or non-finite values")
    row_sum = dist.sum(1)
    if (row_sum <= 0).any():
        raise LanetError(f"{path}: {int((row_sum <= 0).sum())} label distributions are all zero")
    dist = dist / row_sum[:, None]
    votes = faceset.votes[idx].astype(np.float64)
    has = votes.sum(1) > 0
    human = votes[has] / votes[has].sum(1, keepdims=True)
    eye = np.eye(c)
    js_learned = js_divergence(dist[has], human)
    js_train = js_divergence(eye[np.asarray(train_labels)[has]], human)
    js_dataset = js_divergence(eye[faceset.labels[idx][has]], human)
    # control: the training label smoothed uniformly until its mean confidence equals the learned distributions'
    # (a softer target with no information in it); learned < smoothed means LDE moved mass to the right classes
    mean_max = float(dist[has].max(1).mean()) if has.any() else 1.0
    eps = min(max((1.0 - mean_max) * c / (c - 1), 0.0), 1.0)
    smoothed = (1.0 - eps) * eye[np.asarray(train_labels)[has]] + eps / c
    js_smoothed = js_divergence(smoothed, human)
    return {"js_learned": float(js_learned.mean()), "js_onehot_train": float(js_train.mean()),
            "js_smoothed_train": float(js_smoothed.mean()), "smoothing_epsilon": eps,
            "learned_mean_max": mean_max,
            "saved_row_sum_min": float(row_sum.min()), "saved_row_sum_max": float(row_sum.max()),
            "js_onehot_dataset": float(js_dataset.mean()), "images": int(has.sum()),
            "images_without_votes": int((~has).sum()),
            "train_label_differs_from_dataset": float((np.asarray(train_labels) != faceset.labels[idx]).mean())}
