"""LA-Net's variants beyond the paper (switches ``neighbours``, ``score_temperature``, ``sharpen``,
``consistency``, ``label_weight``): their equations on hand-computed cases, and their invariants along a training
trajectory."""

import math

import helpers
import numpy as np
import pytest
import torch

from lanet.errors import LanetError
from lanet.methods.base import Batch, MethodSpec
from lanet.methods.eac import class_activation_maps, flip_consistency
from lanet.methods.lanet import LANet, knn_memory, sharpen, softmax_weights


def test_softmax_weights_by_hand():
    w = softmax_weights(torch.tensor([[0.9, 0.6], [0.5, 0.5]]), 0.1)
    e3 = math.exp(3.0)  # (0.9 - 0.6) / 0.1
    assert w[0].tolist() == pytest.approx([e3 / (1 + e3), 1 / (1 + e3)], rel=1e-6)
    assert w[1].tolist() == pytest.approx([0.5, 0.5])  # equal scores: uniform, as eq. 4


def test_sharpen_by_hand():
    p = torch.tensor([[0.5, 0.3, 0.2]])
    q = sharpen(p, 0.5)  # p^2 / sum p^2
    assert q[0].tolist() == pytest.approx([0.25 / 0.38, 0.09 / 0.38, 0.04 / 0.38], rel=1e-5)
    assert sharpen(p, 1.0) is p
    assert sharpen(torch.tensor([[1.0, 0.0]]), 0.25)[0].tolist() == pytest.approx([1.0, 0.0])  # zeros are safe


def test_knn_memory_skips_self_and_unseen_rows():
    bank = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.95, 0.05], [0.7, 0.7]])
    seen = torch.tensor([True, True, True, False, True])
    nb = knn_memory(torch.tensor([[1.0, 0.0]]), bank, 2, torch.tensor([0]), seen)
    assert nb[0].tolist() == [1, 4]  # row 3 is the most similar but was never written; row 0 is the sample
    with pytest.raises(LanetError, match="K=4 neighbours need at least 5 remembered"):
        knn_memory(torch.tensor([[1.0, 0.0]]), bank, 4, torch.tensor([0]), seen)


def _lanet(params, num_train=48, c=4):
    labels = np.arange(num_train) % c
    spec = MethodSpec(num_classes=c, num_train=num_train, in_chans=1, image_size=32, num_landmarks=5,
                      arch="resnet18", pretrained="", dropout=0.0, epochs=1, train_labels=labels, width=16)
    torch.manual_seed(0)
    m = LANet(spec, {"queue_size": 64, **params})
    g = torch.Generator().manual_seed(0)
    protos = torch.randn(c, 1, 32, 32, generator=g) * 2
    images = protos[torch.as_tensor(labels)] + 0.3 * torch.randn(num_train, 1, 32, 32, generator=g)
    lms = torch.rand(num_train, 5, 2, generator=g) * 32
    clean = torch.as_tensor(labels)
    noisy = clean.clone()
    noisy[::5] = (noisy[::5] + 1) % c  # a fifth of the labels flipped
    return m, noisy, clean, images, lms


def _steps(m, noisy, clean, images, lms, steps, check=None, seed=0, opt=None):
    opt = opt or torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=1e-2)
    return helpers.lanet_steps(m, noisy, images, lms, torch.Generator().manual_seed(seed), steps, opt, clean, check)


@pytest.mark.parametrize("params", [
    {"neighbours": "memory"},
    {"score_temperature": 0.1},
    {"sharpen": 0.5},
    {"consistency": 1.0},
    {"label_weight": 0.0},
    {"neighbours": "memory", "score_temperature": 0.1, "sharpen": 0.5, "consistency": 1.0},
])
def test_variant_invariants_along_a_trajectory(params):
    m, noisy, clean, images, lms = _lanet(params)
    c = m.num_classes

    def check(m, logs):
        mem = m.memory
        assert torch.allclose(mem.sum(1), torch.ones(len(mem)), atol=1e-5)
        assert (mem >= 0).all() and torch.isfinite(logs["kl"]) and logs["kl"].item() >= -1e-6
        if params.get("consistency"):
            assert logs["flip_consistency"].item() >= 0

    _steps(m, noisy, clean, images, lms, 30, check)
    d = m.epoch_diagnostics()
    assert d["target_row_sum_min"] >= 1 - 1e-5
    assert 1 / c - 1e-6 <= d["target_max"] <= 1 + 1e-6
    for key in ("neighbour_purity_u", "neighbour_purity_v", "confident", "target_agrees_clean_label",
                "vote_agrees_clean_label", "prediction_agrees_clean_label"):
        assert 0 <= d[key] <= 1, key
    assert 0 <= d["weight_u_entropy"] <= math.log(m.params.K) + 1e-5
    assert d["positive_pairs_per_anchor"] >= 0


