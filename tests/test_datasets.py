"""Dataset loaders on tiny fixtures written into tmp_path: every layout, label mapping, protocol and error path."""

from __future__ import annotations

import os
import sys
import types
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lanet.config import DataConfig
from lanet.data import imageio
from lanet.data.affectnet import load_affectnet
from lanet.data.faceset import SPLITS, FaceSet
from lanet.data.ferplus import COLUMNS, ferplus_labels, load_ferplus
from lanet.data.generic import load_csv, load_folders
from lanet.data.labels import apply_label_file, carve_val, limit_per_split, limit_train
from lanet.data.loaders import load_faceset
from lanet.data.rafdb import load_rafdb
from lanet.errors import LanetError

TRAIN, VAL, TEST = (SPLITS.index(s) for s in SPLITS)


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    """Every test caches into its own folder, never ~/.cache/lanet."""
    monkeypatch.setenv("LANET_CACHE", str(tmp_path / "cache"))


def _save(path: Path, arr: np.ndarray, **kw) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, **kw)


# ------------------------------------------------------------------------------------------------ FERPlus
# (name, 10 votes in FERPlus column order, paper label, majority label); None = dropped
FER_ROWS = {
    "FER2013Train": [
        ("fer0000000.png", [4, 0, 0, 1, 3, 2, 0, 0, 0, 0], 6, None),  # README example; 4/9 after outliers: no majority
        ("fer0000001.png", [0, 4, 4, 0, 0, 0, 0, 0, 2, 0], 3, None),  # tie happiness/surprise -> happiness (file order)
        ("fer0000002.png", [0, 0, 0, 4, 0, 0, 0, 0, 4, 2], 4, None),  # tie sadness/unknown -> sadness kept
        ("fer0000003.png", [1, 0, 0, 0, 0, 0, 0, 0, 7, 2], None, None),  # unknown top
        ("fer0000004.png", [0, 0, 0, 0, 0, 0, 0, 0, 0, 10], None, None),  # not a face
        ("fer0000005.png", [5, 1, 1, 1, 1, 1, 0, 0, 0, 0], 6, 6),  # single votes: 5/10 -> 5/5 after outlier removal
        ("fer0000006.png", [0, 0, 0, 0, 0, 0, 0, 8, 2, 0], 7, 7),  # contempt
        ("fer0000007.png", [0, 0, 0, 0, 7, 3, 0, 0, 0, 0], 0, 0),  # anger
        ("fer0000008.png", [3, 0, 0, 0, 0, 0, 0, 0, 0, 7], None, None),  # no PNG on disk / empty name in raw csv
    ],
    "FER2013Valid": [
        ("fer0000009.png", [0, 0, 0, 0, 0, 0, 9, 0, 1, 0], 2, 2),  # fear
        ("fer0000010.png", [0, 0, 0, 0, 2, 8, 0, 0, 0, 0], 1, 1),  # disgust
    ],
    "FER2013Test": [
        ("fer0000011.png", [1, 0, 9, 0, 0, 0, 0, 0, 0, 0], 5, 5),  # surprise
        ("fer0000012.png", [0, 10, 0, 0, 0, 0, 0, 0, 0, 0], 3, 3),  # happiness
    ],
}
USAGE = {"FER2013Train": "Training", "FER2013Valid": "PublicTest", "FER2013Test": "PrivateTest"}
MISSING_PNG = "fer0000008.png"


def _fer_pixels() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, size=(13, 48, 48), dtype=np.uint8)


def write_ferplus_folders(root: Path) -> Path:
    pixels = _fer_pixels()
    for folder, rows in FER_ROWS.items():
        (root / folder).mkdir(parents=True)
        lines = []
        for name, votes, _, _ in rows:
            lines.append(f'{name},"(0, 0, 48, 48)",' + ",".join(map(str, votes)))
            if name != MISSING_PNG:
                _save(root / folder / name, pixels[int(name[3:10])])
        (root / folder / "label.csv").write_text("\n".join(lines) + "\n")
    return root


