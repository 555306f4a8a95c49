"""Face detectors for prediction: dlib's HOG detector, dlib's CNN (MMOD) detector, or none.

Both dlib detectors run offline from files already installed by the ``landmarks`` extra: the HOG detector is
built into dlib, the CNN detector is ``mmod_human_face_detector.dat`` from ``face_recognition_models`` (located
with ``importlib.util.find_spec``: the package's ``__init__`` needs ``pkg_resources`` and is never imported).

How an image is searched (the conventions of :mod:`lanet.landmarks.detect`, extended to photos):

1. **scale**: an image whose longer side exceeds ``max_side`` is downscaled to it for detection (bilinear);
   one whose longer side is below ``min_side`` (112, the size that suits 48 px FER crops) is upscaled to it.
   Boxes are mapped back to the original image's pixels.
2. **border**: a small image (longer side at most :data:`PAD_BELOW` after step 1, typically a face crop that
   fills the frame) gets a border of 25% of its size on every side, filled with its mean colour; without it
   dlib misses faces that touch the image edge.
3. **search**: ``upsample`` pyramid-doubling passes of dlib (1 by default: faces down to about 40 px at detection
   scale; 0 halves the time but needs about 80 px), scores ``>= threshold``. For a small image with no face the
   search is retried at two nearby sizes (8/7 and 6/7 of it), as ``lanet prepare`` does.

Boxes are ``(x0, y0, x1, y1)`` in continuous pixel coordinates of the original image (pixel ``i`` covers
``[i, i + 1)``). Scores are dlib's: the HOG detector's SVM margin, the CNN detector's confidence.

The two detectors place their boxes differently on the same face: the CNN box is smaller and sits higher.
:data:`HOG_EQUIVALENT` maps a detector's box onto the box the HOG detector would draw (measured on FERPlus test
faces found by both detectors, see ``benchmarks/predict_speed.py --geometry``), so one crop geometry
(:mod:`lanet.predict.crop`) serves both.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..errors import LanetError
from ..facemodels import face_model_file

DETECTORS = ("hog", "cnn", "none")
INSTALL_HINT = "pip install 'lanet[landmarks]'"
PAD_BELOW = 320  # images at most this large (longer side, at detection scale) get a border
PAD = 0.25
RETRY_SCALES = (8 / 7, 6 / 7)

#: detector -> (side scale, centre shift x, centre shift y): the HOG-equivalent box of a detection has side
#: ``scale * side`` and centre ``centre + shift * side`` (side = mean of width and height). Measured on the
#: FERPlus test faces that both detectors found (95 of 120, ``benchmarks/predict_speed.py --geometry 120``): the
#: HOG box is 1.09 times the CNN box and its centre 0.026 / 0.068 CNN sides to the right / lower (medians).
HOG_EQUIVALENT: dict[str, tuple[float, float, float]] = {
    "hog": (1.0, 0.0, 0.0),
    "cnn": (1.09, 0.026, 0.068),
    "none": (1.0, 0.0, 0.0),
}


@dataclass
class Detection:
    box: tuple[float, float, float, float]  # x0, y0, x1, y1 in original pixels
    score: float | None


def cnn_model_path() -> Path:
    """dlib's CNN face detector from ``face_recognition_models`` (``LANET_CNN_DETECTOR`` overrides it)."""
    return face_model_file("mmod_human_face_detector.dat", "LANET_CNN_DETECTOR", "the CNN face detector")


def _import_dlib() -> Any:
    try:
        import dlib
    except ImportError as exc:
        raise LanetError(f"face detection needs dlib ({exc}): {INSTALL_HINT}, or pass --detector none for "
                         "inputs that are already face crops") from exc
    return dlib


class FaceDetector:
    """``detector(image)`` -> list of :class:`Detection` for an RGB ``PIL.Image`` (largest faces first).

    Args:
        kind: ``hog`` (default, fast), ``cnn`` (more faces in hard poses, ~50x slower on a CPU) or ``none`` (the
            whole image is one face: inputs that are already face crops).
        upsample: dlib's pyramid-doubling passes (see the module docstring).
        threshold: minimum score (HOG: SVM margin, dlib's default 0; CNN: confidence, default 0).
        max_side, min_side: detection-scale bounds on the image's longer side.
    """

    def __init__(self, kind: str = "hog", upsample: int = 1, threshold: float = 0.0, max_side: int = 1024,
                 min_side: int = 112) -> None:
        if kind not in DETECTORS:
            raise LanetError(f"unknown detector {kind!r}; expected one of {', '.join(DETECTORS)}")
        if isinstance(upsample, bool) or not isinstance(upsample, int) or not 0 <= upsample <= 3:
            raise LanetError(f"upsample must be 0..3, got {upsample!r}")
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not math.isfinite(threshold):
            raise LanetError(f"the detection threshold (--threshold) must be a finite number, got {threshold!r}")
        if max_side < min_side or min_side < 16:
            raise LanetError(f"detection sizes need 16 <= min_side <= max_side, got {min_side} / {max_side}")
        self.kind, self.upsample, self.threshold = kind, int(upsample), float(threshold)
        self.max_side, self.min_side = int(max_side), int(min_side)
        self._net: Any = None
        if kind == "hog":
            self._net = _import_dlib().get_frontal_face_detector()
        elif kind == "cnn":
            path = cnn_model_path()
            self._net = _import_dlib().cnn_face_detection_model_v1(str(path))

    def __call__(self, image: Image.Image) -> list[Detection]:
        w, h = image.size
        if self.kind == "none":
            return [Detection((0.0, 0.0, float(w), float(h)), None)]
        longest = max(w, h)
        base = min(self.max_side, max(self.min_side, longest))
        sizes = [base]
        if base <= PAD_BELOW:
            sizes += [max(1, round(base * r)) for r in RETRY_SCALES]
        for size in dict.fromkeys(sizes):
            found = self._search(image, size)
            if found:
                return found
        return []

    def _search(self, image: Image.Image, size: int) -> list[Detection]:
        w, h = image.size
        scale = size / max(w, h)
        work = image
        if scale != 1.0:
            work = image.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.BILINEAR,
                                reducing_gap=3.0 if scale < 0.5 else None)
        sx, sy = work.width / w, work.height / h
        arr = np.asarray(work)
        border = int(round(PAD * max(arr.shape[:2]))) if max(arr.shape[:2]) <= PAD_BELOW else 0
        if border:
            padded = np.empty((arr.shape[0] + 2 * border, arr.shape[1] + 2 * border, 3), dtype=np.uint8)
            padded[...] = np.round(arr.reshape(-1, 3).mean(0)).astype(np.uint8)
            padded[border:-border, border:-border] = arr
            arr = padded
        arr = np.ascontiguousarray(arr)
        out: list[Detection] = []
        if self.kind == "hog":
            rects, scores, _ = self._net.run(arr, self.upsample, self.threshold)
            found = list(zip(rects, scores))
        else:
            found = [(d.rect, d.confidence) for d in self._net(arr, self.upsample) if d.confidence >= self.threshold]
        for rect, score in found:
            # dlib rectangles are inclusive pixel indices: [left, right + 1) in continuous coordinates
            x0, x1 = (rect.left() - border) / sx, (rect.right() + 1 - border) / sx
            y0, y1 = (rect.top() - border) / sy, (rect.bottom() + 1 - border) / sy
            out.append(Detection((x0, y0, x1, y1), float(score)))
        out.sort(key=lambda d: -(d.box[2] - d.box[0]) * (d.box[3] - d.box[1]))
        return out
