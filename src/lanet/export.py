"""``lanet export RUN_DIR|MODEL_FILE --format onnx|torchscript [--out FILE]``: a deployable classifier file.

Both formats take ``N x C x S x S`` float32 input normalised as in training (``(x - mean) / std`` after the crop
and resize described in :mod:`lanet.predict.crop`) and return ``N x K`` logits; the batch axis is dynamic, the
spatial size is the model's ``image_size``. The preprocessing metadata travels inside the file:

* ONNX (opset 17, input ``input``, output ``logits``, batch axis ``batch``): the model's ``metadata_props`` hold
  the key ``lanet`` whose value is a JSON object (format, class_names, num_classes, in_chans, image_size, mean,
  std, source_size, crop_margin, crop_offset_y, arch, method, epoch). Read it with
  ``onnxruntime.InferenceSession(f).get_modelmeta().custom_metadata_map["lanet"]`` or ``onnx.load(f)``.
* TorchScript (``torch.jit.trace``): the same JSON as the archive's extra file ``lanet.json``
  (``torch.jit.load(f, _extra_files={"lanet.json": ""})``).

After writing, the export is run on random inputs (batch 1 and 3) and compared with the PyTorch model; the
largest absolute logit difference is reported (ONNX: only where onnxruntime is installed).
"""

from __future__ import annotations

import inspect
import json
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .errors import LanetError
from .fileutil import atomic_open
from .predict.backends import METADATA_KEY, ONNX_HINT, announce_model, resolve_model_path
from .predict.crop import with_defaults

FORMATS = ("onnx", "torchscript")
OPSET = 17
#: An export whose logits differ from PyTorch's by more than this is an error.
TOLERANCE = 1e-3


def export_metadata(meta: dict[str, Any], source: Path) -> dict[str, Any]:
    """The JSON-able metadata written into an exported file (no weights)."""
    out = {k: v for k, v in with_defaults(meta).items() if k not in ("state_dict", "method_params")}
    out["exported_from"] = str(source)
    return json.loads(json.dumps(out, default=str))


def default_out(model_path: Path, fmt: str) -> Path:
    return model_path.with_suffix(".onnx" if fmt == "onnx" else ".torchscript.pt")


#: Names an export may replace inside a run directory without ``force``: earlier exports.
EXPORT_SUFFIXES = (".onnx", ".torchscript.pt")


def check_destination(dest: Path, src: Path, force: bool = False) -> None:
    """Refuse an ``--out`` that is the exported model itself (always) or an existing file of a run directory
    (a folder holding ``config.yaml``) other than an earlier export, unless ``force``."""
    if dest.is_dir():
        raise LanetError(f"--out {dest} is a folder; give a file name, e.g. {dest / default_out(src, 'onnx').name}")
    if dest.resolve() == src.resolve() or (dest.exists() and os.path.samefile(dest, src)):
        raise LanetError(f"--out {dest} would overwrite the model it exports")
    if not dest.parent.is_dir():
        raise LanetError(f"--out: folder {dest.parent} does not exist")
    in_run = (dest.parent / "config.yaml").is_file()
    if in_run and (dest.exists() or dest.is_symlink()) and not dest.name.endswith(EXPORT_SUFFIXES) and not force:
        raise LanetError(f"--out {dest} is a file of the run in {dest.parent}; export refuses to replace it (choose "
                         "another --out, or pass --force)")


