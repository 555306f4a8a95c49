"""NLA (AAAI 2025): its weights, nearest-negative selection, schedule and mirror term on hand-computed cases; its
loss against the hand formula; a training step on every backbone; a run through the trainer and its resume."""

import json
import math

import helpers
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lanet.errors import LanetError
from lanet.methods.base import Batch, MethodSpec
from lanet.methods.nla import (
    NLA,
    covariance,
    gaussian_density,
    gt_and_nearest_negative,
    mirror_consistency,
    schedule_eps,
)
from lanet.methods.registry import available, build_method

# the release's covariances, by hand: s_t = 0.8, r_t = 2 -> a_t = 0.64 + 0.16, b_t = -0.64 + 0.16;
# s_f = 0.91, r_f = 6 -> a_f = 0.8281 + 0.91^2/36, b_f = 0.8281 - 0.91^2/36
A_T, B_T = 0.80, -0.48
A_F, B_F = 0.8281 + 0.8281 / 36, 0.8281 - 0.8281 / 36


def spec(arch: str = "resnet18", size: int = 32, epochs: int = 60, width: int = 8, classes: int = 3,
         num_train: int = 8) -> MethodSpec:
    return MethodSpec(num_classes=classes, num_train=num_train, in_chans=1, image_size=size, num_landmarks=0,
                      arch=arch, pretrained="", dropout=0.0, epochs=epochs, width=width,
                      train_labels=np.arange(num_train) % classes)


def hand_density(x: float, y: float, mu: tuple[float, float], a: float, b: float) -> float:
    """The bivariate normal density, written out for a 2 x 2 covariance [[a, b], [b, a]]."""
    det = a * a - b * b
    dx, dy = x - mu[0], y - mu[1]
    quad = (a * dx * dx - 2 * b * dx * dy + a * dy * dy) / det
    return math.exp(-quad / 2) / (2 * math.pi * math.sqrt(det))


def test_nla_is_registered():
    assert "nla" in available()


def test_covariances_are_the_release_values():
    assert covariance(0.8, 2.0, -1.0) == pytest.approx((A_T, B_T))
    assert covariance(0.8, 2.0, -1.0, 0.5) == pytest.approx((A_T, 0.5 * B_T))  # the schedule scales b_t only
    a_f, b_f = covariance(0.91, 6.0, 1.0)
    assert (a_f, b_f) == pytest.approx((A_F, B_F)) and (a_f, b_f) == pytest.approx((0.8511, 0.8051), abs=1e-4)
    # variances along the margin (a - b) and the sum (a + b) of the facts note
    assert (A_T - B_T, A_T + B_T) == pytest.approx((1.28, 0.32))
    assert (a_f - b_f, a_f + b_f) == pytest.approx((0.046, 1.656), abs=1e-3)


def test_gaussian_density_matches_a_general_2x2_formula():
    g = np.random.default_rng(0)
    v = g.uniform(0, 1, (20, 2))
    for mu, a, b in (((0.5, 0.5), A_T, B_T), ((0.3, 0.15), A_F, B_F), ((0.5, 0.5), A_T, 0.0)):
        cov = np.array([[a, b], [b, a]])
        d = v - np.array(mu)
        quad = np.einsum("ni,ij,nj->n", d, np.linalg.inv(cov), d)
        want = np.exp(-quad / 2) / (2 * np.pi * np.sqrt(np.linalg.det(cov)))
        got = gaussian_density(torch.tensor(v, dtype=torch.float64), mu, a, b).numpy()
        assert np.allclose(got, want, rtol=1e-10)