def write_ferplus_raw(root: Path) -> Path:
    pixels = _fer_pixels()
    root.mkdir(parents=True, exist_ok=True)
    old = ["emotion,pixels,Usage"]
    new = ["Usage,Image name," + ",".join(COLUMNS)]
    for folder, rows in FER_ROWS.items():
        for name, votes, _, _ in rows:
            i = int(name[3:10])
            if i == 3:  # an extra unnamed row: from here on the names lag the row index, as in the real file
                old.append(f'0,"{" ".join(["255"] * 2304)}",Training')
                new.append("Training,," + ",".join(["0"] * 9 + ["10"]))
            old.append(f'0,"{" ".join(map(str, pixels[i].ravel()))}",{USAGE[folder]}')
            new.append(f"{USAGE[folder]},{'' if name == MISSING_PNG else name}," + ",".join(map(str, votes)))
    # a repeated name (the shipped fer2013new.csv has four): skipped, the first row wins
    old.append(f'0,"{" ".join(["7"] * 2304)}",PrivateTest')
    new.append("PrivateTest,fer0000012.png,0,0,0,0,0,0,0,0,10,0")
    (root / "fer2013.csv").write_text("\n".join(old) + "\n")
    (root / "fer2013new.csv").write_text("\n".join(new) + "\n")
    return root


def _expected(protocol: str) -> tuple[list[str], list[int], list[int]]:
    col = 2 if protocol == "paper" else 3
    names, labels, split = [], [], []
    for s, rows in enumerate(FER_ROWS.values()):
        for row in rows:
            if row[col] is not None:
                names.append(row[0])
                labels.append(row[col])
                split.append(s)
    return names, labels, split


@pytest.mark.parametrize("protocol", ["paper", "majority"])
def test_ferplus_folders_protocols(tmp_path, protocol):
    fs = load_ferplus(write_ferplus_folders(tmp_path / "fer"), protocol=protocol)
    names, labels, split = _expected(protocol)
    assert list(fs.names) == names
    assert fs.labels.tolist() == labels
    assert fs.split.tolist() == split
    assert fs.num_classes == 8 and fs.images.shape[1:] == (48, 48, 1) and fs.images.dtype == np.uint8
    pixels = _fer_pixels()
    for i, n in enumerate(fs.names):  # every image is the PNG of its own row
        np.testing.assert_array_equal(fs.images[i, :, :, 0], pixels[int(n[3:10])])
    expected_drops = {"unknown": 1, "not_face": 1, "missing_image": 1}
    if protocol == "majority":
        expected_drops["no_majority"] = 3
    assert fs.meta["dropped"] == expected_drops


def test_ferplus_votes_mapped_to_canonical_order(tmp_path):
    fs = load_ferplus(write_ferplus_folders(tmp_path / "fer"))
    i = list(fs.names).index("fer0000000.png")
    # raw 4,0,0,1,3,2,0,0 (neutral, happiness, surprise, sadness, anger, disgust, fear, contempt)
    # -> canonical (anger, disgust, fear, happiness, sadness, surprise, neutral, contempt)
    assert fs.votes[i].tolist() == [3, 2, 0, 0, 1, 0, 4, 0]
    assert fs.votes.shape == (len(fs), 8)
    # raw counts are kept, not outlier-removed, under the majority protocol too
    fm = load_ferplus(tmp_path / "fer", protocol="majority")
    j = list(fm.names).index("fer0000005.png")
    assert fm.votes[j].tolist() == [1, 1, 0, 1, 1, 1, 5, 0]


def test_ferplus_label_rule_directly():
    votes = np.array([row[1] for rows in FER_ROWS.values() for row in rows])
    for protocol, col in (("paper", 2), ("majority", 3)):
        labels, reason = ferplus_labels(votes, protocol)
        expected = [-1 if row[col] is None else row[col] for rows in FER_ROWS.values() for row in rows]
        assert labels.tolist() == expected
        assert ((labels >= 0) == (reason == 0)).all()
    with pytest.raises(LanetError, match="bogus"):
        ferplus_labels(votes, "bogus")


