"""``lanet report`` as a function: :func:`make_report` checks its arguments and every run directory, analyses
the runs, draws their figures and the comparison, and writes ``index.html``."""

from __future__ import annotations

from pathlib import Path

from ..errors import LanetError
from ..fileutil import atomic_open
from ..rundata import open_run
from .analysis import Figure, ReportResult, Skipped, _log, _same_labels, _slugs, analyse, json_key
from .figures import (
    _plt,
    fig_compare_curves,
    fig_confusion,
    fig_curves,
    fig_distributions,
    fig_gradcam,
    fig_loss_hist,
    fig_tsne,
)
from .page import render_html


def make_report(run_dirs: list[str | Path], out: str | Path, *, root: str = "", model: str = "auto",
                device: str = "auto", batch_size: int = 256, tsne_points: int = 2000, samples: int = 8,
                seed: int = 0, cam_layer: str = "auto", title: str = "", progress: bool = True) -> ReportResult:
    """Write ``out/index.html`` and its PNGs for ``run_dirs`` (see :mod:`lanet.report`)."""
    from ..train.trainer import resolve_device

    if not run_dirs:
        raise LanetError("give at least one run directory")
    for key, value, lo, hi in (("--batch-size", batch_size, 1, 1_000_000), ("--tsne-points", tsne_points, 20, 100_000),
                               ("--samples", samples, 1, 64), ("--seed", seed, 0, 2**32 - 1)):
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            raise LanetError(f"{key} must be an integer in [{lo}, {hi}], got {value!r}")
    runs = [open_run(d, root=root) for d in run_dirs]  # every directory is checked before anything is computed
    _plt()
    try:
        import sklearn  # noqa: F401
    except ModuleNotFoundError as exc:
        raise LanetError("lanet report needs matplotlib and scikit-learn: pip install 'lanet[report]'") from exc
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise LanetError(f"--out {out} is a file; give a folder for index.html and the figures")
    dev = resolve_device(device)
    groups = [analyse(r, s, model=model, device=dev, batch_size=batch_size, progress=progress)
              for r, s in zip(runs, _slugs(runs))]
    baselines = [a for a in groups if a.run.method == "baseline"]
    for a in groups:
        _log(f"{a.run.name}: figures", progress)
        base = a if a.run.method == "baseline" else next((b for b in baselines if _same_labels(a.run, b.run)), None)
        a.items.append(fig_curves(a, base, out))
        a.items.append(fig_confusion(a, out))
        a.items.append(fig_tsne(a, out, tsne_points, seed))
        a.items.append(fig_loss_hist(a, out))
        a.items.append(fig_distributions(a, out, samples, seed))
        a.items.append(fig_gradcam([a], out, f"{a.slug}/gradcam.png", samples, seed, cam_layer, dev))
    compare: list[Figure | Skipped] = []
    if len(groups) > 1:
        compare.append(fig_compare_curves(groups, out))
        keys = {json_key(a.run.cfg.to_dict()["data"]) for a in groups}
        if len(keys) > 1:
            compare.append(Skipped("Grad-CAM side by side", "the runs were trained on different data"))
        elif len(groups) > 6:
            compare.append(Skipped("Grad-CAM side by side", f"{len(groups)} runs (at most 6 are drawn side by side)"))
        else:
            compare.append(fig_gradcam(groups, out, "compare/gradcam.png", samples, seed, cam_layer, dev))
    page = render_html(groups, compare, title or "lanet report: " + ", ".join(a.run.name for a in groups))
    index = out / "index.html"
    with atomic_open(index, "w", encoding="utf-8") as fh:
        fh.write(page)
    figures = [out / it.file for a in groups for it in a.items if isinstance(it, Figure)]
    figures += [out / it.file for it in compare if isinstance(it, Figure)]
    skipped = [(a.run.name, it.title, it.why) for a in groups for it in a.items if isinstance(it, Skipped)]
    skipped += [("comparison", it.title, it.why) for it in compare if isinstance(it, Skipped)]
    return ReportResult(index, figures, skipped)
