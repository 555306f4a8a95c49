"""lanet export: ONNX (equal to PyTorch to 1e-4 on ONNX Runtime, metadata inside, dynamic batch) and TorchScript;
predicting from the exported files; CLI wiring and one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from test_predict import scene, tiny_payload

from lanet import LanetError
from lanet.cli import main
from lanet.data.synthetic import make_synthetic
from lanet.export import export_model
from lanet.models.io import load_classifier
from lanet.predict import Predictor


@pytest.fixture(autouse=True)
def _one_thread():
    """One torch thread in these tests, restored afterwards (other test files keep their own setting)."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("run")
    torch.save(tiny_payload(), run / "model_final.pt")
    torch.save(tiny_payload(seed=1), run / "model_val_selected.pt")
    return run


@pytest.fixture(scope="module")
def faces() -> np.ndarray:
    return make_synthetic(6, seed=3, size=48, channels=3).images


def _onnx():
    pytest.importorskip("onnx", reason="onnx not installed (pip install 'lanet[onnx]')")
    return pytest.importorskip("onnxruntime", reason="onnxruntime not installed (pip install 'lanet[onnx]')")


def test_onnx_equals_torch(run_dir, tmp_path):
    ort = _onnx()
    res = export_model(run_dir, "onnx", tmp_path / "m.onnx")
    assert res["source"] == run_dir / "model_val_selected.pt" and res["max_abs_diff"] < 1e-4
    model, meta = load_classifier(run_dir / "model_val_selected.pt")
    sess = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    gen = torch.Generator().manual_seed(0)
    for n in (1, 5, 64):  # dynamic batch axis
        x = torch.randn(n, 1, 32, 32, generator=gen)
        got = sess.run(None, {"input": x.numpy()})[0]
        with torch.no_grad():
            want = model(x).numpy()
        assert got.shape == (n, 8)
        np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)
    props = sess.get_modelmeta().custom_metadata_map
    meta_onnx = json.loads(props["lanet"])
    for key in ("class_names", "image_size", "in_chans", "mean", "std", "crop_margin", "crop_offset_y",
                "source_size"):
        assert meta_onnx[key] == meta[key], key
    assert sess.get_inputs()[0].shape[0] == "batch"


def test_predict_on_onnx_equals_torch(run_dir, tmp_path, faces):
    _onnx()
    export_model(run_dir, "onnx", tmp_path / "m.onnx")
    imgs = [scene(faces, (0, 1), size=(260, 160)), np.zeros((50, 50, 3), np.uint8)]
    a = Predictor(run_dir, device="cpu").predict(imgs)
    onnx_pred = Predictor(tmp_path / "m.onnx", device="cpu")
    assert onnx_pred.backend == "onnxruntime"
    b = onnx_pred.predict(imgs)
    assert [(r["status"], r["box"]) for r in a] == [(r["status"], r["box"]) for r in b]
    for ra, rb in zip(a, b):
        if ra["probabilities"]:
            assert list(rb["probabilities"].values()) == pytest.approx(list(ra["probabilities"].values()), abs=1e-5)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_torchscript_export(run_dir, tmp_path, faces):
    res = export_model(run_dir / "model_final.pt", "torchscript", tmp_path / "m.ts")
    assert res["max_abs_diff"] == pytest.approx(0, abs=1e-5)
    extra = {"lanet.json": ""}
    loaded = torch.jit.load(str(tmp_path / "m.ts"), _extra_files=extra)
    assert json.loads(extra["lanet.json"])["class_names"][3] == "happiness"
    model, _ = load_classifier(run_dir / "model_final.pt")
    x = torch.randn(3, 1, 32, 32)
    with torch.no_grad():
        np.testing.assert_allclose(loaded(x).numpy(), model(x).numpy(), atol=1e-5)
    ts = Predictor(tmp_path / "m.ts", device="cpu")
    assert ts.backend == "torchscript"
    a = Predictor(run_dir / "model_final.pt", device="cpu").predict(scene(faces))
    b = ts.predict(scene(faces))
    assert list(b[0]["probabilities"].values()) == pytest.approx(list(a[0]["probabilities"].values()), abs=1e-5)


def test_dlib_backbone_exports(tmp_path):
    ort = _onnx()
    from lanet.models.resnet import create_model

    torch.manual_seed(0)
    net = create_model("dlib_resnet_small", 8, 1).eval()
    payload = tiny_payload(image_size=48)
    payload.update(arch="dlib_resnet_small", state_dict=net.state_dict())
    torch.save(payload, tmp_path / "dlib.pt")
    res = export_model(tmp_path / "dlib.pt", "onnx")
    assert res["path"] == tmp_path / "dlib.onnx" and res["max_abs_diff"] < 1e-4
    x = torch.randn(2, 1, 48, 48)
    got = ort.InferenceSession(str(res["path"]), providers=["CPUExecutionProvider"]).run(None, {"input": x.numpy()})[0]
    with torch.no_grad():
        np.testing.assert_allclose(got, net(x).numpy(), atol=1e-4, rtol=0)


def test_cli_export_and_predict_with_onnx(run_dir, tmp_path, faces, capsys):
    _onnx()
    out = tmp_path / "cli.onnx"
    assert main(["export", str(run_dir), "--format", "onnx", "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert f"written {out}" in captured.out and "model_val_selected.pt" in captured.err
    scene(faces).save(tmp_path / "a.png")
    assert main(["predict", str(tmp_path / "a.png"), "--model", str(out), "--out", str(tmp_path / "r.csv"),
                 "--quiet"]) == 0
    assert "onnxruntime" in capsys.readouterr().err
    assert len((tmp_path / "r.csv").read_text().splitlines()) == 2
    assert main(["export", str(run_dir), "--format", "torchscript", "--out", str(tmp_path / "cli.ts")]) == 0


def test_export_errors(run_dir, tmp_path, capsys):
    with pytest.raises(LanetError, match="unknown export format"):
        export_model(run_dir, "tflite")
    with pytest.raises(LanetError, match="model not found"):
        export_model(tmp_path / "nope", "torchscript")
    with pytest.raises(LanetError, match="would overwrite"):
        export_model(run_dir / "model_final.pt", "torchscript", run_dir / "model_final.pt")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "foreign.pt")
    assert main(["export", str(tmp_path / "foreign.pt"), "--format", "torchscript"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("lanet: error: ") and "not an exported lanet classifier" in err[0]
    with pytest.raises(SystemExit) as exc:  # an argparse choice: one line, status 2
        main(["export", str(run_dir), "--format", "tflite"])
    assert exc.value.code == 2 and len(capsys.readouterr().err.strip().splitlines()) == 1


def test_onnx_without_lanet_metadata_is_refused(tmp_path):
    _onnx()
    from lanet.models.resnet import create_model

    net = create_model("resnet18", 8, 1, width=8).eval()
    kwargs = {"dynamo": False} if "dynamo" in torch.onnx.export.__code__.co_varnames else {}
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (torch.randn(1, 1, 32, 32),), str(tmp_path / "plain.onnx"), **kwargs)
    with pytest.raises(LanetError, match="ONNX model without lanet metadata"):
        Predictor(tmp_path / "plain.onnx", detector="none")
