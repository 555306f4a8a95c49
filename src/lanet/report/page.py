"""The report's HTML page: the accuracy table, the figures with their captions and the sentences saying why a
figure was left out, in one self-contained file (no scripts, no network; the PNGs by relative path)."""

from __future__ import annotations

import html
from datetime import datetime, timezone
from typing import Any

from .analysis import Analysis, Figure, Skipped, peak

_CSS = """
body { font: 15px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 1180px; padding: 0 1em; color: #222; }
h1 { margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: 0.2em; margin-top: 2em; }
figure { margin: 1.2em 0; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { font-size: 0.88em; color: #444; max-width: 980px; }
table { border-collapse: collapse; font-size: 0.88em; margin: 0.8em 0; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: right; } th { background: #f4f4f4; }
td:first-child, th:first-child { text-align: left; }
.skipped { color: #7a5200; background: #fff8e6; border-left: 3px solid #e0a800; padding: 0.4em 0.8em; }
.meta { color: #666; font-size: 0.85em; } code { font-size: 0.92em; }
"""


def _pct(x: Any) -> str:
    return "–" if not isinstance(x, (int, float)) or x is None else f"{100 * x:.2f}"


def summary_rows(group: list[Analysis]) -> list[dict[str, Any]]:
    """The accuracy table's rows, from each run's metrics and summary."""
    rows = []
    for a in group:
        r, h, s = a.run, a.run.history, a.run.summary or {}
        final = h[-1] if h else {}
        vpk, pk = peak(h, "val_accuracy"), peak(h)
        realised = s.get("realised_noise_rate", (r.noise or {}).get("realised_rate"))
        rows.append({
            "run": r.name, "method": r.method, "labels": r.noise_text, "realised_noise": realised,
            "epochs": f"{len(h)}/{r.cfg.train.epochs}", "final": final.get("test_accuracy"),
            "val_selected": None if vpk is None else h[vpk[1] - 1].get("test_accuracy"),
            "val_epoch": None if vpk is None else vpk[1], "peak": None if pk is None else pk[0],
            "peak_epoch": None if pk is None else pk[1], "mean_class": final.get("test_mean_class_accuracy"),
            "audit_auroc": a.audit_auroc, "audit_source": a.audit_source,
            "train_minutes": sum(line.get("train_seconds", 0.0) for line in h) / 60.0,
        })
    return rows


def _table(group: list[Analysis]) -> str:
    head = ("<tr><th>run</th><th>method</th><th>training labels</th><th>realised noise</th><th>epochs</th>"
            "<th>final test (%)</th><th>val-selected test (%)</th><th>peak test (%) @ epoch</th>"
            "<th>mean class (%)</th><th>audit AUROC (changed labels)</th><th>training (min)</th></tr>")
    body = []
    for r in summary_rows(group):
        sel = "–" if r["val_selected"] is None else f"{_pct(r['val_selected'])} @ {r['val_epoch']}"
        pk = "–" if r["peak"] is None else f"{_pct(r['peak'])} @ {r['peak_epoch']}"
        au = "–" if r["audit_auroc"] is None else f"{r['audit_auroc']:.3f} ({html.escape(r['audit_source'])})"
        noise = "–" if r["realised_noise"] is None else f"{100 * r['realised_noise']:.1f}%"
        cells = [html.escape(r["run"]), html.escape(r["method"]), html.escape(r["labels"]), noise, r["epochs"],
                 _pct(r["final"]), sel, pk, _pct(r["mean_class"]), au, f"{r['train_minutes']:.1f}"]
        body.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    note = ("<p class=\"meta\">final: after the last finished epoch; val-selected: at the epoch with the best "
            "validation accuracy; peak: the best test accuracy over epochs (chosen on test: a memorisation "
            "diagnostic only); "
            "realised noise: share of training labels that differ from the dataset's own labels (injected noise "
            "or a label file); audit AUROC: how well <code>lanet audit</code>'s score (1 − p(given label)) separates "
            "those labels from the others (0.5 = chance).</p>")
    return f"<table>{head}{''.join(body)}</table>{note}"


def _items_html(items: list[Figure | Skipped]) -> str:
    parts = []
    for it in items:
        if isinstance(it, Figure):
            parts.append(f"<figure><img src=\"{html.escape(it.file)}\" alt=\"{html.escape(it.title)}\">"
                         f"<figcaption><b>{html.escape(it.title)}.</b> {html.escape(it.caption)}</figcaption></figure>")
        else:
            parts.append(f"<p class=\"skipped\"><b>{html.escape(it.title)}</b>: not shown: {html.escape(it.why)}.</p>")
    return "\n".join(parts)


def _run_facts(a: Analysis) -> str:
    r, s = a.run, a.run.summary
    fs_name = r.cfg.data.name
    state = "finished" if s else f"not finished ({len(r.history)} of {r.cfg.train.epochs} epochs so far)"
    text = (f"<code>{html.escape(str(r.path))}</code>: method <b>{html.escape(r.method)}</b> on "
            f"{html.escape(fs_name)}, {html.escape(r.noise_text)}, {r.cfg.model.arch} width {r.cfg.model.width} at "
            f"{r.cfg.data.image_size} px, seed {r.cfg.train.seed}; {state}.")
    if a.has_model:
        text += f" Figures from the test split use {html.escape(a.model_note)}."
    return f"<p>{text}</p>"


def render_html(groups: list[Analysis], compare: list[Figure | Skipped], title: str) -> str:
    from .. import __version__

    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    toc = []
    body = []
    if len(groups) > 1:
        toc.append("<li><a href=\"#compare\">Comparison</a></li>")
        body.append(f"<section id=\"compare\"><h2>Comparison</h2>{_table(groups)}{_items_html(compare)}</section>")
    for a in groups:
        toc.append(f"<li><a href=\"#run-{html.escape(a.slug)}\">{html.escape(a.run.name)}</a></li>")
        table = _table([a]) if len(groups) == 1 else ""
        body.append(f"<section id=\"run-{html.escape(a.slug)}\"><h2>{html.escape(a.run.name)}</h2>{_run_facts(a)}"
                    f"{table}{_items_html(a.items)}</section>")
    return (f"<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><style>{_CSS}</style></head>\n"
            f"<body><h1>{html.escape(title)}</h1><p class=\"meta\">Made by lanet {__version__} on {now} from "
            f"{len(groups)} run director{'y' if len(groups) == 1 else 'ies'}; every number and figure is computed "
            f"from the run directories and their datasets.</p><ul>{''.join(toc)}</ul>\n" + "\n".join(body)
            + "\n</body></html>\n")


