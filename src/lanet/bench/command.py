"""``lanet bench`` as a function: run the grids of some tables under a preset, then render them."""

from __future__ import annotations

import shlex
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..config import Config, set_override
from ..errors import LanetError
from ..runconfig import validate_config
from .known import widen_to_known
from .presets import get_preset
from .provenance import provenance
from .render import Rendered, render_accuracy_table, render_table6, write_rendered
from .runs import DONE_STATUSES, Bench, Outcome, grid, load_ledger, update_ledger
from .tables import LABEL_FILE, TABLES, expand_tables, file_tables, parse_rates, table_layout


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
    with_file = [n for n in names if any(c.noise == LABEL_FILE for c in TABLES[n].columns)]
    if labels:
        if not with_file:
            raise LanetError(f"--labels is used by the label-file table(s) only ({', '.join(file_tables())}); "
                             "name one of them")
        if not Path(labels).expanduser().is_file():
            raise LanetError(f"label file not found: {labels}")
    else:
        named = [n for n in with_file if n in tables]
        if named:
            raise LanetError(f"table {named[0]} trains on a label file: pass --labels FILE.csv (header name,label)")
        names = [n for n in names if n not in with_file]  # 'all' without a label file
        if not names:
            raise LanetError("no table left to run")
    rates_l = parse_rates(rates) if rates is not None else None
    methods_l = [m.strip() for m in methods if m.strip()] if methods else None
    for t in names:  # validates --methods early
        table_layout(t, methods_l, rates_l)
    out_dir = Path(results) if results else Path("benchmarks") / "results" / p.name
    bench = Bench(p, Path(runs) if runs else Path("runs") / "bench" / p.name, root=root, device=device,
                  overrides=list(overrides), progress=progress,
                  command=command or shlex.join(["lanet", "bench", *names, "--preset", preset]
                                                + (["--labels", str(labels)] if labels else [])), labels=labels,
                  ledger=load_ledger(out_dir))
    for item in overrides:  # validate overrides once, with a readable error
        set_override(Config(), item)
    run_seeds = list(seeds) if seeds else list(p.seeds)
    outcomes: list[Outcome] = []
    if not render_only:
        specs = [s for t in sorted(names, key=lambda n: n == "table6")  # table6 last: it reuses the others' runs
                 for s in grid(t, run_seeds, methods_l, rates_l)]
        for spec in specs:  # every run's values, before any run directory is made
            try:
                validate_config(bench.config(spec))
            except LanetError as exc:
                raise LanetError(f"{spec.table}/{spec.name}: {exc}") from exc
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
            if planned.status not in DONE_STATUSES:
                _log(f"{head}: {'resuming' if planned.status == 'partial' else 'training'}")
            o = bench.run(spec)
            tail = {"finished": "finished before, skipped", "reused": o.message,
                    "recorded": "recorded in the committed results, skipped", "stale": f"NOT RUN: {o.message}",
                    "failed": f"FAILED: {o.message}", "busy": f"NOT RUN: {o.message}"}.get(
                o.status, f"{o.status} in {o.seconds:.0f} s")
            _log(f"{head}: {tail}")
            outcomes.append(o)
    if dry_run:
        return BenchReport(outcomes, [], [])
    prov = provenance(p.name, bench.command)
    bench.ledger = load_ledger(out_dir)  # another grid on this results folder may have added runs meanwhile
    rendered: list[Rendered] = []
    written: list[Path] = []
    for t in names:
        if t == "table6":
            r = render_table6(bench, seeds, prov)
        else:
            # every known row and rate stays in the table, not only this command's selection (bench.known)
            shown_methods, shown_rates = widen_to_known(bench, t, methods_l, rates_l, seeds)
            r = render_accuracy_table(bench, t, seeds, shown_methods, shown_rates, prov)
        rendered.append(r)
        written += write_rendered(r, out_dir)
        if t != "table6":
            ledger = update_ledger(out_dir, r.data["runs"])
            if ledger is not None and ledger not in written:
                written.append(ledger)
    return BenchReport(outcomes, rendered, written)
