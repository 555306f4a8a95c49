"""FERPlus loader on a slice of the real data (../shared/data/ferplus, or $LANET_FERPLUS); skipped where absent."""

from __future__ import annotations

import csv
import os
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lanet.data.faceset import SPLITS
from lanet.data.ferplus import COLUMNS, FROM_CANONICAL, TO_CANONICAL, load_ferplus

pytestmark = pytest.mark.ferplus

ROOT = Path(os.environ.get("LANET_FERPLUS") or Path(__file__).resolve().parents[1].parent / "shared/data/ferplus")
LIMIT = 200
FOLDERS = {"FER2013Train": "train", "FER2013Valid": "val", "FER2013Test": "test"}
USAGE = {"Training": "FER2013Train", "PublicTest": "FER2013Valid", "PrivateTest": "FER2013Test"}


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    if not (ROOT / "FER2013Train" / "label.csv").is_file():
        pytest.skip(f"FERPlus not found at {ROOT}; set LANET_FERPLUS")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LANET_CACHE", str(tmp_path_factory.mktemp("cache")))
        yield


@pytest.fixture(scope="module")
def paper(cache):
    return load_ferplus(ROOT, protocol="paper", limit=LIMIT)


@pytest.fixture(scope="module")
def majority(cache):
    return load_ferplus(ROOT, protocol="majority", limit=LIMIT)


def _label_csv(folder: str) -> list[tuple[str, list[int]]]:
    with open(ROOT / folder / "label.csv", newline="") as fh:
        return [(r[0], [int(v) for v in r[2:]]) for r in csv.reader(fh) if r]


def _recompute(protocol: str) -> dict[str, list[tuple[str, int]]]:
    """First LIMIT kept (name, canonical label) per split, straight from label.csv in plain Python."""
    out = {}
    for folder, split in FOLDERS.items():
        kept = []
        for name, votes in _label_csv(folder):
            if protocol == "majority":
                votes = [0 if v <= 1 else v for v in votes]
                if max(votes) * 2 <= sum(votes):
                    continue
            top = votes.index(max(votes))
            if top < 8:
                kept.append((name, int(TO_CANONICAL[top])))
            if len(kept) == LIMIT:
                break
        out[split] = kept
    return out


@pytest.mark.parametrize("protocol", ["paper", "majority"])
def test_protocol_matches_direct_recomputation(paper, majority, protocol):
    fs = paper if protocol == "paper" else majority
    expected = _recompute(protocol)
    for split in SPLITS:
        idx = fs.indices(split)
        assert len(idx) == LIMIT
        assert list(fs.names[idx]) == [n for n, _ in expected[split]]
        assert fs.labels[idx].tolist() == [c for _, c in expected[split]]
        assert Counter(fs.labels[idx].tolist()) == Counter(c for _, c in expected[split])
    if protocol == "paper":  # drop counts over the whole listing: the README's unknown and NF columns
        assert fs.meta["dropped"] == {"unknown": 171 + 23 + 28, "not_face": 2 + 1 + 0}


def test_images_and_votes(paper):
    assert paper.images.shape == (3 * LIMIT, 48, 48, 1) and paper.images.dtype == np.uint8
    assert paper.num_classes == 8 and paper.votes.shape == (3 * LIMIT, 8)
    i = list(paper.names).index("fer0000000.png")
    # README: fer0000000.png,"(0, 0, 48, 48)",4,0,0,1,3,2,0,0,0,0 (neutral, happiness, surprise, sadness, ...)
    assert paper.votes[i][TO_CANONICAL].tolist() == [4, 0, 0, 1, 3, 2, 0, 0]
    assert paper.votes[i].tolist() == [3, 2, 0, 0, 1, 0, 4, 0]  # canonical: anger, disgust, ..., neutral
    assert paper.labels[i] == 6  # neutral
    png = np.asarray(Image.open(ROOT / "FER2013Train" / "fer0000000.png").convert("L"))
    np.testing.assert_array_equal(paper.images[i, :, :, 0], png)
    # votes are the label.csv counts (canonical order) for every loaded image
    raw = {n: v for folder in FOLDERS for n, v in _label_csv(folder)}
    np.testing.assert_array_equal(paper.votes, np.array([raw[n][:8] for n in paper.names])[:, FROM_CANONICAL])


def test_raw_csv_layout_agrees_with_folders(paper, tmp_path):
    """Rebuild fer2013.csv for the slice from the PNGs and load it next to the slice of fer2013new.csv."""
    needed = {s: set(paper.names[paper.indices(s)]) for s in SPLITS}
    with open(ROOT / "fer2013new.csv", newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader)
        rows = []
        for row in reader:
            split = FOLDERS[USAGE[row[0]]]
            if needed[split]:
                rows.append(row)
                needed[split].discard(row[1])
    assert not any(needed.values())
    pixel_lines = ["emotion,pixels,Usage"]
    for row in rows:
        png = ROOT / USAGE[row[0]] / row[1]
        pixels = np.asarray(Image.open(png).convert("L")) if row[1] else np.zeros((48, 48), np.uint8)
        pixel_lines.append(f'0,"{" ".join(map(str, pixels.ravel()))}",{row[0]}')
    (tmp_path / "fer2013.csv").write_text("\n".join(pixel_lines) + "\n")
    with open(tmp_path / "fer2013new.csv", "w", newline="") as fh:
        csv.writer(fh).writerows([header, *rows])
    assert header[2:] == list(COLUMNS)

    raw = load_ferplus(tmp_path, protocol="paper")
    assert raw.meta["layout"] == "csv"
    assert raw.meta["dropped"].get("no_image", 0) == sum(1 for r in rows if not r[1]) > 0
    by_name = {n: i for i, n in enumerate(raw.names)}
    common = [i for i, n in enumerate(paper.names) if n in by_name]
    # fer2013new.csv and label.csv disagree on a few percent of the votes, which can drop an image under
    # one source only; the rest must be identical, pixel for pixel and (where the votes agree) label for label
    assert len(common) >= 0.97 * len(paper)
    other = np.array([by_name[paper.names[i]] for i in common])
    np.testing.assert_array_equal(raw.images[other], paper.images[common])
    np.testing.assert_array_equal(raw.split[other], paper.split[common])
    same_votes = (raw.votes[other] == paper.votes[common]).all(1)
    assert same_votes.mean() > 0.9
    np.testing.assert_array_equal(raw.labels[other][same_votes], paper.labels[common][same_votes])
    # the raw loader's votes are fer2013new.csv's (first row per name), whatever label.csv says
    first = {}
    for r in rows:
        first.setdefault(r[1], [int(v) for v in r[2:10]])
    np.testing.assert_array_equal(raw.votes, np.array([first[n] for n in raw.names])[:, FROM_CANONICAL])
