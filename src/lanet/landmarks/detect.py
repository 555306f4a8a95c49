"""68-point facial landmarks with dlib: HOG frontal face detector, then the iBUG 68-point shape predictor.

Face-expression datasets store tight face crops (FER2013 / FERPlus: 48 x 48 grayscale). dlib's HOG detector
scans an 80 x 80 window and needs some context around the face, so each image is prepared before detection:

1. upscaled (bilinear) so its longer side is ``upscale_to`` pixels, if it is smaller than that (larger images
   keep their size);
2. padded by ``pad`` x its size on every side with its own mean intensity (the face fills the crop edge to
   edge; without the border dlib misses many of them);
3. searched with ``get_frontal_face_detector()(image, upsample)``, scores ``>= adjust_threshold``. If no face
   is found, the search is retried with the image resized to ``size * r`` for ``r`` in ``retry_scales``, where
   ``size`` is the size of step 1 (the HOG pyramid steps by 5/6, so a slightly different size samples face
   scales in between).

The largest face found is passed to the shape predictor. Where no attempt finds a face, the predictor runs on
the FIXED box ``fallback_box`` = (left, top, right, bottom) as fractions of the image width/height, and the
image is flagged ``found = False``. The default box was measured on FERPlus: dlib's detected boxes
average (0.05, 0.11, 0.96, 1.02) of the crop; running the predictor on fixed boxes for 1,300 images where a
face WAS detected and comparing with the detected-box shapes (mean point error / outer-eye-corner distance),
a grid search picked (0.05, 0.10, 0.93, 0.98): error 0.069 (median 0.018), against 0.084 for
(0.1, 0.1, 0.9, 0.9) and 0.078 for the whole image.

Landmarks are returned in the ORIGINAL image's pixel coordinates (x, y), pixel centres at integers.

The other defaults were also chosen on FERPlus (numbers in the comment of :data:`DEFAULT_SETTINGS`; the full
run is ``benchmarks/landmarks_ferplus.py``).
"""

from __future__ import annotations

import multiprocessing as mp
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import LanetError
from ..facemodels import face_model_file

#: Bumped whenever the detection pipeline changes in a way that changes its output (part of the cache key).
DETECTOR_VERSION = "dlib-hog-ibug68-v1"

INSTALL_HINT = "pip install 'lanet[landmarks]'"

#: Default detector settings (also part of the landmark cache key). Detection rate on 3,000 random FERPlus
#: images (all splits) and CPU time per image including the shape predictor (one process, dlib-bin 20.0):
#:   48 px, upsample 1, no border        0.701   4.4 ms   (dlib's own upsampling of the native image)
#:   160 px, no border                   0.673   8.1 ms
#:   160 px + 25% border                 0.799  11.2 ms
#:   80 px + border, upsample 1          0.789  10.3 ms
#:   112 px + border, upsample 1         0.791  16.6 ms
#:   112 px + border                     0.801   7.2 ms
#:   112 px + border, retries 128/96     0.840   8.3 ms   <- default
#:   ... retries 128/96/144/80           0.854   9.7 ms
#:   160 px + border, retries 183/137    0.838  13.6 ms
#: dlib's upsample argument never helped once the image is upscaled; lowering ``adjust_threshold`` to -0.2
#: finds ~5% more faces, but random noise images already score -0.45, so dlib's threshold 0 is kept.
DEFAULT_SETTINGS: dict[str, Any] = {
    "upscale_to": 112,
    "upsample": 0,
    "pad": 0.25,
    "retry_scales": (8 / 7, 6 / 7),
    "adjust_threshold": 0.0,
    "fallback_box": (0.05, 0.10, 0.93, 0.98),
}

_DETECTOR: Any = None
_PREDICTOR: Any = None
_MODEL_PATH = ""
_OPTIONS: dict[str, Any] = {}


def shape_predictor_path() -> Path:
    """Path of ``shape_predictor_68_face_landmarks.dat`` from ``face_recognition_models`` (``LANET_SHAPE_PREDICTOR``
    overrides it)."""
    return face_model_file("shape_predictor_68_face_landmarks.dat", "LANET_SHAPE_PREDICTOR", "landmark detection")


def _import_dlib() -> Any:
    try:
        import dlib
    except ImportError as exc:
        raise LanetError(f"landmark detection needs dlib ({exc}): {INSTALL_HINT}") from exc
    return dlib


