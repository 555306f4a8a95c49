"""The method interface: one object per training method that owns its model, losses and state.

The trainer only sees this interface. A method's ``forward(batch)`` is its training step and returns the
loss (so the whole method can be wrapped in DistributedDataParallel); ``predict(images)`` is the inference
path; ``export()`` returns the plain ResNet classifier a deployment needs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

import torch
import torch.nn as nn

from ..errors import LanetError
from ..models.resnet import ResNet


@dataclass
class Batch:
    """One training batch (this process's share of the global batch).

    images: N x C x S x S float (augmented, normalised); labels: N training labels (possibly noisy);
    index: N indices into the training split (for per-sample state such as LA-Net's EMA memory);
    landmarks: N x P x 2 in input pixels, or None; landmark_found: N bool or None;
    clean_labels: N dataset labels where known (diagnostics only: never used in a loss);
    epoch, step: position in training; total_steps: steps in the whole run.
    """

    images: torch.Tensor
    labels: torch.Tensor
    index: torch.Tensor
    landmarks: torch.Tensor | None = None
    landmark_found: torch.Tensor | None = None
    clean_labels: torch.Tensor | None = None
    epoch: int = 0
    step: int = 0
    total_steps: int = 1


@dataclass
class MethodSpec:
    """What a method is built from: sizes known only once the data is loaded."""

    num_classes: int
    num_train: int
    in_chans: int
    image_size: int
    num_landmarks: int
    arch: str
    pretrained: str
    dropout: float
    epochs: int
    width: int = 64  # base channel count of the ResNet
    train_labels: Any = None  # numpy array of the (noisy) training labels, for methods with per-sample state
    train_names: Any = None  # numpy array of the training images' names, aligned with train_labels


class Method(nn.Module):
    """Base class. Subclasses set ``name``, ``Params`` (a dataclass of hyperparameters with defaults)."""

    name: str = "method"
    needs_landmarks: bool = False

    @dataclass
    class Params:
        pass

    def __init__(self, spec: MethodSpec, params: dict[str, Any] | None = None):
        super().__init__()
        self.spec = spec
        self.params = self.parse_params(params or {})

    @classmethod
    def parse_params(cls, params: dict[str, Any]) -> Any:
        known = {f.name: f for f in fields(cls.Params)}
        unknown = sorted(set(params) - set(known))
        if unknown:
            raise LanetError(f"method {cls.name!r} has no parameter(s) {unknown}; known: {sorted(known)}")
        p = cls.Params()
        for k, v in params.items():
            default = getattr(p, k)
            if isinstance(default, str) and not isinstance(v, str):
                raise LanetError(f"method.params.{k} must be a string, got {v!r}")
            if isinstance(default, bool) and not isinstance(v, bool):
                raise LanetError(f"method.params.{k} must be true/false, got {v!r}")
            if isinstance(default, (int, float)) and not isinstance(default, bool):
                if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v):
                    raise LanetError(f"method.params.{k} must be a finite number, got {v!r}")
                if isinstance(default, int) and v != int(v):
                    raise LanetError(f"method.params.{k} must be an integer, got {v!r}")
                v = type(default)(v)
            setattr(p, k, v)
        return p

    @classmethod
    def check_config(cls, params: Any, cfg: Any) -> None:
        """Check ``params`` (parsed :attr:`Params`) against the rest of the configuration ``cfg`` (a
        :class:`lanet.config.Config`), e.g. a neighbour count against the batch size. Called by
        :func:`lanet.runconfig.validate_config` before anything is loaded or written; raises a one-line
        :class:`LanetError` naming the key. The base accepts everything; override it where a value depends on
        others."""

    # -- the trainer's view -------------------------------------------------------------------------------
    def forward(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Training step: returns (scalar loss, dict of scalar tensors to log)."""
        raise NotImplementedError

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """Inference logits N x num_classes from the expression path only."""
        return self.export()(images)

    def export(self) -> ResNet:
        """The plain classifier used at inference (shares weights with the method)."""
        raise NotImplementedError

    def after_step(self, batch: Batch) -> None:
        """Called after each optimiser step (momentum updates, relabelling, ...)."""

    def epoch_diagnostics(self) -> dict[str, float]:
        """Numbers to add to this epoch's line in metrics.jsonl (and reset)."""
        return {}

    def param_groups(self, lr: float) -> list[dict[str, Any]]:
        """Optimiser parameter groups; methods with per-part learning rates override this."""
        return [{"params": [p for p in self.parameters() if p.requires_grad], "lr": lr}]

    def save_artifacts(self, run_dir: Any) -> None:
        """Write method-specific results (e.g. learned label distributions) into the run directory."""