def test_ferplus_raw_csv_layout_matches_folders(tmp_path):
    folders = load_ferplus(write_ferplus_folders(tmp_path / "a"))
    raw = load_ferplus(write_ferplus_raw(tmp_path / "b"))
    assert raw.meta["layout"] == "csv" and folders.meta["layout"] == "folders"
    assert list(raw.names) == list(folders.names)
    np.testing.assert_array_equal(raw.images, folders.images)
    np.testing.assert_array_equal(raw.labels, folders.labels)
    np.testing.assert_array_equal(raw.split, folders.split)
    np.testing.assert_array_equal(raw.votes, folders.votes)
    assert raw.meta["dropped"] == {"unknown": 1, "not_face": 1, "no_image": 2, "duplicate_name": 1}
    rm = load_ferplus(tmp_path / "b", protocol="majority", load_size=24, channels=3)
    assert rm.images.shape == (7, 24, 24, 3) and rm.labels.tolist() == _expected("majority")[1]


def test_ferplus_limit_size_channels(tmp_path):
    root = write_ferplus_folders(tmp_path / "fer")
    fs = load_ferplus(root, limit=2, load_size=32, channels=3)
    assert list(fs.names) == ["fer0000000.png", "fer0000001.png", "fer0000009.png", "fer0000010.png",
                              "fer0000011.png", "fer0000012.png"]
    assert fs.images.shape == (6, 32, 32, 3)
    assert (fs.images[..., 0] == fs.images[..., 2]).all()  # gray replicated
    via_cfg = load_faceset(DataConfig(name="ferplus", root=str(root), limit=1))
    assert [int((via_cfg.split == s).sum()) for s in range(3)] == [1, 1, 1]


def test_ferplus_bad_inputs(tmp_path):
    root = write_ferplus_folders(tmp_path / "fer")
    with pytest.raises(LanetError, match="protocol"):
        load_ferplus(root, protocol="plurality")
    label_csv = root / "FER2013Valid" / "label.csv"
    label_csv.write_text(label_csv.read_text() + 'fer0000010.png,"(0, 0, 48, 48)",1,2,x,0,0,0,0,0,0,0\n')
    with pytest.raises(LanetError, match=r"FER2013Valid/label.csv:3"):
        load_ferplus(root)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(LanetError, match="FER2013Train"):
        load_ferplus(empty)


# ------------------------------------------------------------------------------------------------- RAF-DB
RAF_IDS = [1, 2, 3, 4, 5, 6, 7]


def write_rafdb(root: Path, n_copies: int = 1) -> Path:
    lines = ["test_0001.jpg 7", "test_0002.jpg 4"]  # test lines first: the loader puts train first
    k = 0
    for _ in range(n_copies):
        for rid in RAF_IDS:
            k += 1
            lines.append(f"train_{k:05d}.jpg {rid}")
    (root / "EmoLabel").mkdir(parents=True)
    (root / "EmoLabel" / "list_patition_label.txt").write_text("\n".join(lines) + "\n")
    for line in lines:
        name, rid = line.split()
        color = np.array([int(rid) * 30, 255 - int(rid) * 30, 100], dtype=np.uint8)
        _save(root / "Image" / "aligned" / name.replace(".jpg", "_aligned.jpg"),
              np.broadcast_to(color, (100, 100, 3)).copy(), quality=95)
    return root


def test_rafdb_ids_splits_and_images(tmp_path):
    fs = load_rafdb(write_rafdb(tmp_path / "raf"))
    assert fs.num_classes == 7 and fs.images.shape == (9, 100, 100, 3)
    assert fs.split.tolist() == [TRAIN] * 7 + [TEST] * 2
    # Surprise, Fear, Disgust, Happiness, Sadness, Anger, Neutral -> canonical ids
    assert fs.labels[:7].tolist() == [5, 2, 1, 3, 4, 0, 6]
    assert fs.labels[7:].tolist() == [6, 3]
    assert fs.names[0] == "train_00001.jpg" and fs.names[7] == "test_0001.jpg"
    assert abs(int(fs.images[0, 50, 50, 0]) - 30) <= 3  # the right file landed at the right index
    assert abs(int(fs.images[6, 50, 50, 0]) - 210) <= 3


