"""The tables of ``lanet bench`` as data: rows (a method and its hyperparameters) times columns (a label-noise
setting), and how ``--methods`` / ``--rates`` select from them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import LanetError


@dataclass(frozen=True)
class Row:
    """One row of a table: a method and the hyperparameters it is run with (``method.params``)."""

    label: str
    method: str
    params: tuple[tuple[str, Any], ...] = ()


@dataclass(frozen=True)
class Column:
    """One label-noise setting of a table's training labels."""

    noise: str  # none | symmetric | asymmetric | annotator | label_file (the labels of ``--labels FILE``)
    rate: float = 0.0

    @property
    def label(self) -> str:
        if self.noise == "none":
            return "clean"
        if self.noise == "annotator":
            return "annotator (one vote per image)"
        if self.noise == LABEL_FILE:
            return "label file"
        return f"{self.noise} {100 * self.rate:g}%"


@dataclass(frozen=True)
class TableDef:
    """A table: rows x columns, its caption, and how ``--methods`` / ``--rates`` act on it.

    ``method_rows``: the rows are plain methods, so ``--methods`` replaces them (any registered method);
    otherwise ``--methods`` only keeps the rows whose method is listed. ``rate_noise``: the noise type whose
    columns ``--rates`` replaces (the clean column stays); None when the table has no rate to vary.
    """

    name: str
    title: str
    caption: str
    rows: tuple[Row, ...]
    columns: tuple[Column, ...]
    method_rows: bool = False
    rate_noise: str | None = None


_SWITCHES = ("LD", "LM", "EL", "PL")
LABEL_FILE = "label_file"  # the column of the labelfile table: the training labels of ``--labels FILE``


def _ablation(label: str, on: Sequence[str]) -> Row:
    return Row(label, "lanet", tuple((s, s in on) for s in _SWITCHES))


_PAIR = (Row("baseline", "baseline"), Row("LA-Net", "lanet"))
# the paper's Tables 1 and 5 order: baseline, the peers (SCN, RUL, EAC; then the newer NLA and ReSup), LA-Net
_PEERS = (Row("baseline", "baseline"), Row("SCN", "scn"), Row("RUL", "rul"), Row("EAC", "eac"), Row("NLA", "nla"),
          Row("ReSup", "resup"), Row("LA-Net", "lanet"))
_RATES = (0.1, 0.2, 0.3)

TABLES: dict[str, TableDef] = {
    "table1": TableDef(
        "table1", "Table 1 analogue: symmetric label noise",
        "Test accuracy (%) on {dataset} with symmetric training-label noise (with probability r a training label "
        "moves to one of the other classes, uniformly); test labels are clean.",
        _PEERS, tuple(Column("symmetric", r) for r in _RATES), method_rows=True, rate_noise="symmetric"),
    "table5": TableDef(
        "table5", "Table 5 analogue: asymmetric label noise",
        "Test accuracy (%) on {dataset} with asymmetric training-label noise (with probability r a label moves to "
        "its most confusable class: anger→disgust, disgust→anger, fear→surprise, happiness→neutral, "
        "sadness→neutral, surprise→anger, neutral→sadness, contempt→neutral); test labels are clean.",
        _PEERS, tuple(Column("asymmetric", r) for r in _RATES), method_rows=True, rate_noise="asymmetric"),
    "table2": TableDef(
        "table2", "Table 2 analogue: LA-Net component ablation",
        "Test accuracy (%) of LA-Net with its Table 2 switches on {dataset}, clean and with 30% symmetric "
        "training-label noise. LD: label distributions from expression space; LM: landmark space added to label "
        "distribution estimation; EL: expression-landmark contrastive loss; PL: pseudo-labels in the EL loss. "
        "'none' is LA-Net with every switch off (cross-entropy only, i.e. the baseline).",
        (_ablation("none", ()), _ablation("LD", ("LD",)), _ablation("LD+LM", ("LD", "LM")),
         _ablation("LD+LM+EL", ("LD", "LM", "EL")), _ablation("LD+LM+EL+PL", _SWITCHES)),
        (Column("none"), Column("symmetric", 0.3)), rate_noise="symmetric"),
    "fig2": TableDef(
        "fig2", "Figure 2 analogue: neighbours per space K",
        "Test accuracy (%) of LA-Net with K nearest neighbours per space (expression and landmark) on {dataset}, "
        "clean and with 30% symmetric training-label noise (the paper uses K = 8).",
        tuple(Row(f"K={k}", "lanet", (("K", k),)) for k in (4, 8, 12, 16)),
        (Column("none"), Column("symmetric", 0.3)), rate_noise="symmetric"),
    "annotator": TableDef(
        "annotator", "Real human noise: one annotator vote per training image",
        "Test accuracy (%) on {dataset} trained on real human noise: each training label is one of the image's "
        "own annotator votes, drawn in proportion to its votes (noise type annotator). Test labels are the "
        "dataset's own labels ({protocol}). realised noise: fraction of training labels that differ from the "
        "dataset's labels.",
        _PAIR, (Column("annotator"),), method_rows=True),
    "labelfile": TableDef(
        "labelfile", "Real label noise from a second annotation: a label file",
        "Test accuracy (%) on {dataset} trained on the labels of a label file (--labels {label_file}: a second "
        "annotation of the training images, e.g. a cheaper or automatic one; its labels replace the dataset's on "
        "the training images it names, and no noise is injected). Test labels are the dataset's own labels "
        "({protocol}). realised noise: fraction of training labels that differ from the dataset's labels, i.e. "
        "those the file changed.",
        _PAIR, (Column(LABEL_FILE),), method_rows=True),
    "table6": TableDef(
        "table6", "Table 6 analogue: label distributions vs human votes",
        "Jensen–Shannon divergence (natural log: 0 ≤ JS ≤ ln 2 ≈ 0.693) on every training image of {dataset} "
        "between the human label distribution (the image's annotator votes divided by their sum) and: the label "
        "distribution LA-Net learned (its final EMA targets, label_distributions.npz); the one-hot training label "
        "the run was given (after noise); a control: that training label smoothed uniformly until its mean "
        "confidence equals the learned distributions' mean maximum (as soft, but carrying no information: learned "
        "below it means LDE moved probability towards the classes people chose); the one-hot dataset label. "
        "Averaged over the training images with votes, then mean ± sample std over seeds. Rows: every LA-Net run "
        "of this preset with saved label distributions, from any table; this table's own grid is LA-Net on clean "
        "and annotator labels. (The paper's Table 6 compares 50 AffectNet images with a user study.)",
        (Row("LA-Net", "lanet"),), (Column("none"), Column("annotator"))),
}
TABLE_ORDER: tuple[str, ...] = tuple(TABLES)


