"""Read a run directory back for analysis: ``lanet report`` and ``lanet audit`` start here.

Everything an analysis shows comes from the run directory (see :mod:`lanet.train.trainer`) and the dataset
its ``config.yaml`` names:

* :func:`open_run` checks the directory and reads ``config.yaml``, ``metrics.jsonl``, ``summary.json`` and
  ``noise.json``; the dataset is loaded on first use (:attr:`RunData.faceset`, shared between runs on the
  same data).
* :meth:`RunData.training_labels` rebuilds the labels the run was trained on from the dataset and the noise
  record (``noise_changes.csv``), with the mask of the labels that differ from the dataset's own labels (changed
  by injected noise or by a ``--labels`` file: the dataset's labels are the reference either way).
* :meth:`RunData.label_distributions` reads LA-Net's ``label_distributions.npz`` aligned with them.
* :func:`predict` runs an exported classifier over images: logits and the features entering its last linear
  layer.

Nothing here writes into a run directory.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from .classes import CLASSES
from .config import Config
from .data.faceset import FaceSet
from .errors import LanetError
from .fileutil import csv_value, open_text, read_text
from .runconfig import read_run_config
from .train.checkpoint import metrics_by_epoch

MODEL_TAGS = ("final", "val_selected")
_FACESETS: dict[str, FaceSet] = {}  # data configuration (JSON) -> loaded dataset, shared by every run on it


@dataclass
class TrainingLabels:
    """The training split as the run saw it.

    index: ``n`` FaceSet indices of the training images (training-split order, as the trainer uses them);
    given: ``n`` labels the run was trained on (after a label file and noise); clean: ``n`` the dataset's own
    labels (the reference, also for a run trained on a label file); flipped: ``n`` bool, True where ``given``
    differs from ``clean`` (all False without noise or label file); noise_type: the record's type (``none``,
    ``symmetric``, ..., ``label_file`` or ``label_file+<type>``, :class:`lanet.data.noise.NoiseRecord`);
    label_file: the label file's name ("" without one); file_changed: ``n`` bool, True where the label file's
    label differs from the dataset's (None without a label file).
    """

    index: np.ndarray
    given: np.ndarray
    clean: np.ndarray
    flipped: np.ndarray
    noise_type: str
    label_file: str = ""
    file_changed: np.ndarray | None = None

    @property
    def has_noise(self) -> bool:
        return self.noise_type != "none" and bool(self.flipped.any())

    @property
    def from_label_file(self) -> bool:
        """The training labels came (at least partly) from a ``--labels`` file."""
        return bool(self.label_file)


@dataclass
class RunData:
    """One run directory, read for analysis. ``root`` replaces the dataset folder of ``config.yaml``."""

    path: Path
    cfg: Config
    history: list[dict[str, Any]]
    summary: dict[str, Any] | None
    noise: dict[str, Any] | None
    root: str = ""
    _labels: TrainingLabels | None = field(default=None, repr=False)

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def method(self) -> str:
        return self.cfg.method.name

    @property
    def finished(self) -> bool:
        return self.summary is not None

    @property
    def noise_text(self) -> str:
        """What the run trained on, in words: ``clean labels``, ``symmetric 30% noise``, ``label file F (22.9%
        differ from the dataset's labels)``, or a label file with noise on top. A label file's labels are never
        called clean: the dataset's own labels are the reference."""
        kind = self.cfg.noise.type
        if kind == "none":
            injected = "clean labels"
        elif kind == "annotator":
            injected = "annotator noise"
        else:
            injected = f"{kind} {100 * self.cfg.noise.rate:g}% noise"
        if not self.cfg.data.labels:
            return injected
        lf = (self.noise or {}).get("label_file") or {}
        name = lf.get("name") or Path(self.cfg.data.labels).name
        rate = lf.get("realised_rate")
        if rate is None:  # a run recorded before label files were noise: count from the dataset
            try:
                changed = self.training_labels().file_changed
                rate = None if changed is None else float(changed.mean())
            except LanetError:
                rate = None
        text = f"label file {name}" + ("" if rate is None else f" ({100 * rate:.1f}% differ from the dataset's labels)")
        return text if kind == "none" else f"{text} + {injected}"

    @property
    def _record_has_file_labels(self) -> bool:
        """noise.json holds the label-file record, so noise_changes.csv holds every label the file changed (runs
        recorded before that kept only the injected changes, relative to the file's labels)."""
        return self.noise is not None and "label_file" in self.noise

    @property
    def faceset(self) -> FaceSet:
        """The run's dataset (loaded once per data configuration and shared). A run whose record lists every
        label its label file changed needs only the dataset's own labels, so the file is not read again (it may
        have moved since)."""
        from .data.loaders import load_faceset

        data = self.cfg.data
        if self.root and data.name != "synthetic":
            data.root = str(Path(self.root).expanduser())
        d = self.cfg.to_dict()["data"]
        if self._record_has_file_labels:
            data = replace(data, labels="")
            d["labels"] = ""
        key = json.dumps(d, sort_keys=True)
        if key not in _FACESETS:
            _FACESETS[key] = load_faceset(data)
        return _FACESETS[key]

    # ------------------------------------------------------------------ models
    def model_path(self, which: str = "auto") -> tuple[Path | None, str]:
        """(path of the exported classifier to analyse, a sentence saying which one and why).

        ``which``: ``final`` | ``val_selected`` | ``auto`` (final, else the validation-selected one of a run that
        has not finished). The path is None, with the reason, where the run holds none.
        """
        if which not in ("auto", *MODEL_TAGS):
            raise LanetError(f"unknown model {which!r}; expected auto, final or val_selected")
        final, sel = self.path / "model_final.pt", self.path / "model_val_selected.pt"
        if which == "final" or (which == "auto" and final.is_file()):
            if final.is_file():
                return final, "the exported classifier after the last epoch (model_final.pt)"
            return None, "the run has no model_final.pt (not finished)"
        if sel.is_file():
            why = "" if which == "val_selected" else " (the run has not finished: no model_final.pt yet)"
            return sel, f"the validation-selected classifier (model_val_selected.pt){why}"
        return None, "the run holds no exported classifier yet (no model_final.pt or model_val_selected.pt)"

    def load_model(self, which: str = "auto", device: str | torch.device = "cpu"
                   ) -> tuple[nn.Module | None, dict[str, Any], str]:
        """(model in eval mode or None, payload metadata, the sentence of :meth:`model_path`)."""
        from .models.io import load_classifier

        path, why = self.model_path(which)
        if path is None:
            return None, {}, why
        model, meta = load_classifier(path, device)
        return model, meta, why

    # ------------------------------------------------------------------ labels
    def training_labels(self) -> TrainingLabels:
        """The training labels the run used: the dataset's, with ``noise_changes.csv`` applied, and the mask of
        those that differ from the dataset's own labels.

        ``noise_changes.csv`` is ``name,clean,noisy`` (``clean``: the dataset's label), with a fourth column
        ``label_file`` in runs with a label file; runs recorded before label files counted as noise wrote the
        label file's label as ``clean`` and only the injected changes: their dataset is loaded with the file, and
        the file's labels are the start. Raises a :class:`LanetError` when the record does not fit the dataset (a
        name that is not a training image, a label that differs from the dataset's, a count that differs from
        ``noise.json``): the dataset changed since the run.
        """
        if self._labels is not None:
            return self._labels
        fs = self.faceset
        idx = fs.indices("train")
        clean = fs.labels[idx].copy()
        start = fs.given_labels[idx].copy()  # the label file's labels in a run recorded before the new record
        given = start.copy()
        with_file = bool(self.cfg.data.labels)
        file_changed = (start != clean) if with_file else None
        kind = self.cfg.noise.type
        if self.noise is not None and self._record_has_file_labels:
            kind = str(self.noise.get("type", kind))
        elif with_file:
            kind = "label_file" if kind == "none" else f"label_file+{kind}"
        changes = self.path / "noise_changes.csv"
        if self.noise is not None and int(self.noise.get("num_train", len(idx))) != len(idx):
            raise LanetError(f"{self.path / 'noise.json'}: {self.noise.get('num_train')} training images, the dataset "
                             f"has {len(idx)} now; was it changed since the run?")
        rows = 0
        if kind != "none":
            if not changes.is_file():
                raise LanetError(f"{changes} is missing: the run's {kind} labels cannot be rebuilt")
            where = {str(n): i for i, n in enumerate(fs.names[idx])}
            names = {c: k for k, c in enumerate(CLASSES[:fs.num_classes])}
            with open_text(changes) as fh:
                reader = csv.reader(fh)
                header = next(reader, None)
                if header not in (["name", "clean", "noisy"], ["name", "clean", "noisy", "label_file"]):
                    raise LanetError(f"{changes}: header must be name,clean,noisy[,label_file], got {header}")
                four = len(header) == 4
                if four and file_changed is None:
                    file_changed = np.zeros(len(idx), dtype=bool)
                for row_no, row in enumerate(reader, 2):
                    if len(row) != len(header) or any(c not in names for c in row[1:]):
                        raise LanetError(f"{changes}:{row_no}: expected {','.join(header)} with class names, "
                                         f"got {row}")
                    row[0] = csv_value(row[0])  # a name written with a leading ' against spreadsheet formulas
                    i = where.get(row[0])
                    if i is None:
                        raise LanetError(f"{changes}:{row_no}: {row[0]!r} is not a training image of {fs.name}; "
                                         "was the dataset changed since the run?")
                    ref = clean[i] if four else start[i]
                    if ref != names[row[1]]:
                        raise LanetError(f"{changes}:{row_no}: {row[0]} is {row[1]} in the record but "
                                         f"{CLASSES[ref]} in the dataset; was it changed since the run?")
                    given[i] = names[row[2]]
                    if four:
                        file_changed[i] = names[row[3]] != clean[i]
                    rows += 1
        flipped = given != clean
        if self.noise is not None and kind != "none":
            counted = int(flipped.sum()) if self._record_has_file_labels or not with_file else rows
            if int(self.noise.get("num_changed", counted)) != counted:
                raise LanetError(f"{changes}: {counted} changed labels, noise.json says "
                                 f"{self.noise.get('num_changed')}")
        name = ""
        if with_file:
            name = ((self.noise or {}).get("label_file") or {}).get("name") or Path(self.cfg.data.labels).name
        self._labels = TrainingLabels(idx, given, clean, flipped, kind, name, file_changed)
        return self._labels

    def label_distributions(self) -> tuple[np.ndarray | None, str]:
        """(LA-Net's learned label distributions, ``n x C`` aligned with :meth:`training_labels` and normalised
        per row, or None; a sentence saying why there are none)."""
        path = self.path / "label_distributions.npz"
        if not path.is_file():
            why = (f"method {self.method} learns no label distributions" if self.method != "lanet"
                   else "the run saved no label_distributions.npz (not finished, or trained with LD off)")
            return None, why
        try:
            with np.load(path, allow_pickle=False) as z:
                dist, names = np.asarray(z["distributions"], dtype=np.float64), z["names"]
        except Exception as exc:  # noqa: BLE001 - OSError, ValueError, KeyError, BadZipFile, EOFError of a bad file
            raise LanetError(f"{path}: unreadable label distributions ({exc})") from exc
        labels = self.training_labels()
        fs = self.faceset
        if dist.ndim != 2 or dist.shape[1] != fs.num_classes:
            raise LanetError(f"{path}: distributions must be N x {fs.num_classes}, got {dist.shape}")
        if len(names) == len(dist):
            where = {str(n): i for i, n in enumerate(fs.names[labels.index])}
            rows = np.array([where.get(str(n), -1) for n in names], dtype=np.int64)
            if (rows < 0).any() or len(set(rows.tolist())) != len(rows):
                bad = str(names[int(np.flatnonzero(rows < 0)[0])]) if (rows < 0).any() else "a repeated name"
                raise LanetError(f"{path}: {bad!r} is not a training image of {fs.name}; was the dataset changed "
                                 "since the run?")
        elif len(dist) == len(labels.index):
            rows = np.arange(len(dist))  # no names saved: training-split order
        else:
            raise LanetError(f"{path}: {len(dist)} distributions for {len(labels.index)} training images")
        if len(rows) != len(labels.index):
            raise LanetError(f"{path}: {len(rows)} distributions for {len(labels.index)} training images")
        if (dist < 0).any() or not np.isfinite(dist).all() or (dist.sum(1) <= 0).any():
            raise LanetError(f"{path}: label distributions hold negative, non-finite or all-zero rows")
        out = np.empty_like(dist)
        out[rows] = dist / dist.sum(1, keepdims=True)
        return out, ""


# ---------------------------------------------------------------------------------------------- reading
def _read_json(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        data = json.loads(read_text(path))
    except (OSError, ValueError) as exc:
        raise LanetError(f"{path}: unreadable JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise LanetError(f"{path}: expected a JSON object")
    return data


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The lines of ``metrics.jsonl`` in epoch order (empty for a run that has finished no epoch). A damaged
    last line (a writer killed mid-line by an older version) is dropped; any other bad line is an error."""
    if not path.is_file():
        return []
    by_epoch = metrics_by_epoch(path)
    return [by_epoch[e] for e in sorted(by_epoch)]


def open_run(run_dir: str | Path, root: str = "") -> RunData:
    """Read ``run_dir`` for analysis (the dataset is loaded later, on first use).

    Raises a one-line :class:`LanetError` for a missing directory, one without ``config.yaml`` and damaged files.
    """
    path = Path(run_dir)
    if not path.exists():
        raise LanetError(f"run directory not found: {path}")
    if not path.is_dir():
        raise LanetError(f"{path} is not a directory (expected a run directory written by lanet train)")
    if not (path / "config.yaml").is_file():
        raise LanetError(f"{path} is not a run directory (config.yaml missing)")
    cfg = read_run_config(path)
    return RunData(path=path, cfg=cfg, history=read_metrics(path / "metrics.jsonl"),
                   summary=_read_json(path / "summary.json"), noise=_read_json(path / "noise.json"), root=root)


# ---------------------------------------------------------------------------------------------- inference
def feature_layer(model: nn.Module) -> nn.Linear:
    """The classifier's last linear layer (``fc`` where the model has one): its input is the feature vector."""
    fc = getattr(model, "fc", None)
    if isinstance(fc, nn.Linear):
        return fc
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise LanetError(f"{type(model).__name__} has no linear classifier layer")
    return linears[-1]


def eval_transform(run: RunData) -> Any:
    """The trainer's deterministic evaluation transform for ``run`` (resize + normalisation)."""
    from .train.trainer import make_augment

    return make_augment(run.cfg, run.faceset)


@torch.no_grad()
def predict(model: nn.Module, images: np.ndarray, transform: Any, batch_size: int = 256,
            device: str | torch.device = "cpu", features: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
    """(logits ``N x C`` float32, features ``N x F`` float32 or None) of ``model`` on ``N x H x W x C`` uint8 images.

    The features are the input of the classifier's last linear layer (:func:`feature_layer`).
    """
    model.eval()
    captured: list[torch.Tensor] = []
    hook = feature_layer(model).register_forward_pre_hook(lambda m, inp: captured.append(inp[0].detach())) \
        if features else None
    logits, feats = [], []
    try:
        for a in range(0, len(images), batch_size):
            x, _ = transform.eval(torch.from_numpy(np.ascontiguousarray(images[a:a + batch_size])))
            captured.clear()
            logits.append(model(x.to(device)).float().cpu().numpy())
            if features:
                feats.append(captured[-1].float().flatten(1).cpu().numpy())
    finally:
        if hook is not None:
            hook.remove()
    c = getattr(feature_layer(model), "out_features", 0)
    out_logits = np.concatenate(logits) if logits else np.zeros((0, c), dtype=np.float32)
    out_feats = (np.concatenate(feats) if feats else np.zeros((0, 0), dtype=np.float32)) if features else None
    return out_logits, out_feats


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax, numerically stable (the row maximum is subtracted first)."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)


def cross_entropy(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per-sample cross-entropy ``-log softmax(logits)[label]`` (log-sum-exp form)."""
    z = np.asarray(logits, dtype=np.float64)
    m = z.max(1, keepdims=True)
    lse = (m + np.log(np.exp(z - m).sum(1, keepdims=True)))[:, 0]
    return lse - z[np.arange(len(z)), np.asarray(labels, dtype=np.int64)]