def test_rafdb_val_fraction_is_seeded_and_stratified(tmp_path):
    root = write_rafdb(tmp_path / "raf", n_copies=10)  # 70 train images, 10 per class
    a = load_rafdb(root, val_fraction=0.2, seed=1, load_size=16)
    b = load_rafdb(root, val_fraction=0.2, seed=1, load_size=16)
    c = load_rafdb(root, val_fraction=0.2, seed=2, load_size=16)
    assert (a.split == VAL).sum() == 14
    assert np.bincount(a.labels[a.split == VAL], minlength=7).tolist() == [2] * 7
    np.testing.assert_array_equal(a.split, b.split)
    assert not np.array_equal(a.split, c.split)
    assert (a.split == TEST).sum() == 2  # test untouched


def test_rafdb_errors(tmp_path):
    root = write_rafdb(tmp_path / "raf")
    os.remove(root / "Image" / "aligned" / "train_00003_aligned.jpg")
    with pytest.raises(LanetError, match="train_00003_aligned.jpg"):
        load_rafdb(root)
    (root / "EmoLabel" / "list_patition_label.txt").write_text("train_00001.jpg 9\n")
    with pytest.raises(LanetError, match=r"list_patition_label.txt:1.*9"):
        load_rafdb(root)


# ----------------------------------------------------------------------------------------------- AffectNet
def _landmark_text(points: np.ndarray) -> str:
    return ";".join(f"{v:.2f}" for v in points.ravel())


def write_affectnet(root: Path) -> dict:
    images = root / "Manually_Annotated_Images"
    rng = np.random.default_rng(0)
    # a: 200 x 160 photo, white 2x2 block at x 70..71, y 50..51; box (40, 30, 80, 80)
    a = np.zeros((160, 200, 3), np.uint8)
    a[50:52, 70:72] = 255
    _save(images / "1" / "a.png", a)
    # big: 800 x 800 JPEG (decoded with libjpeg's 1/8 scaling), 16x16 block at x 480..495, y 320..335
    big = np.zeros((800, 800, 3), np.uint8)
    big[320:336, 480:496] = 255
    _save(images / "1" / "big.jpg", big, quality=95)
    # edge: box partly outside the photo (padded black); the file sits directly under root
    _save(root / "2" / "edge.png", np.full((100, 100, 3), 200, np.uint8))
    small = np.full((20, 20, 3), 120, np.uint8)
    for k in range(2, 8):
        _save(images / "3" / f"s{k}.png", small)
    for k in (8, 9, 10):
        _save(images / "3" / f"s{k}.png", small)

    lm_a = np.round(rng.uniform(40, 120, (68, 2)), 2)
    lm_a[0] = (70.5, 50.5)  # centre of the white block, pixel-index coordinates
    lm_big = np.round(rng.uniform(400, 800, (68, 2)), 2)
    lm_big[0] = (487.5, 327.5)
    lm_edge = np.round(rng.uniform(0, 60, (68, 2)), 2)
    lm_small = np.round(rng.uniform(0, 20, (68, 2)), 2)
    header = "subDirectory_filePath,face_x,face_y,face_width,face_height,facial_landmarks,expression,valence,arousal"

    def row(path, box, lm, expr):
        return f"{path},{box[0]},{box[1]},{box[2]},{box[3]},{_landmark_text(lm)},{expr},0.1,-0.2"

    train = [
        row("1/a.png", (40, 30, 80, 80), lm_a, 1),
        row("1/big.jpg", (400, 200, 400, 400), lm_big, 0),
        row("2/edge.png", (-20, -20, 80, 80), lm_edge, 7),
        row("3/s8.png", (0, 0, 20, 20), lm_small, 8),
        row("3/s9.png", (0, 0, 20, 20), lm_small, 9),
        row("3/s10.png", (0, 0, 20, 20), lm_small, 10),
        row("3/gone.png", (0, 0, 20, 20), lm_small, 2),
    ]
    val = [row(f"3/s{k}.png", (0, 0, 20, 20), lm_small, k) for k in range(2, 8)]
    (root / "training.csv").write_text("\n".join([header, *train]) + "\n")
    (root / "validation.csv").write_text("\n".join([header, *val]) + "\n")
    return {"a": lm_a, "big": lm_big, "edge": lm_edge}


