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
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..classes import SHORT, class_names
from ..errors import LanetError
from .faceset import FaceSet

NUM_LANDMARKS = 68
NUM_ANNOTATORS = 10
SPLIT_FRACTIONS = (0.7, 0.1, 0.2)
_CHUNK = 128  # images rendered per batch

# ------------------------------------------------------------------------------------------ expressions
EXPRESSION_FIELDS: tuple[str, ...] = (
    "brow_raise",  # whole brow moves up (+) or down (-), face-width units
    "brow_inner",  # inner brow end moves down (+, anger) or up (-, sadness / fear)
    "eye_up",  # upper eyelid opening, multiple of the identity's
    "eye_lo",  # lower eyelid opening, multiple (< 1: cheek raise or squint)
    "corner",  # both mouth corners move up (+, smile) or down (-)
    "open",  # mouth (jaw) opening
    "width",  # mouth width, multiple
    "ulip",  # upper-lip raise (disgust), also wrinkles the nose
    "press",  # lip press: lips thinner (0 .. 1)
    "asym",  # one mouth corner up and out (contempt); side drawn per face
    "teeth",  # visibility of the upper teeth in an open mouth (0 .. 1)
    "naso",  # nasolabial fold strength
    "furrow",  # vertical furrows between the brows
    "forehead",  # horizontal forehead lines
)

NEUTRAL_EXPRESSION: dict[str, float] = {f: 0.0 for f in EXPRESSION_FIELDS} | {"eye_up": 1.0, "eye_lo": 1.0,
                                                                            "width": 1.0}

CLASS_EXPRESSIONS: dict[str, dict[str, float]] = {
    "anger": {"brow_raise": -0.04, "brow_inner": 0.12, "eye_up": 0.7, "eye_lo": 0.8, "corner": -0.03,
              "width": 0.86, "press": 1.0, "furrow": 1.0},
    "disgust": {"brow_raise": -0.03, "brow_inner": 0.07, "eye_up": 0.55, "eye_lo": 0.6, "corner": -0.07,
                "open": 0.02, "width": 0.95, "ulip": 0.09, "teeth": 0.7, "naso": 0.9, "furrow": 0.5},
    "fear": {"brow_raise": 0.1, "brow_inner": -0.09, "eye_up": 1.6, "eye_lo": 1.25, "corner": -0.05,
             "open": 0.11, "width": 1.15, "teeth": 0.5, "forehead": 0.8},
    "happiness": {"brow_raise": 0.01, "eye_up": 0.85, "eye_lo": 0.5, "corner": 0.13, "open": 0.07,
                  "width": 1.2, "teeth": 1.0, "naso": 1.0},
    "sadness": {"brow_raise": -0.01, "brow_inner": -0.11, "eye_up": 0.7, "eye_lo": 0.95, "corner": -0.12,
                "width": 0.94, "press": 0.3},
    "surprise": {"brow_raise": 0.18, "brow_inner": -0.02, "eye_up": 1.75, "eye_lo": 1.3, "open": 0.32,
                 "width": 0.78, "teeth": 0.15, "forehead": 1.0},
    "neutral": {},
    "contempt": {"brow_raise": 0.01, "eye_up": 0.9, "asym": 0.13, "press": 0.4, "naso": 0.3},
}

# Which classes a genuinely ambiguous face mixes with (the secondary class is drawn uniformly from these).
NEIGHBOURS: dict[str, tuple[str, ...]] = {
    "anger": ("disgust",),
    "disgust": ("anger", "contempt"),
    "fear": ("surprise",),
    "happiness": ("neutral",),
    "sadness": ("neutral", "fear"),
    "surprise": ("fear", "happiness"),
    "neutral": ("sadness", "happiness", "contempt"),
    "contempt": ("neutral", "happiness"),
}

# Class frequencies: mildly imbalanced like real FER data (renormalised over the classes in use).
DEFAULT_PRIOR: dict[str, float] = {
    "anger": 0.12, "disgust": 0.07, "fear": 0.09, "happiness": 0.2, "sadness": 0.13, "surprise": 0.13,
    "neutral": 0.2, "contempt": 0.06,
}


def _expression_table(num_classes: int) -> np.ndarray:
    """``C x F`` expression parameters per class (F = len(EXPRESSION_FIELDS))."""
    rows = []
    for name in class_names(num_classes):
        row = dict(NEUTRAL_EXPRESSION) | CLASS_EXPRESSIONS[name]
        rows.append([row[f] for f in EXPRESSION_FIELDS])
    return np.asarray(rows, dtype=np.float64)