def _init_worker(model_path: str, options: dict[str, Any]) -> None:
    """Load the detector and predictor once per process (kept for later calls; forked workers inherit them)."""
    global _DETECTOR, _PREDICTOR, _MODEL_PATH, _OPTIONS
    if _PREDICTOR is None or _MODEL_PATH != model_path:
        dlib = _import_dlib()
        _DETECTOR = dlib.get_frontal_face_detector()
        _PREDICTOR = dlib.shape_predictor(model_path)
        _MODEL_PATH = model_path
    _OPTIONS = dict(options)


def _prepare(image: np.ndarray, size: int, pad: float) -> tuple[np.ndarray, float, float, int]:
    """Resize ``image`` (H x W x C, bilinear) so its longer side is ``size`` pixels, and pad it.

    Returns the prepared image (2-D gray or H x W x 3), the x and y scale factors, and the border width.
    """
    from PIL import Image

    h, w = image.shape[:2]
    gray = image.shape[2] == 1
    arr = image[..., 0] if gray else image
    scale = size / max(h, w)
    if size != max(h, w):
        new_w, new_h = max(1, round(w * scale)), max(1, round(h * scale))
        arr = np.asarray(Image.fromarray(arr).resize((new_w, new_h), Image.BILINEAR))
    sx, sy = arr.shape[1] / w, arr.shape[0] / h
    border = int(round(pad * max(arr.shape[:2])))
    if border > 0:
        padded = np.empty((arr.shape[0] + 2 * border, arr.shape[1] + 2 * border) + arr.shape[2:], dtype=np.uint8)
        padded[...] = np.round(arr.mean(axis=(0, 1))).astype(np.uint8)
        padded[border:-border, border:-border] = arr
        arr = padded
    return np.ascontiguousarray(arr), sx, sy, border


def _detect_one(image: np.ndarray) -> tuple[np.ndarray, bool]:
    """Landmarks (68 x 2, original pixel coordinates) and whether a face was detected, for one image."""
    import dlib

    opts = _OPTIONS
    h, w = image.shape[:2]
    base = max(int(opts["upscale_to"]), h, w)  # upscale small images only
    sizes = list(dict.fromkeys([base] + [max(1, round(base * r)) for r in opts["retry_scales"]]))
    found = False
    work = None
    for size in sizes:
        arr, sx, sy, border = _prepare(image, size, opts["pad"])
        work = work or (arr, sx, sy, border)
        rects, _scores, _ = _DETECTOR.run(arr, int(opts["upsample"]), float(opts["adjust_threshold"]))
        if len(rects):
            rect = max(rects, key=lambda r: (r.width() * r.height(), -r.left(), -r.top()))
            found = True
            break
    if not found:
        arr, sx, sy, border = work  # type: ignore[misc]
        left, top, right, bottom = opts["fallback_box"]
        # fraction f of the width is the edge at f * w; in the prepared image's pixel-centre coordinates that is
        # f * w * sx - 0.5 + border (the inverse of the mapping of the points below)
        x0, x1 = left * w * sx - 0.5 + border, right * w * sx - 0.5 + border
        y0, y1 = top * h * sy - 0.5 + border, bottom * h * sy - 0.5 + border
        rect = dlib.rectangle(int(round(x0)), int(round(y0)), int(round(x1)), int(round(y1)))
    shape = _PREDICTOR(arr, rect)
    pts = np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float64)
    pts[:, 0] = (pts[:, 0] - border + 0.5) / sx - 0.5
    pts[:, 1] = (pts[:, 1] - border + 0.5) / sy - 0.5
    return pts.astype(np.float32), found


