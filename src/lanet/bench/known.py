"""The rows and rates a rendered table must keep: those of every run the results folder's ledger holds for the table
(every run a render there has shown), not only those named by this command's ``--methods`` and ``--rates``.

Without this, finishing one row (``lanet bench table1 --methods baseline --seeds 2``) would rewrite the committed
table with that row alone, and two lanes of one grid with different ``--methods`` would leave whichever table the
last lane to finish wrote.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .render import TUNING_SEED
from .runs import Bench, RunSpec, _canonical_params
from .tables import get_table, table_layout


def method_spec_text(method: str, params: dict[str, Any] | Sequence[tuple[str, Any]]) -> str:
    """``("lanet", {"consistency": 1.0})`` -> ``"lanet:consistency=1.0"``, the form ``--methods`` parses."""
    items = params.items() if isinstance(params, dict) else params
    return method + "".join(f":{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in items)


def _known_specs(bench: Bench, table: str) -> list[RunSpec]:
    """Every run of ``table`` the results folder's ledger holds (every run a render there has shown), as specs."""
    out = []
    for r in (r for recs in bench.ledger.values() for r in recs if r.get("table") == table):
        try:
            params = _canonical_params(r["method"], tuple((r.get("params") or {}).items()))
            out.append(RunSpec(table, r.get("row", r["method"]), r["method"], params, r["noise"],
                               float(r.get("rate") or 0.0), int(r["seed"])))
        except Exception:  # noqa: BLE001 - a record of a method or parameter that no longer exists: not a row
            continue
    return out


def widen_to_known(bench: Bench, table: str, methods: Sequence[str] | None, rates: Sequence[float] | None,
                   seeds: Sequence[int] | None) -> tuple[list[str] | None, list[float] | None]:
    """``methods`` and ``rates`` plus the rows and noise rates of every ledger run of ``table`` that would be shown:
    its configuration matches this grid's (the record's fingerprint, or a finished run directory) and its seed is
    shown (a reported seed, or one named by ``seeds``). Requested rows keep their order; the known
    ones follow. ``None`` (the table's defaults) stays ``None`` unless something beyond the defaults is known."""
    t = get_table(table)
    rows, cols = table_layout(table, methods, rates)
    have_rows = {(r.method, _canonical_params(r.method, r.params)) for r in rows}
    have_cols = {(c.noise, c.rate) for c in cols}
    add_methods: list[str] = []
    add_rates: list[float] = []
    for spec in _known_specs(bench, table):
        shown = spec.seed in seeds if seeds else spec.seed < TUNING_SEED
        if not shown or (bench.locate(spec)[0] is None and bench.recorded(spec) is None):
            continue
        if t.method_rows and (spec.method, spec.params) not in have_rows:
            have_rows.add((spec.method, spec.params))
            add_methods.append(method_spec_text(spec.method, spec.params))
        if t.rate_noise and (spec.noise, spec.rate) not in have_cols and spec.noise in (t.rate_noise, "none"):
            have_cols.add((spec.noise, spec.rate))
            add_rates.append(0.0 if spec.noise == "none" else spec.rate)
    out_methods = list(methods) if methods else None
    if add_methods:
        out_methods = (out_methods or [method_spec_text(r.method, _canonical_params(r.method, r.params))
                                       for r in rows]) + add_methods
    out_rates = list(rates) if rates is not None else None
    if add_rates and out_rates is not None:
        out_rates = sorted(set(out_rates) | set(add_rates))
    return out_methods, out_rates
