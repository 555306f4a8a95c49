"""Image decoding and the on-disk cache of decoded arrays.

Every loader turns its files into one ``N x S x S x C`` uint8 array through :func:`load_images` (a thread pool
of PIL decoders; PIL releases the GIL while decoding) and keeps the result in :func:`cached_arrays`, an ``.npz``
per dataset configuration under the cache folder. The cache key is a sha1 over a content signature (the file
list with sizes and modification times, plus every load parameter), so editing, adding or removing an image,
or asking for another size or channel count, builds a new entry instead of returning stale pixels.

Cache folder: the ``cache_dir`` argument if given, else ``$LANET_CACHE``, else ``~/.cache/lanet``. The value
``none`` (argument or variable) disables caching. Entries are never evicted; delete the folder to reclaim space.

Resizing conventions: images are resized to a square ``size x size`` with PIL's bilinear filter (which
averages over the source footprint when shrinking, i.e. area-like antialiasing); a non-square image is
stretched, not cropped. A crop box ``(x, y, w, h)`` is in continuous pixel coordinates of the original image
(pixel ``i`` covers ``[i, i + 1)``); parts of the box outside the image are filled with black.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import warnings
import zipfile
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..errors import LanetError
from ..fileutil import atomic_open, cache_root

#: Bump when the decoded pixels for the same files and parameters would change (invalidates old entries).
CACHE_VERSION = 1
#: Show a progress bar when decoding more images than this.
PROGRESS_THRESHOLD = 2000
IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp")

_GRAY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F", "La"}
Box = tuple[float, float, float, float]


# --------------------------------------------------------------------------------------------- decoding
def _target_mode(img: Image.Image, channels: int) -> str:
    if channels == 1:
        return "L"
    if channels == 3:
        return "RGB"
    if channels != 0:
        raise LanetError(f"channels must be 0, 1 or 3, got {channels}")
    return "L" if img.mode in _GRAY_MODES else "RGB"


def _as_array(img: Image.Image) -> np.ndarray:
    arr = np.asarray(img, dtype=np.uint8)
    return arr[:, :, None] if arr.ndim == 2 else arr


def _crop_resize(img: Image.Image, size: int, box: Box | None, scale: float = 1.0) -> Image.Image:
    """Crop ``box`` (original-image coordinates; the decoded image is ``1/scale`` of the original) and resize."""
    if box is None:
        if size and img.size != (size, size):
            img = img.resize((size, size), Image.Resampling.BILINEAR)
        return img
    x, y, w, h = (float(v) / scale for v in box)
    if w <= 0 or h <= 0:
        raise LanetError(f"face box {tuple(box)} has no area")
    x0, y0, x1, y1 = x, y, x + w, y + h
    if not size:  # crop only, at native resolution
        return img.crop((round(x0), round(y0), round(x1), round(y1)))
    width, height = img.size
    if x0 >= 0 and y0 >= 0 and x1 <= width and y1 <= height:
        return img.resize((size, size), Image.Resampling.BILINEAR, box=(x0, y0, x1, y1))
    # The box leaves the image: pad by cropping an integer superset (PIL fills outside with zeros), then
    # resample the exact sub-box so the geometry matches the in-bounds case.
    ix0, iy0, ix1, iy1 = math.floor(x0), math.floor(y0), math.ceil(x1), math.ceil(y1)
    padded = img.crop((ix0, iy0, ix1, iy1))
    return padded.resize((size, size), Image.Resampling.BILINEAR, box=(x0 - ix0, y0 - iy0, x1 - ix0, y1 - iy0))


def decode_image(path: str | os.PathLike, size: int = 0, channels: int = 0, box: Box | None = None) -> np.ndarray:
    """Decode one image file to ``H x W x C`` uint8.

    Args:
        path: the image file (anything PIL reads: PNG, JPEG, BMP, ...).
        size: resize to ``size x size`` (0 = keep the native size).
        channels: 1 = grayscale, 3 = RGB, 0 = as stored (1 for grayscale files, else 3).
        box: optional face box ``(x, y, w, h)`` cropped before resizing (original-image pixel coordinates).

    Raises:
        LanetError: the file is missing, unreadable or corrupt (the message names the file).
    """
    try:
        with Image.open(path) as img:
            mode = _target_mode(img, channels)
            scale = 1.0
            if size and img.format == "JPEG":
                # Let libjpeg decode at 1/2, 1/4 or 1/8 scale when the face still covers >= size pixels.
                bw, bh = (box[2], box[3]) if box is not None else img.size
                req = (math.ceil(img.size[0] * size / max(bw, 1e-6)), math.ceil(img.size[1] * size / max(bh, 1e-6)))
                original = img.size
                drafted = img.draft(mode if mode == "L" else img.mode, req)
                if drafted is not None:
                    scale = original[0] / drafted[1][2]
            img.load()
            out = img if img.mode == mode else img.convert(mode)
            out = _crop_resize(out, size, box, scale)
            return _as_array(out)
    except LanetError as exc:
        raise LanetError(f"{path}: {exc}") from exc
    except FileNotFoundError as exc:
        raise LanetError(f"image not found: {path}") from exc
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise LanetError(f"cannot decode image {path}: {exc}") from exc


def convert_array(image: np.ndarray, size: int = 0, channels: int = 0) -> np.ndarray:
    """Resize / convert an in-memory ``H x W`` or ``H x W x C`` uint8 image the same way :func:`decode_image` does."""
    image = np.asarray(image, dtype=np.uint8)
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    img = Image.fromarray(image)
    mode = _target_mode(img, channels)
    if img.mode != mode:
        img = img.convert(mode)
    return _as_array(_crop_resize(img, size, None))


# ------------------------------------------------------------------------------------------ parallelism
def default_workers() -> int:
    """Decoder threads: twice the cores (decoding interleaves with file reads), at most 16."""
    return max(1, min(16, 2 * (os.cpu_count() or 1)))


def parallel_fill(
    n: int,
    work: Callable[[int, int], None],
    desc: str = "decoding images",
    workers: int = 0,
    chunk: int = 0,
) -> None:
    """Run ``work(lo, hi)`` over ``range(n)`` in chunks on a thread pool, with a tqdm bar when ``n`` is large.

    The first exception cancels the chunks not yet started and is re-raised.
    """
    if n == 0:
        return
    workers = workers or default_workers()
    chunk = chunk or max(1, min(256, math.ceil(n / (workers * 4))))
    ranges = [(lo, min(n, lo + chunk)) for lo in range(0, n, chunk)]
    from tqdm.auto import tqdm

    with tqdm(total=n, desc=desc, unit="img", disable=n <= PROGRESS_THRESHOLD, mininterval=0.5,
              dynamic_ncols=True, leave=False) as bar:
        if workers == 1 or len(ranges) == 1:
            for lo, hi in ranges:
                work(lo, hi)
                bar.update(hi - lo)
            return
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="lanet-decode") as pool:
            pending = {pool.submit(work, lo, hi): hi - lo for lo, hi in ranges}
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
                    count = pending.pop(fut)
                    exc = fut.exception()
                    if exc is not None:
                        for other in pending:
                            other.cancel()
                        raise exc
                    bar.update(count)


def load_images(
    paths: Sequence[str | os.PathLike],
    size: int,
    channels: int = 0,
    boxes: Sequence[Box | None] | np.ndarray | None = None,
    desc: str = "decoding images",
    workers: int = 0,
) -> np.ndarray:
    """Decode many files into one ``N x size x size x C`` uint8 array (thread pool, progress bar).

    ``channels`` 0 means "as found": 1 if every image is grayscale, else 3 (grayscale images are replicated).
    """
    if size <= 0:
        raise LanetError(f"image size must be positive, got {size}")
    n = len(paths)
    alloc = channels or 3
    out = np.empty((n, size, size, alloc), dtype=np.uint8)
    gray = np.zeros(n, dtype=bool)

    def work(lo: int, hi: int) -> None:
        for i in range(lo, hi):
            box = None if boxes is None or boxes[i] is None else tuple(boxes[i])
            arr = decode_image(paths[i], size, channels, box)
            out[i] = arr  # (S, S, 1) broadcasts into an RGB slot
            gray[i] = arr.shape[2] == 1

    parallel_fill(n, work, desc=desc, workers=workers)
    if channels == 0 and n and gray.all():
        out = np.ascontiguousarray(out[..., :1])
    return out


# ------------------------------------------------------------------------------------------------ cache
def file_stats(paths: Sequence[str | os.PathLike]) -> list[tuple[str, int, int]]:
    """``(path, size, mtime_ns)`` for every file; a missing file is a LanetError naming it."""
    stats = []
    stat = os.stat
    for p in paths:
        try:
            st = stat(p)
        except OSError as exc:
            raise LanetError(f"cannot read {p}: {exc.strerror or exc}") from exc
        stats.append((os.fspath(p), st.st_size, st.st_mtime_ns))
    return stats


def content_signature(paths: Sequence[str | os.PathLike] = (), stats: Sequence[tuple[str, int, int]] = ()) -> str:
    """A sha1 over the file list with sizes and modification times (pass ``stats`` if already known)."""
    text = "".join([f"{path}\0{size}\0{mtime}\n" for path, size, mtime in (stats or file_stats(paths))])
    return hashlib.sha1(text.encode("utf-8", "surrogateescape")).hexdigest()


def array_signature(*arrays: Any) -> str:
    """A sha1 over arrays / sequences (row selections, face boxes) for use in cache keys."""
    digest = hashlib.sha1()
    for a in arrays:
        arr = np.ascontiguousarray(np.asarray(a))
        digest.update(f"{arr.dtype.str}{arr.shape}".encode())
        digest.update(arr.tobytes() if arr.dtype != object else repr(arr.tolist()).encode())
    return digest.hexdigest()


def cache_key(key_parts: dict[str, Any]) -> str:
    """The sha1 of the JSON form of ``key_parts`` (plus :data:`CACHE_VERSION`)."""
    text = json.dumps({"cache_version": CACHE_VERSION, **key_parts}, sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()


def cache_path(key_parts: dict[str, Any], cache_dir: str | os.PathLike = "") -> Path | None:
    """Where the entry for ``key_parts`` lives (None when caching is disabled)."""
    root = cache_root(cache_dir)
    if root is None:
        return None
    prefix = "".join(c if c.isalnum() or c in "-_" else "_" for c in str(key_parts.get("dataset", "arrays")))
    return root / f"{prefix}-{cache_key(key_parts)[:24]}.npz"


def cached_arrays(
    key_parts: dict[str, Any],
    build: Callable[[], dict[str, np.ndarray]],
    cache_dir: str | os.PathLike = "",
) -> dict[str, np.ndarray]:
    """Return ``build()``'s arrays, from the cache when an entry for ``key_parts`` exists.

    ``key_parts`` must capture everything the arrays depend on (a :func:`content_signature` of the source
    files and every load parameter); its ``dataset`` entry prefixes the file name. The entry is written
    atomically (temporary file + ``os.replace``), so a crash never leaves a half-written cache. A cache that
    cannot be read is rebuilt; one that cannot be written only warns. Arrays must not be object arrays.
    """
    path = cache_path(key_parts, cache_dir)
    if path is not None and path.is_file():
        try:
            with np.load(path, allow_pickle=False) as npz:
                return {k: npz[k] for k in npz.files}
        except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as exc:
            warnings.warn(f"ignoring unreadable cache entry {path}: {exc}", stacklevel=2)
    arrays = build()
    if path is not None:
        try:
            with atomic_open(path, "wb") as fh:
                np.savez(fh, **arrays)
        except OSError as exc:
            warnings.warn(f"could not write cache entry {path}: {exc}", stacklevel=2)
    return arrays
