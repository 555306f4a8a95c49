import numpy as np
import pytest

from lanet.classes import ASYMMETRIC_FLIP, CLASSES
from lanet.data.faceset import FaceSet
from lanet.data.noise import apply_noise, save_noise
from lanet.errors import LanetError


def make_set(n=20000, c=8, votes=None, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, c, n)
    split = np.zeros(n, dtype=np.int8)
    split[-max(1, n // 10):] = 2  # last tenth is test
    return FaceSet(images=np.zeros((n, 2, 2, 1), np.uint8), labels=labels, split=split,
                   names=[f"i{i}.png" for i in range(n)], num_classes=c, votes=votes)


def test_symmetric_rate_and_uniform_targets():
    fs = make_set()
    noisy, rec = apply_noise(fs, "symmetric", 0.3, seed=1)
    train = fs.indices("train")
    changed = noisy[train] != fs.labels[train]
    assert abs(rec.realised_rate - 0.3) < 0.015
    assert rec.num_changed == changed.sum()
    # test split untouched
    assert np.array_equal(noisy[fs.indices("test")], fs.labels[fs.indices("test")])
    # flipped labels from class 0 spread uniformly over the other 7 classes
    src0 = changed & (fs.labels[train] == 0)
    counts = np.bincount(noisy[train][src0], minlength=8)
    assert counts[0] == 0
    expected = src0.sum() / 7
    assert np.all(np.abs(counts[1:] - expected) < 5 * np.sqrt(expected))


def test_symmetric_is_seeded():
    fs = make_set(2000)
    a, _ = apply_noise(fs, "symmetric", 0.2, seed=5)
    b, _ = apply_noise(fs, "symmetric", 0.2, seed=5)
    c, _ = apply_noise(fs, "symmetric", 0.2, seed=6)
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_asymmetric_follows_table5():
    fs = make_set()
    noisy, rec = apply_noise(fs, "asymmetric", 0.2, seed=0)
    train = fs.indices("train")
    changed = noisy[train] != fs.labels[train]
    for src, dst in zip(fs.labels[train][changed], noisy[train][changed]):
        assert CLASSES[dst] == ASYMMETRIC_FLIP[CLASSES[src]]
    assert abs(rec.realised_rate - 0.2) < 0.015


def test_annotator_noise_draws_from_votes():
    n = 6000
    votes = np.zeros((n, 8), np.float32)
    votes[:, 3] = 7  # happiness 7 votes
    votes[:, 6] = 3  # neutral 3 votes
    fs = make_set(n, votes=votes)
    fs.labels[:] = 3
    noisy, rec = apply_noise(fs, "annotator", 0.0, seed=0)
    train = fs.indices("train")
    assert set(np.unique(noisy[train])) == {3, 6}
    assert abs((noisy[train] == 6).mean() - 0.3) < 0.03
    assert abs(rec.realised_rate - 0.3) < 0.03


def test_annotator_needs_votes():
    with pytest.raises(LanetError, match="votes"):
        apply_noise(make_set(100), "annotator", 0.0, 0)


def test_unknown_type_and_bad_rate():
    with pytest.raises(LanetError, match="unknown noise type"):
        apply_noise(make_set(10), "gaussian", 0.1, 0)
    with pytest.raises(LanetError, match="rate"):
        apply_noise(make_set(10), "symmetric", 1.5, 0)


def test_save_noise_records_changes(tmp_path):
    fs = make_set(500)
    noisy, rec = apply_noise(fs, "symmetric", 0.5, seed=0)
    save_noise(tmp_path, fs, noisy, rec)
    rows = (tmp_path / "noise_changes.csv").read_text().strip().splitlines()
    assert len(rows) - 1 == rec.num_changed
    name, clean, new = rows[1].split(",")
    i = int(name[1:-4])
    assert CLASSES[fs.labels[i]] == clean and CLASSES[noisy[i]] == new
