"""``lanet audit RUN_DIR``: rank the training images by how strongly the run contradicts their given label.

The score of a training image with given (training) label ``y`` and a class distribution ``p`` over the
classes is::

    score  = 1 - p[y]                 (0: p agrees fully with y; 1: p gives y no probability)
    margin = max_c p[c] - p[y]        (>= 0; 0 when y is already the top class)
    suggested label = argmax_c p[c]

Images are ranked by ``score`` (highest first), ties by ``margin`` (highest first), then by training-split
order. ``p`` comes from one of two sources:

* ``distributions`` (LA-Net): the label distribution the run learned for the image (its final EMA target,
  ``label_distributions.npz``), built from the predictions of the image's neighbours in expression and
  landmark space over the epochs.
* ``model`` (every other method, the fallback): the softmax of the exported classifier (``model_final.pt``)
  on the training image itself, without augmentation. This is **not** an out-of-sample estimate: the model
  was trained on these very labels and may have memorised the wrong ones, so wrong labels it fitted score
  low. ``1 - p[y]`` ranks images exactly as the per-sample cross-entropy ``-log p[y]`` does (the small-loss
  criterion); out-of-sample probabilities (K-fold) are compared in ``benchmarks/audit_compare.py``.

The ranking metrics used to judge an audit against a known truth (:func:`precision_at_k`, :func:`auroc`,
:func:`spearman`) live here too.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .classes import CLASSES
from .errors import LanetError
from .fileutil import atomic_open, csv_cell

SOURCES = ("auto", "distributions", "model")
CSV_COLUMNS = ("rank", "name", "given_label", "suggested_label", "score", "margin", "p_given", "p_suggested",
               "dataset_label", "changed_by_noise", "human_share_given", "source")


# ---------------------------------------------------------------------------------------------- scores
@dataclass
class LabelScores:
    """Per-image audit numbers (``n`` each) for class distributions ``p`` (n x C) and given labels ``y``."""

    score: np.ndarray  # 1 - p[y]
    margin: np.ndarray  # max p - p[y]
    suggested: np.ndarray  # argmax p (the lowest class id among equal maxima)
    p_given: np.ndarray
    p_suggested: np.ndarray


def label_scores(probs: np.ndarray, given: np.ndarray) -> LabelScores:
    """Score every image: see the module docstring. ``probs``: n x C rows summing to 1; ``given``: n class ids."""
    p = np.asarray(probs, dtype=np.float64)
    y = np.asarray(given, dtype=np.int64)
    if p.ndim != 2 or len(p) != len(y):
        raise ValueError(f"probs must be n x C with n = len(given) = {len(y)}, got {p.shape}")
    if len(y) and (y.min() < 0 or y.max() >= p.shape[1]):
        raise ValueError(f"given labels must lie in 0..{p.shape[1] - 1}")
    rows = np.arange(len(y))
    p_given = p[rows, y]
    suggested = p.argmax(1)
    p_top = p[rows, suggested]
    return LabelScores(score=1.0 - p_given, margin=p_top - p_given, suggested=suggested, p_given=p_given,
                       p_suggested=p_top)


def rank_order(score: np.ndarray, margin: np.ndarray | None = None) -> np.ndarray:
    """Indices from the most to the least suspicious: score descending, then margin descending, then index."""
    score = np.asarray(score, dtype=np.float64)
    margin = np.zeros_like(score) if margin is None else np.asarray(margin, dtype=np.float64)
    return np.lexsort((np.arange(len(score)), -margin, -score))


# ---------------------------------------------------------------------------------------------- metrics
def average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks of ``x`` in ascending order; tied values share the mean of their ranks."""
    x = np.asarray(x, dtype=np.float64)
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x), dtype=np.float64)
    xs = x[order]
    start = 0
    for end in range(1, len(x) + 1):
        if end == len(x) or xs[end] != xs[start]:
            ranks[order[start:end]] = 0.5 * (start + 1 + end)  # mean of ranks start+1 .. end
            start = end
    return ranks


