"""Landmarks: the iBUG flip table, landmark files, the content-keyed cache, and dlib detection on real faces."""

from __future__ import annotations

import csv
import importlib.util
import os
from pathlib import Path

import numpy as np
import pytest

from lanet.data.faceset import FaceSet
from lanet.errors import LanetError
from lanet.landmarks import detect as detect_mod
from lanet.landmarks import provider
from lanet.landmarks.ibug68 import (
    IBUG68_FLIP,
    IBUG68_GROUPS,
    IBUG68_MEAN_SHAPE,
    IBUG68_REGIONS,
    flip_landmarks,
    flip_permutation,
    infer_flip_permutation,
)
from lanet.landmarks.io import read_landmark_file, write_landmark_file
from lanet.landmarks.provider import cache_path, ensure_landmarks, landmark_stats

REPO = Path(__file__).resolve().parents[1]
HAVE_DLIB = importlib.util.find_spec("dlib") is not None and importlib.util.find_spec("face_recognition_models")
needs_dlib = pytest.mark.skipif(not HAVE_DLIB, reason="dlib / face_recognition_models not installed "
                                "(pip install 'lanet[landmarks]')")


def ferplus_dir() -> Path:
    root = Path(os.environ.get("LANET_FERPLUS", REPO.parent / "shared" / "data" / "ferplus"))
    if not (root / "FER2013Test" / "label.csv").is_file():
        pytest.skip(f"FERPlus not found at {root} (set LANET_FERPLUS to the folder holding FER2013Test/)")
    return root


def ferplus_images(count: int) -> tuple[np.ndarray, list[str]]:
    """The first ``count`` images of FERPlus's test split, in label-file order."""
    from PIL import Image

    root = ferplus_dir() / "FER2013Test"
    with open(root / "label.csv", newline="") as fh:
        names = [row[0] for row in csv.reader(fh) if row][:count]
    images = np.stack([np.asarray(Image.open(root / n).convert("L")) for n in names])[..., None]
    return images, names


def make_faceset(n: int = 6, size: int = 8, seed: int = 0, landmarks: np.ndarray | None = None) -> FaceSet:
    rng = np.random.default_rng(seed)
    return FaceSet(images=rng.integers(0, 256, (n, size, size, 1), dtype=np.uint8),
                   labels=np.zeros(n, dtype=np.int64), split=np.arange(n) % 3, names=[f"img{i}.png" for i in range(n)],
                   num_classes=7, name="tiny", landmarks=landmarks)


# ---------------------------------------------------------------------------------------------- flip table
def test_ibug_flip_table_is_an_involution_with_the_known_pairs():
    perm = np.asarray(IBUG68_FLIP)
    assert sorted(perm.tolist()) == list(range(68))
    assert np.array_equal(perm[perm], np.arange(68))
    for a, b in [(0, 16), (7, 9), (17, 26), (21, 22), (31, 35), (36, 45), (39, 42), (40, 47), (48, 54), (49, 53),
                 (55, 59), (60, 64), (65, 67)]:
        assert perm[a] == b and perm[b] == a
    for axis in (8, 27, 28, 29, 30, 33, 51, 57, 62, 66):
        assert perm[axis] == axis
    # groups flip into themselves, left and right eye/brow into each other
    for name, r in IBUG68_REGIONS.items():
        assert set(perm[list(r)]) == set(r), name
    assert set(perm[list(IBUG68_GROUPS["right_eye"])]) == set(IBUG68_GROUPS["left_eye"])


def test_mean_shape_is_upright_and_symmetric_under_the_table():
    shape = IBUG68_MEAN_SHAPE
    assert shape.shape == (68, 2) and (shape > 0).all() and (shape < 1.05).all()
    assert shape[36:48, 1].mean() < shape[27:36, 1].mean() < shape[48:68, 1].mean()  # eyes, nose, mouth
    assert shape[36:42, 0].mean() < shape[42:48, 0].mean()  # subject's right eye on the image's left
    mirrored = shape.copy()
    mirrored[:, 0] = 2 * shape[:, 0].mean() - shape[:, 0]
    np.testing.assert_allclose(mirrored[IBUG68_FLIP], shape, atol=1e-3)


