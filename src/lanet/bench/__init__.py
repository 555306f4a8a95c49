"""``lanet bench``: the paper's tables as grids of run directories, resumable, rendered from the runs alone.

A *table* is data (:data:`TABLES`): rows (a method and its hyperparameters, e.g. LA-Net's Table 2 switches
or ``K``) times columns (a label-noise setting: type and rate). A *preset* is data too (:data:`PRESETS`):
the configuration every run of a grid shares (dataset, image size, width, batch, epochs, ...) and the default
seeds. ``table x preset x seeds`` expands into :class:`RunSpec` s, one run directory each::

    RUNS/<table>/<method>[-<non-default params>]-<noise>-<rate>-s<seed>/
    e.g. runs/bench/cpu/table1/lanet-symmetric-0.30-s0, runs/bench/cpu/fig2/lanet-K4-none-0.00-s0

Running a grid trains every run that is not finished yet: a finished run (``summary.json``) is skipped, a
partial one (``config.yaml`` written, killed or crashed later) is resumed from its checkpoint, and a run that
raises is recorded (``RUN_DIR/bench_error.txt``, the grid's exit status) while the grid goes on. A run whose
directory name another table of the same preset already finished with the same configuration (Table 2's
full LA-Net row on 30% noise is Table 1's LA-Net run; Figure 2's K=8 likewise) is reused, not retrained.

Rendering reads run directories only (``summary.json``, ``config.yaml``, ``label_distributions.npz``; Table 6
also the dataset's crowd votes) and writes, per table, ``<table>.md``, ``<table>.csv`` and ``<table>.json``
(raw per-run numbers and provenance: machine, torch, preset, git commit, command line, date).

Modules: :mod:`.tables` (the tables as data), :mod:`.presets`, :mod:`.runs` (run specs and the grid runner),
:mod:`.provenance`, :mod:`.divergence` (Table 6's maths), :mod:`.render` (Markdown, CSV, JSON) and
:mod:`.command` (:func:`run_benchmark`, what ``lanet bench`` calls).
"""

from .command import BenchReport, run_benchmark
from .divergence import js_divergence, label_distribution_js
from .presets import PRESETS, Preset, get_preset
from .provenance import git_commit, machine, provenance
from .render import LAST_EPOCHS, MECHANISM, MECHANISM_KEYS, Rendered, mean_std, render_accuracy_table, render_table6
from .runs import ERROR_FILE, PROVENANCE_FILE, Bench, Outcome, RunSpec, grid
from .tables import (
                     LABEL_FILE,
                     TABLE_ORDER,
                     TABLES,
                     Column,
                     Row,
                     TableDef,
                     expand_tables,
                     get_table,
                     parse_rates,
                     table_layout,
)

__all__ = ["ERROR_FILE", "LABEL_FILE", "LAST_EPOCHS", "MECHANISM", "MECHANISM_KEYS", "PRESETS", "PROVENANCE_FILE",
           "TABLES", "TABLE_ORDER", "Bench", "BenchReport", "Column", "Outcome", "Preset", "Rendered", "Row", "RunSpec",
           "TableDef", "expand_tables", "get_preset", "get_table", "git_commit", "grid", "js_divergence",
           "label_distribution_js", "machine", "mean_std", "parse_rates", "provenance", "render_accuracy_table",
           "render_table6", "run_benchmark", "table_layout"]
