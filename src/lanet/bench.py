"""``lanet bench``: the paper's tables as grids of run directories, resumable, rendered from the runs alone.

A *table* is data (:data:`TABLES`): rows (a method and its hyperparameters, e.g. LA-Net's Table 2 switches
or ``K``) times columns (a label-noise setting: type and rate). A *preset* is data too (:data:`PRESETS`):
the configuration every run of a grid shares (dataset, image size, width, batch, epochs, ...) and the default
seeds. ``table x preset x seeds`` expands into :class:`RunSpec` s, one run directory each::

    RUNS/<table>/<method>[-<non-default params>]-<noise>-<rate>-s<seed>/
    e.g. runs/bench/cpu/table1/lanet-symmetric-0.30-s0, runs/bench/cpu/fig2/lanet-K4-none-0.00-s0

Running a grid trains every run that is not finished yet: a finished run (``summary.json``) is skipped, a
partial one (``config.yaml`` written, killed or crashed later) is resumed from its checkpoint, and a run that
raises is recorded (``RUN_DIR/bench_error.txt``, the grid's exit status) while the grid goes on. A run whose
directory name another table of the same preset already finished with the same configuration (Table 2's
full LA-Net row on 30% noise is Table 1's LA-Net run; Figure 2's K=8 likewise) is reused, not retrained.

Rendering reads run directories only (``summary.json``, ``config.yaml``, ``label_distributions.npz``; Table 6
also the dataset's crowd votes) and writes, per table, ``<table>.md``, ``<table>.csv`` and ``<table>.json``
(raw per-run numbers and provenance: machine, torch, preset, git commit, command line, date).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import platform
import re
import shlex
import subprocess
import sys
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from .config import Config, apply_dict, config_from_dict, set_override
from .errors import LanetError
from .fileutil import RunDirectoryBusy, atomic_open, run_lock
from .train.checkpoint import metrics_by_epoch

__all__ = ["PRESETS", "TABLES", "Bench", "Column", "Preset", "Row", "RunSpec", "TableDef", "js_divergence",
           "label_distribution_js", "parse_rates", "run_benchmark"]

ERROR_FILE = "bench_error.txt"  # written into a run directory whose training raised
PROVENANCE_FILE = "bench_run.json"  # who trained the run: machine, commit, command, wall time
LN2 = math.log(2.0)


def train(cfg: Config, out: str | Path, resume: bool = False, progress: bool = True) -> dict[str, Any]:
    """:func:`lanet.train.trainer.train`, imported on first use (``lanet --help`` need not load torch)."""
    from .train.trainer import train as _train

    return _train(cfg, out, resume=resume, progress=progress)


def atomic_write_text(text: str, path: str | Path) -> None:
    with atomic_open(path, "w") as fh:
        fh.write(text)


def atomic_write_json(obj: Any, path: str | Path) -> None:
    atomic_write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", path)


# ============================================================================================== grids as data
@dataclass(frozen=True)
class Row:
    """One row of a table: a method and the hyperparameters it is run with (``method.params``)."""

    label: str
    method: str
    params: tuple[tuple[str, Any], ...] = ()


@dataclass(frozen=True)
class Column:
    """One label-noise setting of a table's training labels."""

    noise: str  # none | symmetric | asymmetric | annotator | label_file (the labels of ``--labels FILE``)
    rate: float = 0.0

    @property
    def label(self) -> str:
        if self.noise == "none":
            return "clean"
        if self.noise == "annotator":
            return "annotator (one vote per image)"
        if self.noise == LABEL_FILE:
            return "label file"
        return f"{self.noise} {100 * self.rate:g}%"


@dataclass(frozen=True)
class TableDef:
    """A table: rows x columns, its caption, and how ``--methods`` / ``--rates`` act on it.

    ``method_rows``: the rows are plain methods, so ``--methods`` replaces them (any registered method);
    otherwise ``--methods`` only keeps the rows whose method is listed. ``rate_noise``: the noise type whose
    columns ``--rates`` replaces (the clean column stays); None when the table has no rate to vary.
    """

    name: str
    title: str
    caption: str
    rows: tuple[Row, ...]
    columns: tuple[Column, ...]
    method_rows: bool = False
    rate_noise: str | None = None


_SWITCHES = ("LD", "LM", "EL", "PL")
LABEL_FILE = "label_file"  # the column of the labelfile table: the training labels of ``--labels FILE``


def _ablation(label: str, on: Sequence[str]) -> Row:
    return Row(label, "lanet", tuple((s, s in on) for s in _SWITCHES))


_PAIR = (Row("baseline", "baseline"), Row("LA-Net", "lanet"))
# the paper's Tables 1 and 5 order: baseline, the peers (SCN, RUL, EAC), LA-Net
_PEERS = (Row("baseline", "baseline"), Row("SCN", "scn"), Row("RUL", "rul"), Row("EAC", "eac"), Row("LA-Net", "lanet"))
_RATES = (0.1, 0.2, 0.3)