def precision_at_k(score: np.ndarray, truth: np.ndarray, k: int, margin: np.ndarray | None = None) -> float:
    """Fraction of the ``k`` highest-ranked images (:func:`rank_order`) that are truly wrong (``truth`` True).
    ``k`` larger than the number of images uses all of them."""
    truth = np.asarray(truth, dtype=bool)
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if len(truth) == 0:
        raise ValueError("precision@k of an empty ranking")
    top = rank_order(score, margin)[:k]
    return float(truth[top].mean())


def auroc(score: np.ndarray, truth: np.ndarray) -> float | None:
    """Area under the ROC curve of ``score`` for separating ``truth`` True from False (Mann-Whitney U / (P N),
    ties counted one half). None when one of the two groups is empty."""
    truth = np.asarray(truth, dtype=bool)
    pos, neg = int(truth.sum()), int((~truth).sum())
    if pos == 0 or neg == 0:
        return None
    ranks = average_ranks(score)
    return float((ranks[truth].sum() - pos * (pos + 1) / 2) / (pos * neg))


def spearman(x: np.ndarray, y: np.ndarray) -> float | None:
    """Spearman rank correlation (Pearson correlation of the average ranks); None when either is constant."""
    rx, ry = average_ranks(x), average_ranks(y)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    den = float(np.sqrt((rx * rx).sum() * (ry * ry).sum()))
    return None if den == 0.0 else float((rx * ry).sum() / den)


# ---------------------------------------------------------------------------------------------- the audit
@dataclass
class Audit:
    """One run's audit: every training image scored, and the order to list them in."""

    run_dir: Path
    source: str  # distributions | model
    source_text: str  # a sentence saying where p came from
    index: np.ndarray  # n FaceSet indices of the training images
    names: np.ndarray
    given: np.ndarray
    dataset_labels: np.ndarray
    changed: np.ndarray  # n bool: the label differs from the dataset's (injected noise or a label file changed it)
    noise_type: str  # the record's: none | symmetric | ... | label_file | label_file+<type>
    scores: LabelScores
    order: np.ndarray  # positions 0..n-1, most suspicious first
    human_share: np.ndarray | None = None  # n: fraction of annotators who chose the given label (votes only)
    extra: dict[str, Any] = field(default_factory=dict)

    def injected_noise_metrics(self) -> dict[str, float | None] | None:
        """precision@100, precision@1000 and AUROC for finding the labels that differ from the dataset's (changed by
        injected noise or by a label file; None without either)."""
        if self.noise_type == "none" or not self.changed.any():
            return None
        s, m = self.scores.score, self.scores.margin
        return {"precision_at_100": precision_at_k(s, self.changed, 100, m),
                "precision_at_1000": precision_at_k(s, self.changed, 1000, m),
                "auroc": auroc(s, self.changed), "changed": int(self.changed.sum()), "images": int(len(s))}


