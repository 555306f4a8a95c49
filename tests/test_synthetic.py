import numpy as np
import pytest
from PIL import Image

from lanet.classes import CLASSES
from lanet.data.faceset import FaceSet
from lanet.data.synthetic import (
    CLASS_EXPRESSIONS,
    NEIGHBOURS,
    canonical_landmarks,
    make_synthetic,
    save_preview,
    synthetic_params,
)
from lanet.errors import LanetError

N = 1500


@pytest.fixture(scope="module")
def fs() -> FaceSet:
    return make_synthetic(N, seed=0)


def cls(name: str) -> int:
    return CLASSES.index(name)


def test_shapes_and_types(fs):
    assert isinstance(fs, FaceSet) and fs.name == "synthetic" and fs.num_classes == 7
    assert fs.images.shape == (N, 48, 48, 1) and fs.images.dtype == np.uint8
    assert fs.labels.shape == (N,) and fs.labels.min() >= 0 and fs.labels.max() < 7
    assert fs.votes.shape == (N, 7) and fs.votes.dtype == np.float32
    assert fs.landmarks.shape == (N, 68, 2) and fs.landmarks.dtype == np.float32
    assert fs.landmark_found.all()
    assert fs.names[0] == "syn0000000.png" and fs.names[N - 1] == f"syn{N - 1:07d}.png"
    assert len(set(fs.names)) == N
    assert set(np.unique(fs.labels)) == set(range(7))  # every class occurs
    assert fs.images.std() > 20  # not blank


def test_splits(fs):
    counts = np.bincount(fs.split, minlength=3)
    assert counts.tolist() == [1050, 150, 300]
    assert fs.indices("train")[:20].tolist() != list(range(20))  # a random assignment, not blocks
    for s in ("train", "val", "test"):  # every split sees several classes
        assert len(np.unique(fs.labels[fs.indices(s)])) >= 6


def test_deterministic():
    a, b, c = make_synthetic(130, seed=3), make_synthetic(130, seed=3), make_synthetic(130, seed=4)
    for key in ("images", "labels", "split", "votes", "landmarks"):
        assert np.array_equal(getattr(a, key), getattr(b, key)), key
    assert not np.array_equal(a.images, c.images) and not np.array_equal(a.landmarks, c.landmarks)


def test_rgb_and_other_sizes():
    g = make_synthetic(40, seed=1, channels=1)
    rgb = make_synthetic(40, seed=1, channels=3, size=64, num_classes=8)
    assert rgb.images.shape == (40, 64, 64, 3) and rgb.num_classes == 8 and rgb.votes.shape == (40, 8)
    assert np.abs(rgb.images[..., 0].astype(int) - rgb.images[..., 2]).mean() > 3  # actually coloured
    # same faces at another size: landmarks scale with the image
    assert np.allclose((g.landmarks + 0.5) * 64 / 48 - 0.5, make_synthetic(40, seed=1, size=64).landmarks,
                       atol=1e-3)


def test_landmarks_mostly_inside_and_well_ordered(fs):
    lm = fs.landmarks
    inside = (lm >= -0.5) & (lm <= 47.5)
    assert inside.all(-1).mean() > 0.97
    assert inside[:, 17:68].all(-1).mean() > 0.995  # inner face points
    x = lm[..., 0]
    for a, b in ((36, 39), (39, 42), (42, 45), (48, 54), (0, 16), (17, 21), (22, 26), (31, 35)):
        assert (x[:, a] < x[:, b]).mean() > 0.99, (a, b)
    y = _face_frame(lm)[..., 1]  # rotation undone
    assert (y[:, 19] < y[:, 37]).all() and (y[:, 37] < y[:, 33]).all() and (y[:, 33] < y[:, 57]).all()
    assert (y[:, 57] < y[:, 8]).all()


def _face_frame(lm: np.ndarray) -> np.ndarray:
    """Landmarks rotated so the eye line is horizontal, in units of the inter-ocular distance."""
    le, re = lm[:, 36:42].mean(1), lm[:, 42:48].mean(1)
    d = re - le
    ang = np.arctan2(d[:, 1], d[:, 0])
    c, s = np.cos(-ang)[:, None], np.sin(-ang)[:, None]
    p = lm - ((le + re) / 2)[:, None]
    rot = np.stack([c * p[..., 0] - s * p[..., 1], s * p[..., 0] + c * p[..., 1]], -1)
    return rot / np.linalg.norm(d, axis=1)[:, None, None]