def test_flip_permutation_68_points_returns_the_table():
    assert np.array_equal(flip_permutation(np.zeros((3, 68, 2))), IBUG68_FLIP)
    assert np.array_equal(flip_permutation(IBUG68_MEAN_SHAPE), IBUG68_FLIP)


def test_inferred_permutation_matches_the_table_on_noisy_ibug_shapes():
    rng = np.random.default_rng(0)
    scale = np.array([[48.0, 48.0]])
    shapes = IBUG68_MEAN_SHAPE[None] * scale + rng.normal(0, 0.4, (200, 68, 2))  # ~0.4 px jitter per point
    shapes += rng.normal(0, 3, (200, 1, 2))  # and a random shift per face
    assert np.array_equal(infer_flip_permutation(shapes.mean(0)), IBUG68_FLIP)
    # the scheme with its points listed in another order: the permutation follows the relabelling
    order = rng.permutation(68)
    inferred = infer_flip_permutation(shapes.mean(0)[order])
    inverse = np.argsort(order)
    assert np.array_equal(order[inferred], IBUG68_FLIP[order])
    assert np.array_equal(inferred, inverse[IBUG68_FLIP[order]])


@pytest.mark.parametrize("subset", [
    [i for i in range(68) if i < 60],  # iBUG without the inner lips: 60 points
    [36, 45, 30, 48, 54],  # a 5-point scheme: outer eye corners, nose tip, mouth corners
    list(range(17, 68)),  # 51 points: no jaw
])
def test_flip_permutation_other_counts_inferred_from_the_mean_shape(subset):
    rng = np.random.default_rng(1)
    shapes = IBUG68_MEAN_SHAPE[None, subset] * 100 + rng.normal(0, 0.5, (50, len(subset), 2))
    perm = flip_permutation(shapes)
    expected = np.array([subset.index(IBUG68_FLIP[i]) for i in subset])
    assert np.array_equal(perm, expected)
    assert np.array_equal(perm[perm], np.arange(len(subset)))


def test_inferred_permutation_is_always_an_involution():
    rng = np.random.default_rng(2)
    for p in (1, 2, 7, 33):
        perm = infer_flip_permutation(rng.normal(size=(p, 2)))
        assert sorted(perm.tolist()) == list(range(p))
        assert np.array_equal(perm[perm], np.arange(p))


def test_flip_landmarks_twice_is_identity_and_mirrors_x():
    pts = IBUG68_MEAN_SHAPE[None] * 47
    once = flip_landmarks(pts, 48)
    np.testing.assert_allclose(flip_landmarks(once, 48), pts, atol=1e-5)
    np.testing.assert_allclose(once[0, 36], [47 - pts[0, 45, 0], pts[0, 45, 1]], atol=1e-5)


def test_flip_permutation_rejects_bad_shapes():
    with pytest.raises(LanetError):
        flip_permutation(np.zeros((4, 5, 3)))
    with pytest.raises(LanetError):
        flip_permutation(np.full((2, 5, 2), np.nan))


# ---------------------------------------------------------------------------------------------- files
@pytest.mark.parametrize("ext", [".csv", ".npz"])
def test_landmark_file_round_trip_reordered_by_name(tmp_path, ext):
    rng = np.random.default_rng(3)
    names = np.array([f"face{i:03d}.png" for i in range(10)], dtype=object)
    pts = rng.uniform(1.5, 46.5, (10, 5, 2)).astype(np.float32)
    found = rng.random(10) < 0.5
    path = tmp_path / f"marks{ext}"
    write_landmark_file(path, names, pts, found)
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    order = np.array([7, 2, 9, 0])
    got, got_found = read_landmark_file(path, names[order], (48, 48))
    assert got.dtype == np.float32 and got.shape == (4, 5, 2)
    np.testing.assert_array_equal(got, pts[order])
    np.testing.assert_array_equal(got_found, found[order])
    # without found: all found
    write_landmark_file(path, names, pts)
    _, got_found = read_landmark_file(path, names, 48)
    assert got_found.all()


