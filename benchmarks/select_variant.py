"""Choose among method variants on validation accuracy only, from a rendered bench table of tuning seeds.

The input is the JSON a tuning grid rendered, e.g.::

    lanet bench table1 --preset faithful --rates 0.3 --seeds 100 \\
        --methods lanet,lanet:consistency=1,lanet:neighbours=memory:sharpen=0.5 \\
        --runs runs/bench/faithful-tuning --results benchmarks/results/faithful-tuning -o train.threads=1
    python benchmarks/select_variant.py benchmarks/results/faithful-tuning/table1.json \\
        --out benchmarks/results/faithful-tuning/selection.json

Per row (a method with its hyperparameters) and noise column, over the tuning seeds it has: the validation accuracy
after the last epoch, the best validation accuracy over the epochs, and the criterion, their mean (the target asks
for final and validation-selected accuracy alike). The row with the highest criterion in each column is chosen
among the candidates: the rows of ``--method`` (default ``lanet``: the paper's LA-Net and its variants). Rows of
other methods at the same tuning seeds (CE, EAC) are ranked beside them as references, so the table shows on
validation alone whether the choice leads its peers.
Test accuracy is never read: the script keeps only ``val_accuracy_per_epoch`` of each run, so a choice made with it
cannot have peeked at the test split. Seeds below 100 are refused (they are the reported seeds).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from lanet.bench.render import TUNING_SEED  # seeds from here up are tuning seeds


class SelectionError(ValueError):
    pass


def validation_view(table: dict) -> list[dict]:
    """Each run of ``table`` reduced to what a choice may use: row, column, seed and validation accuracies."""
    out = []
    for r in table.get("runs", []):
        if r["seed"] < TUNING_SEED:
            raise SelectionError(f"run {r['name']}: seed {r['seed']} is a reported seed (tuning seeds are "
                                 f"{TUNING_SEED} and up); choose on tuning seeds only")
        val = [v for v in r.get("val_accuracy_per_epoch") or [] if isinstance(v, (int, float))]
        if not val:
            raise SelectionError(f"run {r['name']}: no validation accuracy per epoch")
        out.append({"row": r["row"], "method": r["method"], "params": r.get("params") or {},
                    "column": f"{r['noise']} {r['rate']:.2f}", "seed": r["seed"], "val": val})
    if not out:
        raise SelectionError("the table holds no finished runs")
    return out


def select(runs: list[dict], method: str | None = "lanet") -> dict:
    """Per column: every row's mean final and best validation accuracy, the criterion, and the chosen row: the
    best-ranked row of ``method`` (None: of any method). Each ranked row says whether it was a candidate."""
    cols: dict[str, dict[str, list[dict]]] = {}
    for r in runs:
        cols.setdefault(r["column"], {}).setdefault(r["row"], []).append(r)
    result = {}
    for col, rows in cols.items():
        ranked = []
        for row, rs in rows.items():
            final = statistics.fmean(r["val"][-1] for r in rs)
            best = statistics.fmean(max(r["val"]) for r in rs)
            ranked.append({"row": row, "method": rs[0]["method"], "params": rs[0]["params"],
                           "seeds": sorted(r["seed"] for r in rs), "epochs": [len(r["val"]) for r in rs],
                           "val_final": final, "val_best": best, "criterion": (final + best) / 2,
                           "candidate": method is None or rs[0]["method"] == method})
        ranked.sort(key=lambda x: -x["criterion"])
        if len({tuple(x["seeds"]) for x in ranked}) > 1:
            raise SelectionError(f"{col}: the rows have different tuning seeds "
                                 f"({'; '.join(x['row'] + ': ' + str(x['seeds']) for x in ranked)}); "
                                 "finish the grid first")
        candidates = [x for x in ranked if x["candidate"]]
        if not candidates:
            raise SelectionError(f"{col}: no row of method {method!r} to choose from "
                                 f"(rows: {', '.join(x['row'] for x in ranked)})")
        peers = [x for x in ranked if not x["candidate"]]
        result[col] = {"ranking": ranked, "chosen": candidates[0]["row"],
                       "leads_references": bool(not peers or candidates[0]["criterion"] > peers[0]["criterion"])}
    return result


def render(result: dict) -> str:
    lines = []
    for col, res in result.items():
        lead = "" if res["leads_references"] else " (a reference row ranks above it on validation)"
        lines += [f"{col}: chosen {res['chosen']}{lead}",
                  "| row | role | seeds | val final (%) | val best (%) | criterion (%) |", "|---|---|---|---|---|---|"]
        lines += [f"| {x['row']} | {'candidate' if x['candidate'] else 'reference'} | "
                  f"{' '.join(map(str, x['seeds']))} | {100 * x['val_final']:.2f} | "
                  f"{100 * x['val_best']:.2f} | {100 * x['criterion']:.2f} |" for x in res["ranking"]]
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("table", type=Path, help="table JSON rendered by `lanet bench` from tuning-seed runs")
    ap.add_argument("--out", type=Path, default=None, help="write the ranking and the choice as JSON")
    ap.add_argument("--method", default="lanet", help="choose among this method's rows; other rows are references "
                    "(default lanet; 'any' chooses among all rows)")
    args = ap.parse_args(argv)
    try:
        table = json.loads(args.table.read_text())
        result = select(validation_view(table), None if args.method == "any" else args.method)
    except (OSError, json.JSONDecodeError, KeyError, SelectionError) as exc:
        print(f"select_variant: {args.table}: {exc}", file=sys.stderr)
        return 1
    print(render(result))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"table": str(args.table), "criterion": "mean of final and best validation "
                                        "accuracy over the tuning seeds", "method": args.method,
                                        "columns": result}, indent=1) + "\n")
        print(f"written {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