TABLES: dict[str, TableDef] = {
    "table1": TableDef(
        "table1", "Table 1 analogue: symmetric label noise",
        "Test accuracy (%) on {dataset} with symmetric training-label noise (with probability r a training label "
        "moves to one of the other classes, uniformly); test labels are clean.",
        _PEERS, tuple(Column("symmetric", r) for r in _RATES), method_rows=True, rate_noise="symmetric"),
    "table5": TableDef(
        "table5", "Table 5 analogue: asymmetric label noise",
        "Test accuracy (%) on {dataset} with asymmetric training-label noise (with probability r a label moves to "
        "its most confusable class: anger→disgust, disgust→anger, fear→surprise, happiness→neutral, "
        "sadness→neutral, surprise→anger, neutral→sadness, contempt→neutral); test labels are clean.",
        _PEERS, tuple(Column("asymmetric", r) for r in _RATES), method_rows=True, rate_noise="asymmetric"),
    "table2": TableDef(
        "table2", "Table 2 analogue: LA-Net component ablation",
        "Test accuracy (%) of LA-Net with its Table 2 switches on {dataset}, clean and with 30% symmetric "
        "training-label noise. LD: label distributions from expression space; LM: landmark space added to label "
        "distribution estimation; EL: expression-landmark contrastive loss; PL: pseudo-labels in the EL loss. "
        "'none' is LA-Net with every switch off (cross-entropy only, i.e. the baseline).",
        (_ablation("none", ()), _ablation("LD", ("LD",)), _ablation("LD+LM", ("LD", "LM")),
         _ablation("LD+LM+EL", ("LD", "LM", "EL")), _ablation("LD+LM+EL+PL", _SWITCHES)),
        (Column("none"), Column("symmetric", 0.3)), rate_noise="symmetric"),
    "fig2": TableDef(
        "fig2", "Figure 2 analogue: neighbours per space K",
        "Test accuracy (%) of LA-Net with K nearest neighbours per space (expression and landmark) on {dataset}, "
        "clean and with 30% symmetric training-label noise (the paper uses K = 8).",
        tuple(Row(f"K={k}", "lanet", (("K", k),)) for k in (4, 8, 12, 16)),
        (Column("none"), Column("symmetric", 0.3)), rate_noise="symmetric"),
    "annotator": TableDef(
        "annotator", "Real human noise: one annotator vote per training image",
        "Test accuracy (%) on {dataset} trained on real human noise: each training label is one of the image's "
        "own annotator votes, drawn in proportion to its votes (noise type annotator). Test labels are the "
        "dataset's own labels ({protocol}). realised noise: fraction of training labels that differ from the "
        "dataset's labels.",
        _PAIR, (Column("annotator"),), method_rows=True),
    "labelfile": TableDef(
        "labelfile", "Real label noise from a second annotation: a label file",
        "Test accuracy (%) on {dataset} trained on the labels of a label file (--labels {label_file}: a second "
        "annotation of the training images, e.g. a cheaper or automatic one; its labels replace the dataset's on "
        "the training images it names, and no noise is injected). Test labels are the dataset's own labels "
        "({protocol}). realised noise: fraction of training labels that differ from the dataset's labels, i.e. "
        "those the file changed.",
        _PAIR, (Column(LABEL_FILE),), method_rows=True),
    "table6": TableDef(
        "table6", "Table 6 analogue: label distributions vs human votes",
        "Jensen–Shannon divergence (natural log: 0 ≤ JS ≤ ln 2 ≈ 0.693) on every training image of {dataset} "
        "between the human label distribution (the image's annotator votes divided by their sum) and: the label "
        "distribution LA-Net learned (its final EMA targets, label_distributions.npz); the one-hot training label "
        "the run was given (after noise); a control: that training label smoothed uniformly until its mean "
        "confidence equals the learned distributions' mean maximum (as soft, but carrying no information: learned "
        "below it means LDE moved probability towards the classes people chose); the one-hot dataset label. "
        "Averaged over the training images with votes, then mean ± sample std over seeds. Rows: every LA-Net run "
        "of this preset with saved label distributions, from any table; this table's own grid is LA-Net on clean "
        "and annotator labels. (The paper's Table 6 compares 50 AffectNet images with a user study.)",
        (Row("LA-Net", "lanet"),), (Column("none"), Column("annotator"))),
}
TABLE_ORDER: tuple[str, ...] = tuple(TABLES)

_ACCURACY_NOTE = ("final: test accuracy after the last epoch; val-selected: test accuracy at the epoch with the best "
                  "validation accuracy (never chosen on test); mean ± sample standard deviation over seeds (no ± "
                  "with one seed); seeds: number of finished runs in the row; realised noise: mean fraction of "
                  "training labels that differ from the dataset's labels.")


_MECHANISM_NOTE = ("peak on test: the best test accuracy over epochs and where it fell (chosen on test, so a "
                   "memorisation diagnostic only: a final far below it means the method memorised noisy labels). "
                   "Label-correction columns (LA-Net, final epoch, over the training images seen that epoch): "
                   "flipped → clean: share of images whose training label was flipped whose EMA target's argmax is "
                   "the clean label; clean moved: share of correctly labelled images whose target's argmax left "
                   "their label; the same two for the confident pseudo-labels of eq. 8; pair precision: share of "
                   "EL positive pairs (other than a sample's own view) whose two images share the clean label.")


@dataclass(frozen=True)
class Preset:
    """The configuration shared by every run of a grid (nested dict applied onto the defaults) and its seeds."""

    name: str
    description: str
    config: dict[str, Any]
    seeds: tuple[int, ...]


PRESETS: dict[str, Preset] = {
    "smoke": Preset(
        "smoke", "seconds on one CPU thread: 300 synthetic faces at 32 px, ResNet-18 at width 16, 1 epoch; "
        "proves the harness end to end (CI runs it through tests/test_bench.py)",
        {"data": {"name": "synthetic", "synthetic_size": 300, "load_size": 32, "image_size": 32},
         "model": {"arch": "resnet18", "width": 16},
         "train": {"epochs": 1, "batch_size": 32, "lr": 1e-3, "threads": 1, "device": "cpu",
                   "eval_batch_size": 256, "log_every": 5}},
        (0, 1)),
    "cpu": Preset(
        "cpu", "a 2-core CPU: all of FERPlus at its native 48 px, ResNet-18 at width 32, batch 64, 5 epochs "
        "(a baseline + LA-Net pair at one noise level in well under 90 minutes)",
        {"data": {"name": "ferplus", "root": "../shared/data/ferplus", "image_size": 48},
         "model": {"arch": "resnet18", "width": 32},
         "train": {"epochs": 5, "batch_size": 64, "lr": 1e-3, "device": "auto", "eval_batch_size": 512}},
        (0,)),
    "cpu-face": Preset(
        "cpu-face", "a 2-core CPU where label noise bites: the first 2,000 FERPlus training images (val and test "
        "complete), dlib's face ResNet (small variant, face-recognition weights, installs offline) at 64 px, "
        "batch 64, Adam 3e-4 decayed linearly to 0, 40 epochs, so cross-entropy peaks and then memorises the "
        "noisy labels (a baseline run about 9 minutes, LA-Net about 15)",
        {"data": {"name": "ferplus", "root": "../shared/data/ferplus", "image_size": 64, "train_limit": 2000},
         "model": {"arch": "dlib_resnet_small", "pretrained": "dlib"},
         "train": {"epochs": 40, "batch_size": 64, "lr": 3e-4, "device": "auto"}},
        (0, 1, 2)),
    "paper": Preset(
        "paper", "the paper's recipe for GPUs: FERPlus at 224 px RGB, ResNet-18 (width 64), batch 128, 80 epochs, "
        "Adam 1e-3 decayed linearly to 0, progressively balanced sampling (set -o model.pretrained=FILE for "
        "MS-Celeb-1M weights)",
        {"data": {"name": "ferplus", "root": "../shared/data/ferplus", "image_size": 224, "channels": 3},
         "augment": {"balanced": True},
         "model": {"arch": "resnet18", "width": 64},
         "train": {"epochs": 80, "batch_size": 128, "lr": 1e-3, "device": "auto", "amp": True,
                   "eval_batch_size": 512}},
        (0, 1, 2)),
}

# configuration keys that do not change a run's numbers: ignored when a run directory is matched to a spec
_IGNORED_KEYS = {"train.device", "train.threads", "train.log_every", "data.root", "data.cache_dir"}


# ============================================================================================== run specs
def _fmt_value(v: Any) -> str:
    if isinstance(v, bool):
        return "1" if v else "0"
    return str(v)