def test_csv_documented_format_and_normalised_coordinates(tmp_path):
    path = tmp_path / "norm.csv"
    path.write_text("name,x0,y0,x1,y1\nb.png,0.5,0.25,1.0,0.0\na.png,0.1,0.2,0.3,0.4\n")
    got, found = read_landmark_file(path, ["a.png", "b.png"], (40, 80))  # height 40, width 80
    np.testing.assert_allclose(got, [[[8, 8], [24, 16]], [[40, 10], [80, 0]]], atol=1e-5)
    assert found.all()
    path.write_text("name,found,x0,y0\nb.png,0,30,20\na.png,true,1.5,2\n")
    got, found = read_landmark_file(path, ["a.png", "b.png"], 48)
    np.testing.assert_allclose(got[:, 0], [[1.5, 2], [30, 20]])  # pixels: a value above 1
    assert found.tolist() == [True, False]


def test_missing_names_error_names_them_and_counts(tmp_path):
    path = tmp_path / "m.npz"
    write_landmark_file(path, ["a.png", "b.png"], np.ones((2, 3, 2)) * 5)
    with pytest.raises(LanetError) as err:
        read_landmark_file(path, ["a.png", "c.png", "d.png", "b.png"], 48)
    msg = str(err.value)
    assert str(path) in msg and "'c.png'" in msg and "'d.png'" in msg and "2 of the dataset's 4" in msg