def test_nearest_negative_selection():
    probs = torch.tensor([[0.6, 0.3, 0.1],   # y = 0 predicted right: p_NN is the second largest, 0.3
                          [0.2, 0.7, 0.1],   # y = 0 predicted wrong: p_NN is the largest, 0.7
                          [0.2, 0.1, 0.7],   # y = 1 wrong: the largest, 0.7 (not the second largest, 0.2)
                          [0.45, 0.45, 0.1],  # y = 0 tied with class 1: argmax is 0 (first), p_NN = 0.45
                          [0.45, 0.45, 0.1]])  # y = 1 tied: argmax 0 != 1, predicted wrong, p_NN = 0.45
    labels = torch.tensor([0, 0, 1, 0, 1])
    p_gt, p_nn, right = gt_and_nearest_negative(probs, labels)
    assert p_gt.tolist() == pytest.approx([0.6, 0.2, 0.1, 0.45, 0.45])
    assert p_nn.tolist() == pytest.approx([0.3, 0.7, 0.7, 0.45, 0.45])
    assert right.tolist() == [True, False, False, True, False]


def test_schedule():
    assert schedule_eps(0, 60, -15) == 0.0
    assert schedule_eps(4, 60, -15) == pytest.approx(1 - math.exp(-1))  # 0.63
    assert schedule_eps(12, 60, -15) == pytest.approx(0.95, abs=5e-3)
    assert schedule_eps(20, 60, -15) > 0.99
    assert NLA(spec(epochs=60)).eps(4) == pytest.approx(0.632, abs=1e-3)
    assert NLA(spec(epochs=30)).eps(2) == pytest.approx(0.632, abs=1e-3)  # E defaults to the run's epochs
    assert NLA(spec(epochs=30), {"schedule_epochs": 60}).eps(4) == pytest.approx(0.632, abs=1e-3)
    assert NLA(spec(), {"sch_bool": False}).eps(0) == 1.0


def test_naw_weights_at_known_points():
    m = NLA(spec(epochs=60))
    probs = torch.tensor([[0.5, 0.5, 0.0],    # right (argmax 0 on the tie), v = (0.5, 0.5): the peak
                          [0.7, 0.2, 0.1],    # right, v = (0.7, 0.2)
                          [0.45, 0.5, 0.05],  # wrong, v = (0.45, 0.5)
                          [0.2, 0.6, 0.2],    # wrong, v = (0.2, 0.6)
                          [0.1, 0.85, 0.05],  # wrong, v = (0.1, 0.85)
                          [0.01, 0.98, 0.01]], dtype=torch.float64)  # wrong, v = (0.01, 0.98)
    labels = torch.zeros(6, dtype=torch.long)
    late, right = m.weights(probs, labels, epoch=59)  # eps ~ 1
    assert right.tolist() == [True, True, False, False, False, False]
    eps = 1 - math.exp(-15 * 59 / 60)
    want = [hand_density(0.5, 0.5, (0.5, 0.5), A_T, eps * B_T), hand_density(0.7, 0.2, (0.5, 0.5), A_T, eps * B_T),
            hand_density(0.45, 0.5, (0.3, 0.15), A_F, B_F), hand_density(0.2, 0.6, (0.3, 0.15), A_F, B_F),
            hand_density(0.1, 0.85, (0.3, 0.15), A_F, B_F), hand_density(0.01, 0.98, (0.3, 0.15), A_F, B_F)]
    assert late.tolist() == pytest.approx(want, rel=1e-9)
    # the facts note's rounded magnitudes: right peak 0.249 (eps 1), wrong 0.45, 0.11, 0.007, about 0
    assert late.tolist() == pytest.approx([0.249, 0.235, 0.45, 0.11, 0.007, 0.0], abs=4e-3)
    assert 1 / (2 * math.pi * 0.64) == pytest.approx(0.2487, abs=1e-4)  # the peak by hand: |Sigma_t|^1/2 = 0.64
    early, _ = m.weights(probs, labels, epoch=0)  # eps = 0: isotropic 0.8, peak 1 / (2 pi 0.8) = 0.199
    assert early[0].item() == pytest.approx(1 / (2 * math.pi * 0.8))
    assert early[0].item() == pytest.approx(0.199, abs=1e-3)
    assert early[2:].tolist() == pytest.approx(late[2:].tolist())  # the "wrong" Gaussian is not scheduled
    scaled, _ = NLA(spec(), {"t_lambda": 2.0}).weights(probs, labels, epoch=59)
    assert scaled[:2].tolist() == pytest.approx([2 * x for x in want[:2]]) and scaled[2:].tolist() == pytest.approx(
        want[2:])