def audit_run(run_dir: str | Path, source: str = "auto", model: str = "auto", root: str = "",
              device: str = "auto", batch_size: int = 256) -> Audit:
    """Score every training image of ``run_dir`` (see the module docstring for the score and the sources)."""
    from .rundata import open_run, predict, softmax

    if source not in SOURCES:
        raise LanetError(f"unknown source {source!r}; expected one of {', '.join(SOURCES)}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise LanetError(f"--batch-size must be a positive integer, got {batch_size!r}")
    run = open_run(run_dir, root=root)
    labels = run.training_labels()
    fs = run.faceset
    probs, why_not = (None, "") if source == "model" else run.label_distributions()
    if probs is not None:
        used = "distributions"
        text = ("the label distributions LA-Net learned for the training images (label_distributions.npz, the final "
                "EMA targets)")
    elif source == "distributions":
        raise LanetError(f"{run.path}: no label distributions to audit with: {why_not}")
    else:
        from .train.trainer import resolve_device

        dev = resolve_device(device)
        net, _, which = run.load_model(model, dev)
        if net is None:
            raise LanetError(f"{run.path}: nothing to audit with: {why_not or 'no distributions'}, and {which}")
        logits, _ = predict(net, fs.images[labels.index], _transform(run), batch_size, dev, features=False)
        probs = softmax(logits)
        used = "model"
        text = (f"the predictions of {which} on the training images themselves ({why_not + '; ' if why_not else ''}"
                "in-sample: the model was trained on these labels, so memorised wrong labels score low)")
    scores = label_scores(probs, labels.given)
    human = None
    if fs.votes is not None:
        votes = fs.votes[labels.index].astype(np.float64)
        total = votes.sum(1)
        share = votes[np.arange(len(votes)), labels.given] / np.maximum(total, 1e-12)
        human = np.where(total > 0, share, np.nan)
    return Audit(run_dir=run.path, source=used, source_text=text, index=labels.index, names=fs.names[labels.index],
                 given=labels.given, dataset_labels=labels.clean, changed=labels.flipped, noise_type=labels.noise_type,
                 scores=scores, order=rank_order(scores.score, scores.margin), human_share=human,
                 extra={"num_classes": fs.num_classes})


def _transform(run: Any) -> Any:
    from .rundata import eval_transform

    return eval_transform(run)


def _fmt(x: float) -> str:
    return "" if x is None or (isinstance(x, float) and np.isnan(x)) else f"{x:.6f}"


def audit_csv(audit: Audit, top: int | None = None) -> str:
    """The ranked CSV (:data:`CSV_COLUMNS`): every training image, or the ``top`` highest-ranked."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    s = audit.scores
    order = audit.order if top is None else audit.order[:top]
    noise = audit.noise_type != "none"
    for rank, i in enumerate(order, 1):
        w.writerow([rank, csv_cell(str(audit.names[i])), CLASSES[audit.given[i]], CLASSES[s.suggested[i]],
                    _fmt(s.score[i]), _fmt(s.margin[i]), _fmt(s.p_given[i]), _fmt(s.p_suggested[i]),
                    CLASSES[audit.dataset_labels[i]],
                    int(audit.changed[i]) if noise else "",
                    "" if audit.human_share is None else _fmt(float(audit.human_share[i])), audit.source])
    return buf.getvalue()


def write_audit(audit: Audit, out: str | Path, top: int | None = None) -> Path:
    out = Path(out)
    if out.is_dir():
        raise LanetError(f"--out {out} is a folder; give a CSV file name, e.g. {out / 'label_issues.csv'}")
    with atomic_open(out, "w", newline="") as fh:
        fh.write(audit_csv(audit, top))
    return out


# ---------------------------------------------------------------------------------------------- contact sheet
def contact_sheet(audit: Audit, images: np.ndarray, path: str | Path, top: int = 48, columns: int = 8,
                  tile: int = 96) -> Path:
    """A PNG grid of the ``top`` highest-ranked training images, each with its rank, score, given label (red)
    and suggested label (green); with an injected-noise record, whether the noise changed the label.

    ``images``: the FaceSet's ``N x H x W x C`` uint8 images (indexed by :attr:`Audit.index`).
    """
    from PIL import Image, ImageDraw, ImageFont

    if top < 1:
        raise LanetError(f"--top must be >= 1, got {top}")
    order = audit.order[:top]
    noise = audit.noise_type != "none"
    lines = 4 if noise else 3
    try:
        font = ImageFont.load_default(size=11)
    except TypeError:  # Pillow < 10.1: the bitmap font only
        font = ImageFont.load_default()
    line_h = 13
    cell_w, cell_h = tile + 8, tile + 6 + lines * line_h + 4
    cols = max(1, min(columns, len(order)))
    rows = max(1, -(-len(order) // cols))
    sheet = Image.new("RGB", (cols * cell_w, rows * cell_h), "white")
    draw = ImageDraw.Draw(sheet)
    s = audit.scores
    for k, i in enumerate(order):
        img = images[audit.index[i]]
        pil = Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img).convert("RGB")
        pil = pil.resize((tile, tile), Image.Resampling.BILINEAR)
        x0, y0 = (k % cols) * cell_w + 4, (k // cols) * cell_h + 4
        sheet.paste(pil, (x0, y0))
        y = y0 + tile + 2
        draw.text((x0, y), f"#{k + 1}  score {s.score[i]:.2f}", fill=(0, 0, 0), font=font)
        draw.text((x0, y + line_h), f"given {CLASSES[audit.given[i]]}", fill=(190, 0, 0), font=font)
        draw.text((x0, y + 2 * line_h), f"sugg. {CLASSES[s.suggested[i]]}", fill=(0, 130, 0), font=font)
        if noise:
            if audit.noise_type.startswith("label_file"):  # the dataset's label is the reference
                text = f"dataset: {CLASSES[audit.dataset_labels[i]]}" if audit.changed[i] else "as the dataset"
            else:
                text = f"noise: was {CLASSES[audit.dataset_labels[i]]}" if audit.changed[i] else "noise: unchanged"
            draw.text((x0, y + 3 * line_h), text, fill=(90, 90, 90), font=font)
    path = Path(path)
    with atomic_open(path, "wb") as fh:
        sheet.save(fh, format="PNG", optimize=True)
    return path


def run_audit(run_dir: str | Path, out: str | Path, *, top: int | None = None, sheet: str | Path | None = None,
              sheet_top: int = 48, source: str = "auto", model: str = "auto", root: str = "", device: str = "auto",
              batch_size: int = 256) -> tuple[Audit, list[Path]]:
    """``lanet audit``: score the run, write the ranked CSV (all images, or ``top``) and optionally the sheet
    (``top`` images, else ``sheet_top``). Returns the audit and the written files."""
    if top is not None and (isinstance(top, bool) or not isinstance(top, int) or top < 1):
        raise LanetError(f"--top must be a positive integer, got {top!r}")
    audit = audit_run(run_dir, source=source, model=model, root=root, device=device, batch_size=batch_size)
    written = [write_audit(audit, out, top)]
    if sheet:
        from .rundata import open_run

        fs = open_run(run_dir, root=root).faceset  # the same dataset object (loaded once per configuration)
        written.append(contact_sheet(audit, fs.images, sheet, top=min(top or sheet_top, 400)))
    return audit, written


def summary_lines(audit: Audit, top_rows: int = 5) -> list[str]:
    """What ``lanet audit`` prints: the source, the first rows and, with injected noise, how well it found them."""
    s = audit.scores
    lines = [f"{audit.run_dir}: {len(audit.order)} training images scored with {audit.source_text}"]
    for rank, i in enumerate(audit.order[:top_rows], 1):
        lines.append(f"  #{rank} {audit.names[i]}: given {CLASSES[audit.given[i]]}, suggested "
                     f"{CLASSES[s.suggested[i]]}, score {s.score[i]:.3f}")
    m = audit.injected_noise_metrics()
    if m is not None:
        au = "n/a" if m["auroc"] is None else f"{m['auroc']:.3f}"
        if audit.noise_type.startswith("label_file"):
            extra = audit.noise_type.partition("+")[2]
            against = (f"the {m['changed']} labels the run's label file{f' and {extra} noise' if extra else ''} "
                       "changed from the dataset's")
        else:
            against = f"the run's injected {audit.noise_type} noise ({m['changed']} changed labels)"
        lines.append(f"  against {against}: "
                     f"precision@100 {m['precision_at_100']:.3f}, precision@1000 {m['precision_at_1000']:.3f}, "
                     f"AUROC {au}")
    return lines