def _detect_chunk(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    out = np.zeros((len(images), 68, 2), dtype=np.float32)
    found = np.zeros(len(images), dtype=bool)
    for i, image in enumerate(images):
        out[i], found[i] = _detect_one(image)
    return out, found


def detect_settings(**overrides: Any) -> dict[str, Any]:
    """:data:`DEFAULT_SETTINGS` with ``overrides`` applied and validated (tuples normalised)."""
    unknown = set(overrides) - set(DEFAULT_SETTINGS)
    if unknown:
        raise LanetError(f"unknown landmark detector settings: {sorted(unknown)}; known: {sorted(DEFAULT_SETTINGS)}")
    s = {**DEFAULT_SETTINGS, **{k: v for k, v in overrides.items() if v is not None}}
    s["upscale_to"] = int(s["upscale_to"])
    s["upsample"] = int(s["upsample"])
    s["pad"] = float(s["pad"])
    s["retry_scales"] = tuple(float(r) for r in s["retry_scales"])
    s["adjust_threshold"] = float(s["adjust_threshold"])
    s["fallback_box"] = tuple(float(v) for v in s["fallback_box"])
    if s["upscale_to"] < 1 or s["upsample"] < 0 or s["pad"] < 0 or any(r <= 0 for r in s["retry_scales"]):
        raise LanetError(f"invalid landmark detector settings: {s}")
    left, top, right, bottom = s["fallback_box"] if len(s["fallback_box"]) == 4 else (0, 0, 0, 0)
    if not (right > left and bottom > top):
        raise LanetError(f"fallback_box must be (left, top, right, bottom) fractions, got {s['fallback_box']}")
    return s


def detect_landmarks(
    images: np.ndarray,
    upscale_to: int = DEFAULT_SETTINGS["upscale_to"],
    workers: int = 0,
    progress: bool = True,
    *,
    upsample: int = DEFAULT_SETTINGS["upsample"],
    pad: float = DEFAULT_SETTINGS["pad"],
    retry_scales: Sequence[float] = DEFAULT_SETTINGS["retry_scales"],
    adjust_threshold: float = DEFAULT_SETTINGS["adjust_threshold"],
    fallback_box: Sequence[float] = DEFAULT_SETTINGS["fallback_box"],
    chunk_size: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Detect 68 iBUG landmarks in every image (see the module docstring for the pipeline).

    Args:
        images: ``N x H x W x C`` uint8, C = 1 or 3.
        upscale_to: images smaller than this are upscaled (bilinear) so their longer side has this many pixels.
            The default suits 48 px FER2013 crops (see :data:`DEFAULT_SETTINGS`).
        workers: processes (0 = all available cores; 1 = in this process). Each loads the models once.
        progress: show a tqdm bar (rate and ETA).
        upsample: dlib's own pyramid upsampling passes (0 keeps the time down; see :data:`DEFAULT_SETTINGS`).
        pad: border added on every side, as a fraction of the (upscaled) image size, filled with its mean.
        retry_scales: further sizes (``r`` x the size after upscaling) tried, in order, while no face is found.
        adjust_threshold: detection score threshold (dlib's default 0; lower finds more, less reliably).
        fallback_box: (left, top, right, bottom) fractions of the image: the face box used where no face is found.
        chunk_size: images per task sent to a worker (0 = automatic).

    Returns:
        ``(landmarks, found)``: ``N x 68 x 2`` float32 (x, y) in the original image's pixel coordinates, and
        ``N`` bool, False where no face was detected and ``fallback_box`` was used. Output order = input order.
    """
    images = np.asarray(images)
    if images.ndim != 4 or images.dtype != np.uint8 or images.shape[-1] not in (1, 3):
        raise LanetError(f"images must be N x H x W x C uint8 with C in (1, 3), got {images.shape} {images.dtype}")
    options = detect_settings(upscale_to=upscale_to, upsample=upsample, pad=pad, retry_scales=retry_scales,
                              adjust_threshold=adjust_threshold, fallback_box=fallback_box)
    _import_dlib()
    model_path = str(shape_predictor_path())
    n = len(images)
    landmarks = np.zeros((n, 68, 2), dtype=np.float32)
    found = np.zeros(n, dtype=bool)
    if n == 0:
        return landmarks, found
    if workers <= 0:
        workers = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if chunk_size <= 0:
        chunk_size = int(np.clip(n // (workers * 8), 16, 256))
    workers = max(1, min(workers, -(-n // chunk_size)))
    starts = list(range(0, n, chunk_size))

    from tqdm.auto import tqdm

    bar = tqdm(total=n, unit="img", desc="landmarks", disable=not progress, dynamic_ncols=True)
    pool = None
    try:
        if workers == 1:
            _init_worker(model_path, options)
            results: Any = (_detect_chunk(images[s:s + chunk_size]) for s in starts)
        else:
            # fork where available: no re-import of the caller's __main__ (spawn would need a main guard)
            ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
            pool = ctx.Pool(workers, initializer=_init_worker, initargs=(model_path, options))
            results = pool.imap(_detect_chunk, (images[s:s + chunk_size] for s in starts))
        for s, (pts, ok) in zip(starts, results):
            landmarks[s:s + len(ok)] = pts
            found[s:s + len(ok)] = ok
            bar.update(len(ok))
            bar.set_postfix(found=f"{found[:s + len(ok)].mean():.1%}", refresh=False)
        if pool is not None:
            pool.close()
            pool.join()
            pool = None
    finally:
        bar.close()
        if pool is not None:
            pool.terminate()
    return landmarks, found