def test_affectnet_labels_drops_and_landmarks(tmp_path):
    lms = write_affectnet(tmp_path / "an")
    with pytest.warns(UserWarning, match="gone.png"):
        fs = load_affectnet(tmp_path / "an", num_classes=8, load_size=40)
    assert list(fs.names[:3]) == ["1/a.png", "1/big.jpg", "2/edge.png"]
    assert fs.split.tolist() == [TRAIN] * 3 + [TEST] * 6
    # Happy, Neutral, Contempt | Sad, Surprise, Fear, Disgust, Anger, Contempt
    assert fs.labels.tolist() == [3, 6, 7, 4, 5, 2, 1, 0, 7]
    assert fs.meta["dropped"] == {"none": 1, "uncertain": 1, "non_face": 1, "missing_image": 1}
    assert fs.images.shape == (9, 40, 40, 3) and fs.landmarks.shape == (9, 68, 2) and fs.landmark_found.all()

    # a: scale 0.5 -> the block's centre (70.5, 50.5) lands on pixel (15, 10) exactly
    np.testing.assert_allclose(fs.landmarks[0, 0], [15.0, 10.0], atol=1e-4)
    y, x = np.unravel_index(fs.images[0, :, :, 0].argmax(), (40, 40))
    assert (x, y) == (15, 10)
    np.testing.assert_allclose(fs.landmarks[0], (lms["a"] + 0.5 - [40, 30]) * 0.5 - 0.5, atol=1e-4)
    # big (JPEG, reduced decoding): scale 0.1 -> (8.3, 12.3); the block's intensity centroid agrees
    np.testing.assert_allclose(fs.landmarks[1, 0], [8.3, 12.3], atol=1e-4)
    w = fs.images[1, :, :, 0].astype(np.float64)
    yy, xx = np.mgrid[:40, :40]
    assert abs((w * xx).sum() / w.sum() - 8.3) < 0.5 and abs((w * yy).sum() / w.sum() - 12.3) < 0.5
    # edge: box from -20 -> the top-left quarter is padding, the rest is the photo
    assert fs.images[2, :9, :9].max() == 0 and fs.images[2, 12:, 12:].min() > 150
    np.testing.assert_allclose(fs.landmarks[2], (lms["edge"] + 0.5 + 20) * 0.5 - 0.5, atol=1e-4)


def test_affectnet7_drops_contempt_and_limit(tmp_path):
    write_affectnet(tmp_path / "an")
    fs = load_affectnet(tmp_path / "an", num_classes=7, load_size=24, limit=2)  # never reaches the missing file
    assert fs.num_classes == 7 and 7 not in fs.labels
    assert fs.meta["dropped"]["contempt"] == 2  # one in training.csv, one in validation.csv
    assert fs.labels.tolist() == [3, 6, 4, 5]  # limit 2 per split
    assert fs.landmarks.shape == (4, 68, 2)
    with pytest.raises(LanetError, match="classes"):
        load_affectnet(tmp_path / "an", num_classes=6)


# ------------------------------------------------------------------------------------------- generic CSV
def test_generic_csv(tmp_path):
    d = tmp_path / "mine"
    _save(d / "img" / "a.png", np.full((20, 30), 50, np.uint8))  # grayscale, non-square
    _save(d / "img" / "b.png", np.full((30, 30, 3), 90, np.uint8))
    _save(d / "img" / "c.jpg", np.full((30, 30, 3), 130, np.uint8))
    _save(tmp_path / "elsewhere" / "d.png", np.full((30, 30), 170, np.uint8))
    (d / "list.csv").write_text(
        "path,label,split\n"
        "img/a.png,happy,train\n"
        "img/b.png,3,test\n"
        f"{tmp_path / 'elsewhere' / 'd.png'},Contempt,val\n"
        "img/c.jpg,angry,\n"
    )
    fs = load_csv(d / "list.csv")
    assert list(fs.names) == ["img/a.png", "img/c.jpg", str(tmp_path / "elsewhere" / "d.png"), "img/b.png"]
    assert fs.labels.tolist() == [3, 0, 7, 3]
    assert fs.split.tolist() == [TRAIN, TRAIN, VAL, TEST]
    assert fs.num_classes == 8
    assert fs.images.shape == (4, 112, 112, 3)  # RGB because not every image is grayscale
    assert (fs.images[0] == 50).all() and (fs.images[2] == 170).all()

    (d / "gray.csv").write_text("path,label\nimg/a.png,sad\n")
    g = load_csv(d / "gray.csv", load_size=16)
    assert g.images.shape == (1, 16, 16, 1) and g.num_classes == 7 and g.labels.tolist() == [4]

    (d / "bad.csv").write_text("path,label\nimg/a.png,happy\nimg/b.png,grumpy\n")
    with pytest.raises(LanetError, match=r"bad.csv:3.*grumpy"):
        load_csv(d / "bad.csv")
    (d / "noheader.csv").write_text("img/a.png,happy\n")
    with pytest.raises(LanetError, match="header"):
        load_csv(d / "noheader.csv")
    (d / "missing.csv").write_text("path,label\nimg/zzz.png,happy\n")
    with pytest.raises(LanetError, match="zzz.png"):
        load_csv(d / "missing.csv")


