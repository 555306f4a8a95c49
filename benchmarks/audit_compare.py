"""Finding wrong training labels: LA-Net's learned distributions vs small loss vs cleanlab on K-fold CE.

Given run directories (LA-Net and baseline/CE runs, any noise settings, with or without a ``--labels`` file), the
runs are grouped by the training labels they saw (dataset, label file, noise type, rate and noise seed; every run
of a group must have identical labels). Per group, each method scores every training image and is judged against
the truth of the noise record (``noise_changes.csv``: the training labels that differ from the dataset's own
labels: those the noise changed; for annotator noise, those that differ from the dataset's plurality label; for a
run trained on a label file, e.g. a second annotation, those the file changed, plus any noise injected on top):

* ``lanet_distributions`` (per LA-Net run): 1 - p(given label) under the label distribution the run learned
  (``label_distributions.npz``), i.e. ``lanet audit``'s score. Compute: the LA-Net run's training.
* ``small_loss`` (per CE run): the cross-entropy of the CE run's final model on each training image against its
  given label, in-sample (the criterion of Co-teaching and friends). Compute: the CE run's training + inference.
* ``kfold_self_confidence`` (per CE run): 1 - p(given label) under out-of-sample probabilities: the training
  split is cut into K label-stratified folds; for each fold a CE model with the CE run's configuration is
  trained on the other K-1 folds (with the same noisy labels) by ``lanet.train.trainer.train`` and predicts the
  held-out fold. Compute: the K fold trainings + their held-out inference.
* ``cleanlab`` (same out-of-sample probabilities): ``cleanlab.filter.find_label_issues`` (default
  ``prune_by_noise_rate``, ranked by self-confidence); the ranking puts the images it flags first (in its order),
  then the rest by 1 - self-confidence. Its flagged set is also judged as a set (size, precision, recall).
  Needs ``pip install 'lanet[audit-bench]'``; skipped with a note otherwise.

Metrics: precision@100 and precision@1000 (share of truly changed labels among the k highest-ranked images),
AUROC of the score for changed vs unchanged labels (``lanet.audit``). Where the dataset has annotator votes
(FERPlus), agreement with the votes too: the mean share of annotators who chose the given label among the top
100/1000 (lower: the method found labels few people chose; compare ``vote_share_given_all``), the share of the
top 100/1000 whose suggested label (argmax p) is the dataset's plurality label, and the Spearman correlation of
the score with 1 - vote share of the given label over all training images.

Compute is reported as seconds of training steps (the runs' ``train_seconds``, which excludes per-epoch
evaluation) plus the wall seconds of scoring measured here, on the machine recorded in the JSON.

Fold runs live in ``--work`` (``WORK/<CE run name>/fold<k>of<K>/``, each with ``fold.json`` naming the held-out
images and ``heldout.npz`` with their probabilities); rerunning the command skips finished folds and resumes a
partial one. The fold directories are ordinary run directories, except that their training split is the CE run's
training split minus the held-out fold and their training labels are the CE run's noisy labels (``noise: none``
in their config.yaml: the noise is already in the labels; fold.json says so).

Smoke (seconds, synthetic data)::

    for m in lanet baseline; do lanet train --method $m --dataset synthetic -o data.synthetic_size=300 \\
        --image-size 32 -o model.width=8 --epochs 2 --batch-size 32 --noise symmetric --noise-rate 0.3 \\
        --threads 1 --quiet --out /tmp/ac/$m-sym; done
    python benchmarks/audit_compare.py /tmp/ac/lanet-sym /tmp/ac/baseline-sym --folds 3 --work /tmp/ac/folds \\
        --out /tmp/ac/audit_compare.json --threads 1 --note "smoke"
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lanet.audit import auroc, label_scores, precision_at_k, rank_order, spearman
from lanet.bench import git_commit, machine
from lanet.data.faceset import FaceSet
from lanet.errors import LanetError
from lanet.fileutil import atomic_open
from lanet.portable import portable_command, portable_path
from lanet.rundata import RunData, cross_entropy, eval_transform, open_run, predict, softmax

KS = (100, 1000)


# ---------------------------------------------------------------------------------------------- scores
@dataclass
class Scored:
    """One method's verdict on every training image of a group."""

    method: str
    run: str
    score: np.ndarray  # n, higher = more likely wrong
    suggested: np.ndarray  # n suggested labels
    margin: np.ndarray | None = None  # tie-break of the ranking
    compute: dict[str, float] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)


