"""Precise BatchNorm statistics (train.precise_bn): the population statistics on a hand case, what is left
untouched, and the trainer switch (same training, both accuracies logged)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn as nn
from helpers import tiny_config

from lanet.errors import LanetError
from lanet.models.dlib_resnet import FoldedBatchNorm2d
from lanet.runconfig import validate_config
from lanet.train.precise_bn import recompute_bn_statistics
from lanet.train.trainer import train


class _Identity:
    """A transform stub: uint8 N x H x W x C -> float N x C x H x W, unscaled."""

    def eval(self, images: torch.Tensor):
        return images.permute(0, 3, 1, 2).float(), None


def test_population_statistics_include_the_spread_between_batches():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (10, 3, 3, 2), dtype=np.uint8)
    images[5:] //= 4  # the second batch is much darker: its mean differs from the first's
    model = nn.Sequential(nn.BatchNorm2d(2), nn.ReLU(), FoldedBatchNorm2d(2))
    model[2].pending_calibration.fill_(True)  # as before any training step: must not be calibrated here
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    n = recompute_bn_statistics(model, images, _Identity(), batch_size=5)
    assert n == 1 and model.training and all(m.training for m in model.modules())
    x = images.astype(np.float64).transpose(3, 0, 1, 2).reshape(2, -1)  # C x (N H W)
    np.testing.assert_allclose(model[0].running_mean.numpy(), x.mean(1), rtol=1e-6)
    np.testing.assert_allclose(model[0].running_var.numpy(), x.var(1, ddof=1), rtol=1e-5)
    # the mean of the two batches' variances (what an average of batch statistics gives) is far smaller
    per_batch = np.mean([x.reshape(2, 2, -1)[:, b].var(1, ddof=1) for b in range(2)], axis=0)
    assert (model[0].running_var.numpy() > 1.5 * per_batch).all()
    after = model.state_dict()
    for key in ("0.weight", "0.bias", "0.num_batches_tracked", "2.weight", "2.bias", "2.running_mean",
                "2.running_var", "2.pending_calibration"):
        assert torch.equal(after[key], before[key]), key
    assert model[0].momentum == 0.1


def test_the_switch_keeps_training_identical_and_logs_both_accuracies(tmp_path):
    plain = tiny_config("baseline", epochs=2, size=240, width=8)
    switched = tiny_config("baseline", epochs=2, size=240, width=8)
    switched.train.precise_bn = 100
    train(plain, tmp_path / "plain", progress=False)
    train(switched, tmp_path / "precise", progress=False)
    a = [json.loads(x) for x in (tmp_path / "plain" / "metrics.jsonl").read_text().splitlines()]
    b = [json.loads(x) for x in (tmp_path / "precise" / "metrics.jsonl").read_text().splitlines()]
    for la, lb in zip(a, b):
        assert la["train_loss"] == lb["train_loss"]  # nothing random is drawn: the same steps
        assert lb["test_accuracy_running_bn"] == la["test_accuracy"]  # the running-statistics number
        assert lb["precise_bn_layers"] == 20  # ResNet-18: every BatchNorm layer on the classifier's path
        assert "test_accuracy_running_bn" not in la
    final = torch.load(tmp_path / "precise" / "model_final.pt", weights_only=True)["state_dict"]
    base = torch.load(tmp_path / "plain" / "model_final.pt", weights_only=True)["state_dict"]
    assert torch.equal(final["conv1.weight"], base["conv1.weight"])  # same weights, new statistics
    assert not torch.equal(final["bn1.running_var"], base["bn1.running_var"])


def test_skipping_the_running_statistics_pass_changes_no_number(tmp_path):
    from lanet.bench.runs import config_fingerprint

    full = tiny_config("baseline", epochs=2, size=240, width=8)
    full.train.precise_bn = 100
    lean = tiny_config("baseline", epochs=2, size=240, width=8)
    lean.train.precise_bn = 100
    lean.train.running_bn_test = False
    train(full, tmp_path / "full", progress=False)
    train(lean, tmp_path / "lean", progress=False)
    a = [json.loads(x) for x in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    b = [json.loads(x) for x in (tmp_path / "lean" / "metrics.jsonl").read_text().splitlines()]
    assert len(a) == len(b) == 2
    for la, lb in zip(a, b):
        assert "test_accuracy_running_bn" in la and "test_accuracy_running_bn" not in lb
        for key in ("train_loss", "val_accuracy", "test_accuracy", "test_confusion_matrix", "precise_bn_layers"):
            assert la[key] == lb[key], key
    # a diagnostic only: runs with and without it are the same run to the bench harness
    assert config_fingerprint(full.to_dict()) == config_fingerprint(lean.to_dict())


def test_precise_bn_is_validated():
    cfg = tiny_config()
    cfg.train.precise_bn = -1
    with pytest.raises(LanetError, match="train.precise_bn"):
        validate_config(cfg)
