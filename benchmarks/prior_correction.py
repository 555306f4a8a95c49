"""How much of a late fall under balanced sampling is the sampler's class prior: saved classifiers re-evaluated.

Progressively balanced sampling (``augment.balanced``) draws class ``c`` at epoch ``e`` of ``E`` with probability
``p_c(e)``, moving from the given labels' frequencies ``pi_c`` to uniform (:mod:`lanet.data.sampler`). A classifier
trained on that stream learns its prior: by the last epoch it predicts the rare classes about as often as the
common ones, while the test split keeps FERPlus's natural, imbalanced distribution. This script re-evaluates each
run's saved classifiers (``model_final.pt``, ``model_val_selected.pt``) on the test split twice:

* as trained (the number the run reported; reproduced here as a check, within 0.05 points);
* with the sampler's prior removed post hoc: logits + log(pi_c) - log(p_c(e)) at the epoch ``e`` the classifier
  was saved after (logit adjustment, Menon et al., ICLR 2021). ``pi`` is the *given* (noisy) training labels'
  class frequencies, known to any user; no clean label is read for it.

It also prints each classifier's share of predictions per class beside the test split's true shares. It trains
nothing and changes nothing in the runs; it is a diagnostic (the adjusted numbers are on test and nothing is
chosen with them).

    python benchmarks/prior_correction.py runs/bench/faithful/table1/{baseline,eac,lanet}-symmetric-0.30-s0 \\
        --out benchmarks/results/faithful/prior_correction.json
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from lanet.data.sampler import class_probabilities
from lanet.errors import LanetError
from lanet.rundata import eval_transform, open_run, predict, read_metrics


def prior_shift(given: np.ndarray, num_classes: int, epoch: int, epochs: int, balanced: bool) -> np.ndarray:
    """``log(pi_c) - log(p_c(epoch))``: what to add to the logits to undo the sampler's prior (zeros without it)."""
    if not balanced:
        return np.zeros(num_classes)
    pi = np.bincount(np.asarray(given, dtype=np.int64), minlength=num_classes).astype(np.float64)
    pi = pi / pi.sum()
    p = class_probabilities(given, num_classes, epoch, epochs)
    with np.errstate(divide="ignore", invalid="ignore"):
        shift = np.log(pi) - np.log(p)
    shift[~np.isfinite(shift)] = 0.0  # a class with no training image: never drawn, never predicted anyway
    return shift


def analyse(run_dir: Path) -> dict:
    run = open_run(run_dir)
    fs = run.faceset
    labels = run.training_labels()
    idx = fs.indices("test")
    truth = fs.labels[idx]
    c = fs.num_classes
    transform = eval_transform(run)
    reported = {m["epoch"]: m.get("test_accuracy") for m in read_metrics(run.path / "metrics.jsonl")}
    out = {"run": run_dir.as_posix(), "method": run.method, "balanced": bool(run.cfg.augment.balanced),
           "test_true_share": (np.bincount(truth, minlength=c) / len(truth)).tolist(), "models": {}}
    for which in ("final", "val_selected"):
        model, meta, _ = run.load_model(which)
        if model is None:
            continue
        epoch = int(meta["epoch"])  # 0-based: the epoch after which the classifier was saved
        logits, _ = predict(model, fs.images[idx], transform, features=False)
        shift = prior_shift(labels.given, c, epoch, run.cfg.train.epochs, out["balanced"])
        plain, adjusted = logits.argmax(1), (logits + shift).argmax(1)
        acc = float((plain == truth).mean())
        if reported.get(epoch) is not None and abs(acc - reported[epoch]) > 5e-4:
            raise LanetError(f"{run_dir}: model_{which}.pt gives {100 * acc:.2f}% on test, the run reported "
                             f"{100 * reported[epoch]:.2f}% at epoch {epoch + 1}: not the same classifier")
        out["models"][which] = {
            "epoch": epoch + 1, "test_accuracy": acc,
            "test_accuracy_prior_corrected": float((adjusted == truth).mean()),
            "prediction_share": (np.bincount(plain, minlength=c) / len(plain)).tolist(),
            "prediction_share_prior_corrected": (np.bincount(adjusted, minlength=c) / len(adjusted)).tolist(),
            "logit_shift": shift.tolist()}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", type=Path, help="finished run directories")
    ap.add_argument("--out", type=Path, default=None, help="JSON file for the numbers")
    args = ap.parse_args(argv)
    try:
        results = [analyse(r) for r in args.runs]
    except LanetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print("| run | model | epoch | test (%) | prior-corrected (%) |\n|---|---|---|---|---|")
    for r in results:
        for which, m in r["models"].items():
            print(f"| {Path(r['run']).name} | {which} | {m['epoch']} | {100 * m['test_accuracy']:.2f} | "
                  f"{100 * m['test_accuracy_prior_corrected']:.2f} |")
    if args.out:
        import torch

        payload = {"note": "test accuracy of each run's saved classifiers as trained and with the balanced "
                   "sampler's class prior removed post hoc (a diagnostic: nothing is chosen on it)",
                   "command": "python benchmarks/prior_correction.py " + " ".join(
                       a.as_posix() if isinstance(a, Path) else a for a in (argv or sys.argv[1:])),
                   "torch": torch.__version__, "date": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
                   "runs": results}
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(payload, indent=1) + "\n", encoding="utf-8")
        print(f"written {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