def test_generic_folders(tmp_path):
    root = tmp_path / "tree"
    _save(root / "train" / "happy" / "1.png", np.full((40, 40, 3), 10, np.uint8))
    _save(root / "train" / "happy" / "2.jpg", np.full((40, 40, 3), 20, np.uint8))
    _save(root / "train" / "Fear" / "1.png", np.full((40, 40, 3), 30, np.uint8))
    _save(root / "test" / "neutral" / "1.bmp", np.full((40, 40, 3), 40, np.uint8))
    _save(root / "valid" / "sadness" / "1.png", np.full((40, 40, 3), 50, np.uint8))
    (root / "train" / "happy" / "notes.txt").write_text("ignored")
    fs = load_folders(root, load_size=20)
    assert list(fs.names) == ["train/Fear/1.png", "train/happy/1.png", "train/happy/2.jpg",
                              "valid/sadness/1.png", "test/neutral/1.bmp"]
    assert fs.labels.tolist() == [2, 3, 3, 4, 6]
    assert fs.split.tolist() == [TRAIN, TRAIN, TRAIN, VAL, TEST]
    assert fs.num_classes == 7 and fs.images.shape == (5, 20, 20, 3)

    flat = tmp_path / "flat"
    _save(flat / "contempt" / "x.png", np.full((8, 8), 1, np.uint8))
    _save(flat / "0" / "y.png", np.full((8, 8), 2, np.uint8))
    ff = load_folders(flat)
    assert ff.labels.tolist() == [0, 7] and (ff.split == TRAIN).all() and ff.num_classes == 8
    assert ff.images.shape == (2, 112, 112, 1)

    _save(flat / "grumpy" / "z.png", np.full((8, 8), 3, np.uint8))
    with pytest.raises(LanetError, match="grumpy"):
        load_folders(flat)
    (root / "happy").mkdir()
    with pytest.raises(LanetError, match="mixes"):
        load_folders(root)