# ------------------------------------------------------------------------------------------ parameters
def synthetic_params(n: int = 6000, seed: int = 0, num_classes: int = 7, *, ambiguous: float = 0.15,
                     occlusion: float = 0.25, class_prior: Sequence[float] | None = None) -> dict[str, np.ndarray]:
    """Every per-image random choice of :func:`make_synthetic` (all but the pixel noise), as arrays of length N.

    Keys include ``labels`` (dominant class), ``secondary`` (mixed-in class, = label where not ambiguous),
    ``mix`` (weight of the secondary class, 0 where not ambiguous), ``ambiguous`` (bool), ``intensity``,
    ``occluder`` (0 none, 1 rectangle, 2 hand, 3 sunglasses), ``votes`` (``N x C``), one array per
    :data:`EXPRESSION_FIELDS` entry, identity, pose and colour parameters (colours ``N x 3`` RGB 0..255).
    The same arguments always give the same arrays.
    """
    _check_args(n, num_classes, ambiguous, occlusion)
    rng = np.random.default_rng(np.random.SeedSequence([seed % 2**63, 0x5F3A]))
    names = class_names(num_classes)
    C = num_classes
    q: dict[str, np.ndarray] = {}

    # --- classes, ambiguity, intensity
    prior = np.array([DEFAULT_PRIOR[c] for c in names]) if class_prior is None else np.asarray(class_prior, float)
    if prior.shape != (C,) or (prior < 0).any() or prior.sum() <= 0:
        raise LanetError(f"class_prior must be {C} non-negative numbers with a positive sum, got {class_prior}")
    prior = prior / prior.sum()
    labels = rng.choice(C, size=n, p=prior)
    amb = rng.random(n) < ambiguous
    pick = rng.random(n)
    secondary = labels.copy()
    for c, name in enumerate(names):
        neigh = [names.index(m) for m in NEIGHBOURS[name] if m in names]
        sel = amb & (labels == c)
        secondary[sel] = np.asarray(neigh)[np.minimum((pick[sel] * len(neigh)).astype(int), len(neigh) - 1)]
    mix = np.where(amb, rng.uniform(0.2, 0.5, n), 0.0)
    intensity = rng.uniform(0.6, 1.2, n)
    table = _expression_table(C)  # C x F
    neutral = np.array([NEUTRAL_EXPRESSION[f] for f in EXPRESSION_FIELDS])
    expr = (1 - mix)[:, None] * table[labels] + mix[:, None] * table[secondary]  # N x F
    expr = neutral + intensity[:, None] * (expr - neutral)
    jitter = {"brow_raise": 0.02, "brow_inner": 0.02, "eye_up": 0.1, "eye_lo": 0.1, "corner": 0.015,
              "open": 0.012, "width": 0.04}
    noise = rng.standard_normal((n, len(EXPRESSION_FIELDS)))
    for i, f in enumerate(EXPRESSION_FIELDS):
        q[f] = expr[:, i] + jitter.get(f, 0.0) * noise[:, i]
    q["open"] = np.maximum(q["open"], 0.0)
    q["eye_up"] = np.maximum(q["eye_up"], 0.25)
    q["eye_lo"] = np.maximum(q["eye_lo"], 0.25)
    q["asym_side"] = np.where(rng.random(n) < 0.5, -1.0, 1.0)  # -1: image-left corner (48), +1: right (54)
    q.update(labels=labels, secondary=secondary, mix=mix, ambiguous=amb, intensity=intensity)

    # --- identity (canonical units: nominal face half-width 1, x right, y down, origin face centre)
    u = lambda lo, hi: rng.uniform(lo, hi, n)  # noqa: E731
    q["a"] = u(0.86, 1.0)
    q["b_up"] = q["a"] * u(1.15, 1.35)
    q["b_lo"] = q["a"] * u(1.2, 1.4)
    q["eye_y"] = u(-0.2, -0.1)
    q["eye_dx"] = u(0.36, 0.44)
    q["eye_w"] = u(0.16, 0.21)
    q["eye_h"] = u(0.07, 0.095)
    q["brow_gap"] = u(0.17, 0.23)
    q["brow_off"] = u(0.0, 0.06)
    q["brow_len"] = u(0.22, 0.28)
    q["brow_arch"] = u(0.02, 0.07)
    q["brow_t"] = u(0.035, 0.06)
    q["nose_y"] = u(0.2, 0.28)
    q["nose_w"] = u(0.12, 0.17)
    q["mouth_y"] = u(0.5, 0.6)
    q["mouth_hw"] = u(0.28, 0.35)
    q["lip_t"] = u(0.05, 0.075)
    q["gaze_x"] = rng.normal(0, 0.25, n).clip(-0.45, 0.45)
    q["gaze_y"] = rng.normal(0, 0.1, n).clip(-0.2, 0.2)
    q["iris_r"] = u(0.5, 0.65)
    q["hairline"] = u(-1.0, -0.72)
    q["hair_side"] = u(-0.15, 0.15)
    q["hair_w"] = u(1.04, 1.2)
    q["hair_len"] = np.where(rng.random(n) < 0.4, u(0.6, 1.8), u(-0.2, 0.3))
    q["bald"] = rng.random(n) < 0.08

    # --- pose
    q["rot"] = np.deg2rad(rng.normal(0, 7, n).clip(-18, 18))
    q["yaw"] = u(-0.12, 0.12)
    q["scale"] = u(0.3, 0.37)  # face half-width unit in image sizes
    q["tx"] = rng.normal(0, 0.03, n).clip(-0.07, 0.07)
    q["ty"] = rng.normal(0, 0.03, n).clip(-0.07, 0.07)

    # --- colours (RGB 0..255)
    tone = u(0, 1)[:, None]
    q["skin"] = (1 - tone) * np.array([238, 204, 178]) + tone * np.array([112, 76, 56]) + rng.normal(0, 8, (n, 3))
    palette = np.array([[25, 20, 18], [60, 40, 28], [110, 75, 45], [200, 165, 105], [150, 148, 145]], float)
    q["hair"] = palette[rng.choice(5, size=n, p=[0.35, 0.3, 0.15, 0.12, 0.08])] * u(0.8, 1.2)[:, None]
    grey = u(20, 235)[:, None]
    q["background"] = grey + rng.normal(0, 35, (n, 3))
    q["clothes"] = rng.uniform(10, 245, (n, 3))
    q["iris"] = np.array([[70, 45, 25], [40, 30, 25], [70, 100, 130], [80, 95, 60]], float)[rng.choice(4, n)]
    q["lips"] = q["skin"] * np.array([0.78, 0.55, 0.55]) * u(0.85, 1.05)[:, None]

    # --- nuisance
    q["light_dir"] = u(0, 2 * math.pi)
    q["light"] = u(0.0, 0.45)
    q["brightness"] = u(0.8, 1.15)
    q["contrast"] = u(0.7, 1.25)
    q["blur"] = np.where(rng.random(n) < 0.35, u(0.3, 1.0), 0.0)  # Gaussian sigma in pixels at size 48
    q["noise"] = u(0.5, 7.0)  # pixel noise sigma in 0..255
    occ_kind = rng.choice(3, size=n, p=[0.4, 0.4, 0.2]) + 1
    q["occluder"] = np.where(rng.random(n) < occlusion, occ_kind, 0)
    q["occ_x"] = u(-0.6, 0.6)
    q["occ_y"] = u(-0.3, 0.9)
    q["occ_w"] = u(0.25, 0.6)
    q["occ_h"] = u(0.15, 0.4)
    q["occ_rot"] = u(-math.pi, math.pi)
    q["occ_color"] = np.where(rng.random((n, 1)) < 0.5, rng.uniform(0, 255, (n, 3)), u(0, 255)[:, None])
    q["hand_skin"] = q["skin"] * u(0.85, 1.1)[:, None]

    # --- crowd votes: annotators sample from the class mixture, plus uniform confusion
    eps = 0.05 + 0.1 * (q["occluder"] > 0)
    dist = np.zeros((n, C))
    np.add.at(dist, (np.arange(n), labels), 1 - mix)
    np.add.at(dist, (np.arange(n), secondary), mix)
    dist = (1 - eps)[:, None] * dist + eps[:, None] / C
    cdf = np.cumsum(dist, 1)
    draws = rng.random((n, NUM_ANNOTATORS))
    picks = np.minimum((draws[:, :, None] > cdf[:, None, :]).sum(-1), C - 1)  # N x 10
    votes = np.zeros((n, C), dtype=np.float32)
    np.add.at(votes, (np.repeat(np.arange(n), NUM_ANNOTATORS), picks.ravel()), 1.0)
    q["votes"] = votes
    return q


