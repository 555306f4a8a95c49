"""Prediction on new photos, videos and face crops with a trained classifier (``lanet predict``, ``Predictor``).

Modules: :mod:`.images` (reading inputs), :mod:`.detect` (dlib face detectors), :mod:`.crop` (the training crop),
:mod:`.backends` (PyTorch, TorchScript, ONNX Runtime), :mod:`.predictor` (the pipeline), :mod:`.output` (CSV /
JSON lines, annotated copies), :mod:`.command` (the CLI command).
"""

from .predictor import RECORD_FIELDS, Predictor

__all__ = ["RECORD_FIELDS", "Predictor"]
