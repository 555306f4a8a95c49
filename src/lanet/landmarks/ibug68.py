"""The 68-point iBUG (300-W / Multi-PIE) landmark scheme that dlib's shape predictor outputs.

Indices are 0-based. "Left" and "right" are the subject's own: points 36-41 are the subject's right eye, which
appears on the LEFT of the image for a frontal face.

Mirroring an image horizontally moves every landmark to where its mirror-image partner was: after a flip,
point ``i`` of the new shape is point ``IBUG68_FLIP[i]`` of the mirrored old shape, i.e.
``flipped = mirrored_points[IBUG68_FLIP]`` with ``mirrored_points[:, 0] = width - 1 - points[:, 0]``.
The permutation is an involution (applying it twice is the identity).
"""

from __future__ import annotations

import numpy as np

from ..errors import LanetError

IBUG68_NUM_POINTS = 68

#: Index groups of the scheme (ranges are half-open, as ``range`` objects).
IBUG68_GROUPS: dict[str, range] = {
    "jaw": range(0, 17),
    "right_brow": range(17, 22),
    "left_brow": range(22, 27),
    "nose_bridge": range(27, 31),
    "nose_tip": range(31, 36),
    "right_eye": range(36, 42),
    "left_eye": range(42, 48),
    "mouth_outer": range(48, 60),
    "mouth_inner": range(60, 68),
}

#: Coarser groups: jaw 0-16, brows 17-26, nose 27-35, eyes 36-47, mouth 48-67.
IBUG68_REGIONS: dict[str, range] = {
    "jaw": range(0, 17),
    "brows": range(17, 27),
    "nose": range(27, 36),
    "eyes": range(36, 48),
    "mouth": range(48, 68),
}


def _flip_table() -> np.ndarray:
    pairs = [(i, 16 - i) for i in range(8)]  # jaw: 0<->16 ... 7<->9, 8 is the chin (on the axis)
    pairs += [(17, 26), (18, 25), (19, 24), (20, 23), (21, 22)]  # brows
    pairs += [(31, 35), (32, 34)]  # nostrils; bridge 27-30 and tip 33 are on the axis
    pairs += [(36, 45), (37, 44), (38, 43), (39, 42), (40, 47), (41, 46)]  # eyes
    pairs += [(48, 54), (49, 53), (50, 52), (55, 59), (56, 58)]  # outer lip; 51 and 57 on the axis
    pairs += [(60, 64), (61, 63), (65, 67)]  # inner lip; 62 and 66 on the axis
    perm = np.arange(IBUG68_NUM_POINTS)
    for a, b in pairs:
        perm[a], perm[b] = b, a
    perm.setflags(write=False)
    return perm


#: Horizontal-flip permutation: the index each point becomes after mirroring (an involution).
IBUG68_FLIP: np.ndarray = _flip_table()


#: Mean iBUG-68 shape of a tight face crop, as (x, y) fractions of the crop's width and height (0 = left/top
#: edge, 1 = right/bottom edge): the average of dlib's landmarks on the 30,016 FERPlus images where a face was
#: detected, made exactly mirror-symmetric under :data:`IBUG68_FLIP` (the raw mean was within 0.006 of it).
#: The chin (point 8) lies just below the crop. Multiply by (width, height) and subtract 0.5 for pixels.
IBUG68_MEAN_SHAPE: np.ndarray = np.array([
    (0.0883, 0.3907), (0.0927, 0.5005), (0.1058, 0.6093), (0.1288, 0.7152), (0.1708, 0.8128), (0.2346, 0.8978),
    (0.3135, 0.9675), (0.4011, 1.0222), (0.5007, 1.0389), (0.6002, 1.0222), (0.6879, 0.9675), (0.7668, 0.8978),
    (0.8305, 0.8128), (0.8726, 0.7152), (0.8955, 0.6093), (0.9087, 0.5005), (0.9131, 0.3907), (0.1680, 0.3037),
    (0.2205, 0.2612), (0.2909, 0.2490), (0.3634, 0.2592), (0.4313, 0.2876), (0.5701, 0.2876), (0.6379, 0.2592),
    (0.7105, 0.2490), (0.7809, 0.2612), (0.8333, 0.3037), (0.5007, 0.3747), (0.5007, 0.4439), (0.5007, 0.5131),
    (0.5007, 0.5839), (0.4192, 0.6343), (0.4584, 0.6486), (0.5007, 0.6604), (0.5430, 0.6486), (0.5822, 0.6343),
    (0.2474, 0.3852), (0.2927, 0.3589), (0.3471, 0.3595), (0.3934, 0.3953), (0.3432, 0.4055), (0.2894, 0.4046),
    (0.6080, 0.3953), (0.6543, 0.3595), (0.7087, 0.3589), (0.7539, 0.3852), (0.7119, 0.4046), (0.6582, 0.4055),
    (0.3433, 0.7758), (0.3981, 0.7421), (0.4584, 0.7271), (0.5007, 0.7370), (0.5430, 0.7271), (0.6032, 0.7421),
    (0.6580, 0.7758), (0.6054, 0.8402), (0.5468, 0.8686), (0.5007, 0.8735), (0.4545, 0.8686), (0.3959, 0.8402),
    (0.3673, 0.7778), (0.4581, 0.7628), (0.5007, 0.7665), (0.5432, 0.7628), (0.6340, 0.7778), (0.5443, 0.8144),
    (0.5007, 0.8195), (0.4570, 0.8144),
], dtype=np.float32)
IBUG68_MEAN_SHAPE.setflags(write=False)


