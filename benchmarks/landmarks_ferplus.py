"""Run the dlib landmark detector on all of FERPlus; write detection rate per split, wall time and images/s.

Usage::

    python benchmarks/landmarks_ferplus.py [--root ../shared/data/ferplus]
        [--out benchmarks/results/landmarks_ferplus.json] [--workers 0] [--limit 0] [--save-landmarks FILE.npz]

The images are read with a small self-contained PIL loop over ``FER2013{Train,Valid,Test}/label.csv`` (the
FERPlus layout, see the data README), so the benchmark does not depend on the dataset loader.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import resource
import time
from pathlib import Path

import numpy as np
from PIL import Image

from lanet.landmarks.detect import DETECTOR_VERSION, detect_landmarks, detect_settings
from lanet.landmarks.io import write_landmark_file
from lanet.portable import portable_path

REPO = Path(__file__).resolve().parents[1]
FOLDERS = {"train": "FER2013Train", "val": "FER2013Valid", "test": "FER2013Test"}


def load_ferplus(root: Path, limit: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Images (N x 48 x 48 x 1 uint8), split names and file names of every image listed in the label files."""
    images, splits, names = [], [], []
    for split, folder in FOLDERS.items():
        label_file = root / folder / "label.csv"
        if not label_file.is_file():
            raise SystemExit(f"FERPlus label file not found: {label_file}")
        with open(label_file, newline="") as fh:
            rows = [r for r in csv.reader(fh) if r]
        if limit:
            rows = rows[:limit]
        for row in rows:
            with Image.open(root / folder / row[0]) as im:
                images.append(np.asarray(im.convert("L"), dtype=np.uint8))
            splits.append(split)
            names.append(row[0])
    return np.stack(images)[..., None], np.asarray(splits), np.asarray(names)


def main() -> None:
    default_root = os.environ.get("LANET_FERPLUS", str(REPO.parent / "shared" / "data" / "ferplus"))
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", default=default_root, help="FERPlus folder (holding FER2013Train/...)")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "landmarks_ferplus.json"))
    ap.add_argument("--workers", type=int, default=0, help="processes (0 = all cores)")
    ap.add_argument("--limit", type=int, default=0, help="images per split (0 = all)")
    ap.add_argument("--save-landmarks", default="", help="also write the landmarks (.npz or .csv)")
    args = ap.parse_args()

    t0 = time.perf_counter()
    images, splits, names = load_ferplus(Path(args.root).expanduser(), args.limit)
    load_s = time.perf_counter() - t0
    print(f"loaded {len(images)} images in {load_s:.1f} s")

    load_before = os.getloadavg()[0]
    cpu0 = resource.getrusage(resource.RUSAGE_SELF).ru_utime + resource.getrusage(resource.RUSAGE_CHILDREN).ru_utime
    t1 = time.perf_counter()
    landmarks, found = detect_landmarks(images, workers=args.workers)
    wall = time.perf_counter() - t1
    # CPU time of this process and its (joined) workers: a throughput measure that other load does not skew
    cpu = resource.getrusage(resource.RUSAGE_SELF).ru_utime + resource.getrusage(resource.RUSAGE_CHILDREN).ru_utime
    cpu -= cpu0

    workers = args.workers or len(os.sched_getaffinity(0))
    eyes_above_mouth = landmarks[:, 36:48, 1].mean(1) < landmarks[:, 48:68, 1].mean(1)
    result = {
        "dataset": "ferplus",
        "root": portable_path(args.root),
        "images": int(len(images)),
        "found": int(found.sum()),
        "detection_rate": round(float(found.mean()), 4),
        "detection_rate_per_split": {s: round(float(found[splits == s].mean()), 4) for s in FOLDERS},
        "images_per_split": {s: int((splits == s).sum()) for s in FOLDERS},
        "wall_time_s": round(wall, 2),
        "images_per_s": round(len(images) / wall, 1),
        "cpu_time_s": round(cpu, 1),
        "cpu_ms_per_image": round(1000 * cpu / len(images), 2),
        "load_average_1min_before": round(load_before, 2),
        "load_average_1min_after": round(os.getloadavg()[0], 2),
        "image_load_time_s": round(load_s, 2),
        "workers": workers,
        "cpu_count": os.cpu_count(),
        "settings": detect_settings(),
        "detector_version": DETECTOR_VERSION,
        "eyes_above_mouth_rate": round(float(eyes_above_mouth.mean()), 4),
        "python": platform.python_version(),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    if args.save_landmarks:
        write_landmark_file(args.save_landmarks, names, landmarks, found)
        print(f"landmarks written to {args.save_landmarks}")


if __name__ == "__main__":
    main()
