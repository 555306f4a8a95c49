"""Reading what ``lanet predict`` is given: image files, folders, video files and in-memory images.

Every image becomes an RGB ``PIL.Image`` the right way up:

* **orientation**: the EXIF orientation tag is applied (``PIL.ImageOps.exif_transpose``), so a portrait photo
  taken with a rotated phone is read as it is shown.
* **modes**: palette (``P``, ``PA``), grey with alpha (``LA``), ``RGBA``, ``CMYK`` and ``YCbCr`` convert to RGB
  (transparent pixels composited over white); 16-bit and 32-bit grey (``I;16``, ``I``) and float (``F``) images
  are rescaled to 8 bits from their full range (PIL's own conversion would clip every value above 255 to white);
  1-bit images become black and white.
* **size**: an image with more than ``max_pixels`` pixels (default :data:`MAX_PIXELS`) is refused before it is
  decoded: a small file can claim a huge size (a decompression bomb). Detection runs on a downscaled copy of
  large images (see :mod:`lanet.predict.detect`); crops are taken from the full-resolution image.

Inputs on the command line are files or folders. A folder is searched recursively for files with an image
(:data:`IMAGE_EXTENSIONS`) or video (:data:`VIDEO_EXTENSIONS`) extension, in sorted order; other files in a
folder are skipped and counted. A file named explicitly is read whatever its extension (a video by extension).

Videos are decoded with PyAV (the ``video`` extra, ``pip install 'lanet[video]'``); every ``every``-th frame is
used, with its frame number (0-based, in decoding order) and its presentation time in seconds.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps

from ..errors import LanetError

IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm",
                                     ".pgm", ".pbm", ".jfif")
VIDEO_EXTENSIONS: tuple[str, ...] = (".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv",
                                     ".flv", ".3gp")
#: Images with more pixels than this are refused before decoding (decompression-bomb guard; 200 megapixels).
MAX_PIXELS = 200_000_000
VIDEO_HINT = "pip install 'lanet[video]'"


@dataclass
class Source:
    """One input: a file path (image or video) or an in-memory image.

    ``name`` is what records show in their ``file`` field; ``rel`` the path an annotated copy takes under the
    annotation folder.
    """

    name: str
    path: Path | None = None
    image: Any = None  # numpy array or PIL image for in-memory inputs
    video: bool = False
    rel: str = ""


def is_video(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


def collect_sources(inputs: list[str | os.PathLike]) -> tuple[list[Source], int]:
    """Expand files and folders (recursively) into sources. Returns the sources and the number of files
    skipped in folders because their extension is neither an image's nor a video's.

    Raises:
        LanetError: an input does not exist, or nothing at all was found.
    """
    sources: list[Source] = []
    skipped = 0
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = 0
            for sub in sorted(p for p in path.rglob("*") if p.is_file()):
                ext = sub.suffix.lower()
                if ext not in IMAGE_EXTENSIONS and ext not in VIDEO_EXTENSIONS:
                    skipped += 1
                    continue
                rel = str(Path(path.resolve().name or "root") / sub.relative_to(path))
                sources.append(Source(str(sub), sub, video=ext in VIDEO_EXTENSIONS, rel=rel))
                found += 1
            if not found:
                raise LanetError(f"no images or videos found in folder {path} (extensions: "
                                 f"{' '.join(IMAGE_EXTENSIONS + VIDEO_EXTENSIONS)})")
        elif path.is_file():
            sources.append(Source(str(path), path, video=is_video(path), rel=path.name))
        elif path.exists():
            raise LanetError(f"input is neither a file nor a folder: {path}")
        else:
            raise LanetError(f"input not found: {path}")
    if not sources:
        raise LanetError("no inputs given")
    return sources, skipped


# ------------------------------------------------------------------------------------------------ images
def _rescale_to_uint8(arr: np.ndarray, full_scale: float) -> np.ndarray:
    """Integer or float grey values in [0, full_scale] -> uint8, rounding."""
    return np.clip(np.round(arr.astype(np.float64) * (255.0 / full_scale)), 0, 255).astype(np.uint8)


def to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL mode -> RGB (see the module docstring for the conventions)."""
    mode = img.mode
    if mode == "RGB":
        return img
    if mode in ("I;16", "I;16L", "I;16B", "I;16N"):
        return Image.fromarray(_rescale_to_uint8(np.asarray(img), 65535.0), "L").convert("RGB")
    if mode == "I":
        arr = np.asarray(img)
        # PNG 16-bit grey often arrives as mode I with values 0..65535; true 32-bit data is scaled by its maximum
        top = 65535.0 if arr.size and 0 <= arr.min() and arr.max() <= 65535 else max(float(np.abs(arr).max()), 1.0)
        return Image.fromarray(_rescale_to_uint8(np.clip(arr, 0, None), top), "L").convert("RGB")
    if mode == "F":
        arr = np.nan_to_num(np.asarray(img, dtype=np.float64))
        top = 1.0 if arr.size and arr.max() <= 1.0 else 255.0 if arr.max() <= 255.0 else float(arr.max())
        return Image.fromarray(_rescale_to_uint8(np.clip(arr, 0, None), top), "L").convert("RGB")
    if mode in ("P", "PA"):
        img = img.convert("RGBA")
        mode = "RGBA"
    if mode in ("RGBA", "LA", "La", "RGBa"):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return img.convert("RGB")  # L, 1, CMYK, YCbCr, LAB, HSV, RGBX


