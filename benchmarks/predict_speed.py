"""Prediction on photos: speed (detection + classification, PyTorch vs ONNX Runtime, batch 1 and 64), detection
rate, and whether the re-cropped faces are classified as the original crops are.

Test set, built from what ships with the project or lies in ../shared:

* FERPlus test faces (48 x 48 grey crops) composited into 640 x 480 scenes (smooth random colour background
  with texture), 1-3 faces per scene, each face upscaled to one of several sizes (64-208 px, the size of the
  whole FER crop) at a random position in its quarter of the scene;
* synthetic faces (``lanet.data.synthetic.make_synthetic``, 48 px) composited the same way.

A face counts as detected when a detection's centre falls inside its pasted crop (each detection matched once).
"Agreement" is the share of detected faces whose top class equals the classifier's top class on the original
48 x 48 crop (``Predictor.predict_faces``); "accuracy" compares with the FERPlus label (paper protocol). The
crop-geometry sweep reuses the HOG detections and re-crops them with other ``crop_margin`` / ``crop_offset_y``.

    python benchmarks/predict_speed.py --faces 240 --synthetic 60 --out benchmarks/results/cpu/predict_speed.json \\
        --note "..."

Without ``--model`` a small baseline is trained first (FERPlus, 3,000 images per split, 2 epochs, ResNet-18 at
width 32, 48 px) into ``--work``. ``--geometry N`` also measures where dlib's HOG and CNN detectors put their
boxes on N original FERPlus crops (the numbers behind :mod:`lanet.predict.crop` and
:data:`lanet.predict.detect.HOG_EQUIVALENT`).
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageFilter

from lanet.portable import portable_command as _portable_command
from lanet.portable import portable_path as _portable_path

REPO = Path(__file__).resolve().parents[1]
SCENE = (640, 480)
SCALES = (64, 96, 144, 208)


# ------------------------------------------------------------------------------------------------ test set
def load_ferplus_test(root: Path, n: int, seed: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    from lanet.config import DataConfig
    from lanet.data.loaders import load_faceset

    cfg = DataConfig()
    cfg.name, cfg.root = "ferplus", str(root)
    fs = load_faceset(cfg)
    idx = fs.indices("test")
    pick = np.sort(np.random.default_rng(seed).choice(idx, size=min(n, len(idx)), replace=False))
    return fs.images[pick], fs.labels[pick], [str(x) for x in fs.names[pick]]


def background(rng: np.random.Generator) -> Image.Image:
    w, h = SCENE
    base = rng.uniform(40, 215, 3)
    grad = rng.uniform(-60, 60, (2, 3))
    yy, xx = np.mgrid[0:h, 0:w] / np.array([h, w])[:, None, None]
    img = base + xx[..., None] * grad[0] + yy[..., None] * grad[1]
    noise = Image.fromarray(rng.integers(0, 256, (h // 4, w // 4), dtype=np.uint8)).resize((w, h), Image.BICUBIC)
    img = img + (np.asarray(noise.filter(ImageFilter.GaussianBlur(3)), dtype=np.float64)[..., None] - 128) * 0.4
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), "RGB")


def compose(faces: np.ndarray, seed: int) -> tuple[list[Image.Image], list[list[dict[str, Any]]]]:
    """Scenes holding 1-3 of ``faces`` each; per scene the list of pasted faces (index, scale, box)."""
    rng = np.random.default_rng(seed)
    scenes, truth = [], []
    order = list(range(len(faces)))
    k = 0
    while k < len(order):
        img = background(rng)
        cells = rng.permutation(4)[: int(rng.integers(1, 4))]
        pasted = []
        for cell in cells:
            if k >= len(order):
                break
            i = order[k]
            k += 1
            s = int(SCALES[i % len(SCALES)])
            cw, ch = SCENE[0] // 2, SCENE[1] // 2
            x = (cell % 2) * cw + int(rng.integers(0, cw - s + 1)) if s <= cw else (cell % 2) * cw
            y = (cell // 2) * ch + int(rng.integers(0, max(1, ch - s + 1)))
            face = Image.fromarray(faces[i][..., 0] if faces[i].shape[2] == 1 else faces[i]).convert("RGB")
            img.paste(face.resize((s, s), Image.BILINEAR), (x, y))
            pasted.append({"index": i, "scale": s, "box": (x, y, x + s, y + s)})
        scenes.append(img)
        truth.append(pasted)
    return scenes, truth


def match(truth: list[dict[str, Any]], boxes: list[tuple[float, ...]]) -> dict[int, int]:
    """face index -> detection index: a detection whose centre lies in the pasted crop, each used once."""
    out: dict[int, int] = {}
    used: set[int] = set()
    for t in truth:
        x0, y0, x1, y1 = t["box"]
        best, best_d = None, None
        for j, b in enumerate(boxes):
            cx, cy = (b[0] + b[2]) / 2, (b[1] + b[3]) / 2
            if j in used or not (x0 <= cx <= x1 and y0 <= cy <= y1):
                continue
            d = (cx - (x0 + x1) / 2) ** 2 + (cy - (y0 + y1) / 2) ** 2
            if best_d is None or d < best_d:
                best, best_d = j, d
        if best is not None:
            used.add(best)
            out[t["index"]] = best
    return out


# ------------------------------------------------------------------------------------------------ model
def train_default(root: Path, work: Path, threads: int) -> Path:
    run = work / "fp-baseline-3000-e2"
    if (run / "model_final.pt").is_file():
        return run
    cmd = [sys.executable, "-m", "lanet.cli", "train", "--dataset", "ferplus", "--root", str(root), "--limit", "3000",
           "--epochs", "2", "--image-size", "48", "-o", "model.width=32", "--threads", str(threads), "--quiet",
           "--out", str(run)]
    print("training the default model:", shlex.join(cmd), file=sys.stderr)
    subprocess.run(cmd, check=True)
    return run


# ------------------------------------------------------------------------------------------------ measurements
def evaluate_scenes(pred: Any, scenes: list[Image.Image], truth: list[list[dict[str, Any]]], ref_top: np.ndarray,
                    labels: np.ndarray | None, sweep: list[tuple[float, float]]) -> dict[str, Any]:
    """Detection rate, agreement and accuracy per scale, plus the crop-geometry sweep (HOG detections reused)."""
    from lanet.predict.crop import crop_box, crop_resize
    from lanet.predict.detect import HOG_EQUIVALENT

    det_kind = pred.detector.kind
    default = (float(pred.meta["crop_margin"]), float(pred.meta["crop_offset_y"]))
    geoms = [default] + [g for g in sweep if g != default]
    tops_by: dict[tuple[float, float], dict[int, int]] = {g: {} for g in geoms}
    found: dict[int, int] = {}
    exact: dict[int, int] = {}
    false_pos = 0
    for img, tr in zip(scenes, truth):
        dets = pred.detector(img)
        m = match(tr, [d.box for d in dets])
        false_pos += len(dets) - len(m)
        found.update(m)
        if not m:
            continue
        for g in geoms:
            crops = [crop_resize(img, crop_box(dets[j].box, g[0], g[1], HOG_EQUIVALENT[det_kind]), pred.source_size,
                                 pred.channels) for j in m.values()]
            for i, t in zip(m, pred.classify(np.stack(crops)).argmax(1)):
                tops_by[g][i] = int(t)
        # control: the exact pasted square, resampled to source_size (what resampling alone changes)
        pasted = {t["index"]: t["box"] for t in tr}
        crops = [crop_resize(img, pasted[i], pred.source_size, pred.channels) for i in m]
        for i, t in zip(m, pred.classify(np.stack(crops)).argmax(1)):
            exact[i] = int(t)
    tops = tops_by[default]
    sweep_tops = tops_by
    faces = [t for tr in truth for t in tr]
    per_scale: dict[str, Any] = {}
    for s in sorted({t["scale"] for t in faces}):
        idx = [t["index"] for t in faces if t["scale"] == s]
        det = [i for i in idx if i in found]
        entry = {"faces": len(idx), "detected": len(det), "detection_rate": len(det) / max(1, len(idx)),
                 "agreement": float(np.mean([tops[i] == ref_top[i] for i in det])) if det else None}
        if labels is not None and det:
            entry["accuracy"] = float(np.mean([tops[i] == labels[i] for i in det]))
            entry["accuracy_original_crops_same_faces"] = float(np.mean([ref_top[i] == labels[i] for i in det]))
        per_scale[str(s)] = entry
    det_all = [t["index"] for t in faces if t["index"] in found]
    out: dict[str, Any] = {
        "faces": len(faces), "scenes": len(scenes), "detected": len(det_all),
        "detection_rate": len(det_all) / max(1, len(faces)), "false_detections": false_pos,
        "agreement_with_original_crops": float(np.mean([tops[i] == ref_top[i] for i in det_all])) if det_all else None,
        "agreement_exact_pasted_square": float(np.mean([exact[i] == ref_top[i] for i in det_all])) if det_all else None,
        "per_scale_px": per_scale,
    }
    if labels is not None and det_all:
        out["accuracy_detected"] = float(np.mean([tops[i] == labels[i] for i in det_all]))
        out["accuracy_original_crops_same_faces"] = float(np.mean([ref_top[i] == labels[i] for i in det_all]))
    if sweep:
        out["crop_geometry_sweep"] = [
            {"crop_margin": g[0], "crop_offset_y": g[1],
             "agreement": float(np.mean([sweep_tops[g][i] == ref_top[i] for i in det_all])) if det_all else None}
            for g in sweep]
    return out


def time_pipeline(model: Path, backend_file: Path, scenes: list[Image.Image], batch: int, repeat: int,
                  threads: int) -> dict:
    from lanet.predict import Predictor

    pred = Predictor(backend_file if backend_file.suffix == ".onnx" else model, batch_size=batch, device="cpu",
                     threads=threads)
    pred.predict(scenes[:2])  # warm-up
    best = None
    faces = 0
    for _ in range(repeat):
        t0 = time.perf_counter()
        recs = pred.predict(scenes)
        dt = time.perf_counter() - t0
        faces = sum(r["status"] == "ok" for r in recs)
        best = dt if best is None else min(best, dt)
    # classification alone, on the crops of the same faces
    crops = np.zeros((max(faces, 1), pred.source_size, pred.source_size, pred.channels), dtype=np.uint8)
    pred.classify(crops[:batch])
    t0 = time.perf_counter()
    for _ in range(repeat):
        pred.classify(crops)
    cls = (time.perf_counter() - t0) / repeat
    return {"backend": pred.backend, "batch_size": batch, "images": len(scenes), "faces": faces, "seconds": best,
            "images_per_second": len(scenes) / best, "faces_per_second": faces / best,
            "classification_only_faces_per_second": len(crops) / cls}


def time_classification(model_file: Path, onnx_file: Path, n: int, repeat: int) -> list[dict[str, Any]]:
    """Classifier alone on ``n`` crops: PyTorch and ONNX Runtime, batch 1 and 64, 1 and 2 threads."""
    import torch

    from lanet.predict import Predictor

    crops = np.random.default_rng(0).integers(0, 256, (n, 48, 48, 1), dtype=np.uint8)
    rows = []
    for threads in (1, 2):
        torch.set_num_threads(threads)
        for f in (model_file, onnx_file):
            for batch in (1, 64):
                pred = Predictor(f, detector="none", batch_size=batch, device="cpu", threads=threads)
                pred.classify(crops[:batch])
                best = None
                for _ in range(repeat):
                    t0 = time.perf_counter()
                    pred.classify(crops)
                    dt = time.perf_counter() - t0
                    best = dt if best is None else min(best, dt)
                rows.append({"backend": pred.backend, "batch_size": batch, "threads": threads, "faces": n,
                             "faces_per_second": n / best})
    return rows


def geometry(root: Path, n: int) -> dict[str, Any]:
    """Where dlib's HOG and CNN boxes lie on original FER crops (upscaled to 112 px with a 25% border)."""
    from lanet.predict.detect import FaceDetector

    images, _, _ = load_ferplus_test(root, n, seed=1)
    res: dict[str, Any] = {"faces": len(images)}
    boxes: dict[str, list] = {}
    for kind in ("hog", "cnn"):
        det = FaceDetector(kind, upsample=0)
        t0 = time.perf_counter()
        found = []
        for im in images:
            d = det(Image.fromarray(im[..., 0]).convert("RGB"))
            found.append(d[0].box if d else None)
        secs = time.perf_counter() - t0
        boxes[kind] = found
        b = np.array([f for f in found if f is not None])
        side = ((b[:, 2] - b[:, 0]) + (b[:, 3] - b[:, 1])) / 2
        cy = (b[:, 1] + b[:, 3]) / 2
        margin = (48 / side - 1) / 2
        res[kind] = {"found": len(b) / len(images), "ms_per_face": 1000 * secs / len(images),
                     "margin_median": float(np.median(margin)), "margin_mean": float(margin.mean()),
                     "offset_y_median": float(np.median((24 - cy) / side)), "offset_y_mean": float(((24 - cy) / side)
                                                                                                  .mean())}
    both = [(h, c) for h, c in zip(boxes["hog"], boxes["cnn"]) if h is not None and c is not None]
    if both:
        H, C = np.array([h for h, _ in both]), np.array([c for _, c in both])
        hs, cs = (H[:, 2] - H[:, 0] + H[:, 3] - H[:, 1]) / 2, (C[:, 2] - C[:, 0] + C[:, 3] - C[:, 1]) / 2
        res["cnn_to_hog"] = {"faces": len(both), "scale": float(np.median(hs / cs)),
                             "shift_x": float(np.median(((H[:, 0] + H[:, 2]) - (C[:, 0] + C[:, 2])) / 2 / cs)),
                             "shift_y": float(np.median(((H[:, 1] + H[:, 3]) - (C[:, 1] + C[:, 3])) / 2 / cs))}
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="", help="run directory or model file (default: train a small baseline)")
    ap.add_argument("--root", default=str(REPO.parent / "shared" / "data" / "ferplus"), help="FERPlus folder")
    ap.add_argument("--faces", type=int, default=240, help="FERPlus test faces to composite")
    ap.add_argument("--synthetic", type=int, default=60, help="synthetic faces to composite")
    ap.add_argument("--speed-scenes", type=int, default=40, help="scenes timed per backend and batch size")
    ap.add_argument("--cnn-scenes", type=int, default=10, help="scenes searched with the CNN detector (0 = skip)")
    ap.add_argument("--geometry", type=int, default=0, help="also measure detector boxes on N original crops")
    ap.add_argument("--repeat", type=int, default=2, help="timing repeats (the fastest counts)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads")
    ap.add_argument("--work", default="runs/predict_speed", help="folder for the default model and the ONNX export")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--note", default="", help="what else was running on the machine")
    ap.add_argument("--out", default="benchmarks/results/cpu/predict_speed.json")
    args = ap.parse_args()

    import torch

    from lanet.bench import machine
    from lanet.export import export_model
    from lanet.predict import Predictor
    from lanet.predict.backends import resolve_model_path

    torch.set_num_threads(args.threads)
    root, work = Path(args.root), Path(args.work)
    if not (root / "FER2013Test" / "label.csv").is_file():
        sys.exit(f"FERPlus not found at {root}; pass --root")
    work.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    model = Path(args.model) if args.model else train_default(root, work, args.threads)
    model_file = resolve_model_path(model)
    onnx_file = work / (model_file.stem + ".onnx")
    export_model(model_file, "onnx", onnx_file)

    faces, labels, names = load_ferplus_test(root, args.faces, args.seed)
    pred = Predictor(model_file, device="cpu")
    ref_top = np.array([r["probabilities"] and pred.class_names.index(r["top"]) for r in pred.predict_faces(faces)])
    ref_acc = float(np.mean(ref_top == labels))
    scenes, truth = compose(faces, args.seed)
    sweep = [(m, o) for m in (0.0, 0.05, 0.1, 0.15) for o in (-0.12, -0.08, -0.04, 0.0)]
    fer = evaluate_scenes(pred, scenes, truth, ref_top, labels, sweep)
    fer["accuracy_original_crops"] = ref_acc

    from lanet.data.synthetic import make_synthetic

    syn = make_synthetic(args.synthetic, seed=args.seed + 1, size=48, channels=1)
    syn_top = np.array([pred.class_names.index(r["top"]) for r in pred.predict_faces(syn.images)])
    syn_scenes, syn_truth = compose(syn.images, args.seed + 1)
    synthetic = evaluate_scenes(pred, syn_scenes, syn_truth, syn_top, None, [])

    cnn = None
    if args.cnn_scenes:
        pcnn = Predictor(model_file, detector="cnn", device="cpu")
        k = args.cnn_scenes
        t0 = time.perf_counter()
        cnn = evaluate_scenes(pcnn, scenes[:k], truth[:k], ref_top, labels, [])
        cnn["seconds_per_scene"] = (time.perf_counter() - t0) / k

    speed = []
    sc = scenes[: args.speed_scenes]
    for backend_file in (model_file, onnx_file):
        for batch in (1, 64):
            speed.append(time_pipeline(model_file, backend_file, sc, batch, args.repeat, args.threads))
            print(json.dumps(speed[-1]), file=sys.stderr)

    classification = time_classification(model_file, onnx_file, 128, args.repeat)
    torch.set_num_threads(args.threads)

    import dlib
    import onnxruntime

    result = {
        "benchmark": "predict_speed",
        "command": _portable_command([sys.executable, *sys.argv]),
        "machine": machine(),
        "torch": torch.__version__, "torch_threads": args.threads, "onnxruntime": onnxruntime.__version__,
        "dlib": dlib.__version__,
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "note": args.note,
        "model": {"file": _portable_path(model_file), "trained_by_this_script": not args.model,
                  "meta": {k: v for k, v in pred.meta.items() if k in ("arch", "width", "image_size", "in_chans",
                                                                      "source_size", "crop_margin", "crop_offset_y",
                                                                      "method", "epoch")}},
        "scene": {"size": SCENE, "face_sizes_px": SCALES, "faces_per_scene": "1-3"},
        "detector": {"kind": "hog", "upsample": 1, "max_side": 1024},
        "ferplus_composited": fer,
        "synthetic_composited": synthetic,
        "cnn_detector_subset": cnn,
        "speed": speed,
        "classification_only": classification,
        "seconds_total": time.perf_counter() - t_start,
    }
    if args.geometry:
        result["geometry"] = geometry(root, args.geometry)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("speed", "classification_only")}, indent=1))
    print(f"written {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
