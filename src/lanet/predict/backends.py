"""Classifier backends for prediction: an exported ``.pt`` on PyTorch, an ``.onnx`` file on ONNX Runtime, a
TorchScript file from ``lanet export --format torchscript``.

Every backend takes ``N x C x S x S`` float32 input, already normalised (see :mod:`lanet.predict.crop`), and
returns ``N x K`` logits. The metadata that defines the input (class names, ``image_size``, ``in_chans``,
``mean``, ``std``, ``source_size``, ``crop_margin``, ``crop_offset_y``) travels inside every file: in the
payload dict of a ``.pt``, as the JSON string ``lanet`` in an ONNX model's ``metadata_props``, and as the
extra file ``lanet.json`` in a TorchScript archive.

Nothing in a run directory is executed: ``--model RUN_DIR`` loads only its weights-only ``.pt`` files. A
TorchScript archive is code (its ``__setstate__`` and ``forward`` run when it is loaded and called), so it is
loaded only from a file named explicitly, and never from a file named like a run's weights
(:data:`WEIGHTS_NAMES`), which are always read with ``weights_only``.
"""

from __future__ import annotations

import json
import sys
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import LanetError

ONNX_HINT = "pip install 'lanet[onnx]'"
METADATA_KEY = "lanet"  # ONNX metadata_props key / TorchScript extra file stem
#: Keys a model's metadata must hold for prediction.
REQUIRED_KEYS = ("class_names", "num_classes", "in_chans", "image_size", "mean", "std")
#: The files a run directory holds weights in: read with ``weights_only`` only, never as TorchScript.
WEIGHTS_NAMES = ("model_val_selected.pt", "model_final.pt", "checkpoint.pt")


def resolve_model_path(model: str | Path, verbose: bool = False) -> Path:
    """A model file, or a run directory's ``model_val_selected.pt`` (when present) else ``model_final.pt``."""
    path = Path(model)
    if path.is_dir():
        for name in ("model_val_selected.pt", "model_final.pt"):
            if (path / name).is_file():
                if verbose:
                    announce_model(path, path / name)
                return path / name
        raise LanetError(f"{path} holds no exported model (model_val_selected.pt or model_final.pt); "
                         "is it a finished run directory?")
    if not path.is_file():
        raise LanetError(f"model not found: {path}")
    return path


def announce_model(model: str | Path, path: Path) -> None:
    """Say on stderr which file of a run directory ``model`` is used (nothing for a file named directly)."""
    if Path(model).is_dir():
        what = "the validation-selected epoch" if path.name.startswith("model_val") else "the final epoch"
        print(f"lanet: using {path} ({what})", file=sys.stderr)


def _check_meta(meta: dict[str, Any], path: Path) -> dict[str, Any]:
    from ..validate import check_model_meta

    return check_model_meta(meta, path)


def _torchscript_meta(path: Path) -> dict[str, Any] | None:
    """The lanet metadata of a TorchScript archive, or None if ``path`` is not one."""
    try:
        with zipfile.ZipFile(path) as zf:
            names = [n for n in zf.namelist() if n.endswith(f"extra/{METADATA_KEY}.json")]
            if not names or not any(n.endswith("constants.pkl") or "/code/" in n for n in zf.namelist()):
                return None
            raw = zf.read(names[0])
    except (zipfile.BadZipFile, OSError, ValueError, KeyError):
        return None
    try:
        meta = json.loads(raw.decode("utf-8"))
    except ValueError as exc:  # UnicodeDecodeError included
        raise LanetError(f"{path}: its lanet.json metadata is not UTF-8 JSON ({exc})") from exc
    return meta


class Backend:
    """Runs the classifier: ``backend(x)`` with x ``N x C x S x S`` float32 -> ``N x K`` float32 logits."""

    name = "backend"
    meta: dict[str, Any]
    path: Path

    def __call__(self, x: np.ndarray | torch.Tensor) -> np.ndarray:  # pragma: no cover - interface
        raise NotImplementedError


class TorchBackend(Backend):
    name = "torch"

    def __init__(self, path: Path, device: torch.device, ts_meta: dict[str, Any] | None = None) -> None:
        self.path, self.device = path, device
        if ts_meta is not None:
            self.name = "torchscript"
            import warnings

            self.meta = _check_meta(ts_meta, path)  # before any of its code runs
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # torch >= 2.9 deprecates TorchScript
                try:
                    self.model = torch.jit.load(str(path), map_location=device).eval()
                except RuntimeError as exc:
                    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                    raise LanetError(f"{path}: not a loadable TorchScript archive ({first})") from exc
        else:
            from ..models.io import load_classifier

            self.model, meta = load_classifier(path, device)
            self.meta = _check_meta(meta, path)

    @torch.no_grad()
    def __call__(self, x: np.ndarray | torch.Tensor) -> np.ndarray:
        t = torch.as_tensor(x).to(self.device, torch.float32)
        return self.model(t).float().cpu().numpy()


class OnnxBackend(Backend):
    name = "onnxruntime"

    def __init__(self, path: Path, device: torch.device, threads: int = 0) -> None:
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise LanetError(f"running an ONNX model needs onnxruntime: {ONNX_HINT}") from exc
        self.path = path
        opts = ort.SessionOptions()
        if threads > 0:
            opts.intra_op_num_threads = threads
        providers = ["CPUExecutionProvider"]
        if device.type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        try:
            self.session = ort.InferenceSession(str(path), opts, providers=providers)
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise LanetError(f"{path}: not a readable ONNX model ({first})") from exc
        props = self.session.get_modelmeta().custom_metadata_map
        if METADATA_KEY not in props:
            raise LanetError(f"{path} is an ONNX model without lanet metadata (export lanet models with "
                             "`lanet export RUN_DIR --format onnx`)")
        try:
            meta = json.loads(props[METADATA_KEY])
        except ValueError as exc:
            raise LanetError(f"{path}: its lanet metadata is not JSON ({exc})") from exc
        self.meta = _check_meta(meta, path)
        self.input_name = self.session.get_inputs()[0].name

    def __call__(self, x: np.ndarray | torch.Tensor) -> np.ndarray:
        arr = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
        return self.session.run(None, {self.input_name: np.ascontiguousarray(arr, dtype=np.float32)})[0]


def load_backend(model: str | Path, device: torch.device, verbose: bool = False, threads: int = 0) -> Backend:
    """The backend for a run directory, ``.pt`` payload, TorchScript archive or ``.onnx`` file.

    A TorchScript archive runs only when ``model`` names its file and that file is not named like a run's weights
    (:data:`WEIGHTS_NAMES`); a run directory's model files are loaded with ``weights_only`` (a TorchScript file
    planted there is refused, never executed)."""
    path = resolve_model_path(model)
    backend: Backend
    if path.suffix.lower() == ".onnx":
        backend = OnnxBackend(path, device, threads)
    else:
        explicit = not Path(model).is_dir() and path.name not in WEIGHTS_NAMES
        ts_meta = _torchscript_meta(path) if explicit else None
        backend = TorchBackend(path, device, ts_meta=ts_meta)
    if verbose:
        announce_model(model, path)  # once it loaded: an error stays the only line
    return backend