def _normalised_mean_shape(landmarks: np.ndarray) -> np.ndarray:
    """Mean of ``N x P x 2`` (or one ``P x 2``) shapes after centring and scaling each to unit RMS radius."""
    pts = np.asarray(landmarks, dtype=np.float64)
    if pts.ndim == 2:
        pts = pts[None]
    if pts.ndim != 3 or pts.shape[-1] != 2 or pts.shape[1] == 0:
        raise LanetError(f"landmarks must be N x P x 2 or P x 2, got shape {np.shape(landmarks)}")
    ok = np.isfinite(pts).all(axis=(1, 2))
    if not ok.any():
        raise LanetError("landmarks hold no finite shape to infer a flip permutation from")
    pts = pts[ok]
    centred = pts - pts.mean(axis=1, keepdims=True)
    radius = np.sqrt((centred**2).sum(-1).mean(-1))[:, None, None]
    centred = centred / np.where(radius > 0, radius, 1.0)
    return centred.mean(axis=0)


def infer_flip_permutation(mean_shape: np.ndarray) -> np.ndarray:
    """Infer the flip permutation of a roughly frontal, upright ``P x 2`` shape.

    The shape is centred and mirrored across the vertical line through its centroid; every point is matched
    to the original point nearest its mirror image. Because the distance from mirror(p_i) to p_j equals the
    distance from mirror(p_j) to p_i, matching pairs greedily in order of increasing distance (each point
    used once) yields a symmetric assignment, so the result is always an involution. A point on the axis is
    nearest to itself and maps to itself.
    """
    shape = np.asarray(mean_shape, dtype=np.float64)
    if shape.ndim != 2 or shape.shape[1] != 2:
        raise LanetError(f"mean shape must be P x 2, got {shape.shape}")
    p = len(shape)
    centred = shape - shape.mean(axis=0)
    mirrored = centred * np.array([-1.0, 1.0])
    dist = np.linalg.norm(mirrored[:, None, :] - centred[None, :, :], axis=-1)
    dist = 0.5 * (dist + dist.T)  # exactly symmetric despite rounding
    iu, ju = np.triu_indices(p)
    order = np.lexsort((ju, iu, dist[iu, ju]))  # by distance, ties broken by index: deterministic
    perm = np.full(p, -1, dtype=np.int64)
    for k in order:
        i, j = int(iu[k]), int(ju[k])
        if perm[i] < 0 and perm[j] < 0:
            perm[i], perm[j] = j, i
    return perm


def flip_permutation(landmarks: np.ndarray) -> np.ndarray:
    """The horizontal-flip permutation for a landmark scheme.

    Args:
        landmarks: ``N x P x 2`` (or ``P x 2``) shapes of the scheme, e.g. a dataset's landmarks.

    Returns:
        ``P`` int64 indices: :data:`IBUG68_FLIP` when ``P == 68``; otherwise inferred from the mean shape
        with :func:`infer_flip_permutation` (each shape centred and scale-normalised first).
    """
    arr = np.asarray(landmarks)
    num_points = arr.shape[-2] if arr.ndim >= 2 else 0
    if arr.ndim in (2, 3) and arr.shape[-1] == 2 and num_points == IBUG68_NUM_POINTS:
        return IBUG68_FLIP.copy()
    return infer_flip_permutation(_normalised_mean_shape(arr))


def flip_landmarks(landmarks: np.ndarray, width: int, perm: np.ndarray | None = None) -> np.ndarray:
    """Landmarks of horizontally mirrored images of ``width`` pixels (pixel centres at integers).

    ``landmarks`` is ``... x P x 2``; ``perm`` defaults to :func:`flip_permutation` of ``landmarks``.
    """
    pts = np.array(landmarks, dtype=np.float32, copy=True)
    if perm is None:
        perm = flip_permutation(pts)
    pts[..., 0] = (width - 1) - pts[..., 0]
    return pts[..., perm, :]
