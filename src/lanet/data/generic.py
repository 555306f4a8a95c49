"""Your own images: a CSV list (``data.name=csv``) or one folder per class (``data.name=folders``).

CSV (``root`` is the CSV file)::

    path,label,split            header required; split is optional (default train)
    faces/a.png,happy,train     path: relative to the CSV's folder, or absolute
    faces/b.png,0,test          label: canonical name, alias (happy, angry, ...) or canonical id 0..7

Folders (``root`` is the folder)::

    root/train/<class>/*.png    split folders train / val / test (also training, valid, validation, testing)
    root/<class>/*.jpg          or class folders directly under root (everything is train)

A path listed twice in the CSV is kept once (``meta["dropped"]["duplicate_row"]``); the same file in two
splits, listed with two labels, or two files with identical pixels in train and val/test are errors (leakage).

Class folder names follow the same rules as CSV labels. Files ending in .png, .jpg, .jpeg or .bmp are read
(case-insensitive); other files are ignored. Image names (:attr:`FaceSet.names`) are the CSV's path as
written, or the path relative to the folder root (``train/happy/001.png``).

Label ids are the canonical ids of :mod:`lanet.classes` (0 anger, 1 disgust, 2 fear, 3 happiness,
4 sadness, 5 surprise, 6 neutral, 7 contempt); the dataset has 8 classes if any image is contempt, else 7.
Images are resized to ``load_size`` (default 112; non-square images are stretched) and keep their colour
(RGB, or grayscale when every image is grayscale) unless ``channels`` says otherwise.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np

from ..classes import class_id
from ..errors import LanetError
from ..fileutil import open_text
from .faceset import SPLITS, FaceSet
from .imageio import IMAGE_EXTENSIONS, cached_arrays, content_signature, load_images
from .labels import first_per_split, identical_across_splits, unique_rows

SPLIT_ALIASES: dict[str, str] = {
    "train": "train", "training": "train",
    "val": "val", "valid": "val", "validation": "val",
    "test": "test", "testing": "test",
}
CSV_LAYOUT = "a CSV file with header path,label[,split] (paths relative to the CSV's folder or absolute)"
FOLDERS_LAYOUT = "root/<split>/<class>/*.png|jpg|jpeg|bmp (split: train, val, test) or root/<class>/*"
DEFAULT_SIZE = 112


def _split_id(value: str, where: str) -> int:
    key = value.strip().lower()
    if not key:
        return SPLITS.index("train")
    if key not in SPLIT_ALIASES:
        raise LanetError(f"{where}: unknown split {value!r}; expected train, val or test")
    return SPLITS.index(SPLIT_ALIASES[key])


def _build(
    name: str,
    root: Path,
    paths: list[str],
    names: list[str],
    labels: list[int],
    split: list[int],
    where: list[str],
    load_size: int,
    channels: int,
    limit: int,
    cache_dir: str | os.PathLike,
) -> FaceSet:
    # the same file twice: a repeated row is removed (counted), in two splits or with two labels an error
    unique, repeats = unique_rows([os.path.realpath(p) for p in paths], split, where, labels)
    paths, names, labels, split = ([x[i] for i in unique] for x in (paths, names, labels, split))
    split_arr = np.asarray(split, dtype=np.int8)
    order = np.argsort(split_arr, kind="stable")
    order = order[first_per_split(split_arr[order], limit)]
    sel_paths = [paths[i] for i in order]
    missing = [p for p in sel_paths if not os.path.isfile(p)]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise LanetError(f"image not found: {missing[0]}{more}")
    size = load_size or DEFAULT_SIZE
    if channels not in (0, 1, 3):
        raise LanetError(f"channels must be 0, 1 or 3, got {channels}")
    key = {"dataset": name, "files": content_signature(sel_paths), "size": size, "channels": channels}
    images = cached_arrays(key, lambda: {"images": load_images(sel_paths, size, channels, desc=name)},
                           cache_dir)["images"]
    label_arr = np.asarray(labels, dtype=np.int64)[order]
    name_arr = np.asarray(names, dtype=object)[order]
    identical_across_splits(images, split_arr[order], name_arr, str(root))
    return FaceSet(
        images=images,
        labels=label_arr,
        split=split_arr[order],
        names=name_arr,
        num_classes=8 if (label_arr == 7).any() else 7,
        name=name,
        meta={"root": str(root), "limit": limit, "label_source": "canonical class names / ids",
              "split_files": dict.fromkeys(SPLITS, str(root)) if name == "csv" else {},
              "dropped": {"duplicate_row": repeats} if repeats else {}},
    )


def load_csv(
    path: str | os.PathLike,
    load_size: int = 0,
    channels: int = 0,
    limit: int = 0,
    cache_dir: str | os.PathLike = "",
) -> FaceSet:
    """Load the images listed in a ``path,label[,split]`` CSV (see the module docstring)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise LanetError(f"image list not found: {path}; expected {CSV_LAYOUT}")
    base = path.parent
    paths: list[str] = []
    names: list[str] = []
    labels: list[int] = []
    split: list[int] = []
    where_rows: list[str] = []
    with open_text(path) as fh:
        reader = csv.reader(fh)
        header = [h.strip().lower() for h in next(reader, None) or []]
        if "path" not in header or "label" not in header:
            raise LanetError(f"{path}: the first line must be the header path,label[,split]; got {header!r}")
        i_path, i_label = header.index("path"), header.index("label")
        i_split = header.index("split") if "split" in header else None
        for line_no, row in enumerate(reader, start=2):
            if not row or all(not c.strip() for c in row):
                continue
            where = f"{path}:{line_no}"
            if len(row) <= max(i_path, i_label):
                raise LanetError(f"{where}: expected path,label[,split], got {row!r}")
            rel = row[i_path].strip()
            if not rel:
                raise LanetError(f"{where}: empty path")
            try:
                label = class_id(row[i_label], 8)
            except LanetError as exc:
                raise LanetError(f"{where}: {exc}") from exc
            paths.append(os.path.join(base, rel))
            names.append(rel)
            labels.append(label)
            split.append(_split_id(row[i_split] if i_split is not None and i_split < len(row) else "", where))
            where_rows.append(where)
    if not paths:
        raise LanetError(f"{path} lists no images")
    return _build("csv", path, paths, names, labels, split, where_rows, load_size, channels, limit, cache_dir)