def test_mirror_consistency_hand_values():
    z1 = torch.tensor([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0]], requires_grad=True)
    z2 = torch.tensor([[0.0, 0.0, 1.0], [0.0, 2.0, 0.0]], requires_grad=True)
    loss = mirror_consistency(z1, z2)
    # image 1 by hand: m = (0.5, 0, 0.5), KL(softmax(m) || softmax(z1)) and KL(softmax(m) || softmax(z2))
    pm = np.exp([0.5, 0, 0.5]) / np.exp([0.5, 0, 0.5]).sum()
    p1 = np.exp([1.0, 0, 0]) / np.exp([1.0, 0, 0]).sum()
    p2 = p1[::-1]
    kl = 0.5 * ((pm * np.log(pm / p1)).sum() + (pm * np.log(pm / p2)).sum())
    # image 2: identical views -> 0
    assert loss.item() == pytest.approx(kl / 2, rel=1e-6)
    assert mirror_consistency(z1, z2, "sum").item() == pytest.approx(kl, rel=1e-6)
    loss.backward()
    assert z1.grad[0].abs().sum() > 0 and z2.grad[0].abs().sum() > 0  # both views get gradients
    # the direction: from the mixture to each view (not KL(view || mixture))
    reverse = 0.5 * ((p1 * np.log(p1 / pm)).sum() + (p2 * np.log(p2 / pm)).sum())
    assert abs(kl - reverse) > 1e-4
    with pytest.raises(ValueError):
        mirror_consistency(z1, z2, "max")


def test_loss_is_the_hand_formula_and_the_weight_switch():
    torch.manual_seed(0)
    m = NLA(spec())
    m.eval()  # fixed BatchNorm statistics: the manual pass sees the same network
    x, y = torch.randn(6, 1, 32, 32), torch.tensor([0, 1, 2, 0, 1, 2])
    batch = Batch(images=x, labels=y, index=torch.arange(6), clean_labels=torch.tensor([0, 1, 2, 1, 1, 0]), epoch=3)
    loss, logs = m(batch)
    z1, z2 = m.model(x), m.model(torch.flip(x, dims=[3]))
    ce = F.cross_entropy(z1, y, reduction="none")
    w, right = m.weights(z1.softmax(1), y, 3)
    hand = 0.5 * ce.mean() + 0.5 * (w * ce).mean() + 0.5 * mirror_consistency(z1, z2)
    assert loss.item() == pytest.approx(hand.item(), rel=1e-5)
    assert logs["ce"].item() == pytest.approx(ce.mean().item(), rel=1e-5)
    summed, _ = NLA(spec(), {"jsd_reduction": "sum"}).eval()(batch)
    # diagnostics of the step: weight by right/wrong prediction and by flipped (rows 3, 5) / kept labels
    d = m.epoch_diagnostics()
    assert d["nla_eps"] == pytest.approx(1 - math.exp(-15 * 3 / 60))
    assert d["nla_predicted_right"] == pytest.approx(right.float().mean().item())
    for key, mask in (("right", right), ("wrong", ~right)):
        if mask.any():
            assert d[f"nla_weight_{key}"] == pytest.approx(w[mask].mean().item(), rel=1e-5)
    flipped = torch.tensor([False, False, False, True, False, True])
    assert d["nla_weight_flipped"] == pytest.approx(w[flipped].mean().item(), rel=1e-5)
    assert d["nla_weight_clean"] == pytest.approx(w[~flipped].mean().item(), rel=1e-5)
    assert m.epoch_diagnostics() == {"nla_eps": d["nla_eps"]}  # reset after reporting
    # detach_weight: the same loss value, but the gradient no longer flows through w
    grads = {}
    for detach in (False, True):
        torch.manual_seed(0)
        mm = NLA(spec(), {"detach_weight": detach}).eval()
        mm(batch)[0].backward()
        grads[detach] = mm.model.fc.weight.grad.clone()
    assert not torch.allclose(grads[False], grads[True])
    assert m.export() is m.model


