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
