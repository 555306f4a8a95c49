"""Rendering: each table as Markdown, CSV and JSON, from run directories only, with the four reporting rules
and the mechanism diagnostics."""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from ..errors import LanetError
from ..train.checkpoint import metrics_by_epoch
from .divergence import label_distribution_js
from .provenance import _machine_text
from .runs import (
    ERROR_FILE,
    PROVENANCE_FILE,
    Bench,
    RunSpec,
    _read_json,
    _spec_dict,
    atomic_write_json,
    atomic_write_text,
    config_fingerprint,
    grid,
)
from .tables import LABEL_FILE, TABLE_ORDER, TABLES, Column, get_table

_ACCURACY_NOTE = ("Four reporting rules side by side. final: test accuracy after the last epoch; val-selected: test "
                  "accuracy at the epoch with the best validation accuracy (never chosen on test); best epoch: the "
                  "best test accuracy over epochs, the LA-Net release's rule (chosen on test, so a diagnostic, never "
                  "a result); last 5: mean test accuracy of the last 5 epochs, EAC's rule. Mean ± sample standard "
                  "deviation over seeds (no ± with one seed); seeds: number of finished runs in the row; realised "
                  "noise: mean fraction of training labels that differ from the dataset's labels.")


_MECHANISM_NOTE = ("Mechanism diagnostics (LA-Net's, final epoch, over the training images seen that epoch; clean "
                   "labels are used for these numbers only, never in a loss). best epoch: where each seed's best "
                   "test accuracy fell (a final far below it means the method memorised noisy labels). target = "
                   "clean: share of training images whose EMA target's argmax is the clean label, beside given = "
                   "clean, the share of given labels that are clean (LDE cleans labels only where the first beats "
                   "the second); vote = clean: share whose neighbour vote (eq. 4's aggregate of the neighbours' "
                   "predictions, the value the EMA target follows) has the clean label as argmax; prediction = "
                   "clean: the same for the network's own prediction on the training view (the vote's ceiling, "
                   "roughly); "
                   "flipped → clean: share of flipped labels whose target's argmax is the clean label; "
                   "clean moved: share of correct labels whose target's argmax left them; purity: share of an "
                   "anchor's K neighbours whose clean label equals the anchor's, in expression and landmark space; "
                   "confident PL: share of pseudo-labels of eq. 8 at or above delta; EL positives / anchor: EL "
                   "positive pairs per anchor beyond its own view; the pseudo columns: flipped → clean and clean "
                   "moved for the confident pseudo-labels; pair precision: share of those EL positive pairs whose "
                   "two images share the clean label.")


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


def relative_run_dir(run_dir: Path, runs_root: Path) -> str:
    """A run directory as committed results store it: relative to the runs folder (``table1/lanet-...-s0``), so
    no machine's paths enter a results file."""
    try:
        return run_dir.resolve().relative_to(runs_root.resolve()).as_posix()
    except ValueError:
        return run_dir.name