def parse_rates(text: str | Sequence[float] | None) -> list[float] | None:
    """``"0.1,0.2"`` (or a list) -> ``[0.1, 0.2]``; rates lie in [0, 1), 0 meaning the clean column."""
    if text is None or text == "":
        return None
    items = text.split(",") if isinstance(text, str) else list(text)
    rates = []
    for item in items:
        try:
            r = float(item)
        except (TypeError, ValueError) as exc:
            raise LanetError(f"--rates: {item!r} is not a number") from exc
        if not 0.0 <= r < 1.0:
            raise LanetError(f"--rates: {r} is outside [0, 1) (0 = clean labels)")
        rates.append(r)
    return rates


def _coerce(method: str, key: str, text: str, default: Any) -> Any:
    """``text`` as the type of the hyperparameter's default (bool: 1/0/true/false)."""
    try:
        if isinstance(default, bool):
            if text.lower() in ("1", "true", "yes", "on"):
                return True
            if text.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(text)
        if isinstance(default, int):
            return int(text)
        if isinstance(default, float):
            return float(text)
    except ValueError:
        raise LanetError(f"--methods {method}: {key} must be {type(default).__name__}, got {text!r}") from None
    return text


def parse_method_spec(text: str) -> tuple[str, tuple[tuple[str, Any], ...]]:
    """``"lanet:consistency=1:sharpen=0.5"`` -> ``("lanet", (("consistency", 1.0), ("sharpen", 0.5)))``: a method
    and hyperparameters of its ``Params`` (typed like their defaults), so a variant is a row of its own."""
    from ..methods.registry import get_method_class

    name, *items = [part.strip() for part in text.split(":")]
    defaults = get_method_class(name).Params()  # unknown method -> LanetError naming the available ones
    params = []
    for item in items:
        key, eq, value = item.partition("=")
        key = key.strip()
        if not eq or not key:
            raise LanetError(f"--methods {text}: {item!r} is not KEY=VALUE (e.g. lanet:consistency=1)")
        if not hasattr(defaults, key):
            raise LanetError(f"--methods {text}: method {name!r} has no hyperparameter {key!r}")
        params.append((key, _coerce(name, key, value.strip(), getattr(defaults, key))))
    return name, tuple(params)


def table_layout(table: str, methods: Sequence[str] | None = None,
                 rates: Sequence[float] | None = None) -> tuple[list[Row], list[Column]]:
    """The rows and columns of ``table`` after the ``--methods`` and ``--rates`` selections."""
    t = get_table(table)
    rows = list(t.rows)
    if methods:
        parsed = [parse_method_spec(m) for m in methods]
        if t.method_rows:
            by_method = {r.method: r for r in t.rows}
            rows = []
            for name, params in parsed:
                base = by_method.get(name, Row(name, name))
                label = base.label + (" (" + ", ".join(f"{k}={v}" for k, v in params) + ")" if params else "")
                rows.append(Row(label, name, base.params + params))
        else:
            if any(params for _, params in parsed):
                raise LanetError(f"--methods: {table}'s rows set their own hyperparameters; name methods only "
                                 f"(got {', '.join(methods)})")
            rows = [r for r in rows if r.method in {name for name, _ in parsed}]
    cols = list(t.columns)
    if rates and t.rate_noise:
        # rate 0 is the clean reference column (e.g. CE on clean labels at the same budget)
        cols = [c for c in cols if c.noise != t.rate_noise and not (c.noise == "none" and 0 in rates)]
        cols = ([Column("none")] if 0 in rates else []) + cols
        cols += [Column(t.rate_noise, float(r)) for r in rates if r > 0]
    return rows, cols


def file_tables() -> list[str]:
    """The tables whose columns train on ``--labels FILE``."""
    return [n for n, t in TABLES.items() if any(c.noise == LABEL_FILE for c in t.columns)]


def get_table(name: str) -> TableDef:
    if name not in TABLES:
        raise LanetError(f"unknown table {name!r}; available: {', '.join(TABLE_ORDER)} (or all)")
    return TABLES[name]


def expand_tables(names: Sequence[str]) -> list[str]:
    """Validate table names; ``all`` stands for every table. Duplicates are dropped, order kept."""
    if not names:
        raise LanetError(f"name at least one table: {', '.join(TABLE_ORDER)} (or all)")
    out: list[str] = []
    for n in names:
        for t in (TABLE_ORDER if n == "all" else (get_table(n).name,)):
            if t not in out:
                out.append(t)
    return out