def test_bad_point_count_and_values_name_file_and_line(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("name,x0,y0,x1,y1\na.png,1,2,3,4\nb.png,1,2,3\n")
    with pytest.raises(LanetError, match=r"bad\.csv, line 3"):
        read_landmark_file(path, ["a.png", "b.png"], 48)
    path.write_text("name,x0,y0,x1,y1\na.png,1,2,3,4\nb.png,1,2,3,4,5,6\n")
    with pytest.raises(LanetError, match=r"bad\.csv, line 3: 7 fields, expected 5 \(2 points\); this row has 3 points"):
        read_landmark_file(path, ["a.png", "b.png"], 48)
    path.write_text("name,x0,y0,x1,y1\na.png,1,2,3,4\nb.png,1,2,three,4\n")
    with pytest.raises(LanetError, match=r"bad\.csv, line 3: non-numeric coordinate 'three'"):
        read_landmark_file(path, ["a.png", "b.png"], 48)
    path.write_text("name,x0,y0,x1\na.png,1,2,3\n")
    with pytest.raises(LanetError, match=r"line 1"):
        read_landmark_file(path, ["a.png"], 48)
    path.write_text("name,x0,y0\na.png,1,2\na.png,3,4\n")
    with pytest.raises(LanetError, match="more than once"):
        read_landmark_file(path, ["a.png"], 48)
    npz = tmp_path / "bad.npz"
    np.savez(npz, names=np.array(["a.png", "b.png"]), landmarks=np.zeros((2, 3)))
    with pytest.raises(LanetError, match="bad.npz"):
        read_landmark_file(npz, ["a.png"], 48)


def test_file_errors_missing_unknown_type_and_wrong_pixel_space(tmp_path):
    with pytest.raises(LanetError, match="nope.csv"):
        read_landmark_file(tmp_path / "nope.csv", ["a"], 48)
    (tmp_path / "x.txt").write_text("name,x0,y0\n")
    with pytest.raises(LanetError, match="x.txt"):
        read_landmark_file(tmp_path / "x.txt", ["a"], 48)
    path = tmp_path / "big.csv"
    path.write_text("name,x0,y0\na.png,180,200\n")  # pixels of a 224 source image, dataset loaded at 48
    with pytest.raises(LanetError, match="far outside the 48x48 image"):
        read_landmark_file(path, ["a.png"], 48)


# ---------------------------------------------------------------------------------------------- provider
def fake_detector(calls: list):
    def fake(images, upscale_to=112, workers=0, progress=True, **kw):
        calls.append(len(images))
        n = len(images)
        pts = np.broadcast_to(np.arange(68, dtype=np.float32)[None, :, None] / 68 * 7, (n, 68, 2)).copy()
        pts += images.reshape(n, -1)[:, :1, None].astype(np.float32) / 255  # depends on the content
        return pts, np.arange(n) % 2 == 0
    return fake


def test_cache_second_call_does_not_detect_and_is_keyed_by_content(tmp_path, monkeypatch):
    monkeypatch.setenv("LANET_CACHE", str(tmp_path / "root"))
    calls: list = []
    monkeypatch.setattr(detect_mod, "detect_landmarks", fake_detector(calls))
    fs = make_faceset()
    ensure_landmarks(fs, "auto", progress=False)
    assert calls == [6] and fs.landmarks.shape == (6, 68, 2)
    files = list((tmp_path / "root" / "landmarks").iterdir())
    assert [f.name for f in files] == [cache_path(fs.images).name] and files[0].suffix == ".npz"

    def boom(*a, **k):
        raise AssertionError("detector must not run on a cache hit")

    monkeypatch.setattr(detect_mod, "detect_landmarks", boom)
    again = make_faceset()  # same content, a fresh object
    again.name = "renamed"
    ensure_landmarks(again, "auto", progress=False)
    np.testing.assert_array_equal(again.landmarks, fs.landmarks)
    np.testing.assert_array_equal(again.landmark_found, fs.landmark_found)
    assert again.meta["landmarks"]["source"] == "cache"

    changed = make_faceset()
    changed.images[3, 2, 5, 0] ^= 1  # one pixel
    assert cache_path(changed.images) != cache_path(fs.images)
    with pytest.raises(AssertionError, match="must not run"):
        ensure_landmarks(changed, "auto", progress=False)
    # detector settings are part of the key, and the explicit cache_dir beats $LANET_CACHE
    assert cache_path(fs.images, settings={"upscale_to": 160}) != cache_path(fs.images)
    assert cache_path(fs.images, str(tmp_path / "other")).parent == tmp_path / "other" / "landmarks"


def test_corrupt_or_interrupted_cache_is_recomputed(tmp_path, monkeypatch):
    monkeypatch.setenv("LANET_CACHE", str(tmp_path))
    calls: list = []
    monkeypatch.setattr(detect_mod, "detect_landmarks", fake_detector(calls))
    fs = make_faceset()
    path = cache_path(fs.images)

    def interrupted_savez(fh, **arrays):
        fh.write(b"PK\x03\x04 half a zip")
        raise KeyboardInterrupt

    monkeypatch.setattr(provider.np, "savez", interrupted_savez)
    with pytest.raises(KeyboardInterrupt):
        ensure_landmarks(fs, "auto", progress=False)
    assert not path.exists() and not list(path.parent.iterdir())  # nothing half-written left behind
    monkeypatch.undo()
    monkeypatch.setenv("LANET_CACHE", str(tmp_path))
    monkeypatch.setattr(detect_mod, "detect_landmarks", fake_detector(calls))
    path.write_bytes(b"garbage")
    fs = make_faceset()
    ensure_landmarks(fs, "auto", progress=False)
    assert calls == [6, 6] and fs.landmarks is not None
    assert np.load(path)["landmarks"].shape == (6, 68, 2)


def test_ensure_landmarks_none_ground_truth_and_file(tmp_path, monkeypatch):
    monkeypatch.setattr(detect_mod, "detect_landmarks", fake_detector([]))
    fs = make_faceset()
    ensure_landmarks(fs, "none")
    assert fs.landmarks is None
    truth = np.full((6, 5, 2), 3.0, np.float32)
    fs = make_faceset(landmarks=truth)
    monkeypatch.setattr(detect_mod, "detect_landmarks", lambda *a, **k: pytest.fail("ground truth must be kept"))
    ensure_landmarks(fs, "auto")
    np.testing.assert_array_equal(fs.landmarks, truth)
    path = tmp_path / "user.csv"
    write_landmark_file(path, fs.names[::-1], np.arange(6 * 4 * 2, dtype=np.float32).reshape(6, 4, 2) / 10 + 2,
                        found=np.array([1, 1, 0, 1, 1, 1], bool))
    ensure_landmarks(fs, str(path))
    assert fs.num_landmarks == 4
    np.testing.assert_allclose(fs.landmarks[5, 0], [2.0, 2.1])  # img5 is the file's first row
    stats = landmark_stats(fs)
    assert stats["count"] == 6 and stats["points"] == 4 and stats["found"] == 5
    assert stats["detection_rate"] == pytest.approx(5 / 6) and stats["source"] == "file"
    assert stats["detection_rate_train"] == 0.5 and stats["detection_rate_test"] == 1.0  # img3 (train) not found
    with pytest.raises(LanetError, match="missing.npz"):
        ensure_landmarks(fs, str(tmp_path / "missing.npz"))
    assert landmark_stats(make_faceset())["count"] == 0


def test_missing_dlib_or_model_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "dlib", None)
    with pytest.raises(LanetError, match=r"lanet\[landmarks\]"):
        detect_mod.detect_landmarks(np.zeros((1, 48, 48, 1), np.uint8), progress=False)
    with pytest.raises(LanetError, match=r"tiny: data.landmarks=auto .*lanet\[landmarks\].*data.landmarks=none"):
        ensure_landmarks(make_faceset(), "auto", progress=False)
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    with pytest.raises(LanetError, match=r"face_recognition_models.*lanet\[landmarks\]"):
        detect_mod.shape_predictor_path()
    monkeypatch.setenv("LANET_SHAPE_PREDICTOR", "/nonexistent/model.dat")
    with pytest.raises(LanetError, match="/nonexistent/model.dat"):
        detect_mod.shape_predictor_path()