@dataclass(frozen=True)
class RunSpec:
    """One run of a grid. ``params`` holds only the method hyperparameters that differ from its defaults."""

    table: str
    row: str
    method: str
    params: tuple[tuple[str, Any], ...]
    noise: str
    rate: float
    seed: int

    @property
    def prefix(self) -> str:
        """The run directory name without the seed: ``lanet-K4-symmetric-0.30``."""
        tag = "".join(f"-{k}{_fmt_value(v)}" for k, v in self.params)
        return f"{self.method}{tag}-{self.noise}-{self.rate:.2f}"

    @property
    def name(self) -> str:
        return f"{self.prefix}-s{self.seed}"

    @property
    def column(self) -> Column:
        return Column(self.noise, self.rate)


def _canonical_params(method: str, params: Sequence[tuple[str, Any]]) -> tuple[tuple[str, Any], ...]:
    """Drop the hyperparameters equal to the method's defaults (so equal runs get equal names)."""
    from .methods.registry import get_method_class

    defaults = get_method_class(method).Params()
    out = []
    for k, v in params:
        if not hasattr(defaults, k):
            raise LanetError(f"method {method!r} has no hyperparameter {k!r}")
        if getattr(defaults, k) != v:
            out.append((k, v))
    return tuple(out)


def parse_rates(text: str | Sequence[float] | None) -> list[float] | None:
    """``"0.1,0.2"`` (or a list) -> ``[0.1, 0.2]``; rates lie in [0, 1), 0 meaning the clean column."""
    if text is None or text == "":
        return None
    items = text.split(",") if isinstance(text, str) else list(text)
    rates = []
    for item in items:
        try:
            r = float(item)
        except (TypeError, ValueError) as exc:
            raise LanetError(f"--rates: {item!r} is not a number") from exc
        if not 0.0 <= r < 1.0:
            raise LanetError(f"--rates: {r} is outside [0, 1) (0 = clean labels)")
        rates.append(r)
    return rates


def table_layout(table: str, methods: Sequence[str] | None = None,
                 rates: Sequence[float] | None = None) -> tuple[list[Row], list[Column]]:
    """The rows and columns of ``table`` after the ``--methods`` and ``--rates`` selections."""
    t = get_table(table)
    rows = list(t.rows)
    if methods:
        from .methods.registry import get_method_class

        for m in methods:
            get_method_class(m)  # unknown method -> LanetError naming the available ones
        if t.method_rows:
            by_method = {r.method: r for r in t.rows}
            rows = [by_method.get(m, Row(m, m)) for m in methods]
        else:
            rows = [r for r in rows if r.method in methods]
    cols = list(t.columns)
    if rates and t.rate_noise:
        # rate 0 is the clean reference column (e.g. CE on clean labels at the same budget)
        cols = [c for c in cols if c.noise != t.rate_noise and not (c.noise == "none" and 0 in rates)]
        cols = ([Column("none")] if 0 in rates else []) + cols
        cols += [Column(t.rate_noise, float(r)) for r in rates if r > 0]
    return rows, cols


def _file_tables() -> list[str]:
    return [n for n, t in TABLES.items() if any(c.noise == LABEL_FILE for c in t.columns)]


def get_table(name: str) -> TableDef:
    if name not in TABLES:
        raise LanetError(f"unknown table {name!r}; available: {', '.join(TABLE_ORDER)} (or all)")
    return TABLES[name]


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise LanetError(f"unknown preset {name!r}; available: {', '.join(PRESETS)}")
    return PRESETS[name]


def expand_tables(names: Sequence[str]) -> list[str]:
    """Validate table names; ``all`` stands for every table. Duplicates are dropped, order kept."""
    if not names:
        raise LanetError(f"name at least one table: {', '.join(TABLE_ORDER)} (or all)")
    out: list[str] = []
    for n in names:
        for t in (TABLE_ORDER if n == "all" else (get_table(n).name,)):
            if t not in out:
                out.append(t)
    return out


def grid(table: str, seeds: Sequence[int], methods: Sequence[str] | None = None,
         rates: Sequence[float] | None = None) -> list[RunSpec]:
    """The run specs of ``table``: columns x rows x seeds (in that order, so seeds of a cell run together)."""
    rows, cols = table_layout(table, methods, rates)
    specs = []
    for col in cols:
        for row in rows:
            params = _canonical_params(row.method, row.params)
            for seed in seeds:
                specs.append(RunSpec(table, row.label, row.method, params, col.noise, col.rate, int(seed)))
    return specs


# ============================================================================================== provenance
def git_commit() -> tuple[str, bool | None]:
    """(short commit of the lanet source tree, whether it has uncommitted changes); ("unknown", None) outside git."""
    here = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "-C", str(here), "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, timeout=10)
        if commit.returncode != 0 or not commit.stdout.strip():
            return "unknown", None
        dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10)
        return commit.stdout.strip(), bool(dirty.stdout.strip()) if dirty.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return "unknown", None


def machine() -> dict[str, Any]:
    """The machine: OS, CPU model and the cores this process may use (``nproc``), GPU if any."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        nproc = len(os.sched_getaffinity(0))
    except AttributeError:
        nproc = os.cpu_count() or 0
    gpu = None
    try:
        import torch

        if torch.cuda.is_available():
            gpu = torch.cuda.get_device_name(0)
    except Exception:  # noqa: BLE001 - provenance must never fail a run
        gpu = None
    return {"platform": platform.platform(), "cpu": cpu, "nproc": nproc, "gpu": gpu,
            "python": platform.python_version()}


def provenance(preset: str, command: str) -> dict[str, Any]:
    import torch

    commit, dirty = git_commit()
    return {"machine": machine(), "torch": torch.__version__, "preset": preset, "commit": commit,
            "uncommitted_changes": dirty, "command": command,
            "date": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}


def _machine_text(m: dict[str, Any]) -> str:
    text = f"{m.get('cpu', '?')}, {m.get('nproc', '?')} CPU cores"
    if m.get("gpu"):
        text += f", GPU {m['gpu']}"
    return f"{text} ({m.get('platform', '?')})"


# ============================================================================================== JS divergence
def _kl_rows(p: np.ndarray, m: np.ndarray) -> np.ndarray:
    pos = p > 0
    ratio = np.where(pos, p, 1.0) / np.where(pos, m, 1.0)
    return np.where(pos, p * np.log(ratio), 0.0).sum(-1)


def js_divergence(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Jensen–Shannon divergence (eq. 15, natural log) between the distributions in the last axis of ``p`` and ``q``.

    Rows are normalised to sum to 1 first. ``0 <= JS <= ln 2``; ``JS([1, 0], [0, 1]) = ln 2``.
    """
    p = np.asarray(p, dtype=np.float64)
    q = np.asarray(q, dtype=np.float64)
    if p.shape != q.shape:
        raise ValueError(f"shapes differ: {p.shape} vs {q.shape}")
    if (p < 0).any() or (q < 0).any():
        raise ValueError("distributions must be non-negative")
    p = p / np.maximum(p.sum(-1, keepdims=True), 1e-300)
    q = q / np.maximum(q.sum(-1, keepdims=True), 1e-300)
    m = 0.5 * (p + q)
    return 0.5 * _kl_rows(p, m) + 0.5 * _kl_rows(q, m)


