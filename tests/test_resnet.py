import pytest
import torch

from lanet.errors import LanetError
from lanet.models.resnet import create_model, load_pretrained


@pytest.mark.parametrize("size,chans", [(48, 1), (64, 3), (112, 1), (224, 3)])
def test_resnet18_any_size(size, chans):
    m = create_model("resnet18", 8, chans).eval()
    with torch.no_grad():
        assert m(torch.randn(2, chans, size, size)).shape == (2, 8)
        assert m.forward_features(torch.randn(1, chans, size, size)).shape[1] == 512


def test_resnet50_features():
    m = create_model("resnet50", 7, 3).eval()
    with torch.no_grad():
        assert m.pool(m.forward_features(torch.randn(1, 3, 64, 64))).shape == (1, 2048)


def test_pretrained_key_mapping(tmp_path):
    """A foreign checkpoint (DataParallel prefix, RGB stem, 1000-way classifier) loads into a gray 8-way model."""
    src = create_model("resnet18", 1000, 3)
    state = {"module." + k: v.clone() + 0.01 for k, v in src.state_dict().items()}
    path = tmp_path / "msceleb_r18.pth"
    torch.save({"state_dict": state}, path)
    dst = create_model("resnet18", 8, 1)
    fc_before = dst.fc.weight.clone()
    skipped = load_pretrained(dst, path)
    assert any("fc.weight" in s for s in skipped)
    assert torch.equal(dst.layer3[1].conv2.weight, state["module.layer3.1.conv2.weight"])
    assert torch.equal(dst.bn1.running_var, state["module.bn1.running_var"])
    assert torch.allclose(dst.conv1.weight, state["module.conv1.weight"].sum(1, keepdim=True))
    assert torch.equal(dst.fc.weight, fc_before)


def test_pretrained_errors(tmp_path):
    with pytest.raises(LanetError, match="not found"):
        load_pretrained(create_model("resnet18", 8, 3), tmp_path / "missing.pth")
    partial = {k: v for k, v in create_model("resnet18", 8, 3).state_dict().items() if not k.startswith("layer4")}
    torch.save(partial, tmp_path / "partial.pth")
    with pytest.raises(LanetError, match="lacks"):
        load_pretrained(create_model("resnet18", 8, 3), tmp_path / "partial.pth")
    (tmp_path / "junk.pth").write_text("not a checkpoint")
    with pytest.raises(LanetError, match="cannot read"):
        load_pretrained(create_model("resnet18", 8, 3), tmp_path / "junk.pth")


def test_unknown_arch():
    with pytest.raises(LanetError, match="unknown architecture"):
        create_model("vgg13", 8, 1)


def _msceleb_like(num_classes: int = 1000) -> dict:
    """A ResNet-18 state dict with torchvision names, as MS-Celeb-1M checkpoints of FER code hold them."""
    torch.manual_seed(3)
    return {k: v.clone() for k, v in create_model("resnet18", num_classes, 3).state_dict().items()}


def test_msceleb_layouts_load(tmp_path, capsys):
    """The layouts FER projects ship: wrappers, DataParallel prefixes, extra heads, a Sequential trunk."""
    state = _msceleb_like()
    sequential = {"0": "conv1", "1": "bn1", "4": "layer1", "5": "layer2", "6": "layer3", "7": "layer4"}
    trunk = {}
    for k, v in state.items():
        head, _, rest = k.partition(".")
        idx = next((i for i, name in sequential.items() if name == head), None)
        if idx is not None:
            trunk[f"features.{idx}.{rest}"] = v
    layouts = {
        # SCN/RUL-style res18_naive.pth_MSceleb.tar: module. prefixes, a 'feature' layer, bookkeeping entries
        "res18_naive.pth_MSceleb.tar": {"epoch": 40, "arch": "resnet18", "state_dict": {
            **{"module." + k: v for k, v in state.items()}, "module.feature.weight": torch.zeros(4, 512)}},
        "resnet18_msceleb.pth": {"state_dict": state},
        "tutorial.pt": {"model_state_dict": state, "optimizer_state_dict": {}},
        "nested.pt": {"model": {"state_dict": state}},
        "trunk.pt": trunk,  # nn.Sequential(*list(resnet.children())[:-2]) saved as 'features'
    }
    for name, payload in layouts.items():
        torch.save(payload, tmp_path / name)
        capsys.readouterr()
        model = create_model("resnet18", 7, 1, pretrained=str(tmp_path / name))
        assert torch.equal(model.layer4[1].bn2.running_mean, state["layer4.1.bn2.running_mean"]), name
        assert torch.allclose(model.conv1.weight, state["conv1.weight"].sum(1, keepdim=True)), name
        err = capsys.readouterr().err
        if name == "trunk.pt":  # no classifier in the file: nothing to say
            assert err == "", err
        else:  # the 1000-way classifier is dropped, in one line
            assert "classifier not loaded" in err and "the model has 7" in err and err.count("\n") == 1, (name, err)


def test_pickled_module_is_refused_with_a_hint(tmp_path):
    torch.save(create_model("resnet18", 8, 3), tmp_path / "whole_model.pth")  # the object, not its state dict
    with pytest.raises(LanetError, match=r"state_dict\(\)") as info:
        create_model("resnet18", 8, 3, pretrained=str(tmp_path / "whole_model.pth"))
    assert "\n" not in str(info.value)
