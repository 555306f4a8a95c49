"""The ``lanet`` command line: prepare, train, evaluate, demo, bench, summary, predict, export, report, audit, methods,
config.

Every option maps onto one configuration key (``lanet config`` prints them all); ``-o key=value`` sets any
key, including method hyperparameters (``-o method.params.K=12``). Errors a user can cause print one line
and exit with status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, NoReturn

from .config import Config, explicit_keys, load_config, reference
from .errors import LanetError
from .runconfig import validate_config

# flag -> (config key, help). Values given on the command line override the YAML file.
_DATA_FLAGS: dict[str, tuple[str, str]] = {
    "--dataset": ("data.name", "dataset: synthetic | ferplus | rafdb | affectnet7 | affectnet8 | csv | folders"),
    "--root": ("data.root", "dataset folder (or CSV file for --dataset csv)"),
    "--protocol": ("data.protocol", "FERPlus label protocol: paper | majority"),
    "--image-size": ("data.image_size", "network input size in pixels (32..512)"),
    "--channels": ("data.channels", "1 grayscale, 3 RGB, 0 = the dataset's own"),
    "--labels": ("data.labels", "CSV name,label replacing the training labels"),
    "--landmarks": ("data.landmarks", "auto | none | path to a landmark file"),
    "--cache-dir": ("data.cache_dir", "cache folder for decoded images and landmarks (default ~/.cache/lanet)"),
    "--limit": ("data.limit", "at most this many images per split (0 = all)"),
    "--train-limit": ("data.train_limit", "only the first N training images (val and test stay complete)"),
}
_TRAIN_FLAGS: dict[str, tuple[str, str]] = {
    "--method": ("method.name", "training method (see `lanet methods`)"),
    "--noise": ("noise.type", "label noise: none | symmetric | asymmetric | annotator"),
    "--noise-rate": ("noise.rate", "fraction of training labels to corrupt"),
    "--arch": ("model.arch", "backbone: resnet18 | resnet50 | dlib_resnet (>= 103 px) | dlib_resnet_small "
                              "(48-96 px), dlib_resnet_small_os16 (3x3 last map at 48 px), ..._affine forms"),
    "--pretrained": ("model.pretrained", "pretrained state dict to load by key mapping, or dlib (dlib_* archs)"),
    "--epochs": ("train.epochs", "training epochs"),
    "--batch-size": ("train.batch_size", "global batch size"),
    "--lr": ("train.lr", "Adam learning rate (linear decay to 0 per step)"),
    "--seed": ("train.seed", "random seed"),
    "--device": ("train.device", "auto | cpu | cuda"),
    "--threads": ("train.threads", "CPU threads (0 = all cores)"),
    "--balanced": ("augment.balanced", "progressively balanced sampling: true | false"),
}


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error (``lanet train: error: ...``, status 2) instead of usage + error."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _add_flags(p: argparse.ArgumentParser, flags: dict[str, tuple[str, str]]) -> None:
    for flag, (key, help_) in flags.items():
        p.add_argument(flag, dest=key, default=None, metavar="V", help=f"{help_} [{key}]")


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default=None, help="YAML configuration file (see `lanet config`)")
    p.add_argument("-o", "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override any configuration key, e.g. -o train.epochs=5 -o method.params.K=12")


def _overrides(args: argparse.Namespace) -> list[str]:
    """The flags given on the command line as ``key=value`` overrides, then the ``-o`` ones."""
    overrides = []
    for flags in (_DATA_FLAGS, _TRAIN_FLAGS):
        for key, _ in flags.values():
            value = getattr(args, key, None)
            if value is not None:
                overrides.append(f"{key}={value}")
    return overrides + args.overrides


def _build_config(args: argparse.Namespace) -> Config:
    cfg = load_config(args.config, _overrides(args))
    validate_config(cfg)
    return cfg


# ---------------------------------------------------------------------------------------------- commands
def cmd_prepare(args: argparse.Namespace) -> int:
    from .data.faceset import data_report
    from .data.loaders import load_faceset
    from .landmarks.provider import ensure_landmarks, landmark_stats

    cfg = _build_config(args)
    fs = load_faceset(cfg.data)
    print(fs.summary())
    report = data_report(fs)
    if report:
        print(f"data: {report}")
    for k, v in fs.meta.items():
        if isinstance(v, (int, float, str)):
            print(f"  {k}: {v}")
    if cfg.data.landmarks != "none":
        ensure_landmarks(fs, cfg.data.landmarks or "auto", cfg.data.cache_dir, progress=True)
        print("landmarks:", json.dumps(landmark_stats(fs)))
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from .train.distributed import cleanup
    from .train.trainer import train

    cfg = _build_config(args)
    keys = explicit_keys(args.config, _overrides(args))  # on --resume only these must match the run
    try:
        summary = train(cfg, args.out, resume=args.resume, progress=not args.quiet, explicit_keys=keys)
    finally:
        cleanup()  # leave a torchrun process group cleanly
    if summary:
        _print_summary(summary)
    return 0


def _print_summary(s: dict[str, Any]) -> None:
    sel = s.get("test_accuracy_val_selected")
    sel_txt = "n/a (no validation split)" if sel is None else f"{100 * sel:.2f}% (epoch {s['val_selected_epoch']})"
    print(f"{s['method']} on {s['dataset']} ({s['noise']['type']} noise {s['noise']['rate']:.0%}, realised "
          f"{s['realised_noise_rate']:.1%}): test accuracy final {100 * s['test_accuracy']:.2f}%, "
          f"validation-selected {sel_txt}, mean class {100 * s['mean_class_accuracy']:.2f}%, "
          f"{s['train_images_per_second']:.0f} train img/s")


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .train.evaluate import evaluate_run

    res = evaluate_run(args.run_dir, device=args.device, root=args.root or "", batch_size=args.batch_size)
    for tag, entry in res.items():
        parts = [f"{tag} (epoch {entry['epoch']})"]
        for split in ("val", "test"):
            if split in entry:
                m = entry[split]
                parts.append(f"{split} {100 * m['accuracy']:.2f}% (mean class {100 * m['mean_class_accuracy']:.2f}%)")
        print("  ".join(parts))
    print(f"written {Path(args.run_dir) / 'evaluation.json'}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from .report import make_report

    res = make_report(args.run_dirs, args.out, root=args.root or "", model=args.model, device=args.device,
                      batch_size=args.batch_size, tsne_points=args.tsne_points, samples=args.samples, seed=args.seed,
                      cam_layer=args.cam_layer, progress=not args.quiet)
    for run, what, why in res.skipped:
        print(f"  {run}: {what}: not shown ({why})")
    print(f"written {res.index} ({len(res.figures)} figures)")
    if args.check:
        from .htmlcheck import check_page

        check = check_page(res.index)
        if not check.ok:
            raise LanetError(f"browser check failed: {check.text()}")
        print(f"browser check: {check.text()}")
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    from .audit import run_audit, summary_lines

    audit, written = run_audit(args.run_dir, args.out, top=args.top, sheet=args.sheet, source=args.source,
                               model=args.model, root=args.root or "", device=args.device,
                               batch_size=args.batch_size)
    print("\n".join(summary_lines(audit)))
    print("written " + ", ".join(str(p) for p in written))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    run_demo(out=args.out, methods=args.methods.split(",") if args.methods else None, epochs=args.epochs,
             size=args.size, device=args.device, progress=not args.quiet, threads=args.threads,
             train_limit=args.train_images)
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from .bench import run_benchmark
    from .portable import portable_command

    argv = getattr(args, "argv", None)
    command = portable_command(["lanet", *argv]) if argv is not None else None
    report = run_benchmark(args.tables, args.preset, root=args.root, runs=args.runs, results=args.results,
                           seeds=args.seeds, methods=args.methods.split(",") if args.methods else None,
                           rates=args.rates or None, device=args.device, overrides=args.overrides,
                           render_only=args.render_only, dry_run=args.dry_run, progress=not args.quiet,
                           command=command, labels=args.labels)
    if args.dry_run:
        return 0
    for r in report.rendered:
        print(r.markdown)
    if report.written:
        print(f"written {len(report.written)} files to {report.written[0].parent}")
    if report.failed:
        print(f"lanet: {len(report.failed)} run(s) failed or were not run: "
              + ", ".join(f"{o.spec.table}/{o.spec.name}" for o in report.failed), file=sys.stderr)
        return 1
    return 0


def cmd_summary(args: argparse.Namespace) -> int:
    from .bench.summary import summarise, to_markdown, write_summary

    def split(text: str) -> list[str] | None:
        return [x.strip() for x in text.split(",") if x.strip()] or None

    summary = summarise([Path(t) for t in args.tables], blocks=split(args.labels_order),
                        methods=split(args.methods))
    print(to_markdown(summary, args.title), end="")
    if args.out:
        written = write_summary(summary, Path(args.out), args.title)
        print(f"written {', '.join(p.as_posix() for p in written)}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from .predict.command import run_predict

    return run_predict(args.inputs, args.model, out=args.out, annotate=args.annotate, detector=args.detector,
                       every=args.every, batch_size=args.batch_size, device=args.device, upsample=args.upsample,
                       threshold=args.threshold, max_side=args.max_side, max_pixels=args.max_pixels,
                       progress=not args.quiet)


def cmd_export(args: argparse.Namespace) -> int:
    from .export import run_export

    return run_export(args.model, args.format, args.out, force=args.force)


def cmd_methods(args: argparse.Namespace) -> int:
    from dataclasses import fields

    from .methods.registry import available, get_method_class

    for name in available():
        cls = get_method_class(name)
        params = ", ".join(f"{f.name}={getattr(cls.Params(), f.name)!r}" for f in fields(cls.Params))
        doc = (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""
        print(f"{name}: {doc}\n    params: {params or '(none)'}")
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    print(reference())
    return 0


# ---------------------------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    fmt = argparse.RawDescriptionHelpFormatter
    parser = _Parser(prog="lanet", description="Noise-robust facial expression recognition "
                     "(LA-Net, ICCV 2023) with real datasets, label noise and peers.")
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command")

    p = sub.add_parser("prepare", formatter_class=fmt, help="load a dataset, cache it, extract landmarks",
                       description="Load a dataset into the image cache and extract (or load) 68-point "
                       "landmarks, caching both so training starts instantly.",
                       epilog="Configuration keys:\n" + reference())
    _add_config_args(p)
    _add_flags(p, _DATA_FLAGS)
    p.set_defaults(func=cmd_prepare)

    p = sub.add_parser("train", formatter_class=fmt, help="train a method and write a run directory",
                       description="Train a method (baseline, lanet, ...) and write RUN_DIR with config.yaml, "
                       "metrics.jsonl, checkpoints and summary.json. Works under torchrun.",
                       epilog="Configuration keys (set with -o KEY=VALUE or in --config):\n" + reference())
    _add_config_args(p)
    _add_flags(p, _DATA_FLAGS)
    _add_flags(p, _TRAIN_FLAGS)
    p.add_argument("--out", required=True, metavar="RUN_DIR", help="run directory to write")
    p.add_argument("--resume", action="store_true", help="continue the run in RUN_DIR from its last checkpoint")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="re-evaluate a saved run",
                       description="Re-evaluate RUN_DIR's exported classifiers (final and validation-selected) "
                       "on the validation and test splits; writes RUN_DIR/evaluation.json.")
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run directory written by `lanet train`")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--root", default="", help="dataset folder, if it moved since training")
    p.add_argument("--batch-size", type=int, default=256, help="evaluation batch size")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("report", help="figures and an HTML page of what training did",
                       description="Write OUT/index.html with PNG figures for each run: training curves, confusion "
                       "matrix, t-SNE of test features, per-sample losses of clean vs flipped labels, learned label "
                       "distributions vs human votes, Grad-CAM; several runs are also compared side by side. Figures "
                       "a run cannot have are listed with the reason. Needs the report extra (matplotlib, "
                       "scikit-learn).")
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run directories written by `lanet train`")
    p.add_argument("--out", required=True, metavar="DIR", help="folder for index.html and the figures")
    p.add_argument("--model", default="auto", choices=["auto", "final", "val_selected"],
                   help="classifier to analyse (auto: model_final.pt, else model_val_selected.pt of an unfinished run)")
    p.add_argument("--root", default="", help="dataset folder, if it moved since training")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--batch-size", type=int, default=256, help="inference batch size")
    p.add_argument("--tsne-points", type=int, default=2000, help="test images in the t-SNE (seeded subsample)")
    p.add_argument("--samples", type=int, default=8, help="sample images in the distribution and Grad-CAM figures")
    p.add_argument("--seed", type=int, default=0, help="seed of the subsamples and t-SNE")
    p.add_argument("--cam-layer", default="auto", help="Grad-CAM stage, e.g. layer3 (default auto: the deepest "
                   "stage whose map is at least 3 x 3 at the run's input size; the figure names it)")
    p.add_argument("--check", action="store_true", help="open the page in headless Chromium and fail on a broken "
                   "image or a script error")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("audit", help="rank training images by how likely their label is wrong",
                       description="Score every training image of RUN_DIR by 1 - p(given label), where p is the label "
                       "distribution LA-Net learned for it (label_distributions.npz) or, for other methods, the "
                       "exported classifier's prediction on it (in-sample: memorised wrong labels score low), and "
                       "write them ranked, most suspicious first, with the suggested label (argmax p).")
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run directory written by `lanet train`")
    p.add_argument("--out", default="label_issues.csv", metavar="FILE", help="ranked CSV (default label_issues.csv)")
    p.add_argument("--top", type=int, default=None, metavar="K", help="keep only the K highest-ranked images (CSV "
                   "and sheet; default: CSV all, sheet 48)")
    p.add_argument("--sheet", default=None, metavar="FILE.png", help="also write a contact sheet of the top images")
    p.add_argument("--source", default="auto", choices=["auto", "distributions", "model"],
                   help="auto: learned distributions where the run has them, else the model's predictions")
    p.add_argument("--model", default="auto", choices=["auto", "final", "val_selected"],
                   help="classifier for --source model (auto: model_final.pt, else model_val_selected.pt)")
    p.add_argument("--root", default="", help="dataset folder, if it moved since training")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--batch-size", type=int, default=256, help="inference batch size")
    p.set_defaults(func=cmd_audit)

    p = sub.add_parser("demo", help="built-in synthetic faces with 30%% label noise: CE memorises, LA-Net beside it",
                       description="Generate the built-in synthetic face dataset, inject 30%% symmetric label "
                       "noise, train each method and report clean test accuracy side by side.")
    p.add_argument("--out", default="runs/demo", help="folder for the run directories and summary.json")
    p.add_argument("--methods", default="", help="comma-separated methods (default: baseline and lanet)")
    p.add_argument("--epochs", type=int, default=0, help="epochs per method (0 = the demo's default)")
    p.add_argument("--size", type=int, default=0, help="number of synthetic images generated (0 = the demo's "
                   "default, 5000: 70/10/20 train/val/test)")
    p.add_argument("--train-images", type=int, default=1500, help="use only the first N training images (default "
                   "1500, so the network can memorise the noisy labels; 0 = all)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--threads", type=int, default=2, help="CPU threads (default 2, so that reruns on any machine "
                   "with the same CPU instruction set give the same numbers; 0 = all cores)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_demo)

    from .bench import PRESETS, TABLE_ORDER, TABLES

    p = sub.add_parser("bench", formatter_class=fmt, help="run the paper's tables as resumable grids and render them",
                       description="Run a grid of (method x noise type x noise rate x seed), one run directory "
                       "each, and render each table as Markdown, CSV and JSON with mean ± std over seeds, computed "
                       "from the run directories only. Finished runs are skipped, partial ones resumed, a crashed "
                       "run is recorded and the grid goes on; rerun the same command to continue a killed grid.",
                       epilog="Tables:\n" + "\n".join(f"  {n:<10} {TABLES[n].title}" for n in TABLE_ORDER)
                       + "\n  all        every table above\nPresets:\n"
                       + "\n".join(f"  {n:<10} {p_.description}" for n, p_ in PRESETS.items()))
    p.add_argument("tables", nargs="+", metavar="TABLE", help=f"table(s) to run: {', '.join(TABLE_ORDER)} or all")
    p.add_argument("--preset", required=True, metavar="NAME",
                   help=f"shared configuration and default seeds: {' | '.join(PRESETS)}")
    p.add_argument("--root", default=None, metavar="PATH",
                   help="FERPlus folder for the cpu and paper presets (default ../shared/data/ferplus)")
    p.add_argument("--runs", default=None, metavar="DIR", help="folder of the run directories "
                   "(default runs/bench/<preset>; each run is DIR/<table>/<method>-<noise>-<rate>-s<seed>)")
    p.add_argument("--results", default=None, metavar="DIR",
                   help="folder for <table>.md/.csv/.json (default benchmarks/results/<preset>)")
    p.add_argument("--seeds", type=int, nargs="+", default=None, metavar="S",
                   help="seeds to run (default: the preset's: smoke 0 1, cpu 0, paper 0 1 2); when rendering, the "
                   "seeds to show (default: every seed found in the run directories)")
    p.add_argument("--methods", default="", metavar="M1,M2", help="comma-separated methods: the rows of table1, "
                   "table5, annotator and labelfile (default: baseline,scn,rul,eac,nla,resup,lanet for table1/table5, "
                   "baseline,lanet for annotator/labelfile); a variant with its own hyperparameters is a row of its "
                   "own: lanet:consistency=1:sharpen=0.5; for table2/fig2 keeps rows of these methods")
    p.add_argument("--rates", default="", metavar="R1,R2", help="comma-separated noise rates of the noisy columns "
                   "(default 0.1,0.2,0.3 for table1/table5, 0.3 for table2/fig2; clean and annotator columns stay; "
                   "0 adds the clean column, e.g. --rates 0,0.3 for CE on clean labels beside 30%%)")
    p.add_argument("--labels", default=None, metavar="FILE.csv", help="the label file (header name,label: a "
                   "second annotation of the training images) the labelfile table trains on, tested against the "
                   "dataset's labels; give it again when rendering (all leaves labelfile out without it)")
    p.add_argument("--device", default=None, metavar="DEV", help="auto | cpu | cuda (default: the preset's)")
    p.add_argument("-o", "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a configuration key for every run (repeat it when rendering)")
    p.add_argument("--render-only", action="store_true", help="train nothing; render the tables from the runs")
    p.add_argument("--dry-run", action="store_true", help="print each run and its status; train and write nothing")
    p.add_argument("--quiet", action="store_true", help="no per-epoch progress bars")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("summary", help="one results table from several rendered bench tables, best in bold",
                       description="Put the rows of rendered bench tables (table1.json, table5.json, annotator.json, "
                       "...) side by side: one block per kind of training labels, the four reporting rules as "
                       "columns, the best mean of each column bold within its block (among rows on the same seeds).")
    p.add_argument("tables", nargs="+", metavar="TABLE.json", help="table JSON files written by lanet bench")
    p.add_argument("--labels-order", default="", metavar="L1,L2", help="the blocks to keep, in this order, by "
                   "their training labels as the tables name them (e.g. 'clean,symmetric 30%%,asymmetric 30%%')")
    p.add_argument("--methods", default="", metavar="R1,R2", help="rows to keep: row labels (e.g. EAC) or method "
                   "names (lanet keeps every LA-Net row)")
    p.add_argument("--title", default="Results side by side", help="the Markdown title")
    p.add_argument("--out", default=None, metavar="PATH", help="also write PATH.md, PATH.csv and PATH.json")
    p.set_defaults(func=cmd_summary)

    p = sub.add_parser("predict", help="predict expressions on photos, folders and videos",
                       description="Detect faces, crop them as the training data was cropped and classify them. "
                       "One record per face (file, frame, time, box, score, probability per class, top class); an "
                       "image without a face and an unreadable file get a record saying so. Exit status 1 when "
                       "some inputs could not be read (listed at the end), 2 when none could.")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="images, folders (searched recursively) and videos")
    p.add_argument("--model", required=True, metavar="RUN_DIR|FILE", help="a run directory (model_val_selected.pt "
                   "if present, else model_final.pt), an exported .pt, an .onnx or TorchScript file (lanet export; "
                   "TorchScript is code, loaded only from a file named here: pass only files you trust)")
    p.add_argument("--out", default=None, metavar="FILE", help="results.csv or results.jsonl (default: JSON lines "
                   "on stdout)")
    p.add_argument("--annotate", default=None, metavar="DIR", help="write copies of the inputs with boxes and labels")
    p.add_argument("--detector", default="hog", choices=["hog", "cnn", "none"], help="dlib HOG (default), dlib CNN "
                   "(slower, more faces), or none: every input is already a face crop")
    p.add_argument("--every", type=int, default=1, metavar="N", help="videos: use every N-th frame (default 1)")
    p.add_argument("--batch-size", type=int, default=64, help="faces per classifier call (default 64)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--upsample", type=int, default=1, help="detector pyramid doublings: 1 finds faces from ~40 px, "
                   "0 from ~80 px at twice the speed (default 1)")
    p.add_argument("--threshold", type=float, default=0.0, help="minimum detection score (default 0)")
    p.add_argument("--max-side", type=int, default=1024, help="larger images are downscaled to this longer side for "
                   "detection (default 1024)")
    p.add_argument("--max-pixels", type=int, default=0, help="refuse images above this many pixels (default 200 "
                   "million; a decompression-bomb guard)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("export", help="export a run's classifier to ONNX or TorchScript",
                       description="Export RUN_DIR's classifier (model_val_selected.pt if present, else "
                       "model_final.pt) or a model file to ONNX (metadata_props['lanet'] holds the preprocessing) "
                       "or TorchScript (extra file lanet.json), with a dynamic batch axis; checks the export "
                       "against PyTorch.")
    p.add_argument("model", metavar="RUN_DIR|MODEL_FILE", help="a run directory or an exported model_*.pt")
    p.add_argument("--format", default="onnx", choices=["onnx", "torchscript"], help="output format (default onnx)")
    p.add_argument("--out", default=None, metavar="FILE", help="output file (default: next to the model, .onnx or "
                   ".torchscript.pt)")
    p.add_argument("--force", action="store_true", help="replace an existing file of a run directory (never the "
                   "model being exported)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("methods", help="list registered methods and their hyperparameters")
    p.set_defaults(func=cmd_methods)
    p = sub.add_parser("config", help="print every configuration key with its default and meaning")
    p.set_defaults(func=cmd_config)
    return parser


def _one_line(text: str) -> str:
    return " ".join(text.split()) or "unknown error"


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # the exact command line, for provenance
    if args.version:
        from . import __version__

        print(__version__)
        return 0
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except LanetError as exc:
        print(f"lanet: error: {_one_line(str(exc))}", file=sys.stderr)
        return 2
    except OSError as exc:  # a full disk, a read-only folder, a vanished file: the file and the reason
        text = exc.strerror or str(exc)
        if exc.filename and str(exc.filename) not in text:
            text = f"{exc.filename}: {text}"
        print(f"lanet: error: {_one_line(text)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("lanet: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
