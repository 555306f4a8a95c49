"""Does dlib's face-recognition ResNet help FER? Fine-tuning it vs training it or the cpu-preset ResNet-18 from scratch.

Every row trains the baseline (cross-entropy) with the project's own trainer on FERPlus clean labels (paper
protocol, no noise) with the same budget: the first ``--limit`` training images, ``--epochs`` epochs, batch
``--batch-size``, the default augmentation, Adam with linear decay. Rows:

=================================  ======================  ======  ===========  ======
row                                arch                    pixels  pretrained   lr
=================================  ======================  ======  ===========  ======
dlib-pretrained-bn                 dlib_resnet             112     dlib         3e-4
dlib-pretrained-affine             dlib_resnet_affine      112     dlib         3e-4
dlib-scratch                       dlib_resnet             112     (random)     1e-3
r18w32-scratch                     resnet18, width 32      48      (random)     1e-3
dlib-pretrained-bn-lr1e-4          dlib_resnet             112     dlib         1e-4
dlib-pretrained-affine-lr1e-4      dlib_resnet_affine      112     dlib         1e-4
dlib-small-pretrained-bn           dlib_resnet_small       64      dlib         3e-4
=================================  ======================  ======  ===========  ======

``bn`` rows turn dlib's affine layers into BatchNorm (calibrated on the first batch), ``affine`` rows keep
them as per-channel scale and shift (see :mod:`lanet.models.dlib_resnet`). The result JSON holds test (and
validation) accuracy per epoch, training images/s, wall time, the 1-minute load average before and after each
row (other work on the machine slows the img/s numbers) and ``--note`` (say what else was running).

Each row is one run directory ``RUNS/<row>``: a finished row is skipped, an interrupted one resumed from its
checkpoint, so the command can be re-run until every row is done. The JSON is rewritten after every row.

    python benchmarks/dlib_backbone.py --runs /work/runs/dlib --note "..."
    python benchmarks/dlib_backbone.py --smoke            # seconds: synthetic faces, 1 epoch, 2 rows
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lanet.bench import git_commit, machine
from lanet.config import Config
from lanet.errors import LanetError
from lanet.fileutil import atomic_open
from lanet.portable import portable_command

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Row:
    name: str
    arch: str
    image_size: int
    pretrained: str
    lr: float
    width: int = 64  # ResNet only; the dlib network's widths are fixed


ROWS = (
    Row("dlib-pretrained-bn", "dlib_resnet", 112, "dlib", 3e-4),
    Row("dlib-pretrained-affine", "dlib_resnet_affine", 112, "dlib", 3e-4),
    Row("dlib-scratch", "dlib_resnet", 112, "", 1e-3),
    Row("r18w32-scratch", "resnet18", 48, "", 1e-3, width=32),
    Row("dlib-pretrained-bn-lr1e-4", "dlib_resnet", 112, "dlib", 1e-4),
    Row("dlib-pretrained-affine-lr1e-4", "dlib_resnet_affine", 112, "dlib", 1e-4),
    Row("dlib-small-pretrained-bn", "dlib_resnet_small", 64, "dlib", 3e-4),
    Row("dlib-small-pretrained-affine", "dlib_resnet_small_affine", 64, "dlib", 3e-4),
    Row("dlib-small-scratch", "dlib_resnet_small", 64, "", 1e-3),
)


def row_config(row: Row, args: argparse.Namespace) -> Config:
    cfg = Config()
    if args.smoke:
        cfg.data.name, cfg.data.synthetic_size = "synthetic", 200
    else:
        cfg.data.name, cfg.data.root, cfg.data.limit = "ferplus", str(args.root), args.limit
    cfg.data.image_size = row.image_size
    cfg.data.landmarks = "none"  # cross-entropy needs none
    cfg.noise.type = "none"
    cfg.model.arch, cfg.model.width, cfg.model.pretrained = row.arch, row.width, row.pretrained
    cfg.train.epochs, cfg.train.batch_size, cfg.train.lr = args.epochs, args.batch_size, row.lr
    cfg.train.seed, cfg.train.device, cfg.train.threads = args.seed, "cpu", args.threads
    cfg.train.eval_batch_size = 256
    cfg.method.name = "baseline"
    return cfg


def read_row(row: Row, run_dir: Path) -> dict[str, Any]:
    """What a (possibly partial) run directory says: per-epoch metrics and, when finished, the summary."""
    out: dict[str, Any] = {"row": row.name, "arch": row.arch, "image_size": row.image_size,
                           "pretrained": row.pretrained or "random init", "lr": row.lr, "run_dir": run_dir.name}
    if row.arch == "resnet18":
        out["width"] = row.width
    metrics = run_dir / "metrics.jsonl"
    epochs = [json.loads(x) for x in metrics.read_text().splitlines() if x.strip()] if metrics.is_file() else []
    out["per_epoch"] = [{"epoch": e["epoch"] + 1, "test_accuracy": e.get("test_accuracy"),
                         "val_accuracy": e.get("val_accuracy"), "train_loss": e.get("train_loss"),
                         "train_images_per_second": e.get("train_images_per_second"),
                         "train_seconds": e.get("train_seconds")} for e in epochs]
    ips = [e["train_images_per_second"] for e in out["per_epoch"] if e["train_images_per_second"]]
    out["train_images_per_second_median"] = statistics.median(ips) if ips else None
    summary = run_dir / "summary.json"
    if summary.is_file():
        s = json.loads(summary.read_text())
        out["status"] = "finished"
        out["test_accuracy_final"] = s.get("test_accuracy")
        out["test_accuracy_val_selected"] = s.get("test_accuracy_val_selected")
    else:
        out["status"] = "partial" if epochs else "not run"
    return out


def write_json(obj: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path, "w") as fh:
        fh.write(json.dumps(obj, indent=2) + "\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", type=Path, default=REPO.parent / "shared" / "data" / "ferplus", help="FERPlus folder")
    ap.add_argument("--runs", type=Path, default=None, help="run directories (default /work/runs/dlib)")
    ap.add_argument("--out", type=Path, default=None,
                    help="result JSON (default benchmarks/results/cpu/dlib_backbone.json)")
    ap.add_argument("--limit", type=int, default=8000, help="training images (the first N of FERPlus train)")
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = all cores)")
    ap.add_argument("--rows", nargs="*", default=None, help=f"rows to run (default all): {[r.name for r in ROWS]}")
    ap.add_argument("--note", default="", help="what else was running on the machine (recorded in the JSON)")
    ap.add_argument("--smoke", action="store_true",
                    help="seconds: 200 synthetic faces, 1 epoch, rows dlib-pretrained-bn and r18w32-scratch, "
                         "into /tmp unless --runs/--out are given")
    args = ap.parse_args(argv)
    if args.smoke:
        args.epochs, args.batch_size = 1, 16
        args.rows = args.rows or ["dlib-pretrained-bn", "r18w32-scratch"]
        args.runs = args.runs or Path("/tmp/lanet-dlib-smoke/runs")
        args.out = args.out or Path("/tmp/lanet-dlib-smoke/dlib_backbone.json")
    args.runs = args.runs or Path("/work/runs/dlib")
    args.out = args.out or REPO / "benchmarks" / "results" / "cpu" / "dlib_backbone.json"
    known = {r.name: r for r in ROWS}
    unknown = [r for r in (args.rows or []) if r not in known]
    if unknown:
        ap.error(f"unknown row(s) {unknown}; rows are {list(known)}")
    rows = [known[r] for r in args.rows] if args.rows else list(ROWS)

    from lanet.train.trainer import train

    commit, dirty = git_commit()
    result: dict[str, Any] = {
        "what": "issue 9: dlib's face-recognition ResNet as a pretrained backbone vs the same network and the "
                "cpu-preset ResNet-18 from scratch; baseline cross-entropy on FERPlus clean labels (paper protocol)",
        "command": portable_command(["python", *sys.argv]),
        "commit": commit, "dirty": dirty, "machine": machine(), "torch": torch.__version__,
        "threads": args.threads or os.cpu_count(),
        "concurrent_load": {"note": args.note or "(not given)",
                            "loadavg_1min_per_row": "see rows[].loadavg_1min (before, after)"},
        "budget": {"dataset": "synthetic (smoke)" if args.smoke else "ferplus",
                   "train_images": "140 synthetic" if args.smoke else args.limit,
                   "epochs": args.epochs, "batch_size": args.batch_size, "seed": args.seed,
                   "optimiser": "Adam, linear decay to 0, no warm-up", "augmentation": "lanet defaults"},
        "rows": [],
    }
    failed = 0
    for row in rows:
        run_dir = args.runs / row.name
        load0 = os.getloadavg()[0]
        t0 = time.time()
        status = ""
        if not (run_dir / "summary.json").is_file():
            resume = (run_dir / "config.yaml").is_file()
            print(f"== {row.name}: {'resuming' if resume else 'training'} in {run_dir}", file=sys.stderr, flush=True)
            try:
                train(row_config(row, args), run_dir, resume=resume, progress=True)
            except KeyboardInterrupt:
                print("interrupted: re-run the same command to resume", file=sys.stderr)
                return 130
            except LanetError as exc:
                status, failed = f"failed: {exc}", failed + 1
            except Exception as exc:  # noqa: BLE001 - one broken row must not stop the others
                status, failed = f"failed: {type(exc).__name__}: {exc}", failed + 1
                traceback.print_exc()
        else:
            print(f"== {row.name}: finished earlier, skipped", file=sys.stderr, flush=True)
        entry = read_row(row, run_dir)
        if status:
            entry["status"] = status
            print(f"{row.name}: {status}", file=sys.stderr)
        entry["loadavg_1min"] = [round(load0, 2), round(os.getloadavg()[0], 2)]
        entry["wall_seconds_this_invocation"] = round(time.time() - t0, 1)
        result["rows"].append(entry)
        write_json(result, args.out)
    for e in result["rows"]:
        accs = " ".join(f"{100 * x['test_accuracy']:.1f}" for x in e["per_epoch"] if x["test_accuracy"] is not None)
        ips = e["train_images_per_second_median"]
        print(f"{e['row']:<32} {e['status']:<10.10} test acc/epoch: {accs or '-':<32} "
              f"{'' if ips is None else f'{ips:.0f} img/s'}")
    print(f"written {args.out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