def test_memory_neighbours_come_from_the_whole_training_set():
    m, noisy, clean, images, lms = _lanet({"neighbours": "memory"})
    _steps(m, noisy, clean, images, lms, 12)
    assert bool(m.bank_seen.all())  # 12 batches of 16 cover all 48 images
    # the bank holds the latest features: after one more visit of image 0 its row is that forward's u
    idx = torch.tensor([0, 1, 2, 3, 4, 5, 6, 7, 8, 9])
    b = Batch(images=images[idx], labels=noisy[idx], index=idx, landmarks=lms[idx],
              landmark_found=torch.ones(10, dtype=torch.bool), clean_labels=clean[idx], step=99)
    m(b)
    assert m.bank_seen.sum() == 48 and (m.bank_p.sum(1) - 1).abs().max() < 1e-5
    assert m.diag_clean_label.tolist() == clean.tolist()


def test_memory_variant_resumes_bit_identically():
    """Every piece of the memory variant's state is in the state dict: 3 + 3 steps equal 6 steps."""
    params = {"neighbours": "memory", "sharpen": 0.5, "score_temperature": 0.1}
    a, noisy, clean, images, lms = _lanet(params)
    opt = _steps(a, noisy, clean, images, lms, 3)
    state, opt_state = {k: v.clone() for k, v in a.state_dict().items()}, opt.state_dict()
    assert {"bank_u", "bank_v", "bank_p", "bank_seen", "diag_clean_label"} <= set(state)
    _steps(a, noisy, clean, images, lms, 3, seed=1, opt=opt)
    b, *_ = _lanet(params)
    b.load_state_dict(state)
    opt_b = torch.optim.SGD([p for p in b.parameters() if p.requires_grad], lr=1e-2)
    opt_b.load_state_dict(opt_state)
    _steps(b, noisy, clean, images, lms, 3, seed=1, opt=opt_b)
    for k, v in a.state_dict().items():
        assert torch.equal(v, b.state_dict()[k]), k


def test_consistency_term_is_eacs_loss_on_the_mirrored_view():
    m, noisy, clean, images, lms = _lanet({"consistency": 1.0, "erase_p": 0.0})
    x = images[:6]
    b = Batch(images=x, labels=noisy[:6], index=torch.arange(6), clean_labels=clean[:6], step=0)
    bb = m.encoder["backbone"]
    f1 = bb.forward_features(x)
    got = m._consistency(f1, b)
    w = bb.fc.weight
    want = flip_consistency(class_activation_maps(f1, w), class_activation_maps(bb.forward_features(x.flip(3)), w))
    assert got.item() == pytest.approx(want.item(), rel=1e-5)


def test_consistency_ramp_scales_the_term_by_the_step():
    """With ``consistency_ramp`` the consistency weight is w x ramp_factor(step): at one step, fresh identical
    models with the term off, ramped and at full weight differ by exactly those fractions of the term."""
    from lanet.methods.eac import ramp_factor

    def loss_at(step, **params):
        m, noisy, clean, images, lms = _lanet({"erase_p": 0.0, "EL": False, "PL": False, **params})
        m.eval()
        b = Batch(images=images[:12], labels=noisy[:12], index=torch.arange(12), clean_labels=clean[:12],
                  step=step, total_steps=100, landmarks=lms[:12], landmark_found=torch.ones(12, dtype=torch.bool))
        with torch.no_grad():
            loss, logs = m(b)
        return loss.item(), logs

    for step in (3, 60):
        off, _ = loss_at(step)
        full, logs = loss_at(step, consistency=200.0)
        ramped, _ = loss_at(step, consistency=200.0, consistency_ramp=0.5)
        term = logs["flip_consistency"].item()
        assert term > 0
        assert full - off == pytest.approx(200.0 * term, rel=1e-3)
        assert ramped - off == pytest.approx(200.0 * ramp_factor(0.5, step, 100) * term, rel=1e-3)
    assert ramp_factor(0.5, 3, 100) == pytest.approx(0.08) and ramp_factor(0.5, 60, 100) == 1.0


