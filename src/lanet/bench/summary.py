"""One results table from several rendered bench tables: ``lanet summary``.

Each ``lanet bench`` table (``table1.json``, ``table5.json``, ``annotator.json``, ``labelfile.json``) holds the rows
of one kind of noise. A user choosing a method wants them side by side: one block per kind of training labels
(clean, 30% symmetric, 30% asymmetric, annotator votes, ...), one line per method, the four reporting rules as
columns, and the best mean of each column in bold.

Only means over the same seeds are compared: in each block the bold goes to the best row among those with the
block's most common seed list (a one-seed row beside three-seed means is shown, marked by its seeds, and never
bolded). The best-epoch column is the LA-Net release's rule, chosen on test: a diagnostic, labelled so.
Every number is read from the rendered JSON, whose provenance is listed under the table; the one exception is a table
rendered before it had the last-5 column (or the training seconds), whose last-5 means (and mean seconds) are
computed from the per-epoch test accuracy (and seconds) of its runs kept in the same file.
"""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import LanetError
from ..fileutil import atomic_open, csv_cell
from .render import mean_std

RULES = (  # (JSON field of the mean, its _std, column heading)
    ("test_accuracy_mean", "test_accuracy_std", "final (%)"),
    ("val_selected_mean", "val_selected_std", "val-selected (%)"),
    ("peak_test_accuracy_mean", "peak_test_accuracy_std", "best epoch (%, release's rule: diagnostic)"),
    ("last5_test_accuracy_mean", "last5_test_accuracy_std", "last 5 (%)"),
)


@dataclass
class SummaryRow:
    block: str  # the training labels: "clean", "symmetric 30%", ...
    row: str  # the method row's label: "EAC", "LA-Net (consistency=1.0)", ...
    seeds: list[int]
    values: dict[str, float | None]  # RULES' mean and std fields -> value (fractions, as in the tables)
    train_seconds: float | None
    source: str  # the table file it came from
    bold: set[str] = field(default_factory=set)  # the RULES mean fields this row is best at within its block


@dataclass
class Summary:
    rows: list[SummaryRow]
    sources: list[dict[str, Any]]  # per input file: path, title, preset, commit, date

    def blocks(self) -> list[str]:
        return list(dict.fromkeys(r.block for r in self.rows))


def _load(path: Path) -> dict[str, Any]:
    try:
        table = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise LanetError(f"{path}: no such table (render it first with lanet bench ... --render-only)") from None
    except (OSError, ValueError) as exc:
        raise LanetError(f"{path}: not a readable bench table JSON ({exc})") from exc
    if not isinstance(table, dict) or not isinstance(table.get("rows"), list):
        raise LanetError(f"{path}: not a bench table (no 'rows' list): pass the .json that lanet bench wrote")
    return table


def _number(value: Any, path: Path, row: str, key: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise LanetError(f"{path}: row {row!r}: {key} is {value!r}, not a number")
    return float(value)


def _row_runs(table: dict[str, Any], row: dict[str, Any], seeds: list[int]) -> list[dict[str, Any]] | None:
    """The table's runs of ``row``, one per seed in ``seeds`` order, or None unless every seed has one."""
    by_seed = {run.get("seed"): run for run in table.get("runs") or []
               if (run.get("row"), run.get("noise"), run.get("rate")) == (row.get("row"), row.get("noise"),
                                                                          row.get("rate"))}
    return [by_seed[s] for s in seeds] if seeds and all(s in by_seed for s in seeds) else None


def _last5_from_runs(table: dict[str, Any], row: dict[str, Any], seeds: list[int]) -> tuple[float | None, ...]:
    """Mean and sample std over ``seeds`` of each run's mean test accuracy over its last 5 epochs, from the per-epoch
    test accuracy the table keeps for its runs; (None, None) unless every seed's run has 5 epochs or more."""
    runs = _row_runs(table, row, seeds)
    curves = [[a for a in run.get("test_accuracy_per_epoch") or [] if isinstance(a, (int, float))]
              for run in runs or []]
    if not curves or any(len(c) < 5 for c in curves):
        return None, None
    return mean_std([sum(c[-5:]) / 5 for c in curves])


def _seconds_from_runs(table: dict[str, Any], row: dict[str, Any], seeds: list[int]) -> float | None:
    runs = _row_runs(table, row, seeds)
    secs = [run.get("train_seconds") for run in runs or []]
    if not secs or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in secs):
        return None
    return sum(secs) / len(secs)


