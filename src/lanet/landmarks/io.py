"""User-supplied landmark files: any number of points per face, matched to a dataset's images by name.

Two formats, chosen by the file extension:

``.csv``
    A header row, then one row per image::

        name,x0,y0,x1,y1,...,x{P-1},y{P-1}
        fer0000000.png,10.5,20.25,...

    ``name`` is the image's file name exactly as the dataset names it (``FaceSet.names``, e.g.
    ``fer0000000.png``). An optional column ``found`` (``1``/``0``, ``true``/``false``) marks landmarks that
    are a guess rather than a detection (default: all found). Every row has the same number of points.

``.npz``
    Arrays ``names`` (``N`` strings), ``landmarks`` (``N x P x 2``, x then y) and optionally ``found``
    (``N`` bool). Write it with ``np.savez(path, names=np.array(names, dtype=str), landmarks=..., found=...)``.

Coordinates (both formats): if every coordinate in the file is ``<= 1.0`` the file is read as NORMALISED
coordinates (``x * width``, ``y * height`` of the loaded images); otherwise as PIXELS of the images at the size
the dataset is loaded at (``FaceSet.image_size``, x = column, y = row, pixel centres at integers). Images
in the file but not in the dataset are ignored; images of the dataset missing from the file are an error.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..errors import LanetError
from ..fileutil import atomic_open, open_text

_TRUE = {"1", "true", "yes", "y", "t"}
_FALSE = {"0", "false", "no", "n", "f"}

#: How far outside the image (in image sizes) a pixel coordinate may lie before the file is rejected as being in
#: the wrong coordinate space (e.g. pixels of the source images when the dataset is loaded smaller).
OUTSIDE_TOLERANCE = 0.5


def _size_hw(image_size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(image_size, (int, np.integer)):
        return int(image_size), int(image_size)
    h, w = (int(v) for v in image_size)
    return h, w


def _parse_bool(value: str, path: Path, line: int) -> bool:
    v = value.strip().lower()
    if v in _TRUE:
        return True
    if v in _FALSE:
        return False
    raise LanetError(f"{path}, line {line}: found must be 1/0 or true/false, got {value!r}")


def _read_csv(path: Path) -> tuple[list[str], np.ndarray, np.ndarray | None]:
    with open_text(path) as fh:
        rows = csv.reader(fh)
        header = next(rows, None)
        if header is None:
            raise LanetError(f"{path}: empty landmark file (expected a header name,x0,y0,x1,y1,...)")
        header = [h.strip().lower() for h in header]
        if not header or header[0] != "name":
            raise LanetError(f"{path}, line 1: header must start with 'name' (name,x0,y0,x1,y1,...), "
                             f"got {','.join(header[:4])!r}")
        found_col = header.index("found") if "found" in header else -1
        coord_cols = [i for i in range(1, len(header)) if i != found_col]
        expected = [f"{axis}{k}" for k in range(len(coord_cols) // 2) for axis in "xy"]
        if not coord_cols or len(coord_cols) % 2 or [header[i] for i in coord_cols] != expected:
            raise LanetError(f"{path}, line 1: coordinate columns must be x0,y0,x1,y1,... in order, got "
                             f"{','.join(header[i] for i in coord_cols[:8])}{',...' if len(coord_cols) > 8 else ''}")
        num_points = len(coord_cols) // 2
        names: list[str] = []
        values: list[list[float]] = []
        found: list[bool] = []
        for line, row in enumerate(rows, start=2):
            if not row or (len(row) == 1 and not row[0].strip()):
                continue
            if len(row) != len(header):
                got = (len(row) - 1 - (found_col >= 0)) / 2
                raise LanetError(f"{path}, line {line}: {len(row)} fields, expected {len(header)} "
                                 f"({num_points} points); this row has {got:g} points")
            try:
                coords = [float(row[i]) for i in coord_cols]
            except ValueError:
                bad = next(row[i] for i in coord_cols if not _is_float(row[i]))
                raise LanetError(f"{path}, line {line}: non-numeric coordinate {bad!r}") from None
            if not all(np.isfinite(coords)):
                raise LanetError(f"{path}, line {line}: coordinates must be finite numbers")
            names.append(row[0].strip())
            values.append(coords)
            if found_col >= 0:
                found.append(_parse_bool(row[found_col], path, line))
    arr = np.asarray(values, dtype=np.float64).reshape(len(values), num_points, 2)
    return names, arr, (np.asarray(found, dtype=bool) if found_col >= 0 else None)


def _is_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _read_npz(path: Path) -> tuple[list[str], np.ndarray, np.ndarray | None]:
    try:
        with np.load(path, allow_pickle=False) as data:
            keys = set(data.files)
            missing = {"names", "landmarks"} - keys
            if missing:
                raise LanetError(f"{path}: missing array(s) {sorted(missing)}; expected names, landmarks[, found]")
            names_arr = data["names"]
            landmarks = np.asarray(data["landmarks"])
            found = np.asarray(data["found"]) if "found" in keys else None
    except LanetError:
        raise
    except ValueError as exc:
        raise LanetError(f"{path}: cannot read ({exc}); save names as a string array: "
                         f"np.array(names, dtype=str)") from exc
    except (OSError, EOFError) as exc:
        raise LanetError(f"{path}: not a readable .npz file ({exc})") from exc
    if names_arr.ndim != 1 or names_arr.dtype.kind not in "US":
        raise LanetError(f"{path}: names must be a 1-D string array, got {names_arr.dtype} {names_arr.shape}")
    names = [str(n.decode() if isinstance(n, bytes) else n).strip() for n in names_arr]
    if landmarks.ndim != 3 or landmarks.shape[2] != 2 or landmarks.shape[0] != len(names):
        raise LanetError(f"{path}: landmarks must be {len(names)} x P x 2 (one shape per name), got {landmarks.shape}")
    if landmarks.dtype.kind not in "iuf":
        raise LanetError(f"{path}: landmarks must be numeric, got dtype {landmarks.dtype}")
    landmarks = landmarks.astype(np.float64)
    bad = ~np.isfinite(landmarks).all(axis=(1, 2))
    if bad.any():
        k = int(np.flatnonzero(bad)[0])
        raise LanetError(f"{path}: landmarks[{k}] (name {names[k]!r}) has non-finite coordinates")
    if found is not None:
        if found.shape != (len(names),):
            raise LanetError(f"{path}: found must have {len(names)} entries, got shape {found.shape}")
        found = found.astype(bool)
    return names, landmarks, found


def read_landmark_file(
    path: str | os.PathLike, names: np.ndarray | Sequence[str], image_size: int | Sequence[int]
) -> tuple[np.ndarray, np.ndarray]:
    """Read a landmark file (format in the module docstring) for the images ``names``, in that order.

    Args:
        path: ``.csv`` or ``.npz`` file.
        names: the dataset's image names (``FaceSet.names``).
        image_size: ``(height, width)`` of the loaded images (``FaceSet.image_size``) or one int for square.

    Returns:
        ``(landmarks, found)``: ``len(names) x P x 2`` float32 pixel coordinates of the loaded images and
        ``len(names)`` bool.

    Raises:
        LanetError: missing/unreadable file, bad header, inconsistent point count or non-numeric value (with
            the line), duplicate names, dataset images missing from the file (first few names and the count),
            or pixel coordinates far outside the image.
    """
    p = Path(path).expanduser()
    if not p.is_file():
        raise LanetError(f"landmark file not found: {p}")
    suffix = p.suffix.lower()
    if suffix == ".csv":
        file_names, coords, file_found = _read_csv(p)
    elif suffix == ".npz":
        file_names, coords, file_found = _read_npz(p)
    else:
        raise LanetError(f"{p}: unknown landmark file type {suffix!r}; expected .csv or .npz")
    if not file_names:
        raise LanetError(f"{p}: holds no landmarks")

    index: dict[str, int] = {}
    for i, name in enumerate(file_names):
        if name in index:
            raise LanetError(f"{p}: image {name!r} appears more than once")
        index[name] = i
    wanted = [str(n) for n in np.asarray(names, dtype=object)]
    rows = np.array([index.get(n, -1) for n in wanted], dtype=np.int64)
    missing = [n for n, r in zip(wanted, rows) if r < 0]
    if missing:
        shown = ", ".join(repr(n) for n in missing[:5])
        example = ", ".join(repr(n) for n in file_names[:3])
        raise LanetError(f"{p}: {len(missing)} of the dataset's {len(wanted)} images have no landmarks, e.g. {shown}"
                         f" (the file names images like {example})")

    h, w = _size_hw(image_size)
    if coords.size and float(coords.max()) <= 1.0:
        coords = coords * np.array([w, h], dtype=np.float64)
    out = coords[rows].astype(np.float32)
    lo, hi = -OUTSIDE_TOLERANCE, 1.0 + OUTSIDE_TOLERANCE
    far = ((out[..., 0] < lo * w) | (out[..., 0] > hi * w) | (out[..., 1] < lo * h) | (out[..., 1] > hi * h))
    if far.any():
        k = int(np.flatnonzero(far.any(axis=1))[0])
        raise LanetError(f"{p}: landmarks of {wanted[k]!r} lie far outside the {w}x{h} image (e.g. "
                         f"{out[k][far[k]][0].tolist()}); coordinates must be pixels of the images at the size "
                         f"they are loaded at ({w}x{h}), or normalised to [0, 1]")
    found = np.ones(len(wanted), dtype=bool) if file_found is None else file_found[rows]
    return out, found


def write_landmark_file(
    path: str | os.PathLike,
    names: np.ndarray | Sequence[str],
    landmarks: np.ndarray,
    found: np.ndarray | None = None,
) -> None:
    """Write landmarks (pixel coordinates) in the format given by the extension (``.csv`` or ``.npz``).

    The file is written atomically (a temporary file renamed over ``path``). CSV coordinates are written
    with 9 significant digits, which reproduces float32 values exactly.
    """
    p = Path(path).expanduser()
    names_list = [str(n) for n in np.asarray(names, dtype=object)]
    pts = np.asarray(landmarks, dtype=np.float32)
    if pts.ndim != 3 or pts.shape[2] != 2 or len(pts) != len(names_list):
        raise LanetError(f"{p}: landmarks must be {len(names_list)} x P x 2, got {pts.shape}")
    found_arr = None if found is None else np.asarray(found, dtype=bool).reshape(-1)
    if found_arr is not None and len(found_arr) != len(names_list):
        raise LanetError(f"{p}: found must have {len(names_list)} entries, got {len(found_arr)}")
    suffix = p.suffix.lower()
    if suffix not in (".csv", ".npz"):
        raise LanetError(f"{p}: unknown landmark file type {suffix!r}; expected .csv or .npz")
    p.parent.mkdir(parents=True, exist_ok=True)
    kwargs = {"newline": ""} if suffix == ".csv" else {}
    with atomic_open(p, "w" if suffix == ".csv" else "wb", **kwargs) as fh:
        if suffix == ".csv":
            num_points = pts.shape[1]
            header = ["name"] + (["found"] if found_arr is not None else [])
            header += [f"{axis}{k}" for k in range(num_points) for axis in "xy"]
            writer = csv.writer(fh, lineterminator="\n")
            writer.writerow(header)
            flat = pts.reshape(len(pts), -1)
            for i, name in enumerate(names_list):
                row = [name] + ([int(found_arr[i])] if found_arr is not None else [])
                writer.writerow(row + [format(float(v), ".9g") for v in flat[i]])
        else:
            arrays = {"names": np.asarray(names_list, dtype=str), "landmarks": pts}
            if found_arr is not None:
                arrays["found"] = found_arr
            np.savez(fh, **arrays)
