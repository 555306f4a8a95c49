"""FERPlus: FER2013's 48x48 grayscale faces with 10 crowd votes per image (Barsoum et al., 2016).

Two on-disk layouts are read (``root`` is the folder holding them; the folders win when both are present):

(a) prepared folders, as the FERPlus tooling writes them::

        FER2013Train/label.csv + fer0000000.png ...     (FER2013 "Training"    -> train)
        FER2013Valid/label.csv + ...                    (FER2013 "PublicTest"  -> val)
        FER2013Test/label.csv  + ...                    (FER2013 "PrivateTest" -> test)

    ``label.csv`` has no header; each row is ``name,"(x, y, w, h)",<10 vote counts>``. The folders are the
    source of truth for which images exist: a row whose PNG is absent is dropped (``missing_image``). A name
    listed again in its folder is dropped too (``duplicate_name``; the first row wins); a name in two split
    folders is an error (the same image in two splits).

(b) the raw pair ``fer2013.csv`` (``emotion,pixels,Usage``; 2304 space-separated pixel values per row) and
    ``fer2013new.csv`` (``Usage,Image name,<10 vote columns>``, row ``i`` annotates row ``i`` of
    ``fer2013.csv``). Rows with an empty image name were dropped by the FERPlus tooling and are skipped
    (``no_image``). Names come from the ``Image name`` column, exactly as the FERPlus tooling names the PNGs
    it writes: ``fer%07d.png``, which is *not* always the row index (the shipped file drifts from it after
    its first empty row). A name that appears again is skipped (``duplicate_name``; the first row wins,
    as in the prepared folders). The split comes from the ``Usage`` column of ``fer2013new.csv``.

Vote columns, in file order: ``neutral, happiness, surprise, sadness, anger, disgust, fear, contempt,
unknown, NF`` (NF = not a face). They map to the canonical ids of :mod:`lanet.classes` as
neutral->6, happiness->3, surprise->5, sadness->4, anger->0, disgust->1, fear->2, contempt->7; the eight
emotion votes (raw counts) are kept in :attr:`FaceSet.votes` in canonical order.

Label protocols (``protocol``):

* ``paper`` (LA-Net and most FER papers): the column with the most votes over all 10 columns; the image is
  dropped if that is ``unknown`` or ``NF``. **Ties** go to the first maximal column in the file order above
  (neutral, happiness, surprise, ...), i.e. ``numpy.argmax`` over the 10 columns; in particular an emotion
  tied with ``unknown``/``NF`` keeps the image. This reproduces the class counts in the FERPlus README.
* ``majority`` (FERPlus reference code): votes of 1 are removed as outliers (set to 0); the image is kept
  only if its top column holds strictly more than half of the remaining votes (so the top is unique) and
  is not ``unknown``/``NF``.

Images without any vote are dropped (``no_votes``) under both protocols. ``meta["dropped"]`` counts the
dropped images per reason over the whole listing (before ``limit``); ``meta["dropped_names"]`` lists them (a
``--labels`` file naming one is not an error: the row is ignored and counted).
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np

from ..errors import LanetError
from ..fileutil import open_text
from .faceset import SPLITS, FaceSet
from .imageio import array_signature, cached_arrays, content_signature, convert_array, load_images
from .labels import first_per_split, unique_rows

COLUMNS: tuple[str, ...] = ("neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt",
                            "unknown", "NF")
#: FERPlus emotion column -> canonical class id.
TO_CANONICAL = np.array([6, 3, 5, 4, 0, 1, 2, 7], dtype=np.int64)
#: canonical class id -> FERPlus column (``votes10[:, FROM_CANONICAL]`` gives canonical-order votes).
FROM_CANONICAL = np.argsort(TO_CANONICAL)
UNKNOWN, NOT_FACE = 8, 9
SPLIT_FOLDERS: dict[str, str] = {"FER2013Train": "train", "FER2013Valid": "val", "FER2013Test": "test"}
USAGES: dict[str, str] = {"Training": "train", "PublicTest": "val", "PrivateTest": "test",
                          "Valid": "val", "Test": "test"}
PROTOCOLS: tuple[str, ...] = ("paper", "majority")
LAYOUT = ("FER2013Train/, FER2013Valid/, FER2013Test/ each with label.csv + PNGs, "
          "or fer2013.csv + fer2013new.csv")
NATIVE_SIZE = 48
PIXELS = NATIVE_SIZE * NATIVE_SIZE

# reason codes of ferplus_labels
KEPT, DROP_UNKNOWN, DROP_NOT_FACE, DROP_NO_MAJORITY, DROP_NO_VOTES = 0, 1, 2, 3, 4
REASONS: dict[int, str] = {DROP_UNKNOWN: "unknown", DROP_NOT_FACE: "not_face", DROP_NO_MAJORITY: "no_majority",
                           DROP_NO_VOTES: "no_votes"}


def ferplus_labels(votes10: np.ndarray, protocol: str = "paper") -> tuple[np.ndarray, np.ndarray]:
    """Labels from ``N x 10`` FERPlus votes under ``protocol`` (see the module docstring).

    Returns:
        ``(labels, reason)``: canonical class ids (``-1`` where dropped) and the reason code per image
        (:data:`KEPT` or a key of :data:`REASONS`).
    """
    if protocol not in PROTOCOLS:
        raise LanetError(f"unknown FERPlus protocol {protocol!r}; expected one of {', '.join(PROTOCOLS)}")
    v = np.asarray(votes10, dtype=np.float64)
    if v.ndim != 2 or v.shape[1] != len(COLUMNS):
        raise LanetError(f"FERPlus votes must be N x 10, got {v.shape}")
    reason = np.zeros(len(v), dtype=np.int8)
    if protocol == "majority":
        v = np.where(v < 1.0 + 1e-9, 0.0, v)  # FERPlus reference: single votes are outliers
        top = v.argmax(1)
        reason[~(v.max(1) > 0.5 * v.sum(1))] = DROP_NO_MAJORITY
    else:
        top = v.argmax(1)  # first maximal column in file order
    reason[(reason == KEPT) & (top == UNKNOWN)] = DROP_UNKNOWN
    reason[(reason == KEPT) & (top == NOT_FACE)] = DROP_NOT_FACE
    reason[np.asarray(votes10).sum(1) <= 0] = DROP_NO_VOTES
    labels = np.where(reason == KEPT, TO_CANONICAL[np.minimum(top, 7)], -1)
    return labels.astype(np.int64), reason


def _parse_votes(values: list[str], where: str) -> list[float]:
    try:
        votes = [float(x) for x in values]
    except ValueError as exc:
        raise LanetError(f"{where}: vote counts must be numbers, got {values!r}") from exc
    if any(x < 0 for x in votes):
        raise LanetError(f"{where}: negative vote count in {values!r}")
    return votes


def _parse_box(text: str, where: str) -> tuple[float, float, float, float]:
    parts = text.strip().strip("()[]").split(",")
    try:
        box = tuple(float(p) for p in parts)
    except ValueError:
        box = ()
    if len(box) != 4 or box[2] <= 0 or box[3] <= 0:
        raise LanetError(f"{where}: face box must look like \"(x, y, w, h)\", got {text!r}")
    return box  # type: ignore[return-value]


def _parse_rows(
    rows: list[list[str]], path: Path, line_nos: list[int], box_col: int | None
) -> tuple[np.ndarray, np.ndarray]:
    """Vectorised parse of the 10 vote columns (from column 2) and the face boxes; errors name file and line."""
    n = len(rows)
    try:
        votes = np.array([r[2:] for r in rows], dtype=np.float32).reshape(n, len(COLUMNS))
    except ValueError:  # find the offending row for the message
        for r, line_no in zip(rows, line_nos, strict=True):
            _parse_votes(r[2:], f"{path}:{line_no}")
        raise
    if n and votes.min() < 0:
        i = int(np.flatnonzero((votes < 0).any(1))[0])
        raise LanetError(f"{path}:{line_nos[i]}: negative vote count in {rows[i][2:]!r}")
    boxes = np.zeros((n, 4), dtype=np.float64)
    if box_col is not None:
        parsed: dict[str, tuple[float, float, float, float]] = {}
        for i, r in enumerate(rows):
            text = r[box_col]
            if text not in parsed:
                parsed[text] = _parse_box(text, f"{path}:{line_nos[i]}")
            boxes[i] = parsed[text]
    return votes, boxes


def _read_folders(root: Path) -> dict:
    """Rows of the prepared folders: names, split, votes, boxes, paths + drop counts for missing PNGs."""
    names: list[str] = []
    split: list[np.ndarray] = []
    votes: list[np.ndarray] = []
    boxes: list[np.ndarray] = []
    paths: list[str] = []
    where: list[str] = []
    missing_names: list[str] = []
    found = []
    for folder, split_name in SPLIT_FOLDERS.items():
        d = root / folder
        if not d.is_dir():
            continue
        label_csv = d / "label.csv"
        if not label_csv.is_file():
            raise LanetError(f"{label_csv} not found (every FERPlus split folder holds a label.csv)")
        found.append(folder)
        with os.scandir(d) as it:
            present = {e.name for e in it if e.is_file()}
        with open_text(label_csv) as fh:
            lines = [(line_no, row) for line_no, row in enumerate(csv.reader(fh), start=1)
                     if len(row) > 1 or (row and row[0].strip())]
        for line_no, row in lines:
            if len(row) != 12:
                raise LanetError(f"{label_csv}:{line_no}: expected name,\"(x, y, w, h)\",10 vote counts; "
                                 f"got {len(row)} fields")
        kept = [(line_no, row) for line_no, row in lines if row[0].strip() in present]
        missing_names += [row[0].strip() for _, row in lines if row[0].strip() not in present]
        if not kept:
            continue
        rows = [row for _, row in kept]
        v, b = _parse_rows(rows, label_csv, [line_no for line_no, _ in kept], box_col=1)
        base = os.fspath(d) + os.sep
        for line_no, row in kept:
            name = row[0].strip()
            names.append(name)
            paths.append(base + name)
            where.append(f"{label_csv}:{line_no}")
        split.append(np.full(len(rows), SPLITS.index(split_name), dtype=np.int8))
        votes.append(v)
        boxes.append(b)
    if not found:
        raise LanetError(f"no FERPlus split folder under {root}; expected {LAYOUT}")
    split_arr = _cat(split, np.int8)
    # a name listed twice: the first row wins (as in the raw layout); in two split folders: leakage, an error
    keep, repeats = unique_rows(names, split_arr, where)
    dropped = {"missing_image": len(missing_names), "duplicate_name": repeats}
    return {"names": [names[i] for i in keep], "split": split_arr[keep],
            "votes": _cat(votes, np.float32).reshape(-1, 10)[keep],
            "boxes": _cat(boxes, np.float64).reshape(-1, 4)[keep],
            "paths": [paths[i] for i in keep], "rows": None, "missing": {k: v for k, v in dropped.items() if v},
            "missing_names": missing_names, "layout": "folders", "folders": found}


def _cat(parts: list[np.ndarray], dtype: type) -> np.ndarray:
    return np.concatenate(parts).astype(dtype) if parts else np.zeros(0, dtype=dtype)


def _read_vote_csv(new_csv: Path) -> dict:
    """Rows of fer2013new.csv with an image name (row index kept to find the pixels in fer2013.csv)."""
    with open_text(new_csv) as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if not header or [h.strip() for h in header[:2]] != ["Usage", "Image name"] or len(header) != 12:
            raise LanetError(f"{new_csv}: expected the header Usage,Image name,{','.join(COLUMNS)}; got {header!r}")
        all_rows = list(reader)
    kept: list[list[str]] = []
    row_index: list[int] = []
    seen: set[str] = set()
    missing = {"no_image": 0, "duplicate_name": 0}
    for i, row in enumerate(all_rows):
        if len(row) != 12:
            raise LanetError(f"{new_csv}:{i + 2}: expected 12 fields, got {len(row)}")
        if row[0].strip() not in USAGES:
            raise LanetError(f"{new_csv}:{i + 2}: unknown Usage {row[0]!r}; expected Training, PublicTest or "
                             "PrivateTest")
        name = row[1].strip()
        if not name:
            missing["no_image"] += 1
        elif name in seen:  # the prepared folders keep one image (and the first row's votes) per name
            missing["duplicate_name"] += 1
        else:
            seen.add(name)
            kept.append(row)
            row_index.append(i)
    votes, _ = _parse_rows(kept, new_csv, [i + 2 for i in row_index], box_col=None)
    split = np.array([SPLITS.index(USAGES[r[0].strip()]) for r in kept], dtype=np.int8)
    return {"names": [r[1].strip() for r in kept], "split": split, "votes": votes, "boxes": None, "paths": None,
            "rows": np.asarray(row_index, dtype=np.int64), "missing": {k: v for k, v in missing.items() if v},
            "layout": "csv"}


def _read_pixels(pixel_csv: Path, rows: np.ndarray, size: int, channels: int) -> np.ndarray:
    """The images of ``rows`` (data-row indices) of fer2013.csv as ``N x size x size x channels`` uint8."""
    wanted = {int(r): i for i, r in enumerate(rows)}
    texts: list[str] = [""] * len(rows)
    n_rows = 0
    with open_text(pixel_csv) as fh:
        reader = csv.reader(fh)
        header = [h.strip() for h in next(reader, None) or []]
        if "pixels" not in header:
            raise LanetError(f"{pixel_csv}: expected the header emotion,pixels,Usage; got {header!r}")
        col = header.index("pixels")
        for row_index, row in enumerate(reader):
            n_rows += 1
            i = wanted.get(row_index)
            if i is None:
                continue
            if len(row) <= col:
                raise LanetError(f"{pixel_csv}:{row_index + 2}: no pixels column")
            texts[i] = row[col]
    if len(rows) and int(rows.max()) >= n_rows:
        raise LanetError(f"{pixel_csv} has {n_rows} rows but fer2013new.csv annotates row {int(rows.max())}; "
                         "the two files must list the same images in the same order")
    counts = np.fromiter((t.count(" ") + 1 if t.strip() else 0 for t in texts), dtype=np.int64, count=len(texts))
    bad = np.flatnonzero(counts != PIXELS)
    if len(bad):
        raise LanetError(f"{pixel_csv}:{int(rows[bad[0]]) + 2}: expected {PIXELS} pixel values, got {counts[bad[0]]}")
    flat = np.array(" ".join(texts).split(), dtype=np.int64) if texts else np.zeros(0, np.int64)
    if len(flat) != PIXELS * len(texts) or (len(flat) and (flat.min() < 0 or flat.max() > 255)):
        raise LanetError(f"{pixel_csv}: pixel values must be {PIXELS} integers in 0..255 per row")
    gray = flat.astype(np.uint8).reshape(len(texts), NATIVE_SIZE, NATIVE_SIZE, 1)
    if size == NATIVE_SIZE and channels == 1:
        return gray
    return np.stack([convert_array(g, size, channels) for g in gray]) if len(gray) else \
        np.zeros((0, size, size, channels), np.uint8)


def load_ferplus(
    root: str | os.PathLike,
    protocol: str = "paper",
    load_size: int = 0,
    channels: int = 0,
    limit: int = 0,
    cache_dir: str | os.PathLike = "",
) -> FaceSet:
    """Load FERPlus from ``root`` (either layout, see the module docstring).

    Args:
        root: folder holding ``FER2013Train/`` ... or ``fer2013.csv`` + ``fer2013new.csv``.
        protocol: ``paper`` or ``majority`` (see :func:`ferplus_labels`).
        load_size: stored image size (0 = 48).
        channels: 1 or 3 (0 = 1, grayscale).
        limit: keep the first ``limit`` labelled images of each split (0 = all); applied after the protocol.
        cache_dir: decoded-image cache folder (see :func:`lanet.fileutil.cache_root`).

    Returns:
        A FaceSet with 8 classes, ``votes`` (N x 8, canonical order, raw counts) and
        ``meta["dropped"]`` (reason -> count).
    """
    if protocol not in PROTOCOLS:
        raise LanetError(f"unknown FERPlus protocol {protocol!r}; expected one of {', '.join(PROTOCOLS)}")
    root = Path(root).expanduser()
    if not root.is_dir():
        raise LanetError(f"FERPlus root not found: {root}; expected a folder with {LAYOUT}")
    size = load_size or NATIVE_SIZE
    channels = channels or 1
    if channels not in (1, 3):
        raise LanetError(f"channels must be 0, 1 or 3, got {channels}")

    if any((root / f).is_dir() for f in SPLIT_FOLDERS):
        info = _read_folders(root)
    elif (root / "fer2013.csv").is_file() and (root / "fer2013new.csv").is_file():
        info = _read_vote_csv(root / "fer2013new.csv")
    else:
        present = ", ".join(sorted(p.name for p in root.iterdir())[:10]) or "nothing"
        raise LanetError(f"{root} is not a FERPlus folder (it holds {present}); expected {LAYOUT}")

    votes10 = info["votes"]
    split = info["split"]
    labels, reason = ferplus_labels(votes10, protocol)
    dropped = dict(info["missing"])
    for code, name in REASONS.items():
        if (reason == code).any():
            dropped[name] = int((reason == code).sum())
    keep = reason == KEPT
    # every name the listing holds but the dataset drops: a --labels file may name them (they are ignored)
    dropped_names = [n for n, r in zip(info["names"], reason, strict=True) if r != KEPT]
    dropped_names += info.get("missing_names", [])
    keep[keep] = first_per_split(split[keep], limit)
    idx = np.flatnonzero(keep)
    # train, then val, then test; file order within a split
    idx = idx[np.argsort(split[idx], kind="stable")]
    names = np.asarray(info["names"], dtype=object)[idx]

    if info["layout"] == "folders":
        paths = [info["paths"][i] for i in idx]
        boxes = info["boxes"][idx]
        full = (boxes == [0, 0, NATIVE_SIZE, NATIVE_SIZE]).all(1)
        box_arg = None if full.all() else [None if f else tuple(b) for f, b in zip(full, boxes, strict=True)]
        key = {"dataset": "ferplus", "layout": "folders", "files": content_signature(paths),
               "boxes": array_signature(boxes), "size": size, "channels": channels}

        def build() -> dict[str, np.ndarray]:
            return {"images": load_images(paths, size, channels, boxes=box_arg, desc="FERPlus")}
    else:
        pixel_csv = root / "fer2013.csv"
        rows = info["rows"][idx]
        key = {"dataset": "ferplus", "layout": "csv", "files": content_signature([pixel_csv]),
               "rows": array_signature(rows), "size": size, "channels": channels}

        def build() -> dict[str, np.ndarray]:
            return {"images": _read_pixels(pixel_csv, rows, size, channels)}

    images = cached_arrays(key, build, cache_dir)["images"]
    if len(images) != len(idx):
        raise LanetError(f"FERPlus cache entry holds {len(images)} images for {len(idx)} listed; delete the cache")
    # the file that lists each split (named when a split is empty), and what is missing
    missing_val = ""
    if info["layout"] == "folders":
        split_files = {s: str(root / f / "label.csv") if f in info["folders"] else f"{root / f} (folder missing)"
                       for f, s in SPLIT_FOLDERS.items()}
        if "FER2013Valid" not in info["folders"]:
            missing_val = f"{root / 'FER2013Valid'} folder"
    else:
        split_files = dict.fromkeys(SPLITS, str(root / "fer2013new.csv"))
    return FaceSet(
        images=images,
        labels=labels[idx],
        split=split[idx],
        names=names,
        num_classes=8,
        votes=votes10[idx][:, FROM_CANONICAL],
        name="ferplus",
        meta={"root": str(root), "layout": info["layout"], "protocol": protocol, "dropped": dropped,
              "dropped_names": dropped_names, "split_files": split_files, "missing_val": missing_val,
              "limit": limit, "label_source": "FERPlus votes: " + ", ".join(
                  f"{c}->{int(t)}" for c, t in zip(COLUMNS, TO_CANONICAL, strict=False))},
    )


__all__ = ["COLUMNS", "FROM_CANONICAL", "PROTOCOLS", "TO_CANONICAL", "ferplus_labels", "load_ferplus"]