# ------------------------------------------------------------------------------------------ label override
def test_label_file_override(tmp_path):
    root = write_ferplus_folders(tmp_path / "fer")
    fs = load_ferplus(root)
    labels_csv = tmp_path / "labels.csv"
    labels_csv.write_text("name,label\n"
                          "fer0000000.png,happy\n"       # neutral -> happiness (changed)
                          "fer0000001.png,3\n"           # already happiness
                          "fer0000007.png,Contempt\n"    # anger -> contempt (changed)
                          "fer0000009.png,anger\n")      # val image: never relabelled
    out = apply_label_file(fs, labels_csv)
    i = {n: k for k, n in enumerate(out.names)}
    assert out.file_labels[i["fer0000000.png"]] == 3 and out.file_labels[i["fer0000007.png"]] == 7
    assert out.file_labels[i["fer0000009.png"]] == fs.labels[i["fer0000009.png"]] == 2
    assert out.meta["label_file"]["changed"] == 2 and out.meta["label_file"]["ignored_not_train"] == 1
    # the dataset's own labels stay the reference: the file's labels are kept apart
    np.testing.assert_array_equal(out.labels, fs.labels)
    assert fs.file_labels is None and fs.labels[i["fer0000000.png"]] == 6  # the input is not modified
    np.testing.assert_array_equal(out.given_labels, out.file_labels)
    changed = np.flatnonzero(out.file_labels != fs.labels).tolist()
    assert changed == [i["fer0000000.png"], i["fer0000007.png"]]
    sub = out.subset(np.array([i["fer0000007.png"], i["fer0000000.png"]]))
    assert sub.file_labels.tolist() == [7, 3] and sub.labels.tolist() == [0, 6]

    via_cfg = load_faceset(DataConfig(name="ferplus", root=str(root), labels=str(labels_csv)))
    np.testing.assert_array_equal(via_cfg.file_labels, out.file_labels)
    np.testing.assert_array_equal(via_cfg.labels, fs.labels)

    # names the protocol dropped (fer0000003: unknown top; fer0000008: no PNG) are ignored and counted, as a
    # label file for every FER2013 image has them; a name the dataset never listed stays an error
    dropped = tmp_path / "dropped.csv"
    dropped.write_text("name,label\nfer0000000.png,happy\nfer0000003.png,sad\nfer0000008.png,sad\n"
                       "fer0000000.png,happy\n")
    lf = apply_label_file(fs, dropped).meta["label_file"]
    assert (lf["applied"], lf["ignored_dropped"], lf["duplicate_rows"]) == (1, 2, 1)
    bad_name = tmp_path / "bad_name.csv"
    bad_name.write_text("name,label\nfer0000000.png,happy\nnope.png,sad\nfer0000003.png,sad\nnada.png,sad\n")
    with pytest.raises(LanetError, match=r"bad_name.csv:3: image 'nope.png' and 1 other"):
        apply_label_file(fs, bad_name)
    bad_class = tmp_path / "bad_class.csv"
    bad_class.write_text("name,label\nfer0000000.png,happy\nfer0000001.png,grumpy\n")
    with pytest.raises(LanetError, match=r"bad_class.csv:3.*grumpy"):
        apply_label_file(fs, bad_class)
    with pytest.raises(LanetError, match="does_not_exist.csv"):
        apply_label_file(fs, tmp_path / "does_not_exist.csv")


# ------------------------------------------------------------------------------------- carve / limit / misc
def _toy(labels: list[int], split: list[int] | None = None) -> FaceSet:
    n = len(labels)
    return FaceSet(images=np.zeros((n, 4, 4, 1), np.uint8), labels=np.array(labels),
                   split=np.zeros(n, np.int8) if split is None else np.array(split),
                   names=np.array([f"{i}.png" for i in range(n)], dtype=object), num_classes=7)


def test_carve_val_and_limit():
    fs = _toy([0] * 50 + [1] * 30 + [2] * 20)
    out = carve_val(fs, 0.2, seed=3)
    assert np.bincount(out.labels[out.split == VAL]).tolist() == [10, 6, 4]
    assert (fs.split == TRAIN).all()  # input untouched
    odd = carve_val(_toy([0] * 7 + [1] * 3), 0.25, seed=0)  # 2.5 -> 2 val images, largest remainder
    assert (odd.split == VAL).sum() == 2
    with pytest.raises(LanetError, match="already has a val"):
        carve_val(out, 0.1)
    with pytest.raises(LanetError, match="val_fraction"):
        carve_val(fs, 1.5)
    lim = limit_per_split(_toy([0, 1, 2, 3, 4, 5], [0, 0, 0, 2, 2, 1]), 2)
    assert lim.labels.tolist() == [0, 1, 3, 4, 5]
    # train_limit cuts only the training split: val (1) and test (2) stay complete
    tl = limit_train(_toy([0, 1, 2, 3, 4, 5, 6], [0, 2, 0, 1, 0, 2, 0]), 2)
    assert tl.labels.tolist() == [0, 1, 2, 3, 5] and tl.meta["train_limit"] == 2
    assert limit_train(fs, 0) is fs and limit_train(fs, 1000) is fs


