"""Run specs and the grid runner: one run directory per spec, finished runs skipped, partial ones resumed,
crashes recorded while the grid goes on.

A grid may span machines: rendering merges every run's record, with the fingerprint of the configuration that
trained it, into ``<results>/records.jsonl``, which is committed with the tables. A later grid that finds no run
directory for a spec, but a record with the same name and fingerprint, counts the run as done (status
``recorded``) and renders it from the record, so a new machine continues a grid instead of retraining it."""

from __future__ import annotations

import hashlib
import json
import re
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml

from ..config import Config, apply_dict, config_from_dict, set_override
from ..errors import LanetError
from ..fileutil import RunDirectoryBusy, atomic_open, run_lock
from .presets import Preset
from .provenance import provenance
from .tables import LABEL_FILE, Column, table_layout

ERROR_FILE = "bench_error.txt"  # written into a run directory whose training raised
PROVENANCE_FILE = "bench_run.json"  # who trained the run: machine, commit, command, wall time


def train(cfg: Config, out: str | Path, resume: bool = False, progress: bool = True) -> dict[str, Any]:
    """:func:`lanet.train.trainer.train`, imported on first use (``lanet --help`` need not load torch)."""
    from ..train.trainer import train as _train

    return _train(cfg, out, resume=resume, progress=progress)


def atomic_write_text(text: str, path: str | Path) -> None:
    with atomic_open(path, "w") as fh:
        fh.write(text)


def atomic_write_json(obj: Any, path: str | Path) -> None:
    atomic_write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", path)


# configuration keys that do not change a run's numbers: ignored when a run directory is matched to a spec
_IGNORED_KEYS = {"train.device", "train.threads", "train.log_every", "data.root", "data.cache_dir",
                 "train.running_bn_test"}


def config_fingerprint(cfg: dict[str, Any]) -> str:
    """A short hash of everything in a configuration (``Config.to_dict()`` form) that changes a run's numbers: the
    keys of :data:`_IGNORED_KEYS` left out, a label file replaced by the SHA-256 of its bytes (its path differs
    between machines, its content must not)."""
    flat = Bench._flat(config_from_dict(yaml.safe_load(yaml.safe_dump(cfg))).to_dict())
    flat = {k: v for k, v in flat.items() if k not in _IGNORED_KEYS}
    labels = flat.get("data.labels")
    if labels:
        try:
            flat["data.labels"] = "sha256:" + hashlib.sha256(Path(labels).expanduser().read_bytes()).hexdigest()
        except OSError as exc:
            raise LanetError(f"label file not readable: {labels} ({exc})") from exc
    return hashlib.sha256(json.dumps(flat, sort_keys=True, default=str).encode()).hexdigest()[:20]


#: the file of a results folder that keeps every run record ever rendered there, one JSON object per line
LEDGER_FILE = "records.jsonl"


def load_ledger(results_dir: str | Path) -> dict[str, list[dict[str, Any]]]:
    """The run records of ``results_dir/records.jsonl`` that carry a configuration fingerprint, by run name (a
    name may hold records of several configurations: each is matched by its fingerprint). A malformed line is an
    error naming the file and line, since silently skipping it would retrain a finished run."""
    ledger: dict[str, list[dict[str, Any]]] = {}
    path = Path(results_dir) / LEDGER_FILE
    if not path.is_file():
        return ledger
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except ValueError as exc:
            raise LanetError(f"{path}, line {i}: not a JSON record ({exc})") from exc
        if not (isinstance(rec, dict) and rec.get("name") and rec.get("config_fingerprint")):
            raise LanetError(f"{path}, line {i}: a record needs 'name' and 'config_fingerprint'")
        same = ledger.setdefault(rec["name"], [])
        same[:] = [r for r in same if r["config_fingerprint"] != rec["config_fingerprint"]] + [rec]
    return ledger


def update_ledger(results_dir: str | Path, records: Sequence[dict[str, Any]]) -> Path | None:
    """Merge ``records`` (rendered from run directories) into ``results_dir/records.jsonl``: a record replaces
    the one with its name and fingerprint, every other record stays, so rendering never loses a run another
    machine trained. Returns the file, or None when there was nothing to write."""
    fresh = [r for r in records if r.get("config_fingerprint") and not r.get("from_record")]
    if not fresh:
        return None
    ledger = load_ledger(results_dir)
    for rec in fresh:
        same = ledger.setdefault(rec["name"], [])
        same[:] = [r for r in same if r["config_fingerprint"] != rec["config_fingerprint"]] + [rec]
    lines = [json.dumps(r, sort_keys=True, ensure_ascii=False)
             for name in sorted(ledger) for r in sorted(ledger[name], key=lambda r: r["config_fingerprint"])]
    path = Path(results_dir) / LEDGER_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text("\n".join(lines) + "\n", path)
    return path


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
    from ..methods.registry import get_method_class

    defaults = get_method_class(method).Params()
    out = []
    for k, v in params:
        if not hasattr(defaults, k):
            raise LanetError(f"method {method!r} has no hyperparameter {k!r}")
        if getattr(defaults, k) != v:
            out.append((k, v))
    return tuple(out)


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


#: plan statuses for which running a spec trains nothing
DONE_STATUSES = ("finished", "reused", "recorded", "stale")


@dataclass
class Outcome:
    """What happened to one spec when the grid ran (or would run, for a dry run)."""

    spec: RunSpec
    run_dir: Path
    # finished | reused | recorded | trained | resumed | failed | stale | busy | new | partial (last two: dry run)
    status: str
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
    ledger: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # committed run records (load_ledger)
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

    def recorded(self, spec: RunSpec) -> dict[str, Any] | None:
        """The committed record of ``spec`` (:func:`load_ledger`) whose configuration fingerprint matches the
        grid's configuration, or None."""
        records = self.ledger.get(spec.name)
        if not records:
            return None
        want = config_fingerprint(self.config(spec).to_dict())
        return next((dict(r) for r in records if r["config_fingerprint"] == want), None)

    def found_seeds(self, specs: Sequence[RunSpec]) -> set[int]:
        """Seeds for which a run directory named like one of ``specs`` (any seed) exists in any table folder, or a
        committed record does."""
        prefixes = {s.prefix for s in specs}
        seeds: set[int] = set()
        for name in self.ledger:
            m = re.fullmatch(r"(.+)-s(\d+)", name)
            if m and m.group(1) in prefixes:
                seeds.add(int(m.group(2)))
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
        """What running ``spec`` would do now: finished | reused | recorded | stale | partial | failed | new."""
        own = self.run_dir(spec)
        found, note = self.locate(spec)
        if found is not None:
            return Outcome(spec, found, "finished" if found == own else "reused",
                           "" if found == own else f"reuses {found.parent.name}/{found.name}")
        if self.recorded(spec) is not None:
            return Outcome(spec, own, "recorded", "recorded in the committed results (same configuration)")
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
        if planned.status in DONE_STATUSES:
            return planned
        own = planned.run_dir
        try:
            with run_lock(own):
                return self._run_locked(spec)  # plans again: another grid may have finished it meanwhile
        except RunDirectoryBusy as exc:
            return Outcome(spec, own, "busy", str(exc))

    def _run_locked(self, spec: RunSpec) -> Outcome:
        planned = self.plan(spec)
        if planned.status in DONE_STATUSES:
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
        from ..data.loaders import load_faceset

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
