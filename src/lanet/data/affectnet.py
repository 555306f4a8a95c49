"""AffectNet (Mollahosseini et al., 2017), manually annotated part, 7 or 8 classes, with 68 landmarks.

Layout under ``root``::

    training.csv      subDirectory_filePath,face_x,face_y,face_width,face_height,facial_landmarks,
    validation.csv    expression,valence,arousal
    Manually_Annotated_Images/<subDirectory_filePath>   (a path relative to root is accepted too)

``training.csv`` -> train; ``validation.csv`` -> test (AffectNet's public validation set is the test set
papers report on). There is no validation split; ``val_fraction`` carves one from train.

Expression ids -> canonical ids: 0 Neutral->6, 1 Happy->3, 2 Sad->4, 3 Surprise->5, 4 Fear->2, 5 Disgust->1,
6 Anger->0, 7 Contempt->7; 8 None, 9 Uncertain and 10 Non-Face are dropped, and so is Contempt for the
7-class variant. Image files listed but absent on disk are skipped with a warning (AffectNet downloads are
often a few files short); ``meta["dropped"]`` counts every reason.

Each face box ``(face_x, face_y, face_width, face_height)`` is cropped and resized to ``load_size`` (default
112; parts of the box outside the photo are black). The 68 landmarks (``"x1;y1;x2;y2;..."`` in photo
pixel coordinates) are mapped into the stored image and attached with ``found=True``: with pixel centres at
integer coordinates, ``u = (x + 0.5 - face_x) * load_size / face_width - 0.5`` (same for y).
"""

from __future__ import annotations

import csv
import os
import warnings
from pathlib import Path

import numpy as np

from ..errors import LanetError
from ..fileutil import open_text
from .faceset import SPLITS, FaceSet
from .imageio import array_signature, cached_arrays, content_signature, file_stats, load_images
from .labels import carve_val

#: AffectNet expression id (0..7) -> canonical class id.
TO_CANONICAL = np.array([6, 3, 4, 5, 2, 1, 0, 7], dtype=np.int64)
DROPPED_IDS: dict[int, str] = {8: "none", 9: "uncertain", 10: "non_face"}
CSV_FILES: dict[str, str] = {"training.csv": "train", "validation.csv": "test"}
IMAGE_DIR = "Manually_Annotated_Images"
COLUMNS: tuple[str, ...] = ("subDirectory_filePath", "face_x", "face_y", "face_width", "face_height",
                            "facial_landmarks", "expression")
LAYOUT = ("training.csv + validation.csv (subDirectory_filePath,face_x,face_y,face_width,face_height,"
          f"facial_landmarks,expression,valence,arousal) + {IMAGE_DIR}/<subDirectory_filePath>")
DEFAULT_SIZE = 112


def transform_landmarks(points: np.ndarray, boxes: np.ndarray, size: int) -> np.ndarray:
    """Map ``N x P x 2`` photo-pixel landmarks into ``size x size`` crops of ``N x 4`` boxes ``(x, y, w, h)``."""
    points = np.asarray(points, dtype=np.float64)
    boxes = np.asarray(boxes, dtype=np.float64)
    origin = boxes[:, None, :2]
    scale = size / boxes[:, None, 2:]
    return ((points + 0.5 - origin) * scale - 0.5).astype(np.float32)


def _read_csv(path: Path, num_classes: int, dropped: dict[str, int],
              dropped_names: list[str]) -> list[tuple[str, tuple, str, int, int]]:
    """Rows kept by the class filter: (file path, box, landmark text, canonical label, line number)."""
    rows = []
    with open_text(path) as fh:
        reader = csv.reader(fh)
        header = [h.strip() for h in next(reader, None) or []]
        absent = [c for c in COLUMNS if c not in header]
        if absent:
            raise LanetError(f"{path}: missing column(s) {', '.join(absent)}; expected the header {LAYOUT}")
        col = {c: header.index(c) for c in COLUMNS}
        width = max(col.values())
        for line_no, row in enumerate(reader, start=2):
            if not row:
                continue
            if len(row) <= width:
                raise LanetError(f"{path}:{line_no}: expected {len(header)} fields, got {len(row)}")
            try:
                expr = int(float(row[col["expression"]]))
                box = tuple(float(row[col[c]]) for c in ("face_x", "face_y", "face_width", "face_height"))
            except ValueError as exc:
                raise LanetError(f"{path}:{line_no}: expression and face box must be numbers ({exc})") from exc
            if not 0 <= expr <= 10:
                raise LanetError(f"{path}:{line_no}: expression {expr} is outside 0..10")
            if expr in DROPPED_IDS:
                dropped[DROPPED_IDS[expr]] = dropped.get(DROPPED_IDS[expr], 0) + 1
                dropped_names.append(row[col["subDirectory_filePath"]].strip())
                continue
            if expr == 7 and num_classes == 7:
                dropped["contempt"] = dropped.get("contempt", 0) + 1
                dropped_names.append(row[col["subDirectory_filePath"]].strip())
                continue
            if box[2] <= 0 or box[3] <= 0:
                raise LanetError(f"{path}:{line_no}: face box {box} has no area")
            rows.append((row[col["subDirectory_filePath"]].strip(), box, row[col["facial_landmarks"]],
                         int(TO_CANONICAL[expr]), line_no))
    return rows


