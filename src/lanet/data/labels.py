"""Post-processing shared by every loader: a user's label file, a carved validation split, a per-split limit.

* :func:`apply_label_file` implements ``--labels FILE.csv`` (``data.labels``): a CSV with header
  ``name,label`` whose labels become the training labels of the *training* images it names (a second
  annotation of the same images: real label noise). They are kept in :attr:`FaceSet.file_labels`; the dataset's
  own labels stay in :attr:`FaceSet.labels` as the reference that the noise record and every diagnostic compare
  with (:mod:`lanet.data.noise` records each label the file changed). ``name`` is the image's
  name as the dataset names it (:attr:`FaceSet.names`, e.g. ``fer0000123.png``, ``train_00001.jpg``, the
  path as written in a generic CSV); a bare file name also matches when it is unique in the dataset.
  ``label`` is a canonical class name, an alias (``happy``, ``angry``, ...) or an integer id in the canonical
  order. Rows naming validation or test images are ignored (evaluation labels are never replaced) and
  counted in ``meta["label_file"]["ignored_not_train"]``; rows naming images the loader dropped (e.g. by the
  FERPlus protocol) are counted in ``ignored_dropped``; a name the dataset never listed is an error.
* :func:`unique_rows` / :func:`identical_across_splits`: duplicated rows are removed and counted, an image in
  two splits (by name, or by identical pixels) is an error.
* :func:`carve_val` holds out a seeded, class-stratified fraction of the training images as ``val``.
* :func:`limit_per_split` keeps the first ``limit`` images of each split (smoke tests).
"""

from __future__ import annotations

import csv
import hashlib
import os
from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from ..classes import class_id
from ..errors import LanetError
from ..fileutil import open_text
from .faceset import SPLITS, FaceSet