def label_distribution_js(run_dir: str | Path, faceset: Any) -> dict[str, Any]:
    """Mean JS divergences of one LA-Net run's training images against their human vote distributions.

    Reads ``label_distributions.npz`` (``distributions``, ``train_labels``, ``names``) and matches its rows to
    ``faceset``'s training images by name. Images without votes are left out (``images_without_votes``).
    """
    path = Path(run_dir) / "label_distributions.npz"
    if faceset.votes is None:
        raise LanetError(f"dataset {faceset.name!r} has no annotator votes; Table 6 needs them")
    with np.load(path, allow_pickle=False) as z:
        dist, train_labels, names = z["distributions"], z["train_labels"], z["names"]
    train_idx = faceset.indices("train")
    if len(names) == len(dist):
        where = {str(n): int(i) for n, i in zip(faceset.names[train_idx], train_idx)}
        missing = [str(n) for n in names if str(n) not in where]
        if missing:
            raise LanetError(f"{path}: {len(missing)} image names (e.g. {missing[0]!r}) are not training images "
                             f"of {faceset.name}; was the dataset changed since the run?")
        idx = np.array([where[str(n)] for n in names], dtype=np.int64)
    elif len(dist) == len(train_idx):
        idx = train_idx  # no names saved: the training-split order
    else:
        raise LanetError(f"{path}: {len(dist)} distributions for {len(train_idx)} training images and no names")
    c = faceset.num_classes
    if dist.shape[1] != c:
        raise LanetError(f"{path}: {dist.shape[1]} classes, dataset has {c}")
    # rows are normalised before anything is read off them: runs made before the eq. 4 fix saved rows that sum
    # to 0.2-0.4, whose maximum would make the smoothed control far too soft; the raw sums are reported
    dist = np.asarray(dist, dtype=np.float64)
    if (dist < 0).any() or not np.isfinite(dist).all():
        raise LanetError(f"{path}: label distributions hold negative or non-finite values")
    row_sum = dist.sum(1)
    if (row_sum <= 0).any():
        raise LanetError(f"{path}: {int((row_sum <= 0).sum())} label distributions are all zero")
    dist = dist / row_sum[:, None]
    votes = faceset.votes[idx].astype(np.float64)
    has = votes.sum(1) > 0
    human = votes[has] / votes[has].sum(1, keepdims=True)
    eye = np.eye(c)
    js_learned = js_divergence(dist[has], human)
    js_train = js_divergence(eye[np.asarray(train_labels)[has]], human)
    js_dataset = js_divergence(eye[faceset.labels[idx][has]], human)
    # control: the training label smoothed uniformly until its mean confidence equals the learned distributions'
    # (a softer target with no information in it); learned < smoothed means LDE moved mass to the right classes
    mean_max = float(dist[has].max(1).mean()) if has.any() else 1.0
    eps = min(max((1.0 - mean_max) * c / (c - 1), 0.0), 1.0)
    smoothed = (1.0 - eps) * eye[np.asarray(train_labels)[has]] + eps / c
    js_smoothed = js_divergence(smoothed, human)
    return {"js_learned": float(js_learned.mean()), "js_onehot_train": float(js_train.mean()),
            "js_smoothed_train": float(js_smoothed.mean()), "smoothing_epsilon": eps,
            "learned_mean_max": mean_max,
            "saved_row_sum_min": float(row_sum.min()), "saved_row_sum_max": float(row_sum.max()),
            "js_onehot_dataset": float(js_dataset.mean()), "images": int(has.sum()),
            "images_without_votes": int((~has).sum()),
            "train_label_differs_from_dataset": float((np.asarray(train_labels) != faceset.labels[idx]).mean())}