def evaluate_scores(s: Scored, truth: np.ndarray, votes: np.ndarray | None, given: np.ndarray,
                    clean: np.ndarray) -> dict[str, Any]:
    """precision@k, AUROC and (with votes) agreement with the annotators; see the module docstring."""
    out: dict[str, Any] = {"method": s.method, "run": portable_path(s.run), "images": int(len(truth)),
                           "changed": int(truth.sum())}
    for k in KS:
        out[f"precision_at_{k}"] = precision_at_k(s.score, truth, k, s.margin)
    out["auroc"] = auroc(s.score, truth)
    if votes is not None:
        total = votes.sum(1)
        has = total > 0
        share = np.where(has, votes[np.arange(len(votes)), given] / np.maximum(total, 1e-12), np.nan)
        order = rank_order(s.score, s.margin)
        for k in KS:
            top = order[:k]
            top = top[has[top]]
            out[f"vote_share_given_top{k}"] = float(np.mean(share[top])) if len(top) else None
            out[f"suggested_is_plurality_top{k}"] = float(np.mean(s.suggested[top] == clean[top])) if len(top) else None
        out["vote_share_given_all"] = float(np.nanmean(share)) if has.any() else None
        out["spearman_score_vs_vote_disagreement"] = spearman(s.score[has], 1.0 - share[has]) if has.sum() > 1 \
            else None
    out["compute_seconds"] = float(sum(s.compute.values()))
    out["compute"] = {k: float(v) for k, v in s.compute.items()}
    out.update(s.extra)
    return out


def train_seconds(run: RunData) -> float:
    return float(sum(h.get("train_seconds", 0.0) for h in run.history))


def score_lanet(run: RunData) -> Scored | None:
    dist, _ = run.label_distributions()
    if dist is None:
        return None
    t0 = time.perf_counter()
    s = label_scores(dist, run.training_labels().given)
    return Scored("lanet_distributions", str(run.path), s.score, s.suggested, s.margin,
                  {"training": train_seconds(run), "scoring": time.perf_counter() - t0})


def score_small_loss(run: RunData, batch_size: int) -> Scored:
    t0 = time.perf_counter()
    net, _, which = run.load_model("final")
    if net is None:
        raise LanetError(f"{run.path}: {which}")
    lab = run.training_labels()
    logits, _ = predict(net, run.faceset.images[lab.index], eval_transform(run), batch_size, features=False)
    ce = cross_entropy(logits, lab.given)
    probs = softmax(logits)
    margin = probs.max(1) - probs[np.arange(len(probs)), lab.given]
    return Scored("small_loss", str(run.path), ce, probs.argmax(1), margin,
                  {"training": train_seconds(run), "scoring": time.perf_counter() - t0})


# ---------------------------------------------------------------------------------------------- K folds
def stratified_folds(labels: np.ndarray, k: int, seed: int) -> np.ndarray:
    """A fold id 0..k-1 per image: each class's images, in a seeded random order, dealt round-robin."""
    rng = np.random.default_rng(seed)
    fold = np.empty(len(labels), dtype=np.int64)
    start = 0
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        fold[idx] = (start + np.arange(len(idx))) % k
        start += len(idx)  # the next class continues the deal, so fold sizes differ by at most one
    return fold


FOLD_TEST_IMAGES = 256


