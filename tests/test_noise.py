import json

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


def _with_label_file(n=4000, seed=0):
    """A FaceSet whose label file changes the first third of the training labels (to the next class)."""
    from dataclasses import replace

    fs = make_set(n, seed=seed)
    train = fs.indices("train")
    file_labels = fs.labels.copy()
    moved = train[: len(train) // 3]
    file_labels[moved] = (fs.labels[moved] + 1) % fs.num_classes
    meta = {"label_file": {"path": "/somewhere/second_annotation.csv"}}
    return replace(fs, file_labels=file_labels, meta=meta), moved


def test_label_file_is_recorded_as_noise_against_the_dataset_labels(tmp_path):
    fs, moved = _with_label_file()
    train = fs.indices("train")
    labels, rec = apply_noise(fs, "none", 0.0, seed=0)
    np.testing.assert_array_equal(labels, fs.file_labels)
    assert rec.type == "label_file" and rec.num_changed == len(moved) == rec.label_file["changed"]
    assert rec.realised_rate == pytest.approx(len(moved) / len(train))
    assert rec.label_file["name"] == "second_annotation.csv" and rec.injected["changed"] == 0
    assert "33.3% of the 3600 training labels differ" in rec.describe()
    save_noise(tmp_path, fs, labels, rec)
    rows = [r.split(",") for r in (tmp_path / "noise_changes.csv").read_text().strip().splitlines()]
    assert rows[0] == ["name", "clean", "noisy", "label_file"] and len(rows) - 1 == len(moved)
    i = int(rows[1][0][1:-4])
    assert rows[1][1:] == [CLASSES[fs.labels[i]], CLASSES[fs.file_labels[i]], CLASSES[fs.file_labels[i]]]
    saved = json.loads((tmp_path / "noise.json").read_text())
    assert saved["type"] == "label_file" and saved["label_file"]["changed"] == len(moved)


def test_noise_on_top_of_a_label_file_is_recorded_apart(tmp_path):
    fs, moved = _with_label_file()
    train = fs.indices("train")
    labels, rec = apply_noise(fs, "symmetric", 0.3, seed=2)
    injected = labels[train] != fs.file_labels[train]
    differ = labels[train] != fs.labels[train]
    assert rec.type == "label_file+symmetric" and rec.injected["type"] == "symmetric"
    assert rec.injected["changed"] == injected.sum() and abs(rec.injected["realised_rate"] - 0.3) < 0.03
    assert rec.label_file["changed"] == len(moved) and rec.num_changed == differ.sum()
    # the noise starts from the file's labels: outside the file's changes, the flips are the injected ones
    untouched = np.ones(len(train), bool)
    untouched[: len(moved)] = False
    np.testing.assert_array_equal(differ[untouched], injected[untouched])
    save_noise(tmp_path, fs, labels, rec)
    rows = [r.split(",") for r in (tmp_path / "noise_changes.csv").read_text().strip().splitlines()[1:]]
    # every label that differs from the dataset's, plus file changes the noise moved back to the dataset's label
    assert len(rows) == int((differ | (fs.file_labels[train] != fs.labels[train])).sum())
    assert any(r[1] == r[2] != r[3] for r in rows)


def test_without_label_file_the_record_keeps_three_columns(tmp_path):
    fs = make_set(300)
    noisy, rec = apply_noise(fs, "symmetric", 0.3, seed=0)
    assert rec.label_file is None and rec.injected is None and rec.type == "symmetric"
    save_noise(tmp_path, fs, noisy, rec)
    assert (tmp_path / "noise_changes.csv").read_text().splitlines()[0] == "name,clean,noisy"