def test_carved_val_and_limits_keep_the_label_file_apart():
    """A carved val image keeps the dataset's label (a label file relabels training images only), the split is
    stratified on the dataset's labels whatever the file says, and the limits cut the file's labels alike."""
    fs = _toy([0] * 50 + [1] * 30 + [2] * 20)
    relabelled = replace(fs, file_labels=np.full(100, 2))
    out = carve_val(relabelled, 0.2, seed=3)
    np.testing.assert_array_equal(out.split, carve_val(fs, 0.2, seed=3).split)
    val = out.split == VAL
    np.testing.assert_array_equal(out.file_labels[val], fs.labels[val])
    assert (out.file_labels[~val] == 2).all() and (out.labels == fs.labels).all()
    tl = limit_train(replace(_toy([0, 1, 2, 3], [0, 2, 0, 0]), file_labels=np.array([5, 1, 6, 4])), 2)
    assert tl.file_labels.tolist() == [5, 1, 6] and tl.labels.tolist() == [0, 1, 2]


def test_loader_errors_and_synthetic(tmp_path, monkeypatch):
    with pytest.raises(LanetError, match=r"unknown dataset 'imagenet'.*ferplus.*rafdb"):
        load_faceset(DataConfig(name="imagenet"))
    with pytest.raises(LanetError, match=rf"{tmp_path / 'nowhere'}.*FER2013Train"):
        load_faceset(DataConfig(name="ferplus", root=str(tmp_path / "nowhere")))
    with pytest.raises(LanetError, match="data.root is empty.*list_patition_label"):
        load_faceset(DataConfig(name="rafdb"))

    calls = {}

    def make_synthetic(n, seed, size, channels):
        calls.update(n=n, seed=seed, size=size, channels=channels)
        return _toy([k % 7 for k in range(n)])

    monkeypatch.setitem(sys.modules, "lanet.data.synthetic", types.SimpleNamespace(make_synthetic=make_synthetic))
    fs = load_faceset(DataConfig(name="synthetic", synthetic_size=40, synthetic_seed=5, limit=10, val_fraction=0.2))
    assert calls == {"n": 40, "seed": 5, "size": 48, "channels": 1}
    assert [(fs.split == s).sum() for s in range(3)] == [10, 8, 0]
    monkeypatch.setitem(sys.modules, "lanet.data.synthetic", None)
    with pytest.raises(LanetError, match="synthetic"):
        load_faceset(DataConfig(name="synthetic"))


def test_corrupt_image_names_the_file(tmp_path):
    root = tmp_path / "tree"
    _save(root / "happy" / "ok.png", np.zeros((8, 8), np.uint8))
    (root / "happy" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not a png")
    with pytest.raises(LanetError, match="broken.png"):
        load_folders(root)
    truncated = tmp_path / "trunc.jpg"
    _save(truncated, np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    truncated.write_bytes(truncated.read_bytes()[:300])
    with pytest.raises(LanetError, match="trunc.jpg"):
        imageio.decode_image(truncated, 32)


def test_cache_hit_skips_decoding_and_tracks_changes(tmp_path, monkeypatch):
    root = write_ferplus_folders(tmp_path / "fer")
    first = load_ferplus(root)
    cache = tmp_path / "cache"
    entries = list(cache.iterdir())
    assert len(entries) == 1 and entries[0].suffix == ".npz"  # written atomically: no temporary left over

    def boom(*args, **kwargs):
        raise AssertionError("decoded although cached")

    monkeypatch.setattr(imageio, "decode_image", boom)
    second = load_ferplus(root)
    np.testing.assert_array_equal(first.images, second.images)
    # another load parameter or a changed file is a different cache entry: the decoder runs again
    with pytest.raises(AssertionError, match="decoded although cached"):
        load_ferplus(root, load_size=24)
    png = root / "FER2013Test" / "fer0000012.png"
    _save(png, np.zeros((48, 48), np.uint8))
    os.utime(png, ns=(1, 1))
    with pytest.raises(AssertionError, match="decoded although cached"):
        load_ferplus(root)

    # the raw-csv layout caches the parsed pixels too
    raw = write_ferplus_raw(tmp_path / "raw")
    monkeypatch.undo()
    monkeypatch.setenv("LANET_CACHE", str(cache))
    a = load_ferplus(raw)
    from lanet.data import ferplus as ferplus_module
    monkeypatch.setattr(ferplus_module, "_read_pixels", boom)
    np.testing.assert_array_equal(load_ferplus(raw).images, a.images)
    # cache disabled: always rebuilds
    with pytest.raises(AssertionError):
        load_ferplus(raw, cache_dir="none")
