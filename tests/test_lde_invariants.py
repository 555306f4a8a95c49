"""Label distribution estimation keeps its invariants along a whole training trajectory, not just one step.

A one-step check with freshly initialised score networks cannot see a normalisation that leaks mass: the scores
are then ~0.5 and a missing epsilon changes the weights by 1e-9. Here the score networks are trained until they
move, and every target and memory row is checked at every step.
"""

import helpers
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import lanet.methods.lanet as lanet_mod
from lanet.errors import LanetError
from lanet.methods.base import MethodSpec
from lanet.methods.lanet import LANet, aggregate, normalised_weights


@pytest.mark.parametrize("value", [1e-12, 0.0, 1e-30])
def test_weights_sum_to_one_for_vanishing_scores(value):
    scores = torch.full((3, 8), value)
    w = normalised_weights(scores)
    assert torch.allclose(w.sum(1), torch.ones(3), atol=1e-6)
    assert torch.allclose(w, torch.full_like(w, 1 / 8))  # equal scores -> uniform weights
    probs = F.softmax(torch.randn(10, 5, generator=torch.Generator().manual_seed(0)), 1)
    nb = torch.tensor([[1, 2, 3, 4, 5, 6, 7, 8]] * 3)
    agg = aggregate(scores, probs, nb)
    assert torch.allclose(agg.sum(1), torch.ones(3), atol=1e-6)
    assert torch.allclose(agg, probs[1:9].mean(0, keepdim=True).expand(3, 5), atol=1e-6)


def test_weights_mixed_scales_and_bf16():
    scores = torch.tensor([[1e-12, 0.0, 3e-9, 0.5], [1.0, 1.0, 1.0, 1.0]])
    w = normalised_weights(scores)
    assert torch.allclose(w.sum(1), torch.ones(2), atol=1e-6)
    assert w[0, 3] > 0.999 and w.dtype == torch.float32
    wb = normalised_weights(torch.rand(64, 8).bfloat16())  # autocast output: normalised in float32
    assert wb.dtype == torch.float32 and torch.allclose(wb.sum(1), torch.ones(64), atol=1e-6)


def test_legacy_normalisation_loses_mass():
    """The defect that was fixed: dividing by (sum + eps) only leaves rows summing to S / (S + eps)."""
    scores = torch.full((1, 8), 1e-12)
    legacy = scores / (scores.sum(1, keepdim=True) + 1e-8)
    assert legacy.sum().item() < 1e-3
    assert normalised_weights(scores).sum().item() == pytest.approx(1.0, abs=1e-6)


def _learnable_lanet(num_train: int = 64, c: int = 7):
    """LA-Net on images that carry their class (so the network fits the targets, as on real data)."""
    labels = np.arange(num_train) % c
    spec = MethodSpec(num_classes=c, num_train=num_train, in_chans=1, image_size=32, num_landmarks=5,
                      arch="resnet18", pretrained="", dropout=0.0, epochs=1, train_labels=labels, width=16)
    torch.manual_seed(0)
    m = LANet(spec, {"queue_size": 64})
    g = torch.Generator().manual_seed(0)
    protos = torch.randn(c, 1, 32, 32, generator=g) * 2
    images = protos[torch.as_tensor(labels)] + 0.3 * torch.randn(num_train, 1, 32, 32, generator=g)
    lms = torch.rand(num_train, 5, 2, generator=g) * 32
    return m, torch.as_tensor(labels), images, lms, g


def _train(m, labels, images, lms, g, steps, check=None):
    opt = torch.optim.Adam([p for p in m.parameters() if p.requires_grad], lr=1e-2)
    helpers.lanet_steps(m, labels, images, lms, g, steps, opt, check=check)


def test_invariants_hold_along_a_training_trajectory():
    m, labels, images, lms, g = _learnable_lanet()
    c = m.num_classes
    score_before = [p.clone() for p in m.score_u.parameters()]
    seen_kl = []

    def check(m, logs):
        mem = m.memory
        assert torch.allclose(mem.sum(1), torch.ones(len(mem)), atol=1e-5), mem.sum(1).min()
        assert (mem.max(1).values >= 1 / c - 1e-6).all()
        assert (mem >= 0).all()
        assert logs["kl"].item() >= -1e-6
        seen_kl.append(logs["kl"].item())

    _train(m, labels, images, lms, g, steps=120, check=check)
    d = m.epoch_diagnostics()
    assert d["target_row_sum_min"] >= 1 - 1e-5 and d["target_row_sum_mean"] == pytest.approx(1.0, abs=1e-5)
    assert d["target_max"] >= 1 / c
    # the score networks did move: without that the trajectory would prove nothing
    moved = sum((a - b).abs().sum().item() for a, b in zip(m.score_u.parameters(), score_before))
    assert moved > 1.0
    assert 0 <= d["weight_u_entropy"] <= np.log(m.params.K) + 1e-6


def test_the_trajectory_check_catches_the_legacy_normalisation(monkeypatch):
    """The same run with the old normalisation leaks mass within ~60 steps and the run stops with a clear error."""

    def legacy(scores, eps=1e-8):
        return scores / (scores.sum(1, keepdim=True) + eps)

    monkeypatch.setattr(lanet_mod, "normalised_weights", legacy)
    m, labels, images, lms, g = _learnable_lanet()
    with pytest.raises(LanetError, match="sums to .* not 1"):
        _train(m, labels, images, lms, g, steps=120)
