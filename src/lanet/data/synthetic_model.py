"""The generative model of :mod:`lanet.data.synthetic`: what a face is before it is drawn.

:func:`synthetic_params` draws every per-image choice (class and ambiguity, expression parameters, identity,
pose, colours, nuisance, the 10 simulated annotators' votes); :func:`canonical_landmarks` turns them into the
68 iBUG landmarks in a canonical face frame and :func:`pixel_landmarks` into output pixel coordinates. The
rasteriser (:mod:`lanet.data.synthetic_render`) draws every shape from the same points.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from ..classes import class_names
from ..errors import LanetError

NUM_LANDMARKS = 68
NUM_ANNOTATORS = 10

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
