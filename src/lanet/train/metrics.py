"""Classification metrics from a confusion matrix: overall, per-class and mean class accuracy."""

from __future__ import annotations

from typing import Any

import numpy as np


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """C x C counts, rows = true class, columns = predicted class."""
    idx = np.asarray(y_true, dtype=np.int64) * num_classes + np.asarray(y_pred, dtype=np.int64)
    return np.bincount(idx, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def metrics_from_confusion(cm: np.ndarray, class_names: tuple[str, ...] | list[str]) -> dict[str, Any]:
    cm = np.asarray(cm, dtype=np.int64)
    total = cm.sum()
    support = cm.sum(1)
    per_class = {name: (float(cm[i, i] / support[i]) if support[i] else None) for i, name in enumerate(class_names)}
    present = [v for v in per_class.values() if v is not None]
    return {
        "accuracy": float(np.trace(cm) / total) if total else 0.0,
        "mean_class_accuracy": float(np.mean(present)) if present else 0.0,
        "per_class_accuracy": per_class,
        "confusion_matrix": cm.tolist(),
        "num_images": int(total),
    }


def top_prediction_share(cm: np.ndarray | list) -> float:
    """The share of images predicted as the most-predicted class (columns of the confusion matrix): near 1, the
    network has collapsed onto one class, whatever its accuracy says."""
    cm = np.asarray(cm, dtype=np.int64)
    total = cm.sum()
    return float(cm.sum(0).max() / total) if total else 0.0