# ---------------------------------------------------------------------------------------------- detection
@needs_dlib
def test_detects_real_ferplus_faces():
    images, names = ferplus_images(24)
    pts, found = detect_mod.detect_landmarks(images, workers=1, progress=False)
    assert pts.shape == (24, 68, 2) and pts.dtype == np.float32 and found.dtype == bool
    assert found.mean() >= 0.7, f"only {found.sum()} of 24 faces found"
    centre = pts[found][:, 27:48]  # nose and eyes: inside the 48 x 48 image
    assert (centre >= 0).all() and (centre <= 47).all()
    # brows and mouth may touch the edge of these tight crops, the jaw may leave it a little
    assert (pts[found][:, 17:] >= -2).all() and (pts[found][:, 17:] <= 49).all()
    assert (pts[found] >= -12).all() and (pts[found] <= 60).all()  # the jaw of a turned head: within 25%
    eyes_y, mouth_y = pts[:, 36:48, 1].mean(1), pts[:, 48:68, 1].mean(1)
    assert (eyes_y < mouth_y - 5).all()
    # the subject's right eye (36-41) appears on the image's left
    assert (pts[found][:, 36:42, 0].mean(1) < pts[found][:, 42:48, 0].mean(1)).all()

    # the same face mirrored: dlib's points agree with the flip table (mean error < 10% of the eye distance)
    mirrored, found_m = detect_mod.detect_landmarks(images[:, :, ::-1], workers=1, progress=False)
    both = found & found_m
    expected = flip_landmarks(pts[both], 48)
    iod = np.linalg.norm(expected[:, 36] - expected[:, 45], axis=1)
    err = np.linalg.norm(mirrored[both] - expected, axis=2).mean(1) / iod
    assert both.sum() >= 12 and np.median(err) < 0.1, err
    # without the table (identity) the error would be large: the test can fail
    assert np.median(np.linalg.norm(mirrored[both] - expected[:, IBUG68_FLIP], axis=2).mean(1) / iod) > 0.3