def summarise(paths: list[Path], blocks: list[str] | None = None, methods: list[str] | None = None) -> Summary:
    """Read the tables at ``paths``; keep the rows that have runs, of the ``blocks`` (training labels) and ``methods``
    (row labels, or method names such as ``lanet`` for all its variants) given, in that order when given."""
    if not paths:
        raise LanetError("no tables given: pass one or more table JSON files written by lanet bench")
    rows: list[SummaryRow] = []
    sources = []
    for path in paths:
        table = _load(path)
        prov = table.get("provenance") or {}
        sources.append({"path": path.as_posix(), "title": table.get("title"), "preset": prov.get("preset"),
                        "commit": prov.get("commit"), "date": prov.get("date")})
        for r in table["rows"]:
            label = str(r.get("row"))
            seeds = r.get("seed_list") or []
            if not seeds:
                continue  # a row the grid did not run (e.g. SCN on clean labels)
            block = str(r.get("training_labels"))
            if blocks and block not in blocks:
                continue
            if methods and label not in methods and str(r.get("method")) not in methods:
                continue
            values = {f: _number(r.get(f), path, label, f) for rule in RULES for f in rule[:2]}
            if values["last5_test_accuracy_mean"] is None:  # a table rendered before the column existed
                values["last5_test_accuracy_mean"], values["last5_test_accuracy_std"] = _last5_from_runs(
                    table, r, seeds)
            seconds = _number(r.get("train_seconds_mean"), path, label, "train_seconds_mean")
            if seconds is None:
                seconds = _seconds_from_runs(table, r, seeds)
            rows.append(SummaryRow(block, label, [int(s) for s in seeds], values, seconds, path.as_posix()))
    if not rows:
        wanted = f" of {', '.join(blocks)}" if blocks else ""
        raise LanetError(f"no rows with finished runs{wanted} in {', '.join(p.as_posix() for p in paths)}")
    if blocks:
        missing = [b for b in blocks if b not in {r.block for r in rows}]
        if missing:
            raise LanetError(f"no rows for training labels {missing}; present: "
                             f"{sorted({r.block for r in rows})}")
        rows.sort(key=lambda r: blocks.index(r.block))
    _mark_best(rows)
    return Summary(rows, sources)


def _mark_best(rows: list[SummaryRow]) -> None:
    """Bold the best mean of each rule per block, among the rows with the block's most common seed list."""
    for block in dict.fromkeys(r.block for r in rows):
        members = [r for r in rows if r.block == block]
        if len(members) < 2:
            continue
        common = Counter(tuple(r.seeds) for r in members).most_common(1)[0][0]
        comparable = [r for r in members if tuple(r.seeds) == common]
        for mean_key, _, _ in RULES:
            vals = [r.values[mean_key] for r in comparable if r.values[mean_key] is not None]
            if not vals:
                continue
            best = max(vals)
            for r in comparable:
                if r.values[mean_key] is not None and abs(r.values[mean_key] - best) < 5e-5:
                    r.bold.add(mean_key)


def _seeds_text(seeds: list[int]) -> str:
    return f"{len(seeds)} ({' '.join(map(str, seeds))})"


def _cell(row: SummaryRow, mean_key: str, std_key: str) -> str:
    m, s = row.values[mean_key], row.values[std_key]
    if m is None:
        return "–"
    text = f"{100 * m:.2f}" + (f" ± {100 * s:.2f}" if s is not None and len(row.seeds) > 1 else "")
    return f"**{text}**" if mean_key in row.bold else text


def to_markdown(summary: Summary, title: str = "Results side by side") -> str:
    head = ["training labels", "method", *(h for _, _, h in RULES), "seeds", "train s"]
    lines = [f"# {title}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in summary.rows:
        cells = [r.block, r.row, *(_cell(r, m, s) for m, s, _ in RULES), _seeds_text(r.seeds),
                 "–" if r.train_seconds is None else f"{r.train_seconds:.0f}"]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    lines += ["", "Test accuracy, mean ± std over seeds. Final: after the last epoch; val-selected: at the epoch of "
              "best validation accuracy; best epoch: the best test epoch, chosen on test (the LA-Net release's "
              "rule), a memorisation diagnostic and never a result; last 5: mean of the last 5 epochs (EAC's "
              "rule). Bold: the best mean of each column within its training labels, among the rows run on the "
              "block's most common seeds (a row on other seeds is never bolded). Train s: mean training seconds "
              "per run, where the table recorded them.", "", "Sources:"]
    for s in summary.sources:
        lines.append(f"- `{s['path']}`: {s['title']} (preset `{s['preset']}`, commit `{s['commit']}`, "
                     f"rendered {s['date']})")
    return "\n".join(lines) + "\n"


def to_csv(summary: Summary) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["training_labels", "row", *(f for rule in RULES for f in rule[:2]), "best_in_block", "seeds",
                "train_seconds_mean", "source"])
    for r in summary.rows:
        numbers = ["" if r.values[f] is None else f"{r.values[f]:.6f}" for rule in RULES for f in rule[:2]]
        w.writerow([csv_cell(r.block), csv_cell(r.row), *numbers,
                    " ".join(m for m, _, _ in RULES if m in r.bold), " ".join(map(str, r.seeds)),
                    "" if r.train_seconds is None else f"{r.train_seconds:.1f}", csv_cell(r.source)])
    return buf.getvalue()


def to_json(summary: Summary) -> str:
    rows = [{"training_labels": r.block, "row": r.row, **r.values, "best_in_block": [m for m, _, _ in RULES
                                                                                    if m in r.bold],
             "seed_list": r.seeds, "train_seconds_mean": r.train_seconds, "source": r.source}
            for r in summary.rows]
    return json.dumps({"rows": rows, "sources": summary.sources}, indent=1) + "\n"


def write_summary(summary: Summary, out: Path, title: str = "Results side by side") -> list[Path]:
    """``out``.md, .csv and .json (``out`` without a suffix, or with .md)."""
    base = out.with_suffix("") if out.suffix == ".md" else out
    written = []
    for suffix, text in ((".md", to_markdown(summary, title)), (".csv", to_csv(summary)),
                         (".json", to_json(summary))):
        dest = base.with_name(base.name + suffix)
        with atomic_open(dest, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
        written.append(dest)
    return written
