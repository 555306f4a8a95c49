"""dlib's face-recognition ResNet as a backbone: the reader, the descriptor against dlib, every method, LA-Net."""

from __future__ import annotations

import importlib.util
import math
import struct

import numpy as np
import pytest
import torch
from conftest import FERPLUS

from lanet.config import AugmentConfig
from lanet.data.augment import BatchAugment
from lanet.errors import LanetError
from lanet.methods.base import Batch, MethodSpec
from lanet.methods.registry import build_method
from lanet.models import dlib_resnet as dr
from lanet.models.dlib_io import read_dlib_net
from lanet.models.resnet import create_model


def _model_file():
    try:
        return dr.dlib_model_path()
    except LanetError as exc:
        pytest.skip(f"dlib's face-recognition model is not installed ({exc})")


def _dlib():
    if importlib.util.find_spec("dlib") is None:
        pytest.skip("dlib is not installed (pip install 'lanet[landmarks]')")
    import dlib

    return dlib


def _normalise(chip: np.ndarray, chans: int) -> torch.Tensor:
    """uint8 H x W x C chip -> 1 x chans x H x W normalised as lanet's augmentation does (its eval path)."""
    aug = BatchAugment(AugmentConfig(), chip.shape[0], chans)
    x, _ = aug.eval(torch.from_numpy(chip)[None])
    return x


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a, b) / np.linalg.norm(a) / np.linalg.norm(b))


# ------------------------------------------------------------------------------------------- descriptor vs dlib
def test_descriptor_equals_dlib_on_a_colour_chip():
    """A synthetic colour face (skin, purple background: far from grey) through lanet's RGB normalisation."""
    dlib, path = _dlib(), _model_file()
    from lanet.data.synthetic import make_synthetic

    chip = np.ascontiguousarray(make_synthetic(n=1, seed=0, size=150, channels=3).images[0])  # 150 x 150 x 3
    assert np.abs(chip[..., 0].astype(int) - chip[..., 2]).mean() > 10, "the chip must be genuinely colour"
    ref = np.asarray(dlib.face_recognition_model_v1(str(path)).compute_face_descriptor(chip))
    model = create_model("dlib_resnet", 8, 3, pretrained="dlib").eval()
    x = _normalise(chip, 3)
    with torch.no_grad():
        ours = model.descriptor(x)[0].numpy()
        swapped = model.descriptor(x.flip(1))[0].numpy()  # the BGR mistake
    assert _cos(ours, ref) > 0.9999 and np.abs(ours - ref).max() < 1e-4
    assert _cos(swapped, ref) < 0.999, "the chip does not reveal an RGB/BGR swap"


def test_descriptor_equals_dlib_on_a_grey_chip():
    """A FERPlus face (where present; else a grey synthetic one) upscaled to 150 px, into a 1-channel model."""
    dlib, path = _dlib(), _model_file()
    from PIL import Image

    files = sorted((FERPLUS / "FER2013Test").glob("*.png"))[:1]
    if files:
        grey = np.array(Image.open(files[0]).convert("L").resize((150, 150), Image.BILINEAR))
    else:
        from lanet.data.synthetic import make_synthetic

        grey = make_synthetic(n=1, seed=1, size=150, channels=1).images[0, ..., 0]
    rgb = np.ascontiguousarray(np.repeat(grey[..., None], 3, axis=2))
    ref = np.asarray(dlib.face_recognition_model_v1(str(path)).compute_face_descriptor(rgb))
    model = create_model("dlib_resnet", 8, 1, pretrained="dlib").eval()  # summed RGB filters, corrected bias
    with torch.no_grad():
        ours = model.descriptor(_normalise(grey[..., None], 1))[0].numpy()
    assert _cos(ours, ref) > 0.9999 and np.abs(ours - ref).max() < 1e-4


def test_both_normalisation_forms_give_dlibs_function_in_eval_and_on_the_first_training_batch():
    _model_file()
    torch.manual_seed(0)
    x = torch.randn(6, 3, 112, 112)
    affine = create_model("dlib_resnet_affine", 8, 3, pretrained="dlib")
    bn = create_model("dlib_resnet", 8, 3, pretrained="dlib")
    bn.fc.load_state_dict(affine.fc.state_dict())
    with torch.no_grad():
        want = affine.eval().forward_features(x)
        assert torch.allclose(bn.eval().forward_features(x), want, atol=1e-4, rtol=1e-4)
        first = bn.train().forward_features(x)  # calibrates every layer on this batch, then normalises with it
        assert torch.allclose(first, want, atol=1e-3, rtol=1e-3)
        assert not any(bool(m.pending_calibration) for m in bn.norm_layers())
        assert torch.allclose(bn.eval().forward_features(x), want, atol=1e-3, rtol=1e-3)