def _run_record(spec: RunSpec, run_dir: Path, runs_root: Path) -> dict[str, Any]:
    s = _read_json(run_dir / "summary.json") or {}
    rec = _spec_dict(spec)
    try:
        fingerprint: str | None = config_fingerprint(yaml.safe_load((run_dir / "config.yaml").read_text()) or {})
    except (OSError, yaml.YAMLError, LanetError):
        fingerprint = None
    rec.update({"run_dir": relative_run_dir(run_dir, runs_root), "config_fingerprint": fingerprint,
                "dataset": s.get("dataset"),
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


# per-epoch diagnostics of LA-Net's mechanism (methods/lanet.py), read at the final epoch: metrics.jsonl key ->
# the name of the table's JSON field (``<name>_mean``) and its Markdown column
MECHANISM: tuple[tuple[str, str, str], ...] = (
    ("target_agrees_clean_label", "target_accuracy", "target = clean"),
    ("train_label_is_clean", "given_label_accuracy", "given = clean"),
    ("vote_agrees_clean_label", "vote_accuracy", "vote = clean"),
    ("prediction_agrees_clean_label", "prediction_accuracy", "prediction = clean"),
    ("target_corrects_flipped", "target_corrects_flipped", "flipped → clean"),
    ("target_moves_clean", "target_moves_clean", "clean moved"),
    ("neighbour_purity_u", "neighbour_purity_expression", "purity: expression"),
    ("neighbour_purity_v", "neighbour_purity_landmark", "purity: landmark"),
    ("confident", "confident_pseudo_labels", "confident PL"),
    ("positive_pairs_per_anchor", "positive_pairs_per_anchor", "EL positives / anchor"),
    ("pseudo_corrects_flipped", "pseudo_corrects_flipped", "pseudo: flipped → clean"),
    ("pseudo_moves_clean", "pseudo_moves_clean", "pseudo: clean moved"),
    ("positive_pair_precision", "positive_pair_precision", "pair precision"),
)
MECHANISM_KEYS = tuple(k for k, _, _ in MECHANISM)
#: seeds from here up are tuning seeds: they select variants and hyperparameters on validation accuracy, and a
#: table shows them only when ``--seeds`` names them, so they never mix into the reported seeds' means
TUNING_SEED = 100
#: how many final epochs EAC's rule averages
LAST_EPOCHS = 5


def _trajectory(run_dir: Path) -> dict[str, Any]:
    """From metrics.jsonl: the best test accuracy over epochs and its epoch (the LA-Net release's rule: chosen on
    test, a diagnostic, never a result), the mean of the last :data:`LAST_EPOCHS` epochs' test accuracy (EAC's
    rule), and the final epoch's mechanism diagnostics where the method logs them."""
    path = run_dir / "metrics.jsonl"
    try:
        by_epoch = metrics_by_epoch(path)
    except (OSError, LanetError):
        return {}
    hist = [by_epoch[e] for e in sorted(by_epoch)]
    if not hist:
        return {}
    peak = max(range(len(hist)), key=lambda i: (hist[i].get("test_accuracy", -1.0), -i))
    tail = [h["test_accuracy"] for h in hist[-LAST_EPOCHS:] if h.get("test_accuracy") is not None]
    out: dict[str, Any] = {"peak_test_accuracy": hist[peak].get("test_accuracy"), "peak_epoch": peak + 1,
                           "last5_test_accuracy": sum(tail) / len(tail) if len(tail) == LAST_EPOCHS else None,
                           "test_accuracy_per_epoch": [h.get("test_accuracy") for h in hist],
                           "val_accuracy_per_epoch": [h.get("val_accuracy") for h in hist]}
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
    # tuning seeds (TUNING_SEED and up) choose variants; they enter a table only when named with --seeds
    use_seeds = sorted(set(seeds) if seeds else set(bench.preset.seeds)
                       | {s for s in bench.found_seeds(base) if s < TUNING_SEED})
    runs: list[dict[str, Any]] = []
    missing, failed, stale = [], [], []
    from_record = 0  # runs rendered from committed records (their run directories are not on this machine)
    rows_out = []
    dataset, cfg0 = None, None
    for b in base:
        cell_runs = []
        for seed in use_seeds:
            spec = RunSpec(b.table, b.row, b.method, b.params, b.noise, b.rate, seed)
            found, note = bench.locate(spec)
            own = bench.run_dir(spec)
            if found is None and (rec := bench.recorded(spec)) is not None:
                rec = {**rec, **_spec_dict(spec), "from_record": True}  # its numbers under this grid's row label
                dataset = dataset or rec.get("dataset")
                if cfg0 is None:  # the same configuration as the record's, by its fingerprint
                    cfg0 = bench.config(spec).to_dict()
                cell_runs.append(rec)
                runs.append(rec)
                from_record += 1
                continue
            if found is None:
                if note:
                    stale.append(f"{own} ({note})")
                elif (own / ERROR_FILE).is_file():
                    first = (own / ERROR_FILE).read_text().splitlines()[:1]
                    failed.append(f"{spec.name}: {first[0] if first else 'failed'}")
                else:
                    missing.append(spec.name)
                continue
            rec = _run_record(spec, found, bench.runs_root)
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
        last_m, last_s = mean_std([r["last5_test_accuracy"] for r in cell_runs
                                   if r.get("last5_test_accuracy") is not None])
        secs_m, _ = mean_std([r["train_seconds"] for r in cell_runs if r.get("train_seconds") is not None])
        mech = {f"{name}_mean": mean_std([r[k] for r in cell_runs if r.get(k) is not None])[0]
                for k, name, _ in MECHANISM}
        rows_out.append({**mech, "peak_test_accuracy_mean": peak_m, "peak_test_accuracy_std": peak_s,
                         "last5_test_accuracy_mean": last_m, "last5_test_accuracy_std": last_s,
                         "peak_epochs": [r.get("peak_epoch") for r in cell_runs],
                         "row": b.row, "method": b.method, "params": dict(b.params), "noise": b.noise,
                         "rate": b.rate, "training_labels": b.column.label, "seeds": len(cell_runs),
                         "seed_list": [r["seed"] for r in cell_runs],
                         "test_accuracy_mean": fin_m, "test_accuracy_std": fin_s,
                         "val_selected_mean": sel_m, "val_selected_std": sel_s, "val_selected_seeds": len(sel),
                         "realised_noise_rate_mean": noise_m, "train_seconds_mean": secs_m})
    dataset = dataset or bench.preset.config["data"]["name"]
    caption = t.caption.format(dataset=dataset, protocol=_protocol_text(cfg0, dataset),
                               label_file=Path(bench.labels).name if bench.labels else "FILE") + " " + _ACCURACY_NOTE
    md = [f"### {t.title} ({table}, preset {bench.preset.name})", "", caption, "",
          "| row | training labels | final (%) | val-selected (%) | best epoch (%, release's rule: diagnostic) "
          "| last 5 (%) | seeds | realised noise | train s |",
          "|---|---|---|---|---|---|---|---|---|"]
    for r in rows_out:
        noise = "–" if r["realised_noise_rate_mean"] is None else f"{100 * r['realised_noise_rate_mean']:.1f}%"
        secs = "–" if r["train_seconds_mean"] is None else f"{r['train_seconds_mean']:.0f}"
        md.append(f"| {r['row']} | {r['training_labels']} | {_pm(r['test_accuracy_mean'], r['test_accuracy_std'])} "
                  f"| {_pm(r['val_selected_mean'], r['val_selected_std'])} "
                  f"| {_pm(r['peak_test_accuracy_mean'], r['peak_test_accuracy_std'])} "
                  f"| {_pm(r['last5_test_accuracy_mean'], r['last5_test_accuracy_std'])} | {r['seeds']} | {noise} "
                  f"| {secs} |")
    md.append("")
    shown = [(name, col) for _, name, col in MECHANISM if any(r[f"{name}_mean"] is not None for r in rows_out)]
    md += ["| row | training labels | best epoch per seed |" + "".join(f" {col} |" for _, col in shown),
           "|---|---|---|" + "---|" * len(shown)]
    for r in rows_out:
        if not r["seeds"]:
            continue
        epochs = "/".join(str(e) for e in r["peak_epochs"] if e is not None) or "–"
        cells = []
        for name, _ in shown:
            v = r[f"{name}_mean"]
            cells.append("–" if v is None else f"{v:.2f}" if name == "positive_pairs_per_anchor" else f"{100 * v:.1f}%")
        md.append(f"| {r['row']} | {r['training_labels']} | {epochs} |" + "".join(f" {c} |" for c in cells))
    md.append("")
    md.append(_MECHANISM_NOTE)
    md.append("")
    if from_record:
        md += [f"{from_record} run(s) taken from the committed results: their run directories are not on the "
               "machine that rendered this table, their records (same configuration fingerprint) are.", ""]
    for title, items in (("missing runs", missing), ("failed runs", failed), ("excluded runs", stale)):
        if items:
            md.append(f"{title}: " + ", ".join(items))
            md.append("")
    md += _provenance_lines(prov, _trained_on(runs))
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["table", "row", "method", "params", "noise", "rate", "seeds", "seed_list",
                "test_accuracy_mean_pct", "test_accuracy_std_pct", "val_selected_mean_pct", "val_selected_std_pct",
                "peak_test_accuracy_mean_pct", "peak_test_accuracy_std_pct", "last5_test_accuracy_mean_pct",
                "last5_test_accuracy_std_pct", "val_selected_seeds", "realised_noise_rate_mean", "train_seconds_mean",
                *[f"{name}_mean" for _, name, _ in MECHANISM]])
    for r in rows_out:
        w.writerow([table, r["row"], r["method"], json.dumps(r["params"]), r["noise"], f"{r['rate']:.2f}",
                    r["seeds"], " ".join(map(str, r["seed_list"])),
                    _num(r["test_accuracy_mean"], 100), _num(r["test_accuracy_std"], 100),
                    _num(r["val_selected_mean"], 100), _num(r["val_selected_std"], 100),
                    _num(r["peak_test_accuracy_mean"], 100), _num(r["peak_test_accuracy_std"], 100),
                    _num(r["last5_test_accuracy_mean"], 100), _num(r["last5_test_accuracy_std"], 100),
                    r["val_selected_seeds"], _num(r["realised_noise_rate_mean"]), _num(r["train_seconds_mean"]),
                    *[_num(r[f"{name}_mean"]) for _, name, _ in MECHANISM]])
    data = {"table": table, "title": t.title, "caption": caption, "dataset": dataset, "provenance": prov,
            "rows": rows_out, "runs": runs, "runs_from_records": from_record, "missing": missing, "failed": failed,
            "excluded": stale}
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
    from ..portable import portable_path

    return {"path": portable_path(p), "name": p.name, "sha256": hashlib.sha256(raw).hexdigest(),
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
            rec = {"table": tab, "run": d.name, "run_dir": relative_run_dir(d, bench.runs_root), "seed": s.get("seed"),
                   **js,
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
