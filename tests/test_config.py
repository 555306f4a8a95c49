import pytest

from lanet.config import load_config, reference
from lanet.errors import LanetError


def test_yaml_then_overrides(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("train:\n  epochs: 7\n  lr: 0.01\nmethod:\n  name: lanet\n  params: {K: 4}\n")
    cfg = load_config(p, ["train.epochs=9", "method.params.beta=0.5", "augment.crop_scale=[0.5, 1.0]"])
    assert cfg.train.epochs == 9 and cfg.train.lr == 0.01
    assert cfg.method.params == {"K": 4, "beta": 0.5}
    assert cfg.augment.crop_scale == [0.5, 1.0]


@pytest.mark.parametrize("bad,match", [("train.epochs=ten", "integer"), ("train.nope=1", "unknown"),
                                       ("augment.balanced=maybe", "true or false"), ("epochs", "section.key")])
def test_bad_overrides(bad, match):
    with pytest.raises(LanetError, match=match):
        load_config(None, [bad])


def test_bad_files(tmp_path):
    with pytest.raises(LanetError, match="not found"):
        load_config(tmp_path / "none.yaml")
    (tmp_path / "b.yaml").write_text("data:\n  colour: red\n")
    with pytest.raises(LanetError, match="data.colour"):
        load_config(tmp_path / "b.yaml")


def test_reference_lists_every_key():
    text = reference()
    for key in ("data.name", "noise.rate", "augment.erasing", "train.lr", "method.params", "model.pretrained"):
        assert key in text
