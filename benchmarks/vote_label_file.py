"""Write a label file (``name,label``) that plays a second, cheaper annotation of a dataset with crowd votes.

For every training image one of its own annotator votes is drawn, in proportion to the vote counts (FERPlus: 10
annotators per image), seeded: the label one annotator would have given. Images without votes keep the dataset's
label. Used as ``--labels FILE`` it is real label noise against the dataset's own labels (FERPlus: the plurality
vote), which ``lanet bench labelfile`` measures; the draw is the one of ``--noise annotator`` at the same seed, so
the two routes train on the same labels (the file's is fixed across training seeds)::

    python benchmarks/vote_label_file.py --root ../shared/data/ferplus --seed 0 --out runs/ferplus-one-vote-s0.csv
    lanet bench labelfile --preset cpu-face --labels runs/ferplus-one-vote-s0.csv -o train.threads=1

The file names every training image of the dataset (28,558 FERPlus images under the paper protocol); a preset
that trains on fewer (``cpu-face``: the first 2,000) uses the rows of the images it loads.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np

from lanet.classes import CLASSES
from lanet.data.faceset import FaceSet
from lanet.data.noise import apply_noise
from lanet.errors import LanetError
from lanet.fileutil import atomic_open


def vote_labels(faceset: FaceSet, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(FaceSet indices of the training images, one drawn vote each as a class id)."""
    if faceset.votes is None:
        raise LanetError(f"dataset {faceset.name!r} has no annotator votes to draw a second annotation from")
    drawn, _ = apply_noise(faceset, "annotator", 0.0, seed)
    train = faceset.indices("train")
    return train, drawn[train]


def write_label_file(faceset: FaceSet, seed: int, out: str | Path) -> tuple[int, int]:
    """Write the drawn votes as ``name,label`` (canonical class names); returns (rows, labels that differ from the
    dataset's)."""
    train, labels = vote_labels(faceset, seed)
    with atomic_open(Path(out), "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["name", "label"])
        for i, y in zip(train, labels):
            w.writerow([faceset.names[i], CLASSES[int(y)]])
    return len(train), int((labels != faceset.labels[train]).sum())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", default="../shared/data/ferplus", help="FERPlus folder (default ../shared/data/ferplus)")
    ap.add_argument("--protocol", default="paper", help="FERPlus label protocol of the dataset's labels (paper)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the vote draw (default 0)")
    ap.add_argument("--out", type=Path, required=True, help="the label file to write (CSV)")
    args = ap.parse_args(argv)
    from lanet.data.ferplus import load_ferplus

    try:
        fs = load_ferplus(args.root, protocol=args.protocol)
        rows, differ = write_label_file(fs, args.seed, args.out)
    except LanetError as exc:
        print(f"vote_label_file: error: {exc}", file=sys.stderr)
        return 2
    print(f"written {args.out}: {rows} training images, {differ} ({100 * differ / max(rows, 1):.1f}%) labels differ "
          "from the dataset's")
    return 0


if __name__ == "__main__":
    sys.exit(main())
