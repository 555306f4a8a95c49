"""Procedural faces whose expression lives in landmark geometry: a dataset that needs no download.

Every image is drawn from a small generative model:

* **expression**: each canonical class is a vector of geometric parameters (:data:`CLASS_EXPRESSIONS`: brow
  raise, inner-brow lowering, eyelid opening, mouth-corner raise, mouth opening and width, upper-lip raise,
  lip press, a one-sided corner raise for contempt, and the wrinkles that go with them). A face's parameters
  are the neutral vector plus an intensity (0.6 .. 1.2) times its class offset, plus small idiosyncratic
  jitter. About ``ambiguous`` of the faces mix their class with a neighbouring one (:data:`NEIGHBOURS`:
  anger-disgust, fear-surprise, sadness-neutral, happiness-neutral, ...) with weight 0.2 .. 0.5; the label
  is the dominant class.
* **identity**: face width and height, eye spacing and size, brow and lip thickness, nose and mouth
  position, skin tone, hair colour and style (hairline, long or short, bald), background colour.
* **pose**: in-plane rotation, a small yaw (horizontal compression of one side of the face), translation
  and scale.
* **nuisance**: lighting gradient (direction, strength), brightness and contrast, Gaussian blur, occluders
  (rectangles, hand-like blobs, sunglasses) and pixel noise.
* **crowd votes**: 10 simulated annotators sample from the face's class mixture plus a small uniform
  confusion (larger when the face is occluded), so annotator noise can be studied without FERPlus.

The 68 iBUG landmarks are computed first (in a canonical face frame), and every shape is rasterised from
the same points (soft, anti-aliased signed distances), so pixels and landmarks agree. Landmarks are
returned in pixel coordinates of the output image with the array-index convention: ``(x, y) = (j, i)`` is
the centre of pixel ``images[n, i, j]``.

Rendering is batched in torch: chunks of 128 images, one tensor op per shape and per polygon edge, the
eyes, brows and mouth drawn on small windows around them; chunks run on worker threads (as many as torch's
thread count) with single-threaded ops. 10,000 grayscale images at 48 x 48 take about 8 s on a busy two-core
machine (11 s for RGB). The result does not depend on the thread count.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from ..classes import SHORT
from ..errors import LanetError
from .faceset import FaceSet
from .synthetic_model import (  # the generative model; its public names are this module's too
    CLASS_EXPRESSIONS,
    DEFAULT_PRIOR,  # noqa: F401 - re-exported
    EXPRESSION_FIELDS,  # noqa: F401 - re-exported
    NEIGHBOURS,
    NEUTRAL_EXPRESSION,  # noqa: F401 - re-exported
    NUM_ANNOTATORS,  # noqa: F401 - re-exported
    NUM_LANDMARKS,
    canonical_landmarks,
    pixel_landmarks,
    synthetic_params,
)
from .synthetic_render import _render_chunk

SPLIT_FRACTIONS = (0.7, 0.1, 0.2)
_CHUNK = 128  # images rendered per batch


# ------------------------------------------------------------------------------------------ public API
def make_synthetic(n: int = 6000, seed: int = 0, size: int = 48, channels: int = 1, num_classes: int = 7, *,
                   ambiguous: float = 0.15, occlusion: float = 0.25,
                   class_prior: Sequence[float] | None = None) -> FaceSet:
    """A procedural face dataset whose expression classes differ in landmark geometry.

    Args:
        n: number of images, split 70/10/20 into train/val/test (a seeded random assignment).
        seed: generator seed; the same arguments give identical arrays.
        size: image side in pixels (square images).
        channels: 1 (grayscale) or 3 (RGB); both draw the same faces for the same seed.
        num_classes: 7 (basic classes) or 8 (with contempt).
        ambiguous: fraction of faces whose expression mixes two neighbouring classes.
        occlusion: probability that a face carries an occluder (rectangle, hand or sunglasses).
        class_prior: class frequencies (default :data:`DEFAULT_PRIOR`, mildly imbalanced).

    Returns:
        A :class:`FaceSet` named ``synthetic`` with ``votes`` (``N x C``, 10 simulated annotators) and 68
        ground-truth iBUG ``landmarks`` (``N x 68 x 2``, array-index pixel convention). ``meta`` holds the
        generator arguments; the per-image truth (mixture, occluder, ...) is :func:`synthetic_params`.
    """
    if channels not in (1, 3):
        raise LanetError(f"synthetic channels must be 1 or 3, got {channels}")
    if size < 16:
        raise LanetError(f"synthetic image size must be >= 16, got {size}")
    q = synthetic_params(n, seed, num_classes, ambiguous=ambiguous, occlusion=occlusion, class_prior=class_prior)
    P = canonical_landmarks(q)
    images = np.empty((n, size, size, channels), dtype=np.uint8)
    per_image = {k: v for k, v in q.items() if isinstance(v, np.ndarray) and len(v) == n}

    def work(a: int) -> None:
        b = min(n, a + _CHUNK)
        noise_seed = int(np.random.SeedSequence([seed % 2**63, 0x9E11, a]).generate_state(1)[0])
        qc = {k: v[a:b] for k, v in per_image.items()}
        with torch.no_grad():
            img = _render_chunk(qc, P[a:b], size, channels, torch.Generator().manual_seed(noise_seed))
        images[a:b] = img.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()  # n x H x W x C

    # Chunks are independent: render them on worker threads with single-threaded torch ops (small tensors
    # parallelise poorly inside one op, and busy cores make OpenMP spin); the result does not depend on it.
    workers = max(1, min(torch.get_num_threads(), math.ceil(n / _CHUNK)))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            list(pool.map(work, range(0, n, _CHUNK)))
    finally:
        torch.set_num_threads(threads)
    split = np.zeros(n, dtype=np.int8)
    order = np.random.default_rng(np.random.SeedSequence([seed % 2**63, 0x5B17])).permutation(n)
    n_train, n_val = round(SPLIT_FRACTIONS[0] * n), round(SPLIT_FRACTIONS[1] * n)
    split[order[n_train:n_train + n_val]] = 1
    split[order[n_train + n_val:]] = 2
    names = np.array([f"syn{i:07d}.png" for i in range(n)], dtype=object)
    meta = {"generator": "lanet.data.synthetic", "seed": seed, "size": size, "channels": channels,
            "ambiguous": ambiguous, "occlusion": occlusion, "landmark_scheme": "ibug68",
            "landmark_convention": "pixel index (x=j, y=i is the centre of pixel [i, j])"}
    return FaceSet(images=images, labels=q["labels"], split=split, names=names, num_classes=num_classes,
                   votes=q["votes"], landmarks=pixel_landmarks(q, size), landmark_found=np.ones(n, dtype=bool),
                   name="synthetic", meta=meta)


def save_preview(path: str | Path, faceset: FaceSet, k: int = 32, *, landmarks: bool = True, scale: int = 3,
                 columns: int = 8, indices: Sequence[int] | None = None) -> Path:
    """Write a PNG grid of ``k`` images (by default round-robin over the classes) with labels and landmarks.

    Each tile is the image enlarged ``scale`` times (nearest neighbour), captioned with the class (and the
    vote argmax when it differs); landmarks are drawn as dots (jaw, brows, nose, eyes, mouth in different
    colours). Returns the path.
    """
    from PIL import Image, ImageDraw

    if indices is None:
        per_class = [np.flatnonzero(faceset.labels == c) for c in range(faceset.num_classes)]
        picked: list[int] = []
        depth = 0
        while len(picked) < min(k, len(faceset)):
            added = False
            for idx in per_class:
                if depth < len(idx) and len(picked) < k:
                    picked.append(int(idx[depth]))
                    added = True
            depth += 1
            if not added:
                break
        indices = picked
    indices = list(indices)
    if not indices:
        raise LanetError("save_preview: nothing to show (empty dataset or selection)")
    h, w = faceset.image_size
    tw, th = w * scale, h * scale
    caption = 12
    cols = max(1, min(columns, len(indices)))
    rows = math.ceil(len(indices) / cols)
    sheet = Image.new("RGB", (cols * (tw + 4) + 4, rows * (th + caption + 4) + 4), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    dot = max(0.5, scale / 4)
    groups = [(range(0, 17), (255, 200, 0)), (range(17, 27), (255, 60, 60)), (range(27, 36), (60, 200, 255)),
              (range(36, 48), (0, 255, 0)), (range(48, 68), (255, 0, 255))]
    for t, i in enumerate(indices):
        r, c = divmod(t, cols)
        x0, y0 = 4 + c * (tw + 4), 4 + r * (th + caption + 4)
        img = faceset.images[i]
        tile = Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img).convert("RGB").resize(
            (tw, th), Image.NEAREST)
        sheet.paste(tile, (x0, y0 + caption))
        text = SHORT[int(faceset.labels[i])]
        if faceset.votes is not None and int(faceset.votes[i].argmax()) != int(faceset.labels[i]):
            text += f" v:{SHORT[int(faceset.votes[i].argmax())]}"
        draw.text((x0 + 1, y0), text, fill=(0, 0, 0))
        if landmarks and faceset.landmarks is not None:
            pts = faceset.landmarks[i]
            for rng_, color in groups if len(pts) == NUM_LANDMARKS else [(range(len(pts)), (0, 255, 0))]:
                for p in rng_:
                    px, py = (pts[p, 0] + 0.5) * scale + x0, (pts[p, 1] + 0.5) * scale + y0 + caption
                    draw.ellipse([(px - dot, py - dot), (px + dot, py + dot)], fill=color)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)
    return path


__all__ = ["CLASS_EXPRESSIONS", "NEIGHBOURS", "canonical_landmarks", "make_synthetic", "pixel_landmarks",
           "save_preview", "synthetic_params"]