def test_vote_and_prediction_diagnostics_by_hand():
    m, *_ = _lanet({})
    b = Batch(images=torch.zeros(4, 1, 32, 32), labels=torch.tensor([0, 1, 1, 2]), index=torch.arange(4),
              clean_labels=torch.tensor([0, 0, 1, 3]))
    target = torch.eye(4)[[0, 1, 1, 2]]
    vote = torch.eye(4)[[0, 0, 2, 3]]  # right for images 0, 1 and 3: 3/4
    logits = torch.eye(4)[[1, 0, 1, 2]] * 5  # right for images 1 and 2: 2/4
    m._target_diagnostics(target, {}, b, vote, logits)
    d = m.epoch_diagnostics()
    assert d["vote_agrees_clean_label"] == pytest.approx(0.75)
    assert d["prediction_agrees_clean_label"] == pytest.approx(0.5)
    assert d["target_agrees_clean_label"] == pytest.approx(0.5) and d["train_label_is_clean"] == pytest.approx(0.5)


def test_batch_neighbour_purity_by_hand():
    m, *_ = _lanet({})
    b = Batch(images=torch.zeros(3, 1, 32, 32), labels=torch.tensor([0, 1, 1]), index=torch.arange(3),
              clean_labels=torch.tensor([0, 0, 1]))
    nb = torch.tensor([[1, 2], [0, 2], [0, 1]])  # anchor 0: labels 0, 1 -> 1/2; anchor 1: 0, 1 -> 1/2; 2: 0, 0 -> 0
    m._neighbour_diagnostics({"u": nb}, b)
    assert m.epoch_diagnostics()["neighbour_purity_u"] == pytest.approx(2 / 6)


@pytest.mark.parametrize("bad", [{"neighbours": "all"}, {"score_temperature": -1.0}, {"sharpen": 0.0},
                                 {"consistency": -1.0}, {"erase_p": 2.0}, {"consistency_ramp": -0.1},
                                 {"label_weight": 1.5},
                                 {"label_weight": 0.5, "LD": False, "LM": False, "PL": False}])
def test_bad_variant_values_are_errors(bad):
    with pytest.raises(LanetError, match="method.params"):
        _lanet(bad)


def test_defaults_are_the_papers_form():
    p = LANet.Params()
    assert (p.neighbours, p.score_temperature, p.sharpen, p.consistency, p.label_weight) == (
        "batch", 0.0, 1.0, 0.0, 1.0)


@pytest.mark.parametrize("w", [0.0, 0.25])
def test_label_weight_scales_only_the_given_labels_cross_entropy(w):
    """loss(paper) - loss(label_weight=w) = (1 - w) CE(given label), the rest (KL, EL, landmarks) unchanged; during
    warm-up epochs the given label keeps its full weight."""
    paper, noisy, clean, images, lms = _lanet({})
    variant, *_ = _lanet({"label_weight": w})
    idx = torch.arange(16)
    b = Batch(images=images[idx], labels=noisy[idx], index=idx, landmarks=lms[idx],
              landmark_found=torch.ones(16, dtype=torch.bool), clean_labels=clean[idx], step=0)
    la, logs_a = paper(b)
    lb, logs_b = variant(b)
    assert logs_a["ce"].item() == pytest.approx(logs_b["ce"].item(), rel=1e-6)
    assert logs_a["kl"].item() == pytest.approx(logs_b["kl"].item(), rel=1e-6)
    assert (la - lb).item() == pytest.approx((1 - w) * logs_a["ce"].item(), rel=1e-5)
    warm, *_ = _lanet({"label_weight": w, "warmup_epochs": 1})
    cold, *_ = _lanet({"warmup_epochs": 1})
    assert warm(b)[0].item() == pytest.approx(cold(b)[0].item(), rel=1e-6)  # epoch 0 is warm-up: CE in full
