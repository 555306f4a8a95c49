"""Label noise for the training split, seeded and recorded.

* ``symmetric``: with probability ``rate`` a training label moves to one of the other C-1 classes, uniformly
  (the protocol of SCN, RUL, EAC and LA-Net's Table 1).
* ``asymmetric``: with probability ``rate`` a label moves to its most confusable class
  (:data:`lanet.classes.ASYMMETRIC_FLIP`, LA-Net's Table 5).
* ``annotator``: real human disagreement. Each training image's label becomes one of its own crowd votes,
  drawn with probability proportional to the vote counts (FERPlus's 10 annotators). ``rate`` is ignored;
  the realised rate is the fraction of training labels that differ from the dataset's own labels.

Only training images are touched; validation and test labels stay as the dataset gives them.
"""

from __future__ import annotations

import csv
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..classes import ASYMMETRIC_FLIP, CLASSES
from ..errors import LanetError
from ..fileutil import atomic_open, csv_cell
from .faceset import FaceSet

NOISE_TYPES = ("none", "symmetric", "asymmetric", "annotator")


@dataclass
class NoiseRecord:
    type: str
    rate: float
    seed: int
    realised_rate: float
    num_train: int
    num_changed: int


def apply_noise(faceset: FaceSet, kind: str, rate: float, seed: int) -> tuple[np.ndarray, NoiseRecord]:
    """Return (labels with noise on the training split, record). ``faceset.labels`` is left unchanged."""
    if kind not in NOISE_TYPES:
        raise LanetError(f"unknown noise type {kind!r}; expected one of {', '.join(NOISE_TYPES)}")
    if kind in ("symmetric", "asymmetric") and not 0.0 <= rate <= 1.0:
        raise LanetError(f"noise rate must be in [0, 1], got {rate}")
    rng = np.random.default_rng(seed)
    labels = faceset.labels.copy()
    train = faceset.indices("train")
    c = faceset.num_classes
    clean = labels[train]
    if kind == "symmetric" and rate > 0:
        flip = rng.random(len(train)) < rate
        # adding 1..C-1 modulo C is uniform over the other classes
        offset = rng.integers(1, c, size=len(train))
        labels[train] = np.where(flip, (clean + offset) % c, clean)
    elif kind == "asymmetric" and rate > 0:
        flip = rng.random(len(train)) < rate
        target = np.array([CLASSES.index(ASYMMETRIC_FLIP[CLASSES[k]]) for k in range(c)])
        if target.max() >= c:
            raise LanetError("asymmetric noise maps a class outside the dataset's classes")
        labels[train] = np.where(flip, target[clean], clean)
    elif kind == "annotator":
        if faceset.votes is None:
            raise LanetError(f"annotator noise needs per-image votes, and dataset {faceset.name!r} has none")
        votes = faceset.votes[train]  # n x C
        total = votes.sum(1)
        cum = np.cumsum(votes, 1)
        u = rng.random(len(train)) * total
        drawn = (cum <= u[:, None]).sum(1).clip(max=c - 1)
        labels[train] = np.where(total > 0, drawn, clean)
    changed = int((labels[train] != clean).sum())
    record = NoiseRecord(type=kind, rate=float(rate), seed=int(seed),
                         realised_rate=changed / max(len(train), 1), num_train=len(train), num_changed=changed)
    return labels, record


def save_noise(run_dir: str | Path, faceset: FaceSet, noisy: np.ndarray, record: NoiseRecord) -> None:
    """Write ``noise.json`` (summary) and ``noise_changes.csv`` (name, clean, noisy for every changed label)."""
    run_dir = Path(run_dir)
    with atomic_open(run_dir / "noise.json", "w") as fh:
        fh.write(json.dumps(asdict(record), indent=2))
    changed = np.flatnonzero(noisy != faceset.labels)
    with atomic_open(run_dir / "noise_changes.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["name", "clean", "noisy"])
        for i in changed:
            w.writerow([csv_cell(str(faceset.names[i])), CLASSES[faceset.labels[i]], CLASSES[noisy[i]]])