@needs_dlib
def test_coordinates_map_back_to_the_original_image_and_pool_is_deterministic():
    from PIL import Image

    images, _ = ferplus_images(8)
    small, found = detect_mod.detect_landmarks(images, workers=1, progress=False, retry_scales=())
    # the same images already upscaled to 112 px: identical prepared images, coordinates 112/48 larger
    big = np.stack([np.asarray(Image.fromarray(im[..., 0]).resize((112, 112), Image.BILINEAR)) for im in images])
    big_pts, big_found = detect_mod.detect_landmarks(big[..., None], workers=1, progress=False, retry_scales=())
    np.testing.assert_array_equal(found, big_found)
    np.testing.assert_allclose(small, (big_pts + 0.5) * 48 / 112 - 0.5, atol=1e-3)
    # two processes, small chunks: the same output in the same order
    pooled, pooled_found = detect_mod.detect_landmarks(images, workers=2, progress=False, retry_scales=(),
                                                       chunk_size=3)
    np.testing.assert_array_equal(pooled, small)
    np.testing.assert_array_equal(pooled_found, found)


@needs_dlib
def test_no_face_falls_back_to_the_fixed_box():
    grey = np.full((3, 48, 48, 1), 128, np.uint8)
    grey[1] = np.linspace(0, 255, 48, dtype=np.uint8)[None, :, None]  # a smooth ramp: no face either
    rgb = np.repeat(grey, 3, axis=3)
    for images, box in [(grey, (0.05, 0.10, 0.93, 0.98)), (rgb, (0.25, 0.25, 0.75, 0.75))]:
        pts, found = detect_mod.detect_landmarks(images, workers=1, progress=False, fallback_box=box)
        assert not found.any()
        left, top, right, bottom = np.array(box) * 48 - 0.5
        # dlib's mean shape spans x 6%..92% and y 19%..108% of its face box (the chin hangs below it)
        assert (pts[..., 0] >= left).all() and (pts[..., 0] <= right).all()
        assert (pts[..., 1] >= top).all() and (pts[..., 1] <= bottom + 0.1 * (bottom - top)).all()
        width = pts[..., 0].max(1) - pts[..., 0].min(1)
        assert (width > 0.6 * (right - left)).all()  # a face-sized shape filling the box, not a dot
        assert (pts[:, 36:48, 1].mean(1) < pts[:, 48:68, 1].mean(1)).all()
    with pytest.raises(LanetError, match="fallback_box"):
        detect_mod.detect_landmarks(grey, progress=False, fallback_box=(0.9, 0.1, 0.1, 0.9))
    with pytest.raises(LanetError, match="images must be"):
        detect_mod.detect_landmarks(np.zeros((2, 48, 48), np.uint8), progress=False)


@needs_dlib
def test_ensure_landmarks_detects_then_hits_the_cache(tmp_path, monkeypatch):
    images, names = ferplus_images(6)
    make = lambda: FaceSet(images=images.copy(), labels=np.zeros(6), split=np.zeros(6), names=names,  # noqa: E731
                           num_classes=8, name="ferplus-slice")
    fs = make()
    ensure_landmarks(fs, "auto", cache_dir=str(tmp_path), progress=False)
    assert fs.landmarks.shape == (6, 68, 2) and fs.meta["landmarks"]["source"] == "detected"
    expected, found = detect_mod.detect_landmarks(images, workers=1, progress=False)
    np.testing.assert_array_equal(fs.landmarks, expected)
    np.testing.assert_array_equal(fs.landmark_found, found)
    monkeypatch.setattr(detect_mod, "detect_landmarks", lambda *a, **k: pytest.fail("cache hit expected"))
    again = make()
    ensure_landmarks(again, "auto", cache_dir=str(tmp_path), progress=False)
    np.testing.assert_array_equal(again.landmarks, expected)
    assert landmark_stats(again)["found"] == int(found.sum())