def _parse_landmarks(text: str, where: str) -> np.ndarray:
    try:
        values = np.array([float(v) for v in text.replace(",", ";").split(";") if v.strip()], dtype=np.float64)
    except ValueError as exc:
        raise LanetError(f"{where}: facial_landmarks must be 'x1;y1;x2;y2;...', got {text[:40]!r}...") from exc
    if len(values) == 0 or len(values) % 2:
        raise LanetError(f"{where}: facial_landmarks needs an even, non-zero number of values, got {len(values)}")
    return values.reshape(-1, 2)


def load_affectnet(
    root: str | os.PathLike,
    num_classes: int = 8,
    load_size: int = 0,
    channels: int = 0,
    limit: int = 0,
    val_fraction: float = 0.0,
    seed: int = 0,
    cache_dir: str | os.PathLike = "",
) -> FaceSet:
    """Load AffectNet (7 or 8 classes) from ``root``; face crops with ground-truth landmarks.

    Args:
        num_classes: 8 (with contempt) or 7 (contempt dropped).
        load_size: crop size (0 = 112).
        channels: 1 or 3 (0 = 3, RGB).
        limit: keep the first ``limit`` usable images of each split (CSV order).
        val_fraction: hold out this fraction of train as val (seeded by ``seed``, class-stratified).
    """
    if num_classes not in (7, 8):
        raise LanetError(f"AffectNet has 7 or 8 classes, got {num_classes}")
    root = Path(root).expanduser()
    if not root.is_dir():
        raise LanetError(f"AffectNet root not found: {root}; expected {LAYOUT}")
    size = load_size or DEFAULT_SIZE
    channels = channels or 3
    dropped: dict[str, int] = {}
    dropped_names: list[str] = []
    listed: dict[str, str] = {}  # file path -> "csv:line" of its first row
    paths: list[str] = []
    stats: list[tuple[str, int, int]] = []
    names: list[str] = []
    boxes: list[tuple] = []
    landmarks: list[np.ndarray] = []
    labels: list[int] = []
    split: list[int] = []
    missing_examples: list[str] = []
    found_csv = [name for name in CSV_FILES if (root / name).is_file()]
    if not found_csv:
        raise LanetError(f"no training.csv or validation.csv under {root}; expected {LAYOUT}")
    for csv_name in found_csv:
        csv_path = root / csv_name
        split_id = SPLITS.index(CSV_FILES[csv_name])
        bases = [root / IMAGE_DIR, root]
        kept = 0
        for rel, box, lm_text, label, line_no in _read_csv(csv_path, num_classes, dropped, dropped_names):
            if limit and kept >= limit:
                break
            if rel in listed:  # the same file again: in the same CSV a duplicated row, in the other one leakage
                if not listed[rel].startswith(f"{csv_path}:"):
                    raise LanetError(f"{csv_path}:{line_no}: {rel!r} is also listed at {listed[rel]}; an image in "
                                     "two splits leaks evaluation images into training")
                dropped["duplicate_row"] = dropped.get("duplicate_row", 0) + 1
                continue
            listed[rel] = f"{csv_path}:{line_no}"
            found = None
            for j, b in enumerate(bases):
                try:
                    found = file_stats([os.path.join(b, rel)])[0]
                except LanetError:
                    continue
                if j:  # try the base that worked first next time
                    bases.insert(0, bases.pop(j))
                break
            if found is None:
                dropped["missing_image"] = dropped.get("missing_image", 0) + 1
                dropped_names.append(rel)
                if len(missing_examples) < 3:
                    missing_examples.append(str(root / IMAGE_DIR / rel))
                continue
            points = _parse_landmarks(lm_text, f"{csv_path}:{line_no}")
            if landmarks and len(points) != len(landmarks[0]):
                raise LanetError(f"{csv_path}:{line_no}: {len(points)} landmarks, but earlier rows have "
                                 f"{len(landmarks[0])}")
            paths.append(found[0])
            stats.append(found)
            names.append(rel)
            boxes.append(box)
            landmarks.append(points)
            labels.append(label)
            split.append(split_id)
            kept += 1
    if dropped.get("missing_image"):
        warnings.warn(f"AffectNet: {dropped['missing_image']} listed image(s) not found, e.g. "
                      f"{', '.join(missing_examples)}; skipped", stacklevel=2)
    if not paths:
        raise LanetError(f"AffectNet: no usable image under {root / IMAGE_DIR} (dropped: {dropped}); "
                         f"expected {LAYOUT}")
    box_arr = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    key = {"dataset": f"affectnet{num_classes}", "files": content_signature(stats=stats),
           "boxes": array_signature(box_arr), "size": size, "channels": channels}
    images = cached_arrays(
        key, lambda: {"images": load_images(paths, size, channels, boxes=box_arr, desc="AffectNet")}, cache_dir
    )["images"]
    faceset = FaceSet(
        images=images,
        labels=np.asarray(labels, dtype=np.int64),
        split=np.asarray(split, dtype=np.int8),
        names=np.asarray(names, dtype=object),
        num_classes=num_classes,
        name=f"affectnet{num_classes}",
        meta={"root": str(root), "limit": limit, "dropped": dropped, "dropped_names": dropped_names, "csv": found_csv,
              "label_source": "AffectNet ids: 0 Neutral->6, 1 Happy->3, 2 Sad->4, 3 Surprise->5, 4 Fear->2, "
                              "5 Disgust->1, 6 Anger->0, 7 Contempt->7; 8 None, 9 Uncertain, 10 Non-Face dropped"},
    )
    faceset.set_landmarks(transform_landmarks(np.stack(landmarks), box_arr, size))
    return carve_val(faceset, val_fraction, seed) if val_fraction > 0 else faceset
