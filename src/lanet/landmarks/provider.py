"""Give a FaceSet landmarks: ground truth, a user's file, or dlib detections cached by dataset content.

``ensure_landmarks(faceset, spec)`` implements ``data.landmarks``:

* ``none``: leave the FaceSet without landmarks.
* a path (``.csv`` / ``.npz``, see :mod:`lanet.landmarks.io`): read and attach, replacing any landmarks.
* ``auto``: keep landmarks the loader already attached (ground truth, e.g. synthetic data or AffectNet);
  otherwise load them from the cache, or run :func:`~lanet.landmarks.detect.detect_landmarks` and cache them.

The cache file is ``<root>/landmarks/landmarks-<sha1>.npz`` where the sha1 covers the image array (shape,
dtype and bytes), the detector settings and :data:`~lanet.landmarks.detect.DETECTOR_VERSION`, so any change
of any pixel or setting misses the cache, while the same images under another dataset name or folder hit it.
``<root>`` is ``cache_dir`` if given, else ``$LANET_CACHE``, else ``~/.cache/lanet``. Cache files are
written atomically (temporary file + ``os.replace``): an interrupted run never leaves a corrupt cache, and a
cache file that cannot be read anyway is recomputed and overwritten.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from ..data.faceset import SPLITS, FaceSet
from ..errors import LanetError
from ..fileutil import atomic_open, cache_root
from . import detect as _detect
from .io import read_landmark_file


def content_key(images: np.ndarray, settings: dict[str, Any] | None = None) -> str:
    """sha1 over the images (shape, dtype, bytes), the detector settings and the detector version."""
    images = np.ascontiguousarray(images)
    h = hashlib.sha1()
    h.update(json.dumps({"version": _detect.DETECTOR_VERSION, "shape": list(images.shape), "dtype": images.dtype.str,
                         "settings": _detect.detect_settings(**(settings or {}))}, sort_keys=True).encode())
    h.update(memoryview(images).cast("B"))
    return h.hexdigest()


def cache_path(images: np.ndarray, cache_dir: str = "", settings: dict[str, Any] | None = None) -> Path | None:
    """Where the detections for ``images`` are (or would be) cached; None when caching is off."""
    root = cache_root(cache_dir)
    if root is None:
        return None
    return root / "landmarks" / f"landmarks-{content_key(images, settings)}.npz"


def _load_cache(path: Path | None, n: int) -> tuple[np.ndarray, np.ndarray] | None:
    if path is None:
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            landmarks = np.asarray(data["landmarks"], dtype=np.float32)
            found = np.asarray(data["found"], dtype=bool)
    except FileNotFoundError:
        return None
    except Exception:  # an unreadable cache is recomputed, never fatal
        return None
    if landmarks.shape != (n, 68, 2) or found.shape != (n,) or not np.isfinite(landmarks).all():
        return None
    return landmarks, found


def _save_cache(path: Path | None, landmarks: np.ndarray, found: np.ndarray, meta: dict[str, Any]) -> None:
    if path is None:
        return
    with atomic_open(path, "wb") as fh:
        np.savez(fh, landmarks=landmarks.astype(np.float32), found=found.astype(bool),
                 meta=np.asarray(json.dumps(meta, sort_keys=True)))


def ensure_landmarks(faceset: FaceSet, spec: str = "auto", cache_dir: str = "", progress: bool = True) -> None:
    """Attach landmarks to ``faceset`` in place according to ``spec`` (``auto`` | ``none`` | a file path).

    Args:
        faceset: the dataset; its ``landmarks`` / ``landmark_found`` are set (or left alone).
        spec: ``data.landmarks``; see the module docstring.
        cache_dir: cache root (``data.cache_dir``); empty = ``$LANET_CACHE`` or ``~/.cache/lanet``.
        progress: show the detector's progress bar when it has to run.

    Raises:
        LanetError: a landmark file that is missing or does not fit the dataset; dlib or its model missing when
            detection is needed.
    """
    spec = (spec or "auto").strip()
    key = spec.lower()
    if key == "none":
        return
    if key != "auto":
        landmarks, found = read_landmark_file(spec, faceset.names, faceset.image_size)
        faceset.set_landmarks(landmarks, found)
        faceset.meta["landmarks"] = {"source": "file", "path": str(Path(spec).expanduser())}
        return
    if faceset.landmarks is not None:
        faceset.meta.setdefault("landmarks", {"source": "dataset"})
        return
    path = cache_path(faceset.images, cache_dir)
    cached = _load_cache(path, len(faceset))
    if cached is None:
        try:
            landmarks, found = _detect.detect_landmarks(faceset.images, progress=progress)
        except LanetError as exc:
            raise LanetError(f"{faceset.name}: data.landmarks=auto has to detect landmarks: {exc} (or set "
                             f"data.landmarks=none, or to a landmark file)") from exc
        _save_cache(path, landmarks, found, {"dataset": faceset.name, "images": len(faceset),
                                             "version": _detect.DETECTOR_VERSION,
                                             "settings": _detect.detect_settings()})
        source = "detected"
    else:
        landmarks, found = cached
        source = "cache"
    faceset.set_landmarks(landmarks, found)
    faceset.meta["landmarks"] = {"source": source, "cache": str(path)}


def landmark_stats(faceset: FaceSet) -> dict[str, Any]:
    """Landmark summary: ``count`` (images with landmarks), ``points``, ``found``, ``detection_rate`` overall
    and per split (``detection_rate_train`` ...), and ``source`` where known."""
    n = len(faceset)
    if faceset.landmarks is None:
        return {"count": 0, "images": n, "points": 0, "found": 0, "detection_rate": 0.0}
    found = (np.ones(n, dtype=bool) if faceset.landmark_found is None
             else np.asarray(faceset.landmark_found, dtype=bool))
    stats: dict[str, Any] = {
        "count": n,
        "images": n,
        "points": faceset.num_landmarks,
        "found": int(found.sum()),
        "detection_rate": float(found.mean()) if n else 0.0,
    }
    for i, split in enumerate(SPLITS):
        mask = faceset.split == i
        if mask.any():
            stats[f"detection_rate_{split}"] = float(found[mask].mean())
    source = faceset.meta.get("landmarks", {}).get("source") if isinstance(faceset.meta, dict) else None
    if source:
        stats["source"] = source
    return stats
