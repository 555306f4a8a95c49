"""RAF-DB basic emotions (Li et al., 2017): 15,339 aligned 100x100 RGB faces, 7 classes, train/test.

Layout under ``root``::

    EmoLabel/list_patition_label.txt     lines "train_00001.jpg 5" (the file name's misspelling is RAF-DB's own;
                                         list_partition_label.txt is accepted too)
    Image/aligned/train_00001_aligned.jpg

The split comes from the name prefix (``train_`` -> train, ``test_`` -> test). RAF-DB has no validation
split; ``val_fraction`` carves one from train (see :func:`lanet.data.labels.carve_val`).

RAF-DB label ids -> canonical ids: 1 Surprise->5, 2 Fear->2, 3 Disgust->1, 4 Happiness->3, 5 Sadness->4,
6 Anger->0, 7 Neutral->6.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import LanetError
from ..fileutil import open_text
from .faceset import SPLITS, FaceSet
from .imageio import cached_arrays, content_signature, load_images
from .labels import carve_val, first_per_split, unique_rows

#: RAF-DB label id (1..7) -> canonical class id; index 0 unused.
TO_CANONICAL = np.array([-1, 5, 2, 1, 3, 4, 0, 6], dtype=np.int64)
LIST_FILES: tuple[str, ...] = ("EmoLabel/list_patition_label.txt", "EmoLabel/list_partition_label.txt")
LAYOUT = "EmoLabel/list_patition_label.txt (lines 'train_00001.jpg 5') + Image/aligned/train_00001_aligned.jpg"
NATIVE_SIZE = 100


def _aligned_path(image_dir: Path, name: str) -> str:
    stem, ext = os.path.splitext(name)
    aligned = image_dir / f"{stem}_aligned{ext}"
    if aligned.is_file() or not (image_dir / name).is_file():
        return str(aligned)
    return str(image_dir / name)


def load_rafdb(
    root: str | os.PathLike,
    load_size: int = 0,
    channels: int = 0,
    limit: int = 0,
    val_fraction: float = 0.0,
    seed: int = 0,
    cache_dir: str | os.PathLike = "",
) -> FaceSet:
    """Load RAF-DB basic from ``root`` (layout in the module docstring).

    Args:
        load_size: stored image size (0 = 100, the aligned images' size).
        channels: 1 or 3 (0 = 3, RGB).
        limit: keep the first ``limit`` images of each split (file order).
        val_fraction: hold out this fraction of train as val (seeded by ``seed``, class-stratified).

    Raises:
        LanetError: missing root / list file / image, malformed line, label outside 1..7.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise LanetError(f"RAF-DB root not found: {root}; expected {LAYOUT}")
    list_file = next((root / f for f in LIST_FILES if (root / f).is_file()), None)
    if list_file is None:
        raise LanetError(f"{root / LIST_FILES[0]} not found; expected {LAYOUT}")
    names: list[str] = []
    raw: list[int] = []
    split: list[int] = []
    where_rows: list[str] = []
    with open_text(list_file) as fh:
        for line_no, line in enumerate(fh, start=1):
            parts = line.split()
            if not parts:
                continue
            where = f"{list_file}:{line_no}"
            if len(parts) != 2 or not parts[1].isdigit():
                raise LanetError(f"{where}: expected '<name> <label 1..7>', got {line.strip()!r}")
            label = int(parts[1])
            if not 1 <= label <= 7:
                raise LanetError(f"{where}: RAF-DB label {label} is outside 1..7")
            prefix = parts[0].split("_", 1)[0].lower()
            if prefix not in ("train", "test"):
                raise LanetError(f"{where}: image name {parts[0]!r} starts with neither train_ nor test_")
            names.append(parts[0])
            raw.append(label)
            split.append(SPLITS.index(prefix))
            where_rows.append(where)
    if not names:
        raise LanetError(f"{list_file} lists no images")
    unique, repeats = unique_rows(names, split, where_rows, raw)  # a repeated line is dropped and counted
    names, raw, split = ([x[i] for i in unique] for x in (names, raw, split))
    split_arr = np.asarray(split, dtype=np.int8)
    order = np.argsort(split_arr, kind="stable")  # train first, file order within a split
    order = order[first_per_split(split_arr[order], limit)]
    image_dir = root / "Image" / "aligned"
    paths = [_aligned_path(image_dir, names[i]) for i in order]
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise LanetError(f"RAF-DB image not found: {missing[0]}{more}; expected {LAYOUT}")
    size = load_size or NATIVE_SIZE
    channels = channels or 3
    key = {"dataset": "rafdb", "files": content_signature(paths), "size": size, "channels": channels}
    images = cached_arrays(key, lambda: {"images": load_images(paths, size, channels, desc="RAF-DB")},
                           cache_dir)["images"]
    faceset = FaceSet(
        images=images,
        labels=TO_CANONICAL[np.asarray(raw, dtype=np.int64)[order]],
        split=split_arr[order],
        names=np.asarray(names, dtype=object)[order],
        num_classes=7,
        name="rafdb",
        meta={"root": str(root), "limit": limit, "dropped": {"duplicate_row": repeats} if repeats else {},
              "label_source": "RAF-DB ids: 1 Surprise->5, 2 Fear->2, 3 Disgust->1, 4 Happiness->3, "
                              "5 Sadness->4, 6 Anger->0, 7 Neutral->6"},
    )
    return carve_val(faceset, val_fraction, seed) if val_fraction > 0 else faceset