def test_jsd_sum_scales_with_the_batch():
    torch.manual_seed(0)
    x, y = torch.randn(6, 1, 32, 32), torch.tensor([0, 1, 2, 0, 1, 2])
    batch = Batch(images=x, labels=y, index=torch.arange(6))
    out = {}
    for red in ("mean", "sum"):
        torch.manual_seed(0)
        out[red] = NLA(spec(), {"jsd_reduction": red}).eval()(batch)[1]["mirror_jsd"].item()
    assert out["sum"] == pytest.approx(6 * out["mean"], rel=1e-5)


@pytest.mark.parametrize("bad", [{"jsd_reduction": "max"}, {"t_std_ratio": 0.0}, {"slope": 1.0},
                                 {"lam_b": -1.0}, {"schedule_epochs": -1}])
def test_invalid_params(bad):
    with pytest.raises(LanetError):
        NLA(spec(), bad)


@pytest.mark.parametrize("arch,size,width", helpers.BACKBONES)
def test_a_training_step_on_every_backbone(arch, size, width):
    torch.manual_seed(0)
    m = build_method("nla", spec(arch, size, width=width, classes=7, num_train=16))
    opt = torch.optim.Adam(m.param_groups(1e-3))
    before = {k: v.clone() for k, v in m.export().state_dict().items()}
    x = torch.randn(4, 1, size, size)
    loss, logs = m(Batch(images=x, labels=torch.tensor([0, 1, 2, 3]), index=torch.arange(4)))
    assert torch.isfinite(loss) and set(logs) == {"ce", "weighted_ce", "mirror_jsd", "naw_weight"}
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    after = m.export().state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)
    with torch.no_grad():
        assert m.eval().predict(x).shape == (4, 7)


def test_trains_through_the_trainer_and_resumes_bit_identically(tmp_path, monkeypatch):
    from lanet.models.io import load_classifier
    from lanet.train.evaluate import evaluate_run
    from lanet.train.trainer import train

    def cfg():
        return helpers.tiny_config("nla", epochs=2, size=200, width=16)

    s = train(cfg(), tmp_path / "full", progress=False)
    lines = [json.loads(x) for x in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    for key in ("nla_eps", "nla_predicted_right", "nla_weight_right", "nla_weight_flipped", "nla_weight_clean",
                "train_mirror_jsd", "train_weighted_ce"):
        assert key in lines[-1], key
    assert lines[0]["nla_eps"] == 0.0 and lines[1]["nla_eps"] == pytest.approx(1 - math.exp(-15 / 2))
    model, meta = load_classifier(tmp_path / "full" / "model_final.pt")
    assert meta["module"] == "resnet" and meta["method"] == "nla"
    assert evaluate_run(tmp_path / "full", device="cpu")["final"]["test"]["accuracy"] == pytest.approx(
        s["test_accuracy"])
    restore = helpers.interrupt_second_epoch(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        train(cfg(), tmp_path / "cut", progress=False)
    restore()
    train(cfg(), tmp_path / "cut", resume=True, progress=False)
    timing = ("train_images_per_second", "train_seconds")

    def read(run):
        return [{k: v for k, v in json.loads(x).items() if k not in timing}
                for x in (run / "metrics.jsonl").read_text().splitlines()]

    assert read(tmp_path / "cut") == read(tmp_path / "full")