# ------------------------------------------------------------------------------------------- reader errors
def _int(v: int) -> bytes:
    mag = abs(v).to_bytes(max(1, (abs(v).bit_length() + 7) // 8), "little")
    return bytes([len(mag) | (0x80 if v < 0 else 0)]) + mag


def _str(s: str) -> bytes:
    return _int(len(s)) + s.encode()


def _real(x: float) -> bytes:
    m, e = math.frexp(x)
    return _int(int(m * 2**24)) + _int(e - 24)


def _tensor(values: list[float], shape: tuple[int, int, int, int]) -> bytes:
    return _int(2) + b"".join(_int(s) for s in shape) + struct.pack(f"<{len(values)}f", *values)


def _alias(shape: tuple[int, int, int, int]) -> bytes:
    return _int(1) + b"".join(_int(s) for s in shape)


def _tail(first: bool = False) -> bytes:
    return b"110" + _tensor([], (0, 0, 0, 0)) * 3 + (_int(1) if first else b"")


def tiny_dlib_file() -> bytes:
    """A small network in dlib's format: conv 1x1 (2 filters) -> affine -> relu -> global pool -> fc 2 -> 2."""
    out = _int(1) + _str("loss_metric_2") + _real(0.04) + _real(0.6)
    out += b"".join(_int(v) for v in (2, 2, 2, 2, 2))  # layer wrappers
    out += _str("input_rgb_image_sized") + _real(122.782) + _real(117.001) + _real(104.298) + _int(150) + _int(150)
    out += (_str("con_4") + _tensor([0.5] * 8, (8, 1, 1, 1)) + b"".join(_int(v) for v in (2, 1, 1, 1, 1, 0, 0))
            + _alias((2, 3, 1, 1)) + _alias((1, 2, 1, 1)) + _real(1) * 3 + _real(0) + _tail(first=True))
    out += _str("affine_") + _tensor([1, 1, 0, 0], (4, 1, 1, 1)) + _alias((1, 2, 1, 1)) * 2 + _int(0) + _tail()
    out += _str("relu_") + _tail()
    out += _str("avg_pool_2") + b"".join(_int(v) for v in (0, 0, 1, 1, 0, 0)) + _tail()
    out += (_str("fc_2") + _int(2) + _int(2) + _tensor([1, 0, 0, 1], (2, 2, 1, 1)) + _alias((2, 2, 1, 1))
            + _alias((0, 0, 0, 0)) + _int(1) + _real(1) * 3 + _real(0) + _tail())
    return out


def _one_line_error(path, match: str) -> None:
    with pytest.raises(LanetError, match=match) as info:
        read_dlib_net(path)
    msg = str(info.value)
    assert "\n" not in msg and str(path) in msg, msg


def test_reader_parses_a_small_dlib_file(tmp_path):
    path = tmp_path / "tiny.dat"
    path.write_bytes(tiny_dlib_file())
    net = read_dlib_net(path)
    assert [layer.tag for layer in net.layers] == ["con_4", "affine_", "relu_", "avg_pool_2", "fc_2"]
    assert net.input_size == (150, 150) and abs(net.input_mean_rgb[0] - 122.782) < 1e-4
    assert net.layers[0].fields["num_filters"] == 2 and net.num_params == 8 + 4 + 4
    assert abs(net.loss_fields["distance_threshold"] - 0.6) < 1e-6


def test_reader_rejects_unknown_truncated_and_foreign_files(tmp_path):
    data = tiny_dlib_file()
    unknown = tmp_path / "unknown.dat"
    unknown.write_bytes(data.replace(b"\x07affine_", b"\x07bn_con2"))
    _one_line_error(unknown, "unknown dlib layer 'bn_con2'")
    for cut in range(1, len(data)):  # every cut fails clearly, or (at a record boundary) leaves fewer layers
        path = tmp_path / f"cut{cut}.dat"
        path.write_bytes(data[:cut])
        try:
            net = read_dlib_net(path)
        except LanetError as exc:
            assert "\n" not in str(exc) and str(path) in str(exc)
        else:
            assert len(net.layers) < 5
    png = tmp_path / "face.dat"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    _one_line_error(png, "not a dlib network file")
    ckpt = tmp_path / "weights.dat"
    torch.save({"conv1.weight": torch.zeros(2, 3, 1, 1)}, ckpt)
    _one_line_error(ckpt, "not a dlib network file")
    empty = tmp_path / "empty.dat"
    empty.write_bytes(b"")
    _one_line_error(empty, "truncated")
    _one_line_error(tmp_path / "missing.dat", "not found")


def test_a_truncated_or_corrupt_model_file_fails_to_load(tmp_path):
    data = _model_file().read_bytes()
    model = dr.DlibResNet(8, 3)
    for name, blob, match in [
        ("mid_tensor.dat", data[:len(data) // 2], "truncated"),
        ("record_boundary.dat", data[:data.rindex(b"\x04fc_2") - 1], "layers, but"),  # parses, wrong topology
        ("corrupt_tag.dat", data.replace(b"\x05con_4", b"\x05con_9", 1), "unknown dlib layer 'con_9'"),
        ("tiny.dat", tiny_dlib_file(), "layers, but"),
    ]:
        path = tmp_path / name
        path.write_bytes(blob)
        with pytest.raises(LanetError, match=match) as info:
            dr.load_dlib_weights(model, path)
        assert "\n" not in str(info.value) and str(path) in str(info.value)
    with pytest.raises(LanetError, match="needs inputs of at least 103 px.*dlib_resnet_small"):
        model(torch.zeros(1, 3, 96, 96))
    with pytest.raises(LanetError, match="needs --arch dlib_resnet"):
        create_model("resnet18", 8, 3, pretrained="dlib")


# ------------------------------------------------------------------------------------------- normalisation
def test_input_transform_matches_the_augmentation_defaults():
    """The module undoes lanet's default normalisation: a pixel p in [0, 255] becomes (p - mean_c) / 256."""
    for chans in (1, 3):
        aug = BatchAugment(AugmentConfig(), 48, chans)
        scale, shift = dr.input_transform(chans, aug.mean, aug.std)
        scale0, shift0 = dr.input_transform(chans)
        assert torch.allclose(scale, scale0) and torch.allclose(shift, shift0)
        p = torch.tensor([0.0, 37.0, 255.0])
        x = (p[:, None] / 255 - torch.tensor(aug.mean)) / torch.tensor(aug.std)  # 3 x chans
        dlib_mean = torch.tensor(dr.DLIB_MEAN_RGB if chans == 3 else (sum(dr.DLIB_MEAN_RGB) / 3,))
        assert torch.allclose(x * scale + shift, (p[:, None] - dlib_mean) / 256, atol=1e-5)


def test_state_dicts_convert_between_the_two_normalisation_forms(tmp_path):
    torch.manual_seed(0)
    src = dr.DlibResNet(8, 3, norm="affine")
    with torch.no_grad():
        for m in src.norm_layers():
            m.weight.uniform_(0.5, 1.5)
            m.bias.uniform_(-0.1, 0.1)
    path = tmp_path / "affine.pt"
    torch.save({"state_dict": {"module." + k: v for k, v in src.state_dict().items()}}, path)
    bn = create_model("dlib_resnet", 8, 1, pretrained=str(path)).eval()  # also RGB -> grey stem
    assert all(bool(m.pending_calibration) for m in bn.norm_layers())
    back_path = tmp_path / "bn.pt"
    torch.save(bn.state_dict(), back_path)
    affine = create_model("dlib_resnet_affine", 8, 1, pretrained=str(back_path)).eval()
    src_grey = dr.DlibResNet(8, 1, norm="affine")
    src_grey.load_state_dict(dr.convert_norm_state(src_grey, src.state_dict()))
    x = torch.randn(2, 1, 112, 112)
    with torch.no_grad():
        want = src_grey.eval()(x)
        assert torch.allclose(bn(x), want, atol=1e-4) and torch.allclose(affine(x), want, atol=1e-4)


# ------------------------------------------------------------------------------------------- methods
def _spec(method_needs_landmarks: bool, pretrained: str, size: int = 48) -> MethodSpec:
    return MethodSpec(num_classes=8, num_train=64, in_chans=1, image_size=size, num_landmarks=68,
                      arch="dlib_resnet_small", pretrained=pretrained, dropout=0.0, epochs=1,
                      train_labels=np.arange(64) % 8)


def _batch(n: int, size: int) -> Batch:
    g = torch.Generator().manual_seed(0)
    return Batch(images=torch.randn(n, 1, size, size, generator=g), labels=torch.arange(n) % 8,
                 index=torch.randperm(64, generator=g)[:n], landmarks=torch.rand(n, 68, 2, generator=g) * size,
                 landmark_found=torch.ones(n, dtype=torch.bool), clean_labels=torch.arange(n) % 8)


def _pretrained() -> str:
    try:
        dr.dlib_model_path()
    except LanetError:
        return ""  # the methods still train; the weights are tested above where installed
    return "dlib"


@pytest.mark.parametrize("method", ["baseline", "scn", "rul", "eac", "lanet"])
def test_every_method_trains_a_step_with_the_dlib_backbone(method):
    torch.manual_seed(0)
    params = {"K": 4, "queue_size": 32} if method == "lanet" else {}
    m = build_method(method, _spec(method == "lanet", _pretrained()), params)
    opt = torch.optim.Adam(m.param_groups(1e-4))
    before = {k: v.clone() for k, v in m.export().state_dict().items()}
    m.train()
    loss, logs = m(_batch(12, 48))
    assert torch.isfinite(loss) and logs
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    m.after_step(_batch(12, 48))
    after = m.export().state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before if k in after)
    with torch.no_grad():
        assert m.eval().predict(torch.randn(2, 1, 48, 48)).shape == (2, 8)


def test_lanet_branches_start_from_the_same_pretrained_weights(tmp_path):
    pretrained = _pretrained()
    if not pretrained:  # no dlib file: a saved state dict of the same network plays the pretrained weights
        torch.manual_seed(1)
        pretrained = str(tmp_path / "pre.pt")
        torch.save(dr.DlibResNet(5, 1, pad_strided=True).state_dict(), pretrained)
    reference = create_model("dlib_resnet_small", 8, 1, pretrained=pretrained)
    m = build_method("lanet", _spec(True, pretrained), {"K": 4, "queue_size": 32})
    enc = m.encoder
    bb = enc["backbone"]
    assert not any(k.startswith(("lm1", "stem")) for k in enc)  # stem + layer1 exist once, shared
    for lm, layer in (("lm2", "layer2"), ("lm3", "layer3"), ("lm4", "layer4")):
        ref_state, ours, copy = (getattr(reference, layer).state_dict(), getattr(bb, layer).state_dict(),
                                 enc[lm].state_dict())
        assert ref_state.keys() == copy.keys()
        for k in ref_state:
            assert torch.equal(ours[k], ref_state[k]) and torch.equal(copy[k], ref_state[k]), (lm, k)
        assert getattr(bb, layer) is not enc[lm]
    # the first training forward calibrates both branches alike (same input c1, same weights)
    m.train()
    with torch.no_grad():
        m._encode(enc, _batch(12, 48).images)
    for lm, layer in (("lm2", "layer2"), ("lm3", "layer3"), ("lm4", "layer4")):
        for k, v in getattr(bb, layer).state_dict().items():
            assert torch.allclose(enc[lm].state_dict()[k].float(), v.float(), atol=1e-6), (lm, k)


def test_trainer_runs_and_exports_a_dlib_backbone(tmp_path):
    """One tiny LA-Net epoch through the trainer; the exported classifier loads back by arch."""
    from helpers import tiny_config

    from lanet.models.io import load_classifier
    from lanet.train.trainer import train

    cfg = tiny_config("lanet", epochs=1, size=120, K=4, queue_size=64)
    cfg.model.arch = "dlib_resnet_small"
    summary = train(cfg, tmp_path / "run", progress=False)
    assert 0.0 <= summary["test_accuracy"] <= 1.0
    model, meta = load_classifier(tmp_path / "run" / "model_final.pt")
    assert isinstance(model, dr.DlibResNet) and meta["module"] == "resnet" and meta["arch"] == "dlib_resnet_small"


def test_output_stride_16_variant_keeps_the_weights_and_enlarges_the_last_map(tmp_path):
    """dlib_resnet_small_os16: both 256 stages unstrided, same parameters, a 3 x 3 map at 48 px (1 x 1 at 64 px
    for dlib_resnet_small), so EAC's attention maps have area."""
    assert dr.last_map_size("dlib_resnet_small", 64) == 1 and dr.last_map_size("dlib_resnet_small", 48) == 1
    assert dr.last_map_size("dlib_resnet_small_os16", 48) == 3 and dr.last_map_size("dlib_resnet_small_os16", 64) == 4
    small = create_model("dlib_resnet_small", 8, 1)
    torch.save(small.state_dict(), tmp_path / "small.pt")
    os16 = create_model("dlib_resnet_small_os16", 8, 1, pretrained=str(tmp_path / "small.pt"))
    assert {k: v.shape for k, v in small.state_dict().items()} == {k: v.shape for k, v in os16.state_dict().items()}
    assert all(torch.equal(v, os16.state_dict()[k]) for k, v in small.state_dict().items())
    os16.eval()
    with torch.no_grad():
        assert os16.forward_features(torch.randn(2, 1, 48, 48)).shape == (2, 256, 3, 3)
        assert os16(torch.randn(2, 1, 48, 48)).shape == (2, 8)
    with pytest.raises(LanetError, match="output stride must be 16 or 32"):
        dr.stage_strides(8)