@contextmanager
def _own_pixel_limit() -> Iterator[None]:
    """Switch off Pillow's decompression-bomb check while a header is read: :func:`open_image` applies its own
    ``max_pixels`` to the size in the header, before any pixel is decoded."""
    saved = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        yield
    finally:
        Image.MAX_IMAGE_PIXELS = saved


def open_image(path: str | os.PathLike, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Decode an image file to an upright RGB ``PIL.Image``.

    Raises:
        LanetError: missing, unreadable, corrupt or not an image; larger than ``max_pixels``.
    """
    try:
        with _own_pixel_limit(), Image.open(path) as img:
            w, h = img.size
            if w * h > max_pixels:
                raise LanetError(f"{path}: image is {w} x {h} = {w * h / 1e6:.0f} megapixels, above the limit of "
                                 f"{max_pixels / 1e6:.0f} (a guard against decompression bombs; raise --max-pixels "
                                 "if the file is genuine)")
            img.load()
            img = ImageOps.exif_transpose(img) or img
            return to_rgb(img)
    except LanetError:
        raise
    except FileNotFoundError as exc:
        raise LanetError(f"image not found: {path}") from exc
    except IsADirectoryError as exc:
        raise LanetError(f"{path} is a folder, not an image") from exc
    except Image.UnidentifiedImageError as exc:
        raise LanetError(f"{path} is not an image (or a format Pillow cannot read)") from exc
    except Image.DecompressionBombError as exc:
        raise LanetError(f"{path}: {exc}") from exc
    except (OSError, ValueError, SyntaxError, EOFError, MemoryError) as exc:
        detail = " ".join(str(exc).split()) or type(exc).__name__
        raise LanetError(f"{path}: cannot decode image ({detail})") from exc


def as_image(obj: Any, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """A numpy array (``H x W``, ``H x W x 1|3|4``; uint8, uint16 or float in [0, 1]) or a PIL image -> RGB."""
    if isinstance(obj, Image.Image):
        if obj.width * obj.height > max_pixels:
            raise LanetError(f"image is {obj.width} x {obj.height}, above the limit of {max_pixels} pixels")
        return to_rgb(obj)
    try:
        import torch

        if isinstance(obj, torch.Tensor):
            obj = obj.detach().cpu().numpy()
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    arr = np.asarray(obj)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (3, 4)) or min(arr.shape[:2]) < 1:
        raise LanetError(f"an image array must be H x W or H x W x 1|3|4, got shape {arr.shape}")
    if arr.shape[0] * arr.shape[1] > max_pixels:
        raise LanetError(f"image is {arr.shape[1]} x {arr.shape[0]}, above the limit of {max_pixels} pixels")
    if arr.dtype == np.uint8:
        pass
    elif arr.dtype == np.uint16:
        arr = _rescale_to_uint8(arr, 65535.0)
    elif arr.dtype == np.bool_:
        arr = arr.astype(np.uint8) * 255
    elif np.issubdtype(arr.dtype, np.floating):
        if not np.isfinite(arr).all():
            raise LanetError("image array holds NaN or infinite values")
        arr = _rescale_to_uint8(np.clip(arr, 0, 1), 1.0) if arr.max() <= 1.0 else \
            np.clip(np.round(arr), 0, 255).astype(np.uint8)
    elif np.issubdtype(arr.dtype, np.integer):
        arr = np.clip(arr, 0, 255).astype(np.uint8)
    else:
        raise LanetError(f"unsupported image array dtype {arr.dtype}")
    mode = "L" if arr.ndim == 2 else ("RGB" if arr.shape[2] == 3 else "RGBA")
    return to_rgb(Image.fromarray(np.ascontiguousarray(arr), mode))


# ------------------------------------------------------------------------------------------------ videos
def _import_av() -> Any:
    try:
        import av
    except ImportError as exc:
        raise LanetError(f"reading videos needs PyAV: {VIDEO_HINT}") from exc
    return av


def iter_video(path: str | os.PathLike, every: int = 1,
               max_pixels: int = MAX_PIXELS) -> Iterator[tuple[int, float | None, Image.Image]]:
    """``(frame number, time in seconds, RGB image)`` for every ``every``-th frame of a video file.

    Frames carrying a display rotation (phone videos) are rotated upright. Raises :class:`LanetError` when the
    file cannot be opened or decoding fails.
    """
    if every < 1:
        raise LanetError(f"--every must be >= 1, got {every}")
    av = _import_av()
    try:
        container = av.open(str(path))
    except FileNotFoundError as exc:
        raise LanetError(f"video not found: {path}") from exc
    except (av.FFmpegError, OSError, ValueError) as exc:
        raise LanetError(f"{path}: cannot open video ({' '.join(str(exc).split())})") from exc
    with container:
        if not container.streams.video:
            raise LanetError(f"{path}: no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        if stream.width * stream.height > max_pixels:
            raise LanetError(f"{path}: frames are {stream.width} x {stream.height}, above the pixel limit")
        index = 0
        try:
            for frame in container.decode(stream):
                if index % every == 0:
                    t = frame.time
                    img = frame.to_image()  # RGB
                    rotation = int(getattr(frame, "rotation", 0) or 0) % 360
                    if rotation:  # the angle the frame must be rotated counter-clockwise to be shown upright
                        img = img.rotate(rotation, expand=True)
                    yield index, (None if t is None else float(t)), img
                index += 1
        except av.FFmpegError as exc:
            raise LanetError(f"{path}: video decoding failed at frame {index} "
                             f"({' '.join(str(exc).split())})") from exc
    if index == 0:
        raise LanetError(f"{path}: the video has no decodable frames")