def _class_dirs(folder: Path) -> list[tuple[Path, int]]:
    out = []
    for d in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        try:
            out.append((d, class_id(d.name, 8)))
        except LanetError as exc:
            raise LanetError(f"class folder {d}: {exc}") from exc
    return out


def load_folders(
    root: str | os.PathLike,
    load_size: int = 0,
    channels: int = 0,
    limit: int = 0,
    cache_dir: str | os.PathLike = "",
) -> FaceSet:
    """Load a class-per-folder tree (with or without split folders; see the module docstring)."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise LanetError(f"image folder not found: {root}; expected {FOLDERS_LAYOUT}")
    subdirs = [p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")]
    split_dirs = [p for p in subdirs if p.name.lower() in SPLIT_ALIASES]
    if split_dirs:
        others = [p.name for p in subdirs if p not in split_dirs]
        if others:
            raise LanetError(f"{root} mixes split folders ({', '.join(sorted(p.name for p in split_dirs))}) with "
                             f"other folders ({', '.join(sorted(others))}); expected {FOLDERS_LAYOUT}")
        groups = [(d, SPLITS.index(SPLIT_ALIASES[d.name.lower()])) for d in sorted(split_dirs)]
    else:
        groups = [(root, SPLITS.index("train"))]
    paths: list[str] = []
    names: list[str] = []
    labels: list[int] = []
    split: list[int] = []
    for folder, split_id in groups:
        for class_dir, label in _class_dirs(folder):
            for f in sorted(class_dir.iterdir()):
                if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS:
                    paths.append(str(f))
                    names.append(f.relative_to(root).as_posix())
                    labels.append(label)
                    split.append(split_id)
    if not paths:
        raise LanetError(f"no images under {root}; expected {FOLDERS_LAYOUT}")
    return _build("folders", root, paths, names, labels, split, paths, load_size, channels, limit, cache_dir)