# ============================================================================================== statistics
def mean_std(values: Sequence[float]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (ddof 1); std is None for one value, both None for none."""
    v = [float(x) for x in values if x is not None]
    if not v:
        return None, None
    mean = float(np.mean(v))
    return mean, (float(np.std(v, ddof=1)) if len(v) > 1 else None)


def _pm(mean: float | None, std: float | None, scale: float = 100.0, digits: int = 2) -> str:
    if mean is None:
        return "–"
    text = f"{scale * mean:.{digits}f}"
    return text if std is None else f"{text} ± {scale * std:.{digits}f}"


def _num(x: float | None, scale: float = 1.0, digits: int = 6) -> str:
    return "" if x is None else f"{scale * x:.{digits}f}"


# ============================================================================================== the harness
@dataclass
class Outcome:
    """What happened to one spec when the grid ran (or would run, for a dry run)."""

    spec: RunSpec
    run_dir: Path
    status: str  # finished | reused | trained | resumed | failed | stale | busy | new | partial (last two: dry run)
    message: str = ""
    seconds: float = 0.0


@dataclass
class Bench:
    """A preset's runs folder plus everything that turns a :class:`RunSpec` into a configuration."""

    preset: Preset
    runs_root: Path
    root: str | None = None
    device: str | None = None
    overrides: Sequence[str] = ()
    progress: bool = True
    command: str = ""
    labels: str | None = None  # the label file of the label_file columns (``--labels FILE``)
    _facesets: dict[str, Any] = field(default_factory=dict, repr=False)

    # ------------------------------------------------------------------ configuration
    def config(self, spec: RunSpec) -> Config:
        cfg = Config()
        apply_dict(cfg, json.loads(json.dumps(self.preset.config)))
        if self.root is not None:
            cfg.data.root = self.root
        if cfg.data.root and cfg.data.name != "synthetic":
            cfg.data.root = str(Path(cfg.data.root).expanduser().resolve())
        cfg.method.name = spec.method
        cfg.method.params = dict(spec.params)
        cfg.noise.type, cfg.noise.rate, cfg.noise.seed = spec.noise, float(spec.rate), -1
        if spec.noise == LABEL_FILE:  # the file's labels, nothing injected on top
            if not self.labels:
                raise LanetError(f"table {spec.table} trains on a label file: pass --labels FILE.csv (header "
                                 "name,label; the same file again when rendering)")
            cfg.data.labels = str(Path(self.labels).expanduser().resolve())
            cfg.noise.type, cfg.noise.rate = "none", 0.0
        cfg.train.seed = spec.seed
        if self.device:
            cfg.train.device = self.device
        for item in self.overrides:
            set_override(cfg, item)
        return cfg

    def run_dir(self, spec: RunSpec) -> Path:
        return self.runs_root / spec.table / spec.name

    @staticmethod
    def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in d.items():
            key = f"{prefix}{k}"
            if isinstance(v, dict) and key != "method.params":
                out.update(Bench._flat(v, f"{key}."))
            else:
                out[key] = v
        return out

    def config_differences(self, run_dir: Path, cfg: Config) -> list[str]:
        """Keys whose values differ between ``run_dir/config.yaml`` and ``cfg`` (device, threads, root ignored)."""
        try:
            saved = config_from_dict(yaml.safe_load((run_dir / "config.yaml").read_text()) or {}).to_dict()
        except (OSError, yaml.YAMLError, LanetError) as exc:
            return [f"config.yaml unreadable ({exc})"]
        want = config_from_dict(yaml.safe_load(yaml.safe_dump(cfg.to_dict()))).to_dict()
        a, b = self._flat(saved), self._flat(want)
        return [f"{k}: run has {a.get(k)!r}, grid wants {b.get(k)!r}" for k in sorted(set(a) | set(b))
                if k not in _IGNORED_KEYS and a.get(k) != b.get(k)]

    # ------------------------------------------------------------------ locating runs
    def locate(self, spec: RunSpec) -> tuple[Path | None, str]:
        """The finished run directory holding ``spec``: its own, else another table's with the same name and
        configuration. Returns (directory or None, reason when its own directory holds a different run)."""
        cfg = self.config(spec)
        own = self.run_dir(spec)
        note = ""
        if (own / "summary.json").is_file():
            diff = self.config_differences(own, cfg)
            if not diff:
                return own, ""
            note = "configuration differs: " + "; ".join(diff[:3])
        if self.runs_root.is_dir():
            for other in sorted(p for p in self.runs_root.iterdir() if p.is_dir() and p.name != spec.table):
                cand = other / spec.name
                if (cand / "summary.json").is_file() and not self.config_differences(cand, cfg):
                    return cand, ""
        return None, note

    def found_seeds(self, specs: Sequence[RunSpec]) -> set[int]:
        """Seeds for which a run directory named like one of ``specs`` (any seed) exists in any table folder."""
        prefixes = {s.prefix for s in specs}
        seeds: set[int] = set()
        if not self.runs_root.is_dir():
            return seeds
        for table_dir in self.runs_root.iterdir():
            if not table_dir.is_dir():
                continue
            for d in table_dir.iterdir():
                m = re.fullmatch(r"(.+)-s(\d+)", d.name)
                if m and m.group(1) in prefixes and (d / "summary.json").is_file():
                    seeds.add(int(m.group(2)))
        return seeds

    def plan(self, spec: RunSpec) -> Outcome:
        """What running ``spec`` would do now: finished | reused | stale | partial | failed | new."""
        own = self.run_dir(spec)
        found, note = self.locate(spec)
        if found is not None:
            return Outcome(spec, found, "finished" if found == own else "reused",
                           "" if found == own else f"reuses {found.parent.name}/{found.name}")
        if note:
            return Outcome(spec, own, "stale", note + f"; delete {own} or choose another --runs")
        if (own / "config.yaml").is_file():
            diff = self.config_differences(own, self.config(spec))
            if diff:
                return Outcome(spec, own, "stale", "configuration differs: " + "; ".join(diff[:3]) +
                               f"; delete {own} or choose another --runs")
            return Outcome(spec, own, "partial", "resumes from its checkpoint" if (own / "checkpoint.pt").is_file()
                           else "restarts (no finished epoch)")
        if (own / ERROR_FILE).is_file():
            return Outcome(spec, own, "failed", "failed before; retried")
        return Outcome(spec, own, "new")

    # ------------------------------------------------------------------ running
    def run(self, spec: RunSpec) -> Outcome:
        """Train ``spec`` unless finished; resume a partial run; record (not raise) a crash. The run directory
        is locked throughout, so a second grid on the same runs skips it (``busy``) instead of writing it too."""
        planned = self.plan(spec)
        if planned.status in ("finished", "reused", "stale"):
            return planned
        own = planned.run_dir
        try:
            with run_lock(own):
                return self._run_locked(spec)  # plans again: another grid may have finished it meanwhile
        except RunDirectoryBusy as exc:
            return Outcome(spec, own, "busy", str(exc))

    def _run_locked(self, spec: RunSpec) -> Outcome:
        planned = self.plan(spec)
        if planned.status in ("finished", "reused", "stale"):
            return planned
        own = planned.run_dir
        resume = planned.status == "partial"
        record = {"spec": _spec_dict(spec), "preset": self.preset.name, "started": _now(), "resumed": resume}
        record.update(provenance(self.preset.name, self.command))
        atomic_write_json(record, own / PROVENANCE_FILE)
        t0 = time.time()
        try:
            train(self.config(spec), own, resume=resume, progress=self.progress)
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # noqa: BLE001 - one crashed run must not stop the grid
            atomic_write_text(f"{type(exc).__name__}: {exc}\n\n{traceback.format_exc()}", own / ERROR_FILE)
            return Outcome(spec, own, "failed", f"{type(exc).__name__}: {exc}", time.time() - t0)
        (own / ERROR_FILE).unlink(missing_ok=True)
        record.update({"finished": _now(), "wall_seconds": round(time.time() - t0, 2)})
        atomic_write_json(record, own / PROVENANCE_FILE)
        return Outcome(spec, own, "resumed" if resume else "trained", "", time.time() - t0)

    # ------------------------------------------------------------------ datasets (Table 6 votes)
    def faceset_for(self, run_dir: Path) -> Any:
        from .data.loaders import load_faceset

        cfg = config_from_dict(yaml.safe_load((run_dir / "config.yaml").read_text()) or {})
        if self.root is not None and cfg.data.name != "synthetic":
            cfg.data.root = str(Path(self.root).expanduser().resolve())
        key = json.dumps(cfg.to_dict()["data"], sort_keys=True)
        if key not in self._facesets:
            self._facesets[key] = load_faceset(cfg.data)
        return self._facesets[key]


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _spec_dict(spec: RunSpec) -> dict[str, Any]:
    return {"table": spec.table, "row": spec.row, "method": spec.method, "params": dict(spec.params),
            "noise": spec.noise, "rate": spec.rate, "seed": spec.seed, "name": spec.name}


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


# ============================================================================================== rendering
@dataclass
class Rendered:
    table: str
    markdown: str
    csv: str
    data: dict[str, Any]


def _protocol_text(cfg: dict[str, Any] | None, dataset: str) -> str:
    if dataset == "ferplus" and cfg:
        proto = cfg.get("data", {}).get("protocol", "paper")
        if proto == "majority":
            return "FERPlus majority protocol: single votes dropped, the top emotion holds more than half the rest"
        return ("FERPlus paper protocol: the majority (plurality) vote, i.e. the class with the most of the 10 "
                "votes")
    if dataset == "synthetic":
        return "synthetic: the class the face was generated from"
    return "the dataset's own labels"


def _provenance_lines(prov: dict[str, Any], trained_on: list[str]) -> list[str]:
    commit = prov["commit"] + (" (with uncommitted changes)" if prov.get("uncommitted_changes") else "")
    lines = [f"- preset `{prov['preset']}`, commit `{commit}`, torch {prov['torch']}, rendered {prov['date']}",
             f"- rendered on: {_machine_text(prov['machine'])}",
             f"- command: `{prov['command']}`"]
    if trained_on:
        lines.append("- runs trained on: " + "; ".join(trained_on))
    return lines


def _run_record(spec: RunSpec, run_dir: Path) -> dict[str, Any]:
    s = _read_json(run_dir / "summary.json") or {}
    rec = _spec_dict(spec)
    rec.update({"run_dir": str(run_dir), "dataset": s.get("dataset"),
                "test_accuracy": s.get("test_accuracy"),
                "test_accuracy_val_selected": s.get("test_accuracy_val_selected"),
                "val_selected_epoch": s.get("val_selected_epoch"),
                "realised_noise_rate": s.get("realised_noise_rate"), "epochs": s.get("epochs"),
                "mean_class_accuracy": s.get("mean_class_accuracy"),
                "mean_class_accuracy_val_selected": (s.get("val_selected") or {}).get("mean_class_accuracy"),
                "train_seconds": s.get("train_seconds"),
                "num_train": s.get("num_train"), "num_test": s.get("num_test"), "device": s.get("device"),
                "torch": s.get("torch")})
    rec.update(_trajectory(run_dir))
    trained = _read_json(run_dir / PROVENANCE_FILE)
    if trained:
        rec["trained_by"] = {k: trained.get(k) for k in ("machine", "commit", "uncommitted_changes", "command",
                                                         "started", "finished", "wall_seconds")}
    return rec


# per-epoch diagnostics of label correction (LA-Net's, see methods/lanet.py), read at the final epoch
MECHANISM_KEYS = ("target_corrects_flipped", "target_moves_clean", "pseudo_corrects_flipped", "pseudo_moves_clean",
                  "positive_pair_precision")


def _trajectory(run_dir: Path) -> dict[str, Any]:
    """From metrics.jsonl: the peak test accuracy and its epoch (a memorisation diagnostic, never a headline: it
    is chosen on test), and the final epoch's label-correction diagnostics where the method logs them."""
    path = run_dir / "metrics.jsonl"
    try:
        by_epoch = metrics_by_epoch(path)
    except (OSError, LanetError):
        return {}
    hist = [by_epoch[e] for e in sorted(by_epoch)]
    if not hist:
        return {}
    peak = max(range(len(hist)), key=lambda i: (hist[i].get("test_accuracy", -1.0), -i))
    out: dict[str, Any] = {"peak_test_accuracy": hist[peak].get("test_accuracy"), "peak_epoch": peak + 1,
                           "test_accuracy_per_epoch": [h.get("test_accuracy") for h in hist]}
    for k in MECHANISM_KEYS:
        if k in hist[-1]:
            out[k] = hist[-1][k]
    return out


def _trained_on(runs: list[dict[str, Any]]) -> list[str]:
    seen: list[str] = []
    for r in runs:
        tb = r.get("trained_by") or {}
        if tb.get("machine"):
            text = f"{_machine_text(tb['machine'])}, commit `{tb.get('commit')}`"
            if text not in seen:
                seen.append(text)
    return seen


def render_accuracy_table(bench: Bench, table: str, seeds: Sequence[int] | None,
                          methods: Sequence[str] | None, rates: Sequence[float] | None,
                          prov: dict[str, Any]) -> Rendered:
    """Mean ± std over seeds of the final and validation-selected test accuracy, from run directories only."""
    t = get_table(table)
    base = grid(table, [0], methods, rates)
    use_seeds = sorted(set(seeds) if seeds else set(bench.preset.seeds) | bench.found_seeds(base))
    runs: list[dict[str, Any]] = []
    missing, failed, stale = [], [], []
    rows_out = []
    dataset, cfg0 = None, None
    for b in base:
        cell_runs = []
        for seed in use_seeds:
            spec = RunSpec(b.table, b.row, b.method, b.params, b.noise, b.rate, seed)
            found, note = bench.locate(spec)
            own = bench.run_dir(spec)
            if found is None:
                if note:
                    stale.append(f"{own} ({note})")
                elif (own / ERROR_FILE).is_file():
                    first = (own / ERROR_FILE).read_text().splitlines()[:1]
                    failed.append(f"{spec.name}: {first[0] if first else 'failed'}")
                else:
                    missing.append(spec.name)
                continue
            rec = _run_record(spec, found)
            dataset = dataset or rec.get("dataset")
            if cfg0 is None:
                cfg0 = yaml.safe_load((found / "config.yaml").read_text())
            cell_runs.append(rec)
            runs.append(rec)
        fin_m, fin_s = mean_std([r["test_accuracy"] for r in cell_runs])
        sel = [r["test_accuracy_val_selected"] for r in cell_runs if r["test_accuracy_val_selected"] is not None]
        sel_m, sel_s = mean_std(sel)
        noise_m, _ = mean_std([r["realised_noise_rate"] for r in cell_runs])
        peak_m, peak_s = mean_std([r["peak_test_accuracy"] for r in cell_runs
                                   if r.get("peak_test_accuracy") is not None])
        mech = {f"{k}_mean": mean_std([r[k] for r in cell_runs if r.get(k) is not None])[0] for k in MECHANISM_KEYS}
        rows_out.append({**mech, "peak_test_accuracy_mean": peak_m, "peak_test_accuracy_std": peak_s,
                         "peak_epochs": [r.get("peak_epoch") for r in cell_runs],
                         "row": b.row, "method": b.method, "params": dict(b.params), "noise": b.noise,
                         "rate": b.rate, "training_labels": b.column.label, "seeds": len(cell_runs),
                         "seed_list": [r["seed"] for r in cell_runs],
                         "test_accuracy_mean": fin_m, "test_accuracy_std": fin_s,
                         "val_selected_mean": sel_m, "val_selected_std": sel_s, "val_selected_seeds": len(sel),
                         "realised_noise_rate_mean": noise_m})
    dataset = dataset or bench.preset.config["data"]["name"]
    caption = t.caption.format(dataset=dataset, protocol=_protocol_text(cfg0, dataset),
                               label_file=Path(bench.labels).name if bench.labels else "FILE") + " " + _ACCURACY_NOTE
    md = [f"### {t.title} ({table}, preset {bench.preset.name})", "", caption, "",
          "| row | training labels | final (%) | val-selected (%) | seeds | realised noise | peak on test (%) @ epoch "
          "| flipped → clean | clean moved | pseudo: flipped → clean | pseudo: clean moved | pair precision |",
          "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows_out:
        noise = "–" if r["realised_noise_rate_mean"] is None else f"{100 * r['realised_noise_rate_mean']:.1f}%"
        epochs = "/".join(str(e) for e in r["peak_epochs"] if e is not None) or "–"
        mech = " | ".join("–" if r[f"{k}_mean"] is None else f"{100 * r[f'{k}_mean']:.1f}%" for k in MECHANISM_KEYS)
        md.append(f"| {r['row']} | {r['training_labels']} | {_pm(r['test_accuracy_mean'], r['test_accuracy_std'])} "
                  f"| {_pm(r['val_selected_mean'], r['val_selected_std'])} | {r['seeds']} | {noise} "
                  f"| {_pm(r['peak_test_accuracy_mean'], r['peak_test_accuracy_std'])} @ {epochs} | {mech} |")
    md.append("")
    md.append(_MECHANISM_NOTE)
    md.append("")
    for title, items in (("missing runs", missing), ("failed runs", failed), ("excluded runs", stale)):
        if items:
            md.append(f"{title}: " + ", ".join(items))
            md.append("")
    md += _provenance_lines(prov, _trained_on(runs))
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["table", "row", "method", "params", "noise", "rate", "seeds", "seed_list",
                "test_accuracy_mean_pct", "test_accuracy_std_pct", "val_selected_mean_pct", "val_selected_std_pct",
                "val_selected_seeds", "realised_noise_rate_mean"])
    for r in rows_out:
        w.writerow([table, r["row"], r["method"], json.dumps(r["params"]), r["noise"], f"{r['rate']:.2f}",
                    r["seeds"], " ".join(map(str, r["seed_list"])),
                    _num(r["test_accuracy_mean"], 100), _num(r["test_accuracy_std"], 100),
                    _num(r["val_selected_mean"], 100), _num(r["val_selected_std"], 100), r["val_selected_seeds"],
                    _num(r["realised_noise_rate_mean"])])
    data = {"table": table, "title": t.title, "caption": caption, "dataset": dataset, "provenance": prov,
            "rows": rows_out, "runs": runs, "missing": missing, "failed": failed, "excluded": stale}
    if any(c.noise == LABEL_FILE for c in t.columns) and bench.labels:
        data["label_file"] = label_file_provenance(bench.labels)
    return Rendered(table, "\n".join(md) + "\n", buf.getvalue(), data)


def label_file_provenance(path: str | Path) -> dict[str, Any]:
    """The label file a table was trained on: its path, rows and SHA-256 (so a rendered table names its labels)."""
    import hashlib

    p = Path(path).expanduser().resolve()
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise LanetError(f"label file not readable: {p} ({exc})") from exc
    return {"path": str(p), "name": p.name, "sha256": hashlib.sha256(raw).hexdigest(),
            "rows": max(len(raw.decode("utf-8-sig", errors="replace").strip().splitlines()) - 1, 0)}


JS_KEYS = ("js_learned", "js_onehot_train", "js_smoothed_train", "js_onehot_dataset")


def render_table6(bench: Bench, seeds: Sequence[int] | None, prov: dict[str, Any]) -> Rendered:
    """JS divergences of every LA-Net run of the preset that saved label distributions, grouped over seeds."""
    t = TABLES["table6"]
    groups: dict[tuple[str, str], list[Path]] = {}
    if bench.runs_root.is_dir():
        for npz in sorted(bench.runs_root.glob("*/*/label_distributions.npz")):
            d = npz.parent
            m = re.fullmatch(r"(.+)-s(\d+)", d.name)
            if not m or not (d / "summary.json").is_file():
                continue
            if seeds and int(m.group(2)) not in seeds:
                continue
            groups.setdefault((d.parent.name, m.group(1)), []).append(d)
    order = {name: i for i, name in enumerate(TABLE_ORDER)}
    rows_out, runs, errors = [], [], []
    dataset = None
    for (tab, prefix), dirs in sorted(groups.items(), key=lambda kv: (order.get(kv[0][0], 99), kv[0][1])):
        per_run = []
        for d in dirs:
            s = _read_json(d / "summary.json") or {}
            try:
                js = label_distribution_js(d, bench.faceset_for(d))
            except (LanetError, OSError, ValueError, KeyError) as exc:
                errors.append(f"{tab}/{d.name}: {exc}")
                continue
            dataset = dataset or s.get("dataset")
            noise = s.get("noise", {})
            rec = {"table": tab, "run": d.name, "run_dir": str(d), "seed": s.get("seed"), **js,
                   "noise": noise.get("type"), "rate": noise.get("rate"),
                   "realised_noise_rate": s.get("realised_noise_rate"), "test_accuracy": s.get("test_accuracy")}
            tb = _read_json(d / PROVENANCE_FILE)
            if tb:
                rec["trained_by"] = {k: tb.get(k) for k in ("machine", "commit", "command", "wall_seconds")}
            per_run.append(rec)
            runs.append(rec)
        if not per_run:
            continue
        row: dict[str, Any] = {"table": tab, "run": prefix, "seeds": len(per_run),
                               "seed_list": [r["seed"] for r in per_run],
                               "training_labels": Column(per_run[0]["noise"] or "none",
                                                         float(per_run[0]["rate"] or 0.0)).label,
                               "images": per_run[0]["images"]}
        for key in JS_KEYS:
            row[f"{key}_mean"], row[f"{key}_std"] = mean_std([r[key] for r in per_run])
        rows_out.append(row)
    dataset = dataset or bench.preset.config["data"]["name"]
    caption = t.caption.format(dataset=dataset)
    md = [f"### {t.title} (table6, preset {bench.preset.name})", "", caption, "",
          "| source table | run | training labels | JS(learned, human) | JS(one-hot training label, human) "
          "| JS(training label smoothed to the learned confidence, human) | JS(one-hot dataset label, human) "
          "| images | seeds |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows_out:
        cells = [_pm(r[f"{k}_mean"], r[f"{k}_std"], scale=1.0, digits=4) for k in JS_KEYS]
        md.append(f"| {r['table']} | {r['run']} | {r['training_labels']} | {' | '.join(cells)} | {r['images']} "
                  f"| {r['seeds']} |")
    if not rows_out:
        md.append("| – | no LA-Net run with label_distributions.npz yet | – | – | – | – | – | – | 0 |")
    md.append("")
    if errors:
        md += ["not computed: " + "; ".join(errors), ""]
    md += _provenance_lines(prov, _trained_on(runs))
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["source_table", "run", "training_labels", "seeds", "seed_list", "images"]
               + [f"{k}_{s}" for k in JS_KEYS for s in ("mean", "std")])
    for r in rows_out:
        w.writerow([r["table"], r["run"], r["training_labels"], r["seeds"], " ".join(map(str, r["seed_list"])),
                    r["images"]] + [_num(r[f"{k}_{s}"]) for k in JS_KEYS for s in ("mean", "std")])
    data = {"table": "table6", "title": t.title, "caption": caption, "dataset": dataset, "log_base": "e",
            "provenance": prov, "rows": rows_out, "runs": runs, "errors": errors}
    return Rendered("table6", "\n".join(md) + "\n", buf.getvalue(), data)


def write_rendered(r: Rendered, out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{r.table}.md", out_dir / f"{r.table}.csv", out_dir / f"{r.table}.json"]
    atomic_write_text(r.markdown, paths[0])
    atomic_write_text(r.csv, paths[1])
    atomic_write_json(r.data, paths[2])
    return paths


# ============================================================================================== entry point
@dataclass
class BenchReport:
    outcomes: list[Outcome]
    rendered: list[Rendered]
    written: list[Path]

    @property
    def failed(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.status in ("failed", "stale", "busy")]


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def run_benchmark(tables: Sequence[str], preset: str = "smoke", *, root: str | None = None,
                  runs: str | Path | None = None, results: str | Path | None = None,
                  seeds: Sequence[int] | None = None, methods: Sequence[str] | None = None,
                  rates: Sequence[float] | None = None, device: str | None = None, overrides: Sequence[str] = (),
                  render_only: bool = False, dry_run: bool = False, progress: bool = True,
                  command: str | None = None, labels: str | None = None) -> BenchReport:
    """Run (unless ``render_only``/``dry_run``) the grids of ``tables`` under ``preset`` and render them.

    Args:
        tables: table names (:data:`TABLES`) or ``all``.
        preset: ``smoke`` | ``cpu`` | ``paper`` (:data:`PRESETS`).
        root: dataset folder for FERPlus presets (default the preset's ``../shared/data/ferplus``).
        runs: folder of the run directories (default ``runs/bench/<preset>``).
        results: folder for the rendered tables (default ``benchmarks/results/<preset>``).
        seeds: seeds to run (default the preset's); when rendering, the seeds to show (default every seed
            found on disk plus the preset's).
        methods: rows: replaces the methods of the method-comparison tables, filters the others.
        rates: noise rates of the noisy columns (the clean column stays).
        device: ``auto`` | ``cpu`` | ``cuda``, overriding the preset.
        overrides: ``KEY=VALUE`` configuration overrides applied to every run (they must be repeated when
            rendering, since rendering matches run directories to the grid's configuration).
        render_only: only render from the run directories. dry_run: only print the plan.
        progress: per-epoch progress bars. command: the command line recorded as provenance.
        labels: the label file (``name,label`` CSV) the ``labelfile`` table trains on; ``all`` leaves that table
            out without one.
    """
    if render_only and dry_run:
        raise LanetError("--render-only and --dry-run exclude each other")
    p = get_preset(preset)
    names = expand_tables(tables)
    file_tables = [n for n in names if any(c.noise == LABEL_FILE for c in TABLES[n].columns)]
    if labels:
        if not file_tables:
            raise LanetError(f"--labels is used by the label-file table(s) only ({', '.join(_file_tables())}); "
                             "name one of them")
        if not Path(labels).expanduser().is_file():
            raise LanetError(f"label file not found: {labels}")
    else:
        named = [n for n in file_tables if n in tables]
        if named:
            raise LanetError(f"table {named[0]} trains on a label file: pass --labels FILE.csv (header name,label)")
        names = [n for n in names if n not in file_tables]  # 'all' without a label file
        if not names:
            raise LanetError("no table left to run")
    rates_l = parse_rates(rates) if rates is not None else None
    methods_l = [m.strip() for m in methods if m.strip()] if methods else None
    for t in names:  # validates --methods early
        table_layout(t, methods_l, rates_l)
    bench = Bench(p, Path(runs) if runs else Path("runs") / "bench" / p.name, root=root, device=device,
                  overrides=list(overrides), progress=progress,
                  command=command or shlex.join(["lanet", "bench", *names, "--preset", preset]
                                                + (["--labels", str(labels)] if labels else [])), labels=labels)
    for item in overrides:  # validate overrides once, with a readable error
        set_override(Config(), item)
    run_seeds = list(seeds) if seeds else list(p.seeds)
    outcomes: list[Outcome] = []
    if not render_only:
        specs = [s for t in sorted(names, key=lambda n: n == "table6")  # table6 last: it reuses the others' runs
                 for s in grid(t, run_seeds, methods_l, rates_l)]
        data_name = bench.config(specs[0]).data.name if specs else "synthetic"
        if specs and not dry_run and data_name != "synthetic":
            data_root = bench.config(specs[0]).data.root
            if not data_root or not Path(data_root).exists():
                raise LanetError(f"dataset folder not found: {data_root or '(empty)'}; pass --root PATH")
        if dry_run:
            print(f"preset {p.name} ({p.description}); {len(specs)} runs in {bench.runs_root}")
        planned_names: dict[str, str] = {}  # run name -> the table that trains it earlier in this grid
        for i, spec in enumerate(specs, 1):
            head = f"[{i}/{len(specs)}] {spec.table}/{spec.name}"
            if dry_run:
                o = bench.plan(spec)
                if o.status in ("new", "failed") and spec.name in planned_names:
                    o.message = f"reuses {planned_names[spec.name]}/{spec.name} if that run finishes first"
                planned_names.setdefault(spec.name, spec.table)
                print(f"{head}: {o.status}{' (' + o.message + ')' if o.message else ''}")
                outcomes.append(o)
                continue
            planned = bench.plan(spec)
            if planned.status not in ("finished", "reused", "stale"):
                _log(f"{head}: {'resuming' if planned.status == 'partial' else 'training'}")
            o = bench.run(spec)
            tail = {"finished": "finished before, skipped", "reused": o.message, "stale": f"NOT RUN: {o.message}",
                    "failed": f"FAILED: {o.message}", "busy": f"NOT RUN: {o.message}"}.get(
                o.status, f"{o.status} in {o.seconds:.0f} s")
            _log(f"{head}: {tail}")
            outcomes.append(o)
    if dry_run:
        return BenchReport(outcomes, [], [])
    prov = provenance(p.name, bench.command)
    rendered: list[Rendered] = []
    written: list[Path] = []
    out_dir = Path(results) if results else Path("benchmarks") / "results" / p.name
    for t in names:
        if t == "table6":
            r = render_table6(bench, seeds, prov)
        else:
            r = render_accuracy_table(bench, t, seeds, methods_l, rates_l, prov)
        rendered.append(r)
        written += write_rendered(r, out_dir)
    return BenchReport(outcomes, rendered, written)
