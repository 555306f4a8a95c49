"""What the report computes from a run directory before drawing anything: :func:`analyse` loads the run's
dataset, training labels, label distributions and classifier and predicts what the figures need; the small
records the figures and the page pass around (:class:`Figure`, :class:`Skipped`, :class:`Analysis`,
:class:`ReportResult`) and the history helpers (:func:`peak`, :func:`loss_terms`)."""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..audit import auroc, label_scores
from ..errors import LanetError
from ..rundata import RunData, TrainingLabels, predict, softmax

_LOSS_SKIP = ("train_images_per_second", "train_seconds")


@dataclass
class Figure:
    file: str  # relative to the report folder
    title: str
    caption: str


@dataclass
class Skipped:
    title: str
    why: str


@dataclass
class Analysis:
    """One run and what the report computed from it."""

    run: RunData
    slug: str
    model_note: str = ""
    has_model: bool = False
    test_idx: np.ndarray | None = None
    test_logits: np.ndarray | None = None
    test_features: np.ndarray | None = None
    labels: TrainingLabels | None = None
    train_logits: np.ndarray | None = None
    distributions: np.ndarray | None = None
    distributions_note: str = ""
    audit_auroc: float | None = None
    audit_source: str = ""
    data_error: str = ""
    labels_error: str = ""  # why the training labels (noise_changes.csv, noise.json) could not be rebuilt
    items: list[Figure | Skipped] = field(default_factory=list)
    net: Any = None


@dataclass
class ReportResult:
    index: Path
    figures: list[Path]
    skipped: list[tuple[str, str, str]]  # (run, figure, why)


def _log(msg: str, progress: bool) -> None:
    if progress:
        print(f"report: {msg}", file=sys.stderr, flush=True)


def _slugs(runs: list[RunData]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for r in runs:
        base = re.sub(r"[^A-Za-z0-9._-]+", "_", r.name).strip("._") or "run"
        seen[base] = seen.get(base, 0) + 1
        out.append(base if seen[base] == 1 else f"{base}-{seen[base]}")
    return out


def peak(history: list[dict[str, Any]], key: str = "test_accuracy") -> tuple[float, int] | None:
    """(best value, 1-based epoch: the earliest at ties) of ``key`` over the epochs, or None."""
    vals = [(h[key], i + 1) for i, h in enumerate(history) if isinstance(h.get(key), (int, float))]
    if not vals:
        return None
    best = max(v for v, _ in vals)
    return best, min(e for v, e in vals if v == best)


def curve_numbers(history: list[dict[str, Any]]) -> str:
    """The four reporting rules of a run's test accuracy, for a figure legend: final (last epoch), val-selected
    (test accuracy at the best validation epoch, the earliest at ties: the epoch the trainer keeps), peak (the
    best test epoch: a diagnostic) and the mean of the last 5 epochs; those the history cannot give are left out."""
    test = [h.get("test_accuracy") for h in history]
    if not test or not isinstance(test[-1], (int, float)):
        return ""
    parts = [f"final {100 * test[-1]:.2f}%"]
    vals = [(h["val_accuracy"], i) for i, h in enumerate(history) if isinstance(h.get("val_accuracy"), (int, float))]
    if vals:
        best = max(v for v, _ in vals)
        sel = min(i for v, i in vals if v == best)
        if isinstance(test[sel], (int, float)):
            parts.append(f"val-selected {100 * test[sel]:.2f}% @{sel + 1}")
    pk = peak(history)
    if pk:
        parts.append(f"peak {100 * pk[0]:.2f}% @{pk[1]}")
    tail = test[-5:]
    if len(tail) == 5 and all(isinstance(t, (int, float)) for t in tail):
        parts.append(f"last 5 {100 * sum(tail) / 5:.2f}%")
    return ", ".join(parts)


def _same_labels(a: RunData, b: RunData) -> bool:
    na, nb = a.cfg.noise, b.cfg.noise
    return (json_key(a.cfg.to_dict()["data"]) == json_key(b.cfg.to_dict()["data"]) and na.type == nb.type
            and (na.type in ("none", "annotator") or na.rate == nb.rate)
            and (na.seed if na.seed >= 0 else a.cfg.train.seed) == (nb.seed if nb.seed >= 0 else b.cfg.train.seed))


def json_key(d: dict[str, Any]) -> str:
    import json

    return json.dumps({k: v for k, v in d.items() if k not in ("root", "cache_dir")}, sort_keys=True)


def loss_terms(line: dict[str, Any]) -> list[str]:
    """The loss keys of a metrics line: the trainer writes the epoch means of the method's logged losses
    (``train_*``) before ``train_images_per_second``; method diagnostics come after it."""
    keys = list(line)
    end = keys.index("train_images_per_second") if "train_images_per_second" in keys else len(keys)
    return [k for k in keys[:end] if k.startswith("train_") and k not in _LOSS_SKIP]


def analyse(run: RunData, slug: str, *, model: str, device: Any, batch_size: int, progress: bool) -> Analysis:
    """Load the run's dataset, labels and classifier and predict what the figures need: test logits and features,
    and the training images' logits where the run has a noise record. Each input that cannot be read takes only
    the figures that need it, and its reason names the file: a dataset that cannot be loaded leaves only the
    curves; a bad noise record (``noise_changes.csv``) the loss and distribution figures; a bad
    ``label_distributions.npz`` the distribution figure; a bad model file the figures of the classifier."""
    from ..rundata import eval_transform

    a = Analysis(run, slug)
    try:
        fs = run.faceset
    except LanetError as exc:
        a.data_error = f"the run's dataset could not be read ({exc})"
        a.model_note = a.data_error
        return a
    try:
        a.labels = run.training_labels()
    except LanetError as exc:
        a.labels_error = f"the run's training labels could not be rebuilt ({exc})"
        a.distributions_note = a.labels_error
    if a.labels is not None:
        try:
            a.distributions, a.distributions_note = run.label_distributions()
        except LanetError as exc:
            a.distributions_note = str(exc)
    if a.labels is not None and a.labels.has_noise and a.distributions is not None:
        a.audit_auroc = auroc(label_scores(a.distributions, a.labels.given).score, a.labels.flipped)
        a.audit_source = "learned distributions"
    try:
        net, _, a.model_note = run.load_model(model, device)
    except LanetError as exc:
        net, a.model_note = None, str(exc)
    if net is None:
        return a
    tf = eval_transform(run)
    a.has_model, a.net = True, net
    a.test_idx = fs.indices("test")
    _log(f"{run.name}: {len(a.test_idx)} test images through {a.model_note.split(' (')[0]}", progress)
    a.test_logits, a.test_features = predict(net, fs.images[a.test_idx], tf, batch_size, device)
    if a.labels is not None and a.labels.has_noise:
        _log(f"{run.name}: {len(a.labels.index)} training images (per-sample losses)", progress)
        a.train_logits, _ = predict(net, fs.images[a.labels.index], tf, batch_size, device, features=False)
        if a.distributions is None:
            a.audit_auroc = auroc(label_scores(softmax(a.train_logits), a.labels.given).score, a.labels.flipped)
            a.audit_source = "model predictions (in-sample)"
    return a