def fold_faceset(fs: FaceSet, train_index: np.ndarray, given: np.ndarray, held_out: np.ndarray) -> FaceSet:
    """The dataset a fold trains on: the training images except the held-out ones, labelled by the noisy labels
    ``given`` (aligned with ``train_index``).

    A fold's only product is its final model's probabilities on the held-out images, so it needs no validation
    split (nothing is selected on it) and only a token test split (the trainer reports a test accuracy every
    epoch): the first ``FOLD_TEST_IMAGES`` test images. Evaluating all of val and test every epoch would cost more
    than the fold's training on a CPU protocol such as cpu-face (7,100 images per epoch against 1,600 trained).
    """
    labels = fs.labels.copy()
    labels[train_index] = given
    keep = np.ones(len(fs), dtype=bool)
    keep[train_index[held_out]] = False
    keep[fs.indices("val")] = False
    keep[fs.indices("test")[FOLD_TEST_IMAGES:]] = False
    noisy = FaceSet(images=fs.images, labels=labels, split=fs.split, names=fs.names, num_classes=fs.num_classes,
                    votes=fs.votes, landmarks=fs.landmarks, landmark_found=fs.landmark_found, name=fs.name,
                    meta=dict(fs.meta))
    return noisy.subset(np.flatnonzero(keep))


@contextmanager
def training_on(faceset: FaceSet) -> Iterator[None]:
    """Make :func:`lanet.train.trainer.train` use ``faceset`` instead of loading its configured dataset.

    The trainer loads data through its module's ``load_faceset``; the fold's data is handed to it there, for
    the duration of the call, so the training loop itself is the project's own, unchanged.
    """
    import lanet.train.trainer as trainer

    if not hasattr(trainer, "load_faceset"):
        raise LanetError("lanet.train.trainer no longer loads data through load_faceset; update audit_compare.py")
    real = trainer.load_faceset
    trainer.load_faceset = lambda cfg: faceset  # type: ignore[assignment]
    try:
        yield
    finally:
        trainer.load_faceset = real  # type: ignore[assignment]


def kfold_probabilities(run: RunData, k: int, work: Path, seed: int, threads: int, batch_size: int,
                        progress: bool) -> tuple[np.ndarray, dict[str, float]]:
    """Out-of-sample probabilities (n x C) of every training image of CE run ``run``, from ``k`` fold runs."""
    from lanet.train.trainer import train

    lab = run.training_labels()
    fs = run.faceset
    folds = stratified_folds(lab.given, k, seed)
    probs = np.full((len(lab.index), fs.num_classes), np.nan)
    compute = {"training": 0.0, "heldout_inference": 0.0}
    for f in range(k):
        d = work / run.name / f"fold{f + 1}of{k}"
        held = np.flatnonzero(folds == f)
        cached = d / "heldout.npz"
        if not (d / "summary.json").is_file():
            cfg = copy.deepcopy(run.cfg)  # the CE run's configuration; the noise is already in the labels
            cfg.noise.type, cfg.noise.rate = "none", 0.0
            cfg.data.labels = ""  # so is the label file's
            if threads:
                cfg.train.threads = threads
            resume = (d / "config.yaml").is_file()
            print(f"== {run.name} fold {f + 1}/{k}: {'resuming' if resume else 'training'} on "
                  f"{len(lab.index) - len(held)} images in {d}", file=sys.stderr, flush=True)
            d.mkdir(parents=True, exist_ok=True)
            _write_json(d / "fold.json", {
                "source_run": str(run.path), "fold": f + 1, "folds": k, "seed": seed,
                "note": "training split = the source run's training split minus the held-out images below, labelled "
                        "with the source run's noisy training labels (so config.yaml says noise none and no "
                        "label file)",
                "held_out": [str(n) for n in fs.names[lab.index[held]]]})
            with training_on(fold_faceset(fs, lab.index, lab.given, held)):
                train(cfg, d, resume=resume, progress=progress)
            cached.unlink(missing_ok=True)
        summary = json.loads((d / "summary.json").read_text())
        compute["training"] += float(summary.get("train_seconds", 0.0))
        if cached.is_file():
            with np.load(cached) as z:
                p, secs = z["probs"], float(z["seconds"])
            if p.shape != (len(held), fs.num_classes):
                raise LanetError(f"{cached} holds {p.shape} probabilities for {len(held)} held-out images; delete it")
        else:
            t0 = time.perf_counter()
            net, _, which = open_run(d).load_model("final")
            if net is None:
                raise LanetError(f"{d}: {which}")
            logits, _ = predict(net, fs.images[lab.index[held]], eval_transform(run), batch_size, features=False)
            p, secs = softmax(logits), time.perf_counter() - t0
            with atomic_open(cached, "wb") as fh:
                np.savez(fh, probs=p, seconds=np.float64(secs))
        probs[held] = p
        compute["heldout_inference"] += secs
    return probs, compute


