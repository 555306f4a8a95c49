"""lanet predict / lanet.Predictor: records, no-face and error records, crops-only path, image modes, videos,
one-line errors and the CLI. Tiny random models (ResNet-18 at width 8): fast on one CPU thread."""

from __future__ import annotations

import io
import json
import struct
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lanet import CLASSES, LanetError
from lanet.cli import main
from lanet.config import AugmentConfig
from lanet.data.augment import BatchAugment
from lanet.data.synthetic import make_synthetic
from lanet.models.resnet import create_model
from lanet.predict import RECORD_FIELDS, Predictor
from lanet.predict.crop import FER_CROP, crop_box
from lanet.predict.images import open_image


@pytest.fixture(autouse=True)
def _one_thread():
    """One torch thread in these tests, restored afterwards (other test files keep their own setting)."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


def tiny_payload(in_chans: int = 1, image_size: int = 32, source_size: int | None = 48, seed: int = 0) -> dict:
    torch.manual_seed(seed)
    model = create_model("resnet18", 8, in_chans, width=8).eval()
    # non-trivial BatchNorm statistics, so eval mode differs from an identity-like network
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
    mean, std = ((0.5,), (0.5,)) if in_chans == 1 else ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    payload = {"format": "lanet-classifier-v1", "module": "resnet", "method": "baseline", "method_params": {},
               "arch": "resnet18", "width": 8, "num_classes": 8, "in_chans": in_chans, "image_size": image_size,
               "class_names": list(CLASSES), "mean": list(mean), "std": list(std), "epoch": 0,
               "state_dict": {k: v.clone() for k, v in model.state_dict().items()}}
    if source_size is not None:
        payload.update(FER_CROP, source_size=source_size)
    return payload


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("model") / "model_final.pt"
    torch.save(tiny_payload(), path)
    return path


@pytest.fixture(scope="module")
def rgb_model_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("model_rgb") / "model_final.pt"
    torch.save(tiny_payload(in_chans=3, image_size=40, source_size=40), path)
    return path


@pytest.fixture(scope="module")
def faces() -> np.ndarray:
    return make_synthetic(6, seed=3, size=48, channels=3).images  # faces 0, 1, 2, 4, 5 are found at 96 px


def scene(faces: np.ndarray, which=(0,), size=(240, 160)) -> Image.Image:
    img = Image.new("RGB", size, (120, 140, 160))
    for k, i in enumerate(which):
        img.paste(Image.fromarray(faces[i]).resize((96, 96), Image.BILINEAR), (20 + 110 * k, 30))
    return img


def direct_probs(path: Path, crops: np.ndarray) -> np.ndarray:
    """The classifier applied as in training evaluation: BatchAugment.eval, model, softmax."""
    payload = torch.load(path, weights_only=True)
    model = create_model("resnet18", 8, payload["in_chans"], width=8).eval()
    model.load_state_dict(payload["state_dict"])
    aug = BatchAugment(AugmentConfig(), payload["image_size"], payload["in_chans"], mean=payload["mean"],
                       std=payload["std"])
    with torch.no_grad():
        x, _ = aug.eval(torch.from_numpy(crops))
        return torch.softmax(model(x).double(), 1).numpy()


# ------------------------------------------------------------------------------------------------ records
def test_records_one_per_face(model_file, faces):
    pred = Predictor(model_file, device="cpu")
    img = scene(faces, (0, 1), size=(260, 160))
    recs = pred.predict(img)
    assert [r["face"] for r in recs] == [0, 1] and all(r["status"] == "ok" for r in recs)
    for r in recs:
        assert set(r) == set(RECORD_FIELDS)
        assert r["file"] == "<image 0>" and r["frame"] is None and r["time"] is None and r["error"] is None
        assert (r["width"], r["height"]) == (260, 160)
        x0, y0, x1, y1 = r["box"]
        assert 0 <= x0 < x1 <= 260 and 0 <= y0 < y1 <= 160 and r["score"] > 0
        assert list(r["probabilities"]) == list(CLASSES)
        assert sum(r["probabilities"].values()) == pytest.approx(1, abs=1e-5)
        assert r["top"] == max(r["probabilities"], key=r["probabilities"].get)
        assert r["top_probability"] == r["probabilities"][r["top"]]
    # the crop is the documented geometry around the detector's box
    assert recs[0]["crop_box"] == pytest.approx(
        list(crop_box(tuple(recs[0]["box"]), FER_CROP["crop_margin"], FER_CROP["crop_offset_y"])), abs=0.01)
    # each face is classified from its own crop: the same as classifying that crop alone
    from lanet.predict.crop import crop_resize

    crop = crop_resize(img, tuple(recs[1]["crop_box"]), 48, 1)[None]
    # (the record's crop box is rounded to 0.01 px, hence the tolerance)
    assert list(pred.classify(crop)[0]) == pytest.approx(list(recs[1]["probabilities"].values()), abs=1e-3)


def test_no_face_gives_a_record(model_file):
    pred = Predictor(model_file, device="cpu")
    recs = pred.predict([np.full((120, 160, 3), 200, np.uint8), Image.new("L", (50, 50), 30)])
    assert [(r["file"], r["status"], r["face"], r["probabilities"]) for r in recs] == [
        ("<image 0>", "no_face", None, None), ("<image 1>", "no_face", None, None)]
    assert recs[0]["width"] == 160 and recs[0]["height"] == 120


def test_predict_faces_reproduces_the_evaluation_path(model_file, faces):
    grey = np.asarray([np.asarray(Image.fromarray(f).convert("L")) for f in faces])[..., None]  # N x 48 x 48 x 1
    pred = Predictor(model_file, device="cpu", batch_size=4)
    recs = pred.predict_faces(grey)
    want = direct_probs(model_file, grey)
    assert [r["file"] for r in recs] == [f"<image {i}>" for i in range(len(grey))]
    got = np.array([list(r["probabilities"].values()) for r in recs])
    np.testing.assert_allclose(got, want, atol=1e-6)
    assert all(r["box"] == [0, 0, 48, 48] and r["score"] is None for r in recs)
    # an RGB face crop is converted to grey exactly as the loaders convert (PIL luma)
    rgb = pred.predict_faces(faces[0])
    assert list(rgb[0]["probabilities"].values()) == pytest.approx(list(got[0]), abs=1e-6)


def test_input_kinds_agree(model_file, faces, tmp_path):
    img = scene(faces)
    img.save(tmp_path / "a.png")
    pred = Predictor(model_file, device="cpu")
    arr = np.array(img)  # writable: torch.from_numpy warns on a read-only array
    variants = [str(tmp_path / "a.png"), tmp_path / "a.png", arr, img, torch.from_numpy(arr),
                arr.astype(np.float32) / 255]
    probs = []
    for v in variants:
        recs = pred.predict(v)
        assert len(recs) == 1 and recs[0]["status"] == "ok", type(v)
        probs.append(list(recs[0]["probabilities"].values()))
    for p in probs[1:]:
        assert p == pytest.approx(probs[0], abs=1e-5)
    batch = pred.predict(np.stack([arr, arr]))  # N x H x W x C: several images
    assert [r["file"] for r in batch] == ["<image 0>", "<image 1>"]
    assert pred.predict([str(tmp_path / "a.png")])[0]["file"] == str(tmp_path / "a.png")
    with pytest.raises(LanetError, match="cannot predict on a dict"):
        pred.predict([{}])


def test_rgb_model_and_batching(rgb_model_file, faces):
    pred1 = Predictor(rgb_model_file, device="cpu", batch_size=1)
    pred64 = Predictor(rgb_model_file, device="cpu", batch_size=64)
    imgs = [scene(faces, (i,)) for i in (0, 1, 2)] + [np.zeros((60, 60, 3), np.uint8)]
    a, b = pred1.predict(imgs), pred64.predict(imgs)
    assert [r["status"] for r in a] == ["ok", "ok", "ok", "no_face"]
    assert [r["file"] for r in a] == [r["file"] for r in b]
    for ra, rb in zip(a[:3], b[:3]):
        assert list(ra["probabilities"].values()) == pytest.approx(list(rb["probabilities"].values()), abs=1e-5)


def test_old_model_file_gets_default_crop(tmp_path, faces):
    torch.save(tiny_payload(source_size=None), tmp_path / "old.pt")
    pred = Predictor(tmp_path / "old.pt", device="cpu")
    assert pred.meta["crop_margin"] == FER_CROP["crop_margin"] and pred.source_size == 32  # = image_size
    assert pred.predict(scene(faces))[0]["status"] == "ok"


def test_run_directory_prefers_the_validation_selected_model(model_file, tmp_path, capsys):
    from lanet.predict.backends import resolve_model_path

    run = tmp_path / "run"
    run.mkdir()
    with pytest.raises(LanetError, match="holds no exported model"):
        resolve_model_path(run)
    (run / "model_final.pt").write_bytes(model_file.read_bytes())
    assert resolve_model_path(run) == run / "model_final.pt"
    (run / "model_val_selected.pt").write_bytes(model_file.read_bytes())
    assert Predictor(run, device="cpu", verbose=True).model_path == run / "model_val_selected.pt"
    assert "validation-selected" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------ image modes
def test_cmyk_16bit_palette_alpha_conversions(tmp_path):
    rgb = np.zeros((8, 12, 3), np.uint8)
    rgb[:, :6] = (200, 40, 10)
    rgb[:, 6:] = (10, 90, 250)
    Image.fromarray(rgb).convert("CMYK").save(tmp_path / "cmyk.jpg", quality=100)
    got = np.asarray(open_image(tmp_path / "cmyk.jpg")).astype(int)
    assert np.abs(got[2, 2] - [200, 40, 10]).max() < 12 and np.abs(got[2, 9] - [10, 90, 250]).max() < 12
    Image.fromarray(rgb).convert("CMYK").save(tmp_path / "cmyk.tif")
    assert np.abs(np.asarray(open_image(tmp_path / "cmyk.tif")).astype(int) - rgb).max() <= 2

    grey16 = (np.arange(8 * 12, dtype=np.uint16).reshape(8, 12) * 600).astype(np.uint16)  # up to 56,400
    Image.fromarray(grey16).save(tmp_path / "g16.png")
    assert Image.open(tmp_path / "g16.png").mode.startswith("I")
    got = np.asarray(open_image(tmp_path / "g16.png"))
    np.testing.assert_array_equal(got[..., 0], np.round(grey16 / 65535 * 255).astype(np.uint8))
    assert got.max() < 255  # PIL's own convert("L") would clip everything above 255 to white

    pal = Image.fromarray(rgb).quantize(4)
    pal.save(tmp_path / "pal.png")
    assert Image.open(tmp_path / "pal.png").mode == "P"
    assert np.abs(np.asarray(open_image(tmp_path / "pal.png")).astype(int) - rgb).max() <= 4
    pal.info["transparency"] = 0
    pal.save(tmp_path / "pal_t.png", transparency=int(np.asarray(pal)[0, 0]))
    out = np.asarray(open_image(tmp_path / "pal_t.png"))
    assert (out[:, :6] == 255).all()  # the transparent colour is composited over white

    rgba = np.dstack([rgb, np.full((8, 12), 255, np.uint8)])
    rgba[:, :3, 3] = 0
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    out = np.asarray(open_image(tmp_path / "rgba.png"))
    assert (out[:, :3] == 255).all() and (out[:, 6:] == rgb[:, 6:]).all()
    Image.fromarray(grey16.astype(np.uint8), "L").convert("1").save(tmp_path / "bw.png")
    assert open_image(tmp_path / "bw.png").mode == "RGB"


def test_exif_rotated_jpeg_reads_upright(tmp_path):
    # stored landscape (w 40, h 20) with a bright left half; orientation 6 = shown rotated 90 degrees clockwise
    arr = np.zeros((20, 40, 3), np.uint8)
    arr[:, :20] = 255
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(arr).save(tmp_path / "rot.jpg", exif=exif.tobytes(), quality=95)
    img = open_image(tmp_path / "rot.jpg")
    assert img.size == (20, 40)  # portrait, as a viewer shows it
    a = np.asarray(img).mean(2)
    assert a[:20].mean() > 200 and a[20:].mean() < 50  # the bright half is now on top


def _png_header_only(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def test_huge_images_are_bounded(tmp_path, model_file):
    (tmp_path / "bomb.png").write_bytes(_png_header_only(100_000, 100_000))  # 10 gigapixels claimed in 100 bytes
    with pytest.raises(LanetError, match=r"bomb.png: image is 100000 x 100000 = 10000 megapixels, above the limit"):
        open_image(tmp_path / "bomb.png")
    pred = Predictor(model_file, device="cpu", max_pixels=10_000)
    recs = pred.predict([np.zeros((200, 200, 3), np.uint8)])
    assert recs[0]["status"] == "error" and "above the limit" in recs[0]["error"]
    # a large image is downscaled for detection: the box comes back in the original's pixels
    from lanet.predict.detect import FaceDetector

    det = FaceDetector("hog", max_side=200)
    big = Image.new("RGB", (1600, 1200), (120, 140, 160))
    face = make_synthetic(6, seed=3, size=48, channels=3).images[1]
    big.paste(Image.fromarray(face).resize((720, 720), Image.BILINEAR), (400, 200))
    boxes = det(big)
    assert len(boxes) == 1
    x0, y0, x1, y1 = boxes[0].box
    assert 400 <= x0 < x1 <= 1120 and 200 <= y0 < y1 <= 920 and x1 - x0 > 300


# ------------------------------------------------------------------------------------------------ folders and errors
def make_folder(root: Path, faces: np.ndarray) -> Path:
    d = root / "photos"
    (d / "sub").mkdir(parents=True)
    scene(faces, (0,)).save(d / "good.jpg")
    scene(faces, (1,)).save(d / "sub" / "good2.png")
    (d / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    buf = io.BytesIO()
    scene(faces, (2,)).save(buf, "PNG")
    (d / "truncated.png").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 3])
    (d / "notes.png").write_text("a text file with an image extension")
    (d / "labels.csv").write_text("name,label\n")  # not an image extension: skipped
    return d


def test_folder_with_bad_files_processes_the_rest(model_file, faces, tmp_path):
    d = make_folder(tmp_path, faces)
    recs = Predictor(model_file, device="cpu").predict(d)
    by_file = {Path(r["file"]).name: r for r in recs}
    assert set(by_file) == {"good.jpg", "good2.png", "corrupt.jpg", "truncated.png", "notes.png"}
    assert by_file["good.jpg"]["status"] == by_file["good2.png"]["status"] == "ok"
    for name in ("corrupt.jpg", "truncated.png", "notes.png"):
        r = by_file[name]
        assert r["status"] == "error" and name in r["error"] and "\n" not in r["error"], r
        assert r["probabilities"] is None


def test_cli_folder_lists_bad_files_and_exits_1(model_file, faces, tmp_path, capsys):
    d = make_folder(tmp_path, faces)
    out = tmp_path / "res.csv"
    rc = main(["predict", str(d), "--model", str(model_file), "--out", str(out), "--annotate", str(tmp_path / "ann"),
               "--quiet"])
    err = capsys.readouterr().err
    assert rc == 1
    assert "3 input(s) could not be read" in err and "corrupt.jpg" in err and "notes.png" in err
    rows = out.read_text().splitlines()
    header = rows[0].split(",")
    assert header[:5] == ["file", "frame", "time", "face", "status"] and "p_happiness" in header
    assert header[-1] == "error" and len(rows) == 6
    annotated = sorted(p.relative_to(tmp_path / "ann").as_posix() for p in (tmp_path / "ann").rglob("*.*"))
    assert annotated == ["photos/good.jpg", "photos/sub/good2.png"]
    assert Image.open(tmp_path / "ann" / "photos" / "good.jpg").size == (240, 160)


def test_cli_jsonl_and_stdout(model_file, faces, tmp_path, capsys):
    scene(faces, (0, 1), size=(260, 160)).save(tmp_path / "two.png")
    rc = main(["predict", str(tmp_path / "two.png"), "--model", str(model_file), "--out", str(tmp_path / "r.jsonl"),
               "--batch-size", "1", "--device", "cpu", "--quiet"])
    assert rc == 0
    recs = [json.loads(line) for line in (tmp_path / "r.jsonl").read_text().splitlines()]
    assert [r["face"] for r in recs] == [0, 1] and recs[0]["file"] == str(tmp_path / "two.png")
    capsys.readouterr()
    assert main(["predict", str(tmp_path / "two.png"), "--model", str(model_file), "--quiet"]) == 0
    captured = capsys.readouterr()
    assert [json.loads(line)["face"] for line in captured.out.splitlines()] == [0, 1]
    assert "2 face(s)" in captured.err


def _one_line_error(capsys, argv: list[str], match: str) -> None:
    rc = main(argv)
    err = capsys.readouterr().err
    assert rc == 2, err
    lines = err.strip().splitlines()
    assert lines[-1].startswith("lanet: error: ") and match in lines[-1], err
    assert not any("Traceback" in line for line in lines)


def test_one_line_errors(model_file, tmp_path, capsys):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"garbage")
    m = ["--model", str(model_file), "--quiet"]
    _one_line_error(capsys, ["predict", str(bad), *m], "bad.jpg is not an image")
    _one_line_error(capsys, ["predict", str(tmp_path / "missing.jpg"), *m], "input not found")
    empty = tmp_path / "empty"
    empty.mkdir()
    _one_line_error(capsys, ["predict", str(empty), *m], "no images or videos found")
    (tmp_path / "ok.png").write_bytes(b"")
    _one_line_error(capsys, ["predict", str(tmp_path / "ok.png"), *m, "--out", str(tmp_path / "r.txt")],
                    "--out must end in .csv or .jsonl")
    _one_line_error(capsys, ["predict", str(tmp_path / "ok.png"), "--model", str(tmp_path / "nope.pt")],
                    "model not found")
    # model files from other tools
    torch.save({"conv1.weight": torch.zeros(1)}, tmp_path / "foreign.pt")
    _one_line_error(capsys, ["predict", str(bad), "--model", str(tmp_path / "foreign.pt")],
                    "is not an exported lanet classifier (a plain state dict or another tool's checkpoint)")
    (tmp_path / "pickle.pt").write_bytes(b"\x80\x04\x95 not a zip or a pickle")
    _one_line_error(capsys, ["predict", str(bad), "--model", str(tmp_path / "pickle.pt")], "pickle.pt")
    pytest.importorskip("onnxruntime", reason="onnxruntime not installed")
    (tmp_path / "random.onnx").write_bytes(b"\x08\x07 random bytes")
    _one_line_error(capsys, ["predict", str(bad), "--model", str(tmp_path / "random.onnx")], "not a readable ONNX")


def test_detector_argument_errors(model_file):
    with pytest.raises(LanetError, match="unknown detector"):
        Predictor(model_file, detector="yolo")
    with pytest.raises(LanetError, match="upsample"):
        Predictor(model_file, upsample=9)
    with pytest.raises(LanetError, match="batch size"):
        Predictor(model_file, batch_size=0)
    with pytest.raises(LanetError, match="every"):
        Predictor(model_file).predict(np.zeros((9, 9)), every=0)


def test_detector_none_treats_the_input_as_a_crop(model_file, tmp_path, capsys):
    face = make_synthetic(2, seed=1, size=48, channels=1).images[0]
    Image.fromarray(face[..., 0]).save(tmp_path / "crop.png")
    rc = main(["predict", str(tmp_path / "crop.png"), "--model", str(model_file), "--detector", "none",
               "--out", str(tmp_path / "r.jsonl"), "--quiet"])
    assert rc == 0
    rec = json.loads((tmp_path / "r.jsonl").read_text())
    np.testing.assert_allclose(list(rec["probabilities"].values()), direct_probs(model_file, face[None])[0],
                               atol=1e-6)


def test_cnn_detector(model_file, faces):
    pred = Predictor(model_file, detector="cnn", device="cpu")
    recs = pred.predict(scene(faces, (1,), size=(200, 140)))
    assert len(recs) == 1 and recs[0]["status"] == "ok"
    x0, y0, x1, y1 = recs[0]["box"]
    assert 20 <= (x0 + x1) / 2 <= 116 and 30 <= (y0 + y1) / 2 <= 126  # inside the pasted face


# ------------------------------------------------------------------------------------------------ videos
def write_video(path: Path, frames: list[np.ndarray], fps: int = 10) -> None:
    av = pytest.importorskip("av", reason="PyAV (the video extra) not installed")
    with av.open(str(path), "w") as out:
        stream = out.add_stream("mpeg4", rate=fps)
        stream.width, stream.height = frames[0].shape[1], frames[0].shape[0]
        stream.pix_fmt = "yuv420p"
        for f in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def test_video_every_nth_frame(model_file, faces, tmp_path):
    frames = [np.asarray(scene(faces, (1,))) if i % 2 == 0 else np.full((160, 240, 3), 90, np.uint8)
              for i in range(8)]
    write_video(tmp_path / "clip.mp4", frames)
    recs = Predictor(model_file, device="cpu").predict(tmp_path / "clip.mp4", every=3)
    assert [(r["frame"], r["status"]) for r in recs] == [(0, "ok"), (3, "no_face"), (6, "ok")]
    assert [r["time"] for r in recs] == pytest.approx([0.0, 0.3, 0.6], abs=1e-3)
    assert all(r["file"] == str(tmp_path / "clip.mp4") for r in recs)


def test_cli_video_annotation(model_file, faces, tmp_path, capsys):
    frames = [np.asarray(scene(faces, (1,)))] * 4
    write_video(tmp_path / "clip.mp4", frames)
    rc = main(["predict", str(tmp_path / "clip.mp4"), "--model", str(model_file), "--every", "2", "--annotate",
               str(tmp_path / "ann"), "--out", str(tmp_path / "r.csv"), "--quiet"])
    assert rc == 0
    assert sorted(p.name for p in (tmp_path / "ann" / "clip.mp4").iterdir()) == ["frame_000000.jpg",
                                                                                  "frame_000002.jpg"]


def test_corrupt_video_is_an_error_record(model_file, tmp_path):
    pytest.importorskip("av", reason="PyAV (the video extra) not installed")
    (tmp_path / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 not a real movie")
    recs = Predictor(model_file, device="cpu").predict(tmp_path / "broken.mp4")
    assert len(recs) == 1 and recs[0]["status"] == "error" and "broken.mp4" in recs[0]["error"]


def test_missing_video_extra_gives_install_hint(model_file, tmp_path, monkeypatch):
    (tmp_path / "clip.mp4").write_bytes(b"")
    monkeypatch.setitem(sys.modules, "av", None)  # import av raises ImportError
    recs = Predictor(model_file, device="cpu").predict(tmp_path / "clip.mp4")
    assert recs[0]["status"] == "error" and "pip install 'lanet[video]'" in recs[0]["error"]


# ------------------------------------------------------------------------------------------------ trained runs
def test_trained_run_exports_crop_metadata_and_predicts(tmp_path):
    from helpers import tiny_config

    from lanet.train.trainer import train

    cfg = tiny_config(epochs=1, size=200, width=8)
    train(cfg, tmp_path / "run", progress=False)
    payload = torch.load(tmp_path / "run" / "model_final.pt", weights_only=True)
    # synthetic faces are stored at 48 px and resized to image_size 32 by the evaluation transform
    assert payload["crop_margin"] == FER_CROP["crop_margin"] and payload["source_size"] == 48
    assert payload["crop_offset_y"] == FER_CROP["crop_offset_y"]
    import lanet

    pred = lanet.Predictor(tmp_path / "run", detector="none")
    recs = pred.predict_faces(make_synthetic(3, seed=5, size=32, channels=1).images)
    assert len(recs) == 3 and all(r["status"] == "ok" for r in recs)


@pytest.mark.ferplus
def test_ferplus_crop_reproduces_training_input(ferplus_root, model_file, tmp_path):
    """A FERPlus test PNG through --detector none gives exactly the input the evaluation path builds."""
    from lanet.data.imageio import decode_image

    png = sorted((ferplus_root / "FER2013Test").glob("*.png"))[:3]
    stored = np.stack([decode_image(p, 48, 1) for p in png])  # what the loader stores
    recs = Predictor(model_file, detector="none", device="cpu").predict([str(p) for p in png])
    got = np.array([list(r["probabilities"].values()) for r in recs])
    np.testing.assert_allclose(got, direct_probs(model_file, stored), atol=1e-6)
