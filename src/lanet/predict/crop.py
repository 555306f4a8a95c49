"""The face crop a classifier was trained on, reproduced on new photos.

FER2013 (and so FERPlus) faces are 48 x 48 crops, roughly the face box with some margin, not rotated to level
the eyes. Measured on 120 FERPlus test crops (``benchmarks/predict_speed.py --geometry 120``; 200 gave the
same medians), dlib's HOG detector (on the crop upscaled to 112 px with a 25% border, as ``lanet prepare`` runs
it) finds a square box whose side is 0.94 of the crop (median; 0.88 from the mean margin) and whose centre lies
0.06-0.10 box sides (mean - median) *below* the crop's centre (the HOG box includes the chin and cuts the
forehead). The crop is therefore

    side   = s * (1 + 2 * crop_margin)              s: side of the HOG(-equivalent) face box
    centre = box centre + (0, crop_offset_y * s)

with ``crop_margin = 0.05`` and ``crop_offset_y = -0.08`` for FER-style data (:data:`FER_CROP`), chosen between
the median and mean of that measurement (margin 0.033 - 0.069, offset -0.10 - -0.062). Re-cropping FERPlus faces
pasted into scenes, the classifier's agreement with its own output on the original crops varies by less than its
sampling noise over margins 0 - 0.1 and offsets -0.12 - -0.04 (the sweep in ``benchmarks/results/cpu/
predict_speed.json``). A detector other than HOG has its boxes mapped to HOG-equivalent ones
first (:data:`lanet.predict.detect.HOG_EQUIVALENT`). The crop is square, taken from the full-resolution image
(bilinear, area-averaging when shrinking, as the dataset loaders resize) at the dataset's stored size
(``source_size``: 48 for FERPlus), then the model's own evaluation transform (``BatchAugment.eval``: resize to
``image_size``, normalisation) runs as in training. Parts of a crop outside the image are black, as in the
loaders' box crops. With ``--detector none`` the whole input is the crop (no margin).

An exported model file carries these values (``crop_margin``, ``crop_offset_y``, ``source_size``; see
:func:`crop_metadata`); files written before they existed get :func:`with_defaults`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image

#: Crop geometry of FER2013-style face crops relative to dlib's HOG face box (see the module docstring).
FER_CROP: dict[str, float] = {"crop_margin": 0.05, "crop_offset_y": -0.08}
#: Datasets whose own crops were measured; every other dataset gets :data:`FER_CROP` (an approximation for
#: RAF-DB's and AffectNet's aligned crops, which also frame the face with a small margin).
DATASET_CROPS: dict[str, dict[str, float]] = {"ferplus": FER_CROP}

Box = tuple[float, float, float, float]


def crop_metadata(dataset: str, stored_size: int) -> dict[str, Any]:
    """The crop keys an exported model file carries for a model trained on ``dataset`` stored at ``stored_size``."""
    return {**DATASET_CROPS.get(dataset, FER_CROP), "source_size": int(stored_size)}


def with_defaults(meta: dict[str, Any]) -> dict[str, Any]:
    """Model metadata with the crop keys filled in for files exported before they existed."""
    out = dict(meta)
    for k, v in FER_CROP.items():
        out.setdefault(k, v)
    out.setdefault("source_size", out.get("image_size", 48))
    return out


def crop_box(box: Box, margin: float, offset_y: float, equivalent: tuple[float, float, float] = (1.0, 0.0, 0.0)
             ) -> Box:
    """The square crop (x0, y0, x1, y1) for a detector ``box``; ``equivalent`` maps it to a HOG-like box."""
    x0, y0, x1, y1 = box
    side = ((x1 - x0) + (y1 - y0)) / 2
    scale, dx, dy = equivalent
    cx, cy = (x0 + x1) / 2 + dx * side, (y0 + y1) / 2 + dy * side
    side *= scale
    cy += offset_y * side
    half = side * (1 + 2 * margin) / 2
    return (cx - half, cy - half, cx + half, cy + half)


def crop_resize(image: Image.Image, box: Box, size: int, channels: int = 3) -> np.ndarray:
    """``box`` of ``image`` resized to ``size x size`` (bilinear; outside the image: black) -> ``S x S x C`` uint8,
    converted to grey (PIL's ITU-R 601 luma, as the loaders convert) for ``channels`` 1."""
    x0, y0, x1, y1 = box
    width, height = image.size
    if x0 >= 0 and y0 >= 0 and x1 <= width and y1 <= height:
        out = image.resize((size, size), Image.Resampling.BILINEAR, box=(x0, y0, x1, y1))
    else:  # crop an integer superset (PIL fills outside with zeros), then resample the exact sub-box
        ix0, iy0 = int(np.floor(x0)), int(np.floor(y0))
        padded = image.crop((ix0, iy0, int(np.ceil(x1)), int(np.ceil(y1))))
        out = padded.resize((size, size), Image.Resampling.BILINEAR, box=(x0 - ix0, y0 - iy0, x1 - ix0, y1 - iy0))
    if channels == 1 and out.mode != "L":
        out = out.convert("L")
    arr = np.asarray(out, dtype=np.uint8)
    return arr[:, :, None] if arr.ndim == 2 else arr
