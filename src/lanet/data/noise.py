"""Label noise for the training split, seeded and recorded.

* ``symmetric``: with probability ``rate`` a training label moves to one of the other C-1 classes, uniformly
  (the protocol of SCN, RUL, EAC and LA-Net's Table 1).
* ``asymmetric``: with probability ``rate`` a label moves to its most confusable class
  (:data:`lanet.classes.ASYMMETRIC_FLIP`, LA-Net's Table 5).
* ``annotator``: real human disagreement. Each training image's label becomes one of its own crowd votes,
  drawn with probability proportional to the vote counts (FERPlus's 10 annotators). ``rate`` is ignored;
  the realised rate is the fraction of training labels that differ from the dataset's own labels.
* ``label_file`` (not a ``noise.type``: it is what ``--labels FILE`` does): a second annotation of the same
  images. Its labels (:attr:`~lanet.data.faceset.FaceSet.file_labels`) are where the training labels start;
  injected noise (any type above) then acts on them. The record names the file and counts its changes apart.

The reference is always the dataset's own labels (``FaceSet.labels``): ``realised_rate`` and ``num_changed``
count the training labels that differ from them, whatever changed them (a label file, injected noise, or
both); :class:`NoiseRecord` keeps the two sources apart (``label_file``, ``injected``). Only training images
are touched; validation and test labels stay as the dataset gives them.

Run-directory files (:func:`save_noise`): ``noise.json`` (the record) and ``noise_changes.csv``, one row per
training image whose label the run changed: ``name,clean,noisy`` (the dataset's label and the label trained on)
and, in runs with a label file, a fourth column ``label_file`` (the file's label, before injected noise).
"""

from __future__ import annotations

import csv
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..classes import ASYMMETRIC_FLIP, CLASSES
from ..errors import LanetError
from ..fileutil import atomic_open, csv_cell
from .faceset import FaceSet

NOISE_TYPES = ("none", "symmetric", "asymmetric", "annotator")


@dataclass
class NoiseRecord:
    """What changed the training labels, against the dataset's own labels.

    ``type``: the injected noise type; ``label_file`` where a label file alone changed them and
    ``label_file+<type>`` where noise was injected on top of one. ``rate``, ``seed``: the injected noise's.
    ``realised_rate``, ``num_changed``: training labels that differ from the dataset's, over ``num_train``.
    ``label_file``: None, or the file (``path``, ``name``) and the labels it changed (``changed``,
    ``realised_rate``). ``injected``: the labels the injected noise changed from the ones it started from
    (``type``, ``changed``, ``realised_rate``).
    """

    type: str
    rate: float
    seed: int
    realised_rate: float
    num_train: int
    num_changed: int
    label_file: dict[str, Any] | None = None
    injected: dict[str, Any] | None = None

    def describe(self) -> str:
        """One line for the console: ``label file F changes 33.0% ...; noise symmetric requested 0.30 ...``."""
        parts = []
        if self.label_file:
            lf = self.label_file
            parts.append(f"label file {lf['name']}: {100 * lf['realised_rate']:.1f}% of the {self.num_train} "
                         "training labels differ from the dataset's")
        kind = self.injected["type"] if self.injected else self.type
        if kind != "none" or not self.label_file:
            injected = self.injected["realised_rate"] if self.injected else self.realised_rate
            parts.append(f"noise {kind} requested {self.rate:.2f} realised {injected:.4f}")
        if self.label_file and kind != "none":
            parts.append(f"together {100 * self.realised_rate:.1f}% differ")
        return "; ".join(parts)


def apply_noise(faceset: FaceSet, kind: str, rate: float, seed: int) -> tuple[np.ndarray, NoiseRecord]:
    """Return (training labels of every image, record). Training starts from ``faceset.given_labels`` (the label
    file's, else the dataset's) and gets ``kind`` noise on the training split; ``faceset`` is left unchanged."""
    if kind not in NOISE_TYPES:
        raise LanetError(f"unknown noise type {kind!r}; expected one of {', '.join(NOISE_TYPES)}")
    if kind in ("symmetric", "asymmetric") and not 0.0 <= rate <= 1.0:
        raise LanetError(f"noise rate must be in [0, 1], got {rate}")
    rng = np.random.default_rng(seed)
    labels = faceset.given_labels.copy()
    train = faceset.indices("train")
    c = faceset.num_classes
    start = labels[train]
    if kind == "symmetric" and rate > 0:
        flip = rng.random(len(train)) < rate
        # adding 1..C-1 modulo C is uniform over the other classes
        offset = rng.integers(1, c, size=len(train))
        labels[train] = np.where(flip, (start + offset) % c, start)
    elif kind == "asymmetric" and rate > 0:
        flip = rng.random(len(train)) < rate
        target = np.array([CLASSES.index(ASYMMETRIC_FLIP[CLASSES[k]]) for k in range(c)])
        if target.max() >= c:
            raise LanetError("asymmetric noise maps a class outside the dataset's classes")
        labels[train] = np.where(flip, target[start], start)
    elif kind == "annotator":
        if faceset.votes is None:
            raise LanetError(f"annotator noise needs per-image votes, and dataset {faceset.name!r} has none")
        votes = faceset.votes[train]  # n x C
        total = votes.sum(1)
        cum = np.cumsum(votes, 1)
        u = rng.random(len(train)) * total
        drawn = (cum <= u[:, None]).sum(1).clip(max=c - 1)
        labels[train] = np.where(total > 0, drawn, start)
    n = max(len(train), 1)
    clean = faceset.labels[train]
    changed = int((labels[train] != clean).sum())
    injected = int((labels[train] != start).sum())
    file_record = injected_record = None
    kind_out = kind
    if faceset.file_labels is not None:
        lf = faceset.meta.get("label_file") or {}
        path = str(lf.get("path", ""))
        by_file = int((start != clean).sum())
        file_record = {"path": path, "name": Path(path).name or "(label file)", "changed": by_file,
                       "realised_rate": by_file / n}
        injected_record = {"type": kind, "changed": injected, "realised_rate": injected / n}
        kind_out = "label_file" if kind == "none" else f"label_file+{kind}"
    record = NoiseRecord(type=kind_out, rate=float(rate), seed=int(seed), realised_rate=changed / n,
                         num_train=len(train), num_changed=changed, label_file=file_record, injected=injected_record)
    return labels, record


def save_noise(run_dir: str | Path, faceset: FaceSet, noisy: np.ndarray, record: NoiseRecord) -> None:
    """Write ``noise.json`` (the record) and ``noise_changes.csv`` (see the module docstring): every training
    image whose label differs from the dataset's, and, with a label file, also those the injected noise moved
    back to the dataset's label (their ``noisy`` equals ``clean``; their ``label_file`` does not)."""
    run_dir = Path(run_dir)
    with atomic_open(run_dir / "noise.json", "w") as fh:
        fh.write(json.dumps(asdict(record), indent=2))
    start = faceset.given_labels
    with_file = faceset.file_labels is not None
    changed = np.flatnonzero((noisy != faceset.labels) | (start != faceset.labels))
    with atomic_open(run_dir / "noise_changes.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["name", "clean", "noisy"] + (["label_file"] if with_file else []))
        for i in changed:
            w.writerow([csv_cell(str(faceset.names[i])), CLASSES[faceset.labels[i]], CLASSES[noisy[i]]]
                       + ([CLASSES[start[i]]] if with_file else []))