def _check_args(n: int, num_classes: int, ambiguous: float, occlusion: float) -> None:
    if n < 0:
        raise LanetError(f"synthetic dataset size must be >= 0, got {n}")
    class_names(num_classes)
    if not 0 <= ambiguous <= 1 or not 0 <= occlusion <= 1:
        raise LanetError(f"ambiguous and occlusion must be fractions in [0, 1], got {ambiguous}, {occlusion}")


# ------------------------------------------------------------------------------------------ geometry
def _mouth_line(q: dict[str, np.ndarray], t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """x and y of the lip midline at parameters ``t`` in [-1, 1] (corners at +-1): N x K each."""
    mw = q["mouth_hw"] * q["width"]
    asym_l = np.where(q["asym_side"] < 0, q["asym"], 0.0)
    asym_r = np.where(q["asym_side"] > 0, q["asym"], 0.0)
    t = np.asarray(t, float)[None, :]
    left = t < 0
    c = np.where(left, (q["corner"] + asym_l)[:, None], (q["corner"] + asym_r)[:, None])
    half = np.where(left, (mw + 0.3 * asym_l)[:, None], (mw + 0.3 * asym_r)[:, None])
    return half * t, q["mouth_y"][:, None] - c * t * t


def _openings(q: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Upper and lower opening amplitudes of the mouth (N each)."""
    return 0.3 * q["open"] + np.maximum(q["ulip"], 0.0), 0.7 * q["open"]


def canonical_landmarks(q: dict[str, np.ndarray]) -> np.ndarray:
    """``N x 68 x 2`` iBUG landmarks in the canonical face frame (before yaw and pose)."""
    n = len(q["a"])
    P = np.zeros((n, NUM_LANDMARKS, 2))
    o_up, o_lo = _openings(q)
    b_lo = q["b_lo"] + 0.8 * o_lo
    # jaw 0..16: along the face outline from eye level on the image left, under the chin, to the right
    t0 = np.arcsin(np.clip(q["eye_y"] / q["b_up"], -0.95, 0.0))
    ang = (np.pi - t0)[:, None] - np.arange(17)[None] * (np.pi - 2 * t0)[:, None] / 16  # N x 17
    s = np.sin(ang)
    P[:, 0:17, 0] = q["a"][:, None] * np.cos(ang)
    P[:, 0:17, 1] = np.where(s < 0, q["b_up"][:, None], b_lo[:, None]) * s
    # brows 17..21 (image left, outer -> inner), 22..26 mirrored (inner -> outer)
    tb = np.linspace(0, 1, 5)[None]
    centre = (q["eye_dx"] + q["brow_off"])[:, None]
    half = q["brow_len"][:, None]
    P[:, 17:22, 0] = -(centre + half * (1 - 2 * tb))
    P[:, 17:22, 1] = ((q["eye_y"] - q["brow_gap"] - q["brow_raise"])[:, None]
                      - q["brow_arch"][:, None] * (1 - (2 * tb - 1) ** 2) + q["brow_inner"][:, None] * tb ** 1.5)
    lid = q["eye_y"] - 0.94 * q["eye_h"] * q["eye_up"]  # top of the upper lid
    P[:, 17:22, 1] = np.minimum(P[:, 17:22, 1], (lid - 0.06)[:, None])  # brows never sink into the eyes
    P[:, 22:27, 0] = -P[:, 21:16:-1, 0]
    P[:, 22:27, 1] = P[:, 21:16:-1, 1]
    # nose: bridge 27..30, base 31..35
    ey, ny, nw = q["eye_y"], q["nose_y"], q["nose_w"] * (1 + 1.5 * np.maximum(q["ulip"], 0))
    lift = 0.4 * np.maximum(q["ulip"], 0)
    tip = ny - 0.07 - lift
    for i, f in enumerate((0.0, 1 / 3, 2 / 3, 1.0)):
        P[:, 27 + i, 1] = (1 - f) * (ey - 0.02) + f * tip
    P[:, 31:36, 0] = np.stack([-nw, -0.5 * nw, 0 * nw, 0.5 * nw, nw], 1)
    P[:, 31:36, 1] = (ny - lift)[:, None] + np.array([-0.035, -0.005, 0.0, -0.005, -0.035])[None]
    # eyes 36..41 (image left: outer corner, upper lid x2, inner corner, lower lid x2), 42..47 mirrored
    c, r = 0.35, math.sqrt(1 - 0.35**2)
    cx, w = -q["eye_dx"], q["eye_w"]
    hu, hl = q["eye_h"] * q["eye_up"], 0.75 * q["eye_h"] * q["eye_lo"]
    P[:, 36:42, 0] = np.stack([cx - w, cx - c * w, cx + c * w, cx + w, cx + c * w, cx - c * w], 1)
    P[:, 36:42, 1] = np.stack([ey, ey - r * hu, ey - r * hu, ey, ey + r * hl, ey + r * hl], 1)
    mirror = [39, 38, 37, 36, 41, 40]
    P[:, 42:48, 0] = -P[:, mirror, 0]
    P[:, 42:48, 1] = P[:, mirror, 1]
    # mouth: outer 48..59 (corner, upper lip to the other corner, lower lip back), inner 60..67
    ut = q["lip_t"] * (1 - 0.7 * np.clip(q["press"], 0, 1))
    lt = 1.25 * ut
    t_up = np.array([-1, -2 / 3, -1 / 3, 0, 1 / 3, 2 / 3, 1])
    x, y = _mouth_line(q, t_up)
    env = np.sqrt(1 - t_up**2)[None]
    P[:, 48:55, 0] = x
    P[:, 48:55, 1] = y - o_up[:, None] * env - ut[:, None] * np.array([0, 0.7, 1.0, 0.85, 1.0, 0.7, 0])[None]
    t_lo = np.array([2 / 3, 1 / 3, 0, -1 / 3, -2 / 3])
    x, y = _mouth_line(q, t_lo)
    env = np.sqrt(1 - t_lo**2)[None]
    P[:, 55:60, 0] = x
    P[:, 55:60, 1] = y + o_lo[:, None] * env + lt[:, None] * np.array([0.7, 0.95, 1.0, 0.95, 0.7])[None]
    t_in = np.array([-0.9, -0.5, 0, 0.5, 0.9, 0.5, 0, -0.5])
    x, y = _mouth_line(q, t_in)
    env = np.sqrt(1 - t_in**2)[None]
    sign = np.array([0, -1, -1, -1, 0, 1, 1, 1])[None]
    amp = np.where(sign < 0, o_up[:, None], o_lo[:, None])
    P[:, 60:68, 0] = x
    P[:, 60:68, 1] = y + sign * amp * env
    return P


def _yaw(u: np.ndarray | torch.Tensor, k: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
    """Forward yaw warp u -> u + k (1 - u^2): the face centre shifts by k, the outline (u = +-1) stays."""
    return u + k * (1 - u * u)


def _yaw_inverse(v: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`_yaw` (the root near v), numerically stable at k = 0."""
    disc = (1 - 4 * k * (v - k)).clamp_min(1e-6)
    return 2 * (v - k) / (1 + disc.sqrt())


def pixel_landmarks(q: dict[str, np.ndarray], size: int) -> np.ndarray:
    """``N x 68 x 2`` landmarks in output pixel coordinates (index convention: pixel (i, j) at (x=j, y=i))."""
    P = canonical_landmarks(q)
    u = _yaw(P[..., 0], q["yaw"][:, None])
    v = P[..., 1]
    s = (q["scale"] * size)[:, None]
    cos, sin = np.cos(q["rot"])[:, None], np.sin(q["rot"])[:, None]
    cx, cy = _centre(q, size)
    x = cx[:, None] + s * (cos * u - sin * v)
    y = cy[:, None] + s * (sin * u + cos * v)
    return np.stack([x, y], -1).astype(np.float32)


def _centre(q: dict[str, np.ndarray], size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel position of the canonical origin (index convention)."""
    return (0.5 + q["tx"]) * size - 0.5, (0.46 + q["ty"]) * size - 0.5


# ------------------------------------------------------------------------------------------ rasterising
class _Raster:
    """Canonical coordinates of every pixel of a chunk of images and soft-shape helpers.

    ``U``, ``V``: ``n x H x W`` canonical (pre-yaw) coordinates; ``px``: ``n x 1 x 1`` canonical units per
    pixel, used to turn signed distances into anti-aliased coverage.
    """

    def __init__(self, U: torch.Tensor, V: torch.Tensor, px: torch.Tensor) -> None:
        self.U, self.V, self.px = U, V, px

    def cover(self, sd: torch.Tensor, grow: float = 0.0) -> torch.Tensor:
        """Coverage in [0, 1] of the region ``sd < 0`` (signed distance in canonical units), dilated by ``grow`` px."""
        return (0.5 - sd / self.px + grow).clamp(0.0, 1.0)

    def ellipse_sd(self, cx: torch.Tensor, cy: torch.Tensor, a: torch.Tensor, b_up: torch.Tensor,
                   b_lo: torch.Tensor | None = None) -> torch.Tensor:
        """Approximate signed distance to an axis-aligned ellipse (different half-heights above/below cy)."""
        du, dv = self.U - cx, self.V - cy
        b = b_up if b_lo is None else torch.where(dv < 0, b_up, b_lo)
        x, y = du / a, dv / b
        f = (x * x + y * y).sqrt()
        grad = ((x / a) ** 2 + (y / b) ** 2).sqrt() / f.clamp_min(1e-6)
        return (f - 1) / grad.clamp_min(1e-6)

    def segments_sd(self, pts: torch.Tensor, radius: torch.Tensor | float, closed: bool = False,
                    polygon: bool = False) -> torch.Tensor:
        """Distance to a polyline through ``pts`` (n x K x 2) minus ``radius``; signed (inside < 0) if polygon."""
        K = pts.shape[1]
        d2 = None
        inside = torch.zeros_like(self.U, dtype=torch.bool) if polygon else None
        for k in range(K if (closed or polygon) else K - 1):
            a, b = pts[:, k, :, None, None], pts[:, (k + 1) % K, :, None, None]  # n x 2 x 1 x 1
            ex, ey = b[:, 0] - a[:, 0], b[:, 1] - a[:, 1]
            inv = 1.0 / (ex * ex + ey * ey).clamp_min(1e-12)
            wx, wy = self.U - a[:, 0], self.V - a[:, 1]
            t = torch.addcmul(wx * (ex * inv), wy, ey * inv).clamp_(0.0, 1.0)
            dx, dy = torch.addcmul(wx, t, ex, value=-1), torch.addcmul(wy, t, ey, value=-1)
            e2 = torch.addcmul(dx * dx, dy, dy)
            d2 = e2 if d2 is None else torch.minimum(d2, e2, out=d2)
            if inside is not None:
                crosses = (wy < 0) != (self.V < b[:, 1])
                slope = ex / torch.where(ey.abs() < 1e-12, torch.full_like(ey, 1e-12), ey)
                inside ^= crosses & (wx < wy * slope)
        d = d2.sqrt() - radius
        return torch.where(inside, -d, d) if inside is not None else d


def _blend(img: torch.Tensor, alpha: torch.Tensor, color: torch.Tensor) -> None:
    """In place: img (n x C x H x W) <- (1 - alpha) img + alpha color; alpha n x H x W, color n x C."""
    a = alpha[:, None]
    img.mul_(1 - a).add_(a * color[:, :, None, None])


def _subset(mask: torch.Tensor, raster: _Raster, fn: Callable[[_Raster, torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """Evaluate ``fn`` (an alpha map) only for the images where ``mask`` is set; zero elsewhere."""
    out = torch.zeros_like(raster.U)
    idx = mask.nonzero().flatten()
    if len(idx):
        out[idx] = fn(_Raster(raster.U[idx], raster.V[idx], raster.px[idx]), idx)
    return out


def _coords(q: dict[str, np.ndarray], size: int, xs: torch.Tensor, ys: torch.Tensor) -> _Raster:
    """Canonical (pre-yaw) coordinates of pixel centres ``xs`` (n x 1 x W') and ``ys`` (n x H' x 1)."""
    col = lambda a: torch.as_tensor(np.asarray(a), dtype=torch.float32)[:, None, None]  # noqa: E731
    s = col(q["scale"] * size)  # pixels per canonical unit
    cx, cy = _centre(q, size)
    dx, dy = (xs - col(cx)) / s, (ys - col(cy)) / s
    cos, sin = col(np.cos(q["rot"])), col(np.sin(q["rot"]))
    U = _yaw_inverse(cos * dx + sin * dy, col(q["yaw"]))  # n x H' x W'
    V = -sin * dx + cos * dy
    return _Raster(U, V, 1.0 / s)


class _Window:
    """A square patch of every image around one canonical point: coordinates, and gather / scatter of pixels.

    Shapes are drawn into ``patch`` (n x C x Wp x Wp) with :attr:`raster`, then :meth:`put` writes the patch
    back into the padded canvas (pixels of the window outside the image land in the padding).
    """

    def __init__(self, q: dict[str, np.ndarray], size: int, pad: int, canvas: torch.Tensor, u: np.ndarray,
                 v: np.ndarray, radius: float) -> None:
        n = len(u)
        s = q["scale"] * size
        side = int(math.ceil(2 * radius * float(s.max()))) + 2
        if side > pad:
            raise RuntimeError("window larger than the canvas padding")
        cx, cy = _centre(q, size)
        cos, sin = np.cos(q["rot"]), np.sin(q["rot"])
        uy = _yaw(u, q["yaw"])
        px, py = cx + s * (cos * uy - sin * v), cy + s * (sin * uy + cos * v)
        # top-left pixel; a window far outside the image stays inside the padding (its shapes are unseen)
        x0 = np.clip(np.floor(px - side / 2 + 0.5), -pad, size + pad - side).astype(np.int64)
        y0 = np.clip(np.floor(py - side / 2 + 0.5), -pad, size + pad - side).astype(np.int64)
        ar = torch.arange(side)
        self.cols = torch.as_tensor(x0)[:, None] + ar  # n x Wp, image pixel index
        self.rows = torch.as_tensor(y0)[:, None] + ar
        self.raster = _coords(q, size, self.cols[:, None, :].float(), self.rows[:, :, None].float())
        self.index = (torch.arange(n)[:, None, None], (self.rows + pad)[:, :, None], (self.cols + pad)[:, None, :])
        self.canvas = canvas
        self.patch = canvas[self.index].permute(0, 3, 1, 2).contiguous()  # n x C x Wp x Wp

    def put(self) -> None:
        self.canvas[self.index] = self.patch.permute(0, 2, 3, 1)


def _render_chunk(q: dict[str, np.ndarray], P: np.ndarray, size: int, channels: int,
                  gen: torch.Generator) -> torch.Tensor:
    """Render one chunk: ``n x C x H x W`` float in 0..255."""
    n = len(P)
    T = lambda a: torch.as_tensor(np.asarray(a), dtype=torch.float32)  # noqa: E731
    col = lambda a: T(a)[:, None, None]  # noqa: E731  n -> n x 1 x 1
    if channels == 1:
        paint = lambda rgb: (T(rgb) @ torch.tensor([0.299, 0.587, 0.114]))[:, None]  # noqa: E731  n x 1
    else:
        paint = lambda rgb: T(rgb)  # noqa: E731  n x 3
    Pt = T(P)  # n x 68 x 2 canonical
    ii = torch.arange(size, dtype=torch.float32)
    R = _coords(q, size, ii[None, None, :], ii[None, :, None])  # full image
    U, V = R.U, R.V
    zero = torch.zeros(n, 1, 1)
    skin_rgb = q["skin"]
    shade = paint(skin_rgb * 0.55)
    dark = paint(np.full((n, 3), 20.0))

    # background with a soft vertical gradient, clothes at the bottom
    img = paint(q["background"])[:, :, None, None] * (1 + 0.1 * ((ii - size / 2) / size)[None, None, :, None]
                                                      * col(q["light"] * np.cos(q["light_dir"]))[:, None])
    img = img.expand(n, channels, size, size).contiguous()
    a, b_up = col(q["a"]), col(q["b_up"])
    o_up, o_lo = _openings(q)
    b_lo = col(q["b_lo"] + 0.8 * o_lo)
    _blend(img, R.cover(b_lo * 1.3 - V), paint(q["clothes"]))
    # neck
    _blend(img, R.cover(torch.maximum(U.abs() - 0.55 * a, 0.3 * b_lo - V)), paint(skin_rgb * 0.8))
    # back hair (head outline behind the face)
    hair_col = paint(q["hair"])
    hair_len = col(q["hair_len"])
    back = R.ellipse_sd(zero, col(-0.1 * q["b_up"]), a * col(q["hair_w"]), b_up * 1.12, hair_len + 0.1)
    back = torch.maximum(back, V - hair_len)
    has_hair = col(~q["bald"])
    _blend(img, R.cover(back) * has_hair, hair_col)
    # face with radial shading
    face_cov = R.cover(R.ellipse_sd(zero, zero, a, b_up, b_lo))
    rr = ((U / a) ** 2 + (V / torch.where(V < 0, b_up, b_lo)) ** 2).clamp(max=1.0)
    skin = paint(skin_rgb)[:, :, None, None] * (1.06 - 0.22 * rr[:, None])
    img.mul_(1 - face_cov[:, None]).add_(face_cov[:, None] * skin)
    # fringe: hair over the forehead above the hairline
    hl = col(q["hairline"]) * b_up + col(q["hair_side"]) * U + 0.35 * U * U
    _blend(img, R.cover(V - hl) * face_cov * has_hair, hair_col)

    # forehead lines and brow furrows, only where present
    fore = T(q["forehead"])
    brow_y = (Pt[:, 19, 1] + Pt[:, 24, 1]) / 2

    def forehead(r: _Raster, idx: torch.Tensor) -> torch.Tensor:
        out = torch.zeros_like(r.U)
        for off in (0.12, 0.21):
            y = brow_y[idx] - off
            pts = torch.stack([torch.stack([-0.38 + 0 * y, y + 0.025], -1), torch.stack([0 * y, y - 0.01], -1),
                               torch.stack([0.38 + 0 * y, y + 0.025], -1)], 1)
            out = torch.maximum(out, r.cover(r.segments_sd(pts, 0.25 * r.px)))
        return out * fore[idx, None, None].clamp(0, 1) * 0.5

    _blend(img, _subset(fore > 0.1, R, forehead), shade)
    furrow_s = T(q["furrow"])

    def furrows(r: _Raster, idx: torch.Tensor) -> torch.Tensor:
        out = torch.zeros_like(r.U)
        y = Pt[idx, 21, 1]
        for side in (-1.0, 1.0):
            pts = torch.stack([torch.stack([side * 0.04 + 0 * y, y - 0.12], -1),
                               torch.stack([side * 0.06 + 0 * y, y + 0.04], -1)], 1)
            out = torch.maximum(out, r.cover(r.segments_sd(pts, 0.25 * r.px)))
        return out * furrow_s[idx, None, None].clamp(0, 1) * 0.6

    _blend(img, _subset(furrow_s > 0.1, R, furrows), shade)

    # ---- windows: eyes + brows, mouth + nostrils + folds (drawn on small patches of a padded canvas)
    pad = int(math.ceil(2 * 0.75 * float(q["scale"].max()) * size)) + 4
    canvas = F.pad(img, (pad, pad, pad, pad)).permute(0, 2, 3, 1).contiguous()  # n x H+2p x W+2p x C
    brow_col = paint(q["hair"] * 0.7 + 10)
    ey, ew = col(q["eye_y"]), col(q["eye_w"])
    hu, hlo = col(q["eye_h"] * q["eye_up"]), col(0.75 * q["eye_h"] * q["eye_lo"])
    for side, brow in ((-1.0, slice(17, 22)), (1.0, slice(22, 27))):
        win = _Window(q, size, pad, canvas, side * q["eye_dx"], q["eye_y"] - 0.2, 0.56)
        w, r, wpx = win.patch, win.raster, win.raster.px
        ex = side * col(q["eye_dx"])
        sock = r.ellipse_sd(ex, ey - 0.04, ew * 1.5, ew * 0.9)
        _blend(w, 0.16 * (-sock / (ew * 0.9)).clamp(0, 1), paint(skin_rgb * 0.5))
        eye_sd = r.ellipse_sd(ex, ey, ew, hu, hlo)
        eye_cov = r.cover(eye_sd)
        _blend(w, eye_cov * 0.9, paint(np.full((n, 3), 235.0)))
        gx, gy = ex + col(q["gaze_x"]) * ew, ey + col(q["gaze_y"]) * ew
        _blend(w, r.cover(r.ellipse_sd(gx, gy, ew * col(q["iris_r"]), ew * col(q["iris_r"]))) * eye_cov,
               paint(q["iris"]))
        _blend(w, r.cover(r.ellipse_sd(gx, gy, ew * 0.25, ew * 0.25)) * eye_cov, dark)
        lash = r.cover(eye_sd.abs() - 0.35 * wpx) * torch.where(r.V < ey, 1.0, 0.45)
        _blend(w, lash * 0.9, dark)
        _blend(w, r.cover(r.segments_sd(Pt[:, brow], col(q["brow_t"]))) * 0.95, brow_col)
        win.put()

    win = _Window(q, size, pad, canvas, np.zeros(n), q["mouth_y"] - 0.12, 0.74)
    w, r = win.patch, win.raster
    for k, side in ((31, -1.0), (35, 1.0)):  # nose sides: faint lines from the bridge to the nostril wings
        top = (Pt[:, 28] + Pt[:, 29]) / 2 + torch.tensor([side * 0.06, 0.0])
        _blend(w, r.cover(r.segments_sd(torch.stack([top, Pt[:, k]], 1), 0.3 * r.px)) * 0.25, shade)
    for k in (32, 34):  # nostrils
        nos = r.ellipse_sd(col(P[:, k, 0]), col(P[:, k, 1] - 0.01), col(np.full(n, 0.045)), col(np.full(n, 0.022)))
        _blend(w, r.cover(nos) * 0.75, paint(skin_rgb * 0.3))
    naso = T(q["naso"])

    def folds(r: _Raster, idx: torch.Tensor) -> torch.Tensor:
        out = torch.zeros_like(r.U)
        for k_nose, k_mouth, side in ((31, 48, -1.0), (35, 54, 1.0)):
            top = Pt[idx, k_nose] + torch.tensor([side * 0.07, -0.05])
            bottom = Pt[idx, k_mouth] + torch.tensor([side * 0.07, 0.06])
            mid = (top + bottom) / 2 + torch.tensor([side * 0.06, 0.0])
            out = torch.maximum(out, r.cover(r.segments_sd(torch.stack([top, mid, bottom], 1), 0.3 * r.px)))
        return out * naso[idx, None, None].clamp(0, 1) * 0.55

    _blend(w, _subset(naso > 0.1, r, folds), shade)
    # lips (outer polygon), interior (inner polygon, dilated so a closed mouth shows its slit), teeth
    _blend(w, r.cover(r.segments_sd(Pt[:, 48:60], 0.0, polygon=True)) * 0.9, paint(q["lips"]))
    inner = r.segments_sd(Pt[:, 60:68], 0.0, polygon=True)
    _blend(w, r.cover(inner, grow=0.35), paint(np.array([[70.0, 25.0, 30.0]]).repeat(n, 0)))
    mw = col(q["mouth_hw"] * q["width"])
    tt = (r.U / mw).clamp(-1, 1)
    env = (1 - tt * tt).clamp_min(0).sqrt()
    corner = torch.where(tt < 0, col(q["corner"] + np.where(q["asym_side"] < 0, q["asym"], 0)),
                         col(q["corner"] + np.where(q["asym_side"] > 0, q["asym"], 0)))
    upper = col(q["mouth_y"]) - corner * tt * tt - col(o_up) * env
    teeth = r.cover(r.V - (upper + 0.5 * col(o_up + o_lo) * env)) * r.cover(inner) * col(np.clip(q["teeth"], 0, 1))
    _blend(w, teeth * 0.9, paint(np.full((n, 3), 235.0)))
    win.put()
    img = canvas[:, pad:pad + size, pad:pad + size].permute(0, 3, 1, 2).contiguous()

    # occluders: rectangles, hands (palm + four fingers), sunglasses
    occ = T(q["occluder"])
    ox, oy, ow, oh, orot = (T(q[k]) for k in ("occ_x", "occ_y", "occ_w", "occ_h", "occ_rot"))

    def local(r: _Raster, idx: torch.Tensor) -> _Raster:
        c, s_ = orot[idx].cos()[:, None, None], orot[idx].sin()[:, None, None]
        du, dv = r.U - ox[idx, None, None], r.V - oy[idx, None, None]
        return _Raster(c * du + s_ * dv, -s_ * du + c * dv, r.px)

    def rectangle(r: _Raster, idx: torch.Tensor) -> torch.Tensor:
        lr = local(r, idx)
        return r.cover(torch.maximum(lr.U.abs() - ow[idx, None, None], lr.V.abs() - oh[idx, None, None]))

    _blend(img, _subset(occ == 1, R, rectangle), paint(q["occ_color"]))

    def hand(r: _Raster, idx: torch.Tensor) -> torch.Tensor:
        lr = local(r, idx)
        m = len(idx)
        sd = lr.ellipse_sd(torch.zeros(m, 1, 1), torch.zeros(m, 1, 1), torch.full((m, 1, 1), 0.3),
                           torch.full((m, 1, 1), 0.26))
        for f, length in zip((-0.18, -0.06, 0.06, 0.18), (0.4, 0.5, 0.48, 0.38)):
            pts = torch.tensor([[f, 0.0], [f * 1.15, -0.2 - length]]).expand(m, 2, 2)
            sd = torch.minimum(sd, lr.segments_sd(pts, 0.065))
        return r.cover(sd)

    _blend(img, _subset(occ == 2, R, hand), paint(q["hand_skin"]))

    def glasses(r: _Raster, idx: torch.Tensor) -> torch.Tensor:
        sd = None
        for side in (-1.0, 1.0):
            e = r.ellipse_sd(side * T(q["eye_dx"])[idx, None, None], T(q["eye_y"])[idx, None, None] + 0.01,
                             T(q["eye_w"])[idx, None, None] * 1.35, torch.full((len(idx), 1, 1), 0.16))
            sd = e if sd is None else torch.minimum(sd, e)
        y = T(q["eye_y"])[idx] - 0.04
        bridge = torch.stack([torch.stack([-0.25 + 0 * y, y], -1), torch.stack([0.25 + 0 * y, y], -1)], 1)
        return r.cover(torch.minimum(sd, r.segments_sd(bridge, 0.03)))

    _blend(img, _subset(occ == 3, R, glasses), paint(np.full((n, 3), 15.0)))

    # lighting, brightness, contrast, blur, noise
    ldir = T(q["light_dir"])
    gx, gy = ldir.cos()[:, None, None], ldir.sin()[:, None, None]
    ramp = (gx * (ii[None, None, :] - size / 2) + gy * (ii[None, :, None] - size / 2)) / (size / 2)
    img = img * (1 + col(q["light"]) * ramp)[:, None] * col(q["brightness"])[:, None]
    img = (img - 128) * col(q["contrast"])[:, None] + 128
    img = _gaussian_blur(img, T(q["blur"]) * size / 48)
    img = img + torch.randn(img.shape, generator=gen) * col(q["noise"])[:, None]
    return img


def _gaussian_blur(img: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian blur with a per-image sigma (pixels; 0 = unchanged): n x C x H x W."""
    if not bool((sigma > 0).any()):
        return img
    n, c, h, w = img.shape
    r = max(1, math.ceil(3 * float(sigma.max())))
    x = torch.arange(-r, r + 1, dtype=torch.float32)
    k = torch.exp(-0.5 * (x[None] / sigma.clamp_min(1e-3)[:, None]) ** 2)  # n x K
    k = torch.where(sigma[:, None] > 0, k, (x[None] == 0).float())
    k = (k / k.sum(1, keepdim=True)).repeat_interleave(c, 0)  # nC x K
    flat = F.pad(img.reshape(1, n * c, h, w), (r, r, r, r), mode="replicate")
    flat = F.conv2d(flat, k[:, None, :, None], groups=n * c)
    flat = F.conv2d(flat, k[:, None, None, :], groups=n * c)
    return flat.reshape(n, c, h, w)


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