def test_class_geometry_differs(fs):
    p = _face_frame(fs.landmarks)
    y = p[..., 1]

    def mean(values, name):
        return values[fs.labels == cls(name)].mean()

    corner_up = (y[:, 51] + y[:, 57]) / 2 - (y[:, 48] + y[:, 54]) / 2  # > 0: corners above the lip centre
    assert mean(corner_up, "happiness") > mean(corner_up, "neutral") + 0.05
    assert mean(corner_up, "sadness") < mean(corner_up, "neutral") - 0.05
    opening = y[:, 66] - y[:, 62]
    assert mean(opening, "surprise") > mean(opening, "neutral") + 0.15
    assert mean(opening, "fear") > mean(opening, "neutral") + 0.03
    eye = (y[:, 41] + y[:, 40] - y[:, 37] - y[:, 38]) / 2
    assert mean(eye, "surprise") > 1.3 * mean(eye, "neutral") > 1.3 * 1.2 * mean(eye, "disgust")
    brow_inner = (y[:, 39] + y[:, 42]) / 2 - (y[:, 21] + y[:, 22]) / 2  # inner brow height above the eyes
    assert mean(brow_inner, "anger") < mean(brow_inner, "neutral") - 0.05
    assert mean(brow_inner, "surprise") > mean(brow_inner, "neutral") + 0.1
    width = p[:, 54, 0] - p[:, 48, 0]
    assert mean(width, "happiness") > mean(width, "neutral") > mean(width, "surprise")


def test_contempt_is_one_sided():
    q = synthetic_params(2000, seed=0, num_classes=8)
    P = canonical_landmarks(q)
    tilt = np.abs(P[:, 48, 1] - P[:, 54, 1])
    con, neu = q["labels"] == 7, q["labels"] == 6
    assert tilt[con].mean() > 0.06 > 3 * tilt[neu].mean()
    side = np.sign(P[con, 54, 1] - P[con, 48, 1])
    assert 0.3 < (side > 0).mean() < 0.7  # either side


def test_votes_and_ambiguity(fs):
    q = synthetic_params(N, seed=0)
    assert np.array_equal(q["labels"], fs.labels) and np.array_equal(q["votes"], fs.votes)
    assert np.all(fs.votes.sum(1) == 10) and np.all(fs.votes >= 0)
    agree = fs.votes.argmax(1) == fs.labels
    assert 0.8 < agree.mean() < 1.0  # most, not all
    amb = q["ambiguous"]
    assert 0.1 < amb.mean() < 0.2
    assert agree[~amb].mean() > 0.97 and agree[amb].mean() < agree[~amb].mean() - 0.1
    # ambiguous faces mix with a declared neighbour, with the dominant class as label
    names = CLASSES[:7]
    for i in np.flatnonzero(amb)[:50]:
        assert names[q["secondary"][i]] in NEIGHBOURS[names[q["labels"][i]]]
        assert 0.2 <= q["mix"][i] < 0.5
    # the secondary class gets votes on ambiguous faces
    sec_votes = fs.votes[amb, q["secondary"][amb]]
    assert sec_votes.mean() > 2.0
    assert (fs.votes[~amb].max(1) >= 7).mean() > 0.8
    assert set(CLASS_EXPRESSIONS) == set(CLASSES)


def test_pixels_follow_landmarks(fs):
    """The rendered mouth interior of open mouths is darker than the cheek next to it."""
    q = synthetic_params(N, seed=0)
    lm = fs.landmarks
    img = fs.images[..., 0].astype(float)
    sel = np.flatnonzero((q["open"] > 0.2) & (q["occluder"] == 0) & (q["blur"] == 0))
    assert len(sel) > 20

    def at(i, pt):
        x, y = np.clip(np.round(pt).astype(int), 0, 47)
        return img[i, y, x]

    darker = [at(i, (lm[i, 62] + lm[i, 66]) / 2) < at(i, (lm[i, 29] + lm[i, 31] + lm[i, 2]) / 3) - 20
              for i in sel]
    assert np.mean(darker) > 0.9
    # and the pupils: eye centres are darker than the skin between brow and eye on average
    eyes = np.array([at(i, lm[i, 36:42].mean(0)) for i in range(N)])
    skin = np.array([at(i, (lm[i, 30] + lm[i, 33]) / 2) for i in range(N)])
    assert (eyes < skin).mean() > 0.6


def test_class_prior_and_errors():
    q = synthetic_params(3000, seed=0)
    freq = np.bincount(q["labels"], minlength=7) / 3000
    assert freq[cls("happiness")] > 2 * freq[cls("disgust")]  # mildly imbalanced by default
    flat = synthetic_params(3000, seed=0, class_prior=[1] * 7)
    assert np.abs(np.bincount(flat["labels"], minlength=7) / 3000 - 1 / 7).max() < 0.03
    none = synthetic_params(500, seed=0, ambiguous=0.0)
    assert not none["ambiguous"].any() and np.array_equal(none["labels"], none["secondary"])
    for kw in (dict(channels=2), dict(num_classes=6), dict(n=-1), dict(size=8), dict(ambiguous=1.5)):
        with pytest.raises(LanetError):
            make_synthetic(**({"n": 10} | kw))
    with pytest.raises(LanetError):
        synthetic_params(10, class_prior=[1, 2])
    assert len(make_synthetic(0)) == 0


def test_preview(tmp_path, fs):
    path = save_preview(tmp_path / "grid.png", fs, k=16, scale=2, columns=8)
    im = Image.open(path)
    assert im.size[0] == 8 * (96 + 4) + 4 and im.size[1] == 2 * (96 + 12 + 4) + 4
    plain = np.asarray(Image.open(save_preview(tmp_path / "plain.png", fs, k=16, scale=2, landmarks=False)))
    assert not np.array_equal(np.asarray(im), plain)  # landmarks drawn