def score_kfold(run: RunData, probs: np.ndarray, compute: dict[str, float], k: int) -> list[Scored]:
    given = run.training_labels().given
    s = label_scores(probs, given)
    out = [Scored("kfold_self_confidence", str(run.path), s.score, s.suggested, s.margin, dict(compute),
                  {"folds": k})]
    try:
        from cleanlab.filter import find_label_issues
        from cleanlab.rank import get_label_quality_scores
    except ModuleNotFoundError:
        out.append(Scored("cleanlab", str(run.path), np.zeros(0), np.zeros(0), None, {},
                          {"skipped": "cleanlab is not installed (pip install 'lanet[audit-bench]')"}))
        return out
    t0 = time.perf_counter()
    ranked = find_label_issues(given, probs, return_indices_ranked_by="self_confidence")
    quality = get_label_quality_scores(given, probs, method="self_confidence")
    secs = time.perf_counter() - t0
    flagged = np.zeros(len(given), dtype=bool)
    flagged[ranked] = True
    score = flagged.astype(np.float64) + (1.0 - quality)  # flagged first, then by 1 - self-confidence
    margin = np.zeros(len(given))
    margin[ranked] = np.linspace(1.0, 0.0, len(ranked), endpoint=False)  # ties among flagged: cleanlab's order
    import cleanlab

    out.append(Scored("cleanlab", str(run.path), score, s.suggested, margin,
                      {**compute, "cleanlab": secs},
                      {"folds": k, "cleanlab_version": cleanlab.__version__, "flagged": int(flagged.sum()),
                       "_flagged_mask": flagged}))
    return out


# ---------------------------------------------------------------------------------------------- groups
def label_key(run: RunData) -> str:
    data = {k: v for k, v in run.cfg.to_dict()["data"].items() if k not in ("root", "cache_dir")}
    n = run.cfg.noise
    return json.dumps({"data": data, "noise": n.type, "rate": n.rate if n.type in ("symmetric", "asymmetric") else 0,
                       "seed": n.seed if n.seed >= 0 else run.cfg.train.seed}, sort_keys=True)


def _write_json(path: Path, obj: Any) -> None:
    with atomic_open(path, "w") as fh:
        fh.write(json.dumps(obj, indent=2) + "\n")


def compare(run_dirs: list[str], *, folds: int, work: Path, seed: int, threads: int, batch_size: int, root: str,
            progress: bool) -> list[dict[str, Any]]:
    runs = [open_run(d, root=root) for d in run_dirs]
    groups: dict[str, list[RunData]] = {}
    for r in runs:
        if r.summary is None:
            raise LanetError(f"{r.path} has not finished (no summary.json); compare finished runs only")
        groups.setdefault(label_key(r), []).append(r)
    results = []
    for key, members in groups.items():
        ref = members[0].training_labels()
        for r in members[1:]:
            if not np.array_equal(r.training_labels().given, ref.given):
                raise LanetError(f"{r.path} and {members[0].path} share a noise setting but not their training labels")
        fs = members[0].faceset
        votes = fs.votes[ref.index] if fs.votes is not None else None
        scored: list[Scored] = []
        for r in members:
            if r.method == "lanet":
                s = score_lanet(r)
                if s is None:
                    print(f"note: {r.path} has no label distributions; skipped", file=sys.stderr)
                else:
                    scored.append(s)
            elif r.method == "baseline":
                scored.append(score_small_loss(r, batch_size))
                probs, compute = kfold_probabilities(r, folds, work, seed, threads, batch_size, progress)
                scored += score_kfold(r, probs, compute, folds)
            else:
                print(f"note: {r.path}: method {r.method} is not compared (lanet and baseline runs only)",
                      file=sys.stderr)
        rows = []
        for s in scored:
            if "skipped" in s.extra:
                rows.append({"method": s.method, "run": portable_path(s.run), **s.extra})
                continue
            flagged = s.extra.pop("_flagged_mask", None)
            row = evaluate_scores(s, ref.flipped, votes, ref.given, ref.clean)
            if flagged is not None:
                tp = int((flagged & ref.flipped).sum())
                row["flagged_precision"] = tp / max(int(flagged.sum()), 1)
                row["flagged_recall"] = tp / max(int(ref.flipped.sum()), 1)
            rows.append(row)
        k = json.loads(key)
        labels_path = k["data"].get("labels")
        results.append({"labels": {"dataset": k["data"]["name"], "noise": k["noise"], "rate": k["rate"],
                                   "noise_seed": k["seed"], "label_file": ref.label_file or None,
                                   "label_file_path": portable_path(labels_path) if labels_path else None,
                                   "record": ref.noise_type},
                        "images": int(len(ref.index)), "changed": int(ref.flipped.sum()),
                        "realised_noise_rate": float(ref.flipped.mean()), "votes": votes is not None,
                        "runs": [str(r.path) for r in members], "methods": rows})
    return results