def export_model(model: str | Path, fmt: str = "onnx", out: str | Path | None = None,
                 verbose: bool = False, force: bool = False) -> dict[str, Any]:
    """Export a run directory's classifier (or an exported ``.pt``) to ``fmt``. Returns a dict with ``path``,
    ``format``, ``source`` and ``max_abs_diff`` (None when the check could not run).

    The destination is never the exported model itself, and an existing file of a run directory (other than an
    earlier ``.onnx`` / ``.torchscript.pt`` export) is replaced only with ``force``."""
    from .models.io import load_classifier

    if fmt not in FORMATS:
        raise LanetError(f"unknown export format {fmt!r}; expected one of {', '.join(FORMATS)}")
    src = resolve_model_path(model)
    if src.suffix.lower() == ".onnx":
        raise LanetError(f"{src} is already an ONNX file; export from a run directory or its model_*.pt")
    dest = Path(out) if out else default_out(src, fmt)
    check_destination(dest, src, force)
    net, meta = load_classifier(src, "cpu")
    if verbose:
        announce_model(model, src)
    meta = export_metadata(meta, src)
    size, chans = int(meta["image_size"]), int(meta["in_chans"])
    example = torch.randn(2, chans, size, size, generator=torch.Generator().manual_seed(0))
    if fmt == "onnx":
        _export_onnx(net, example, meta, dest)
    else:
        _export_torchscript(net, example, meta, dest)
    diff = check_export(net, dest, fmt, chans, size)
    if diff is not None and diff > TOLERANCE:
        raise LanetError(f"{dest}: the exported model's logits differ from PyTorch's by {diff:.2e} "
                         f"(more than {TOLERANCE:g})")
    return {"path": dest, "format": fmt, "source": src, "max_abs_diff": diff}


def _export_onnx(net: torch.nn.Module, example: torch.Tensor, meta: dict[str, Any], dest: Path) -> None:
    try:
        import onnx
    except ImportError as exc:
        raise LanetError(f"ONNX export needs the onnx package: {ONNX_HINT}") from exc
    import io

    kwargs: dict[str, Any] = {"input_names": ["input"], "output_names": ["logits"], "opset_version": OPSET,
                              "dynamic_axes": {"input": {0: "batch"}, "logits": {0: "batch"}},
                              "do_constant_folding": True}
    if "dynamo" in inspect.signature(torch.onnx.export).parameters:
        kwargs["dynamo"] = False  # the TorchScript-based exporter: no onnxscript dependency, dynamic_axes honoured
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # deprecation and tracer notices of the exporter
        torch.onnx.export(net, (example,), buf, **kwargs)
    proto = onnx.load_from_string(buf.getvalue())
    entry = proto.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(meta)
    proto.doc_string = (f"lanet expression classifier ({meta.get('arch')}, {meta['num_classes']} classes: "
                        f"{', '.join(meta['class_names'])}). Input: N x {meta['in_chans']} x {meta['image_size']} x "
                        f"{meta['image_size']} float32, (x - mean) / std of a face crop; output: logits. "
                        f"Preprocessing metadata: metadata_props['{METADATA_KEY}'] (JSON).")
    onnx.checker.check_model(proto)
    with atomic_open(dest, "wb") as fh:
        fh.write(proto.SerializeToString())


def _export_torchscript(net: torch.nn.Module, example: torch.Tensor, meta: dict[str, Any], dest: Path) -> None:
    import io

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(net, example, check_trace=False)
        buf = io.BytesIO()
        torch.jit.save(traced, buf, _extra_files={f"{METADATA_KEY}.json": json.dumps(meta)})
    with atomic_open(dest, "wb") as fh:
        fh.write(buf.getvalue())


@torch.no_grad()
def check_export(net: torch.nn.Module, dest: Path, fmt: str, chans: int, size: int) -> float | None:
    """Largest absolute logit difference between ``dest`` and ``net`` on random batches of 1 and 3."""
    gen = torch.Generator().manual_seed(1)
    xs = [torch.randn(n, chans, size, size, generator=gen) for n in (1, 3)]
    if fmt == "onnx":
        try:
            import onnxruntime as ort
        except ImportError:
            return None
        sess = ort.InferenceSession(str(dest), providers=["CPUExecutionProvider"])
        outs = [sess.run(None, {"input": x.numpy()})[0] for x in xs]
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            loaded = torch.jit.load(str(dest), map_location="cpu")
        outs = [loaded(x).numpy() for x in xs]
    return float(max(np.abs(o - net(x).numpy()).max() for o, x in zip(outs, xs)))


def run_export(model: str, fmt: str, out: str | None = None, force: bool = False) -> int:
    """The CLI command: export, then print where it went and the check."""
    res = export_model(model, fmt, out, verbose=True, force=force)
    diff = res["max_abs_diff"]
    check = "not checked (onnxruntime not installed)" if diff is None else f"max |logit difference| {diff:.1e}"
    print(f"written {res['path']} ({fmt}, dynamic batch axis; from {res['source']}; {check} vs PyTorch)")
    return 0