def read_label_file(path: str | os.PathLike, num_classes: int = 8) -> list[tuple[str, int, int]]:
    """Parse a ``name,label`` CSV into ``(name, class id, line number)`` rows.

    Raises:
        LanetError: missing file, missing header, empty name, unknown class (naming value and line), or a
            name listed twice with different labels.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise LanetError(f"label file not found: {path}")
    rows: list[tuple[str, int, int]] = []
    seen: dict[str, tuple[int, int]] = {}
    with open_text(path) as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        cols = [c.strip().lower() for c in header or []]
        if "name" not in cols or "label" not in cols:
            raise LanetError(f"{path}: the first line must be the header 'name,label', got {header!r}")
        i_name, i_label = cols.index("name"), cols.index("label")
        for line_no, row in enumerate(reader, start=2):
            if not row or all(not c.strip() for c in row):
                continue
            if len(row) <= max(i_name, i_label):
                raise LanetError(f"{path}:{line_no}: expected name,label, got {row!r}")
            name, value = row[i_name].strip(), row[i_label].strip()
            if not name:
                raise LanetError(f"{path}:{line_no}: empty image name")
            try:
                label = class_id(value, num_classes)
            except LanetError as exc:
                raise LanetError(f"{path}:{line_no}: {exc}") from exc
            if name in seen and seen[name][0] != label:
                raise LanetError(f"{path}:{line_no}: {name!r} is listed again (first on line {seen[name][1]}) "
                                 "with a different label")
            seen[name] = (label, line_no)
            rows.append((name, label, line_no))
    return rows


def _name_index(names: np.ndarray) -> tuple[dict[str, list[int]], dict[str, list[int]]]:
    exact: dict[str, list[int]] = {}
    base: dict[str, list[int]] = {}
    for i, n in enumerate(names):
        exact.setdefault(str(n), []).append(i)
        base.setdefault(os.path.basename(str(n)), []).append(i)
    return exact, base


def apply_label_file(faceset: FaceSet, path: str | os.PathLike, allow_missing: bool = False) -> FaceSet:
    """Give the training images named in ``path`` (a ``name,label`` CSV) the file's labels; returns a copy whose
    :attr:`~FaceSet.file_labels` hold them (``labels``, the dataset's own, are unchanged).

    Rows that are not applied are counted in ``meta["label_file"]``: ``ignored_not_train`` (validation or test
    images), ``ignored_dropped`` (images the loader dropped, e.g. FERPlus images whose votes the protocol
    rejects: the loader lists them in ``meta["dropped_names"]``), ``ignored_not_loaded`` (with
    ``allow_missing``: names not in the cut dataset) and ``duplicate_rows`` (a name listed again with the
    same label).

    Args:
        faceset: the dataset (not modified).
        path: the label file.
        allow_missing: ignore names that are not in the dataset (used when the dataset was cut with
            ``limit``); otherwise they are an error.

    Raises:
        LanetError: see :func:`read_label_file`; also a name in no split of the dataset at all (naming it and
            how many others are missing).
    """
    rows = read_label_file(path, faceset.num_classes)
    exact, base = _name_index(faceset.names)
    dropped = {str(n) for n in faceset.meta.get("dropped_names", ())}
    dropped |= {os.path.basename(n) for n in dropped}
    train = faceset.split == SPLITS.index("train")
    labels = faceset.given_labels.copy()
    missing: list[tuple[str, int]] = []
    ignored = ignored_dropped = named = duplicates = 0
    seen: set[str] = set()
    for name, label, line_no in rows:
        if name in seen:
            duplicates += 1  # same label: read_label_file refuses a different one
            continue
        seen.add(name)
        idx = exact.get(name)
        if idx is None:
            idx = base.get(name) if len(base.get(name, ())) == 1 else None
        if idx is None:
            if name in dropped:
                ignored_dropped += 1
            else:
                missing.append((name, line_no))
            continue
        idx_arr = np.asarray(idx)
        on_train = idx_arr[train[idx_arr]]
        ignored += len(idx_arr) - len(on_train)
        named += len(on_train)
        labels[on_train] = label
    if missing and not allow_missing:
        name, line_no = missing[0]
        others = f" and {len(missing) - 1} other name(s)" if len(missing) > 1 else ""
        example = f"; its names look like {str(faceset.names[0])!r}" if len(faceset) else ""
        raise LanetError(f"{path}:{line_no}: image {name!r}{others} not in dataset {faceset.name}{example}")
    changed = int((labels != faceset.labels).sum())
    meta = dict(faceset.meta)
    meta["label_file"] = {
        "path": os.fspath(path),
        "rows": len(rows),
        "applied": named,
        "changed": changed,
        "ignored_not_train": ignored,
        "ignored_dropped": ignored_dropped,
        "ignored_not_loaded": len(missing),
        "duplicate_rows": duplicates,
        "missing": len(missing),
    }
    return replace(faceset, file_labels=labels, meta=meta)


def carve_val(faceset: FaceSet, fraction: float, seed: int = 0) -> FaceSet:
    """Move a seeded, class-stratified ``fraction`` of the training images to the ``val`` split; returns a copy.

    Stratification: the number of val images is ``round(fraction * n_train)``, shared between classes in
    proportion to their training counts (largest-remainder rounding, ties to the lower class id); within a
    class the images are chosen by a permutation from ``numpy.random.default_rng(seed)``. Image order is kept.

    Raises:
        LanetError: ``fraction`` outside ``(0, 1)``, the dataset already has a val split, or the fraction
            would leave val or train empty.
    """
    if fraction <= 0:
        return faceset
    if not 0 < fraction < 1:
        raise LanetError(f"val_fraction must be in (0, 1), got {fraction}")
    if (faceset.split == SPLITS.index("val")).any():
        raise LanetError(f"{faceset.name} already has a val split; val_fraction={fraction} would add to it")
    train = faceset.indices("train")
    n = len(train)
    target = int(round(fraction * n))
    if target < 1 or target >= n:
        raise LanetError(f"val_fraction={fraction} of {n} training images leaves an empty val or train split")
    counts = np.bincount(faceset.labels[train], minlength=faceset.num_classes)
    exact = fraction * counts
    take = np.floor(exact).astype(np.int64)
    order = np.argsort(-(exact - take), kind="stable")
    take[order[: target - int(take.sum())]] += 1
    rng = np.random.default_rng(seed)
    split = faceset.split.copy()
    for c in range(faceset.num_classes):
        members = train[faceset.labels[train] == c]
        if take[c]:
            split[rng.permutation(members)[: take[c]]] = SPLITS.index("val")
    meta = dict(faceset.meta)
    meta["val_carved"] = {"fraction": fraction, "seed": seed, "count": target}
    file_labels = faceset.file_labels
    if file_labels is not None:  # a label file relabels training images only: val keeps the dataset's labels
        file_labels = np.where(split == SPLITS.index("val"), faceset.labels, file_labels)
    return replace(faceset, split=split, meta=meta, file_labels=file_labels)


def limit_per_split(faceset: FaceSet, limit: int) -> FaceSet:
    """Keep the first ``limit`` images of each split (in dataset order); ``limit <= 0`` keeps everything."""
    if limit <= 0:
        return faceset
    keep = np.zeros(len(faceset), dtype=bool)
    for s in range(len(SPLITS)):
        keep[np.flatnonzero(faceset.split == s)[:limit]] = True
    if keep.all():
        return faceset
    out = faceset.subset(np.flatnonzero(keep))
    out.meta["limit"] = limit
    return out


def limit_train(faceset: FaceSet, limit: int) -> FaceSet:
    """Keep the first ``limit`` training images (dataset order) and every val/test image; ``limit <= 0`` keeps all."""
    is_train = faceset.split == SPLITS.index("train")
    if limit <= 0 or is_train.sum() <= limit:
        return faceset
    out = faceset.subset(np.flatnonzero(first_per_split(faceset.split, limit) | ~is_train))
    out.meta["train_limit"] = limit
    return out


def first_per_split(split: np.ndarray, limit: int) -> np.ndarray:
    """Boolean mask of the first ``limit`` entries of each split value (all True when ``limit <= 0``)."""
    split = np.asarray(split)
    if limit <= 0:
        return np.ones(len(split), dtype=bool)
    keep = np.zeros(len(split), dtype=bool)
    for s in np.unique(split):
        keep[np.flatnonzero(split == s)[:limit]] = True
    return keep


def unique_rows(keys: Sequence[str], split: Sequence[int], where: Sequence[str],
                labels: Sequence[int] | None = None, what: str = "image") -> tuple[np.ndarray, int]:
    """Indices of the first row of every key (an image's path or name), and how many repeats were removed.

    A repeat in the same split with the same label (or ``labels`` None) is a duplicated row: removed, counted.
    A repeat in another split is leakage (the same image trained on and evaluated on) and one with another
    label a contradiction: both are :class:`LanetError` s naming the two rows (``where``: ``file:line``).
    """
    first: dict[str, int] = {}
    keep: list[int] = []
    for i, key in enumerate(keys):
        j = first.setdefault(key, i)
        if j == i:
            keep.append(i)
            continue
        if split[i] != split[j]:
            raise LanetError(f"{where[i]}: {what} {key!r} is in the {SPLITS[split[i]]} split here and in the "
                             f"{SPLITS[split[j]]} split at {where[j]}; an image in two splits leaks evaluation "
                             "images into training")
        if labels is not None and labels[i] != labels[j]:
            raise LanetError(f"{where[i]}: {what} {key!r} is listed again (first at {where[j]}) with another label")
    return np.asarray(keep, dtype=np.int64), len(keys) - len(keep)


def identical_across_splits(images: np.ndarray, split: np.ndarray, names: Sequence[str], source: str) -> None:
    """Raise :class:`LanetError` when two files hold the same pixels and one is a training image while the other
    is a validation or test image (a copy under another name leaks evaluation images into training)."""
    train = SPLITS.index("train")
    seen: dict[bytes, int] = {}
    for i in np.flatnonzero(split == train):
        seen.setdefault(hashlib.blake2b(images[i].tobytes(), digest_size=16).digest(), int(i))
    for i in np.flatnonzero(split != train):
        j = seen.get(hashlib.blake2b(images[i].tobytes(), digest_size=16).digest())
        if j is not None and np.array_equal(images[i], images[j]):
            raise LanetError(f"{source}: {names[i]!r} ({SPLITS[split[i]]}) has the same pixels as the training image "
                             f"{names[j]!r}; an image in two splits leaks evaluation images into training")
