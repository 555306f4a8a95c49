"""``lanet report RUN_DIR... --out DIR``: what training did, as PNG figures on one self-contained HTML page.

Per run (everything computed from the run directory and the dataset its ``config.yaml`` names):

* training curves: every loss term, validation and test accuracy per epoch with the run's peak and, where a
  baseline (CE) run with the same labels is in the report, the baseline's peak; LA-Net's label-correction
  diagnostics where the run logged them;
* the confusion matrix and per-class accuracy of the analysed classifier on the test split;
* t-SNE of the test features (the input of the classifier's last layer) coloured by class (LA-Net Fig. 3);
* per-sample cross-entropy of the training images against their given labels, clean and flipped apart,
  from the noise record (LA-Net Fig. 4); for a run trained on a ``--labels`` file, the labels the file changed
  against those it left as the dataset's (the dataset's own labels are the reference: a label file's labels are
  never called clean);
* learned label distributions against the human votes for sample training images (LA-Net Fig. 5);
* Grad-CAM maps of sample test images (LA-Net Fig. 6) on the deepest stage whose map is at least 3 x 3 at the
  run's input size (``cam_layer="auto"``; the figure names the layer and its map size).

With several runs, a comparison comes first: accuracy curves overlaid, an accuracy table and, for runs on
the same data, Grad-CAM of the same test images side by side. A figure that cannot be made for a run (no
votes, no label distributions, no noise, no exported model yet) is left out with a sentence saying why.

The page references its PNGs by relative path and loads nothing else (no scripts, no network), so the
folder can be copied or attached as it is. Needs the ``report`` extra (matplotlib, scikit-learn).

Modules: :mod:`.analysis` (a run directory read back and predicted on, the records the figures pass around),
:mod:`.figures` (one function per figure), :mod:`.page` (the HTML page), :mod:`.command` (:func:`make_report`,
the entry point of ``lanet report``).
"""

from __future__ import annotations

from .analysis import Analysis, Figure, ReportResult, Skipped, analyse, curve_numbers, json_key, loss_terms, peak
from .command import make_report
from .figures import (
    DPI,
    cam_layer_for,
    fig_compare_curves,
    fig_confusion,
    fig_curves,
    fig_distributions,
    fig_gradcam,
    fig_loss_hist,
    fig_tsne,
)
from .page import render_html, summary_rows

__all__ = [
    "DPI", "Analysis", "Figure", "ReportResult", "Skipped", "analyse", "cam_layer_for", "curve_numbers",
    "fig_compare_curves", "fig_confusion", "fig_curves", "fig_distributions", "fig_gradcam", "fig_loss_hist",
    "fig_tsne", "json_key", "loss_terms", "make_report", "peak", "render_html", "summary_rows",
]