def markdown(groups: list[dict[str, Any]]) -> str:
    lines = []
    for g in groups:
        lab = g["labels"]
        what = f"{lab['noise']} {lab['rate']:g}"
        if lab.get("label_file"):
            what = f"label file {lab['label_file']}" + ("" if lab["noise"] == "none" else f" + {what}")
        lines += [f"### {lab['dataset']}, {what}: {g['changed']} of {g['images']} training labels differ from the "
                  "dataset's", "",
                  "| method | precision@100 | precision@1000 | AUROC | vote share of given, top 100 | compute (s) |",
                  "|---|---|---|---|---|---|"]
        for m in g["methods"]:
            if "skipped" in m:
                lines.append(f"| {m['method']} | skipped: {m['skipped']} | | | | |")
                continue

            def f(x: Any) -> str:
                return "–" if x is None else f"{x:.3f}"

            lines.append(f"| {m['method']} | {f(m['precision_at_100'])} | {f(m['precision_at_1000'])} "
                         f"| {f(m['auroc'])} | {f(m.get('vote_share_given_top100'))} | {m['compute_seconds']:.0f} |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="finished lanet and baseline run directories")
    ap.add_argument("--folds", type=int, default=5, help="K of the K-fold out-of-sample probabilities (default 5)")
    ap.add_argument("--work", type=Path, required=True, help="folder for the fold runs (resumable)")
    ap.add_argument("--out", type=Path, required=True, help="JSON results file")
    ap.add_argument("--seed", type=int, default=0, help="seed of the fold assignment")
    ap.add_argument("--threads", type=int, default=0, help="CPU threads for fold training (0: the CE run's setting)")
    ap.add_argument("--batch-size", type=int, default=256, help="inference batch size")
    ap.add_argument("--root", default="", help="dataset folder, if it moved since the runs were trained")
    ap.add_argument("--note", default="", help="what else was running on the machine (recorded in the JSON)")
    ap.add_argument("--quiet", action="store_true", help="no progress bars")
    args = ap.parse_args(argv)
    if args.folds < 2:
        ap.error("--folds must be >= 2")
    argv_list = sys.argv[1:] if argv is None else argv
    t0 = time.time()
    load0 = os.getloadavg()[0]
    try:
        groups = compare(args.run_dirs, folds=args.folds, work=args.work, seed=args.seed, threads=args.threads,
                         batch_size=args.batch_size, root=args.root, progress=not args.quiet)
    except LanetError as exc:
        print(f"audit_compare: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    commit, dirty = git_commit()
    result = {
        "what": "issue 14: finding the flipped training labels: LA-Net's learned label distributions vs the "
                "small-loss criterion on a CE run vs cleanlab's find_label_issues on K-fold out-of-sample CE "
                "probabilities; compute = training-step seconds + scoring seconds on this machine",
        "command": portable_command(["python", "benchmarks/audit_compare.py", *argv_list]),
        "commit": commit, "dirty": dirty, "machine": machine(), "torch": torch.__version__,
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"), "folds": args.folds,
        "fold_seed": args.seed, "wall_seconds": time.time() - t0,
        "note": args.note or "(not given)", "loadavg_1min": [load0, os.getloadavg()[0]],
        "groups": groups,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    _write_json(args.out, result)
    print(markdown(groups))
    print(f"written {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
