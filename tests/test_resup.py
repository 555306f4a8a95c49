"""ReSup (TAFFC 2025): score, Beta mixture (EM, method of moments, posterior), lookup and swap check on
hand-computed cases and known samples; the loss against the hand formula; a training step on every backbone;
a run through the trainer, its bit-identical resume, and the score buffer under torchrun."""

import json

import helpers
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lanet.errors import LanetError
from lanet.methods import resup as resup_mod
from lanet.methods.base import Batch, MethodSpec
from lanet.methods.registry import available, build_method
from lanet.methods.resup import (
    ReSup,
    agreement_score,
    beta_log_pdf,
    clean_component,
    clean_lookup,
    clean_posterior,
    fit_beta_mixture,
    look_up,
    weighted_moments,
)
from lanet.models.resnet import create_model

TIMING = ("train_images_per_second", "train_seconds")


def spec(arch: str = "resnet18", size: int = 32, width: int = 8, classes: int = 3, num_train: int = 12,
         pretrained: str = "") -> MethodSpec:
    return MethodSpec(num_classes=classes, num_train=num_train, in_chans=1, image_size=size, num_landmarks=0,
                      arch=arch, pretrained=pretrained, dropout=0.0, epochs=3, width=width,
                      train_labels=np.arange(num_train) % classes)


def two_clusters(noisy: int = 3000, clean: int = 7000, seed: int = 0) -> torch.Tensor:
    """Scores of two clearly separated Beta clusters: 'noisy' Beta(2, 20) (mean 0.09), 'clean' Beta(20, 2)."""
    torch.manual_seed(seed)
    a = torch.distributions.Beta(torch.tensor(2.0), torch.tensor(20.0)).sample((noisy,))
    b = torch.distributions.Beta(torch.tensor(20.0), torch.tensor(2.0)).sample((clean,))
    return torch.cat([a, b]).double()


def test_resup_is_registered():
    assert "resup" in available()


def test_agreement_score_hand_values():
    probs = torch.tensor([[0.6, 0.3, 0.1], [0.6, 0.3, 0.1], [1.0, 0.0, 0.0], [1 / 3, 1 / 3, 1 / 3]])
    s = agreement_score(probs, torch.tensor([0, 2, 0, 1]))
    norm = (0.36 + 0.09 + 0.01) ** 0.5
    assert s.tolist() == pytest.approx([0.6 / norm, 0.1 / norm, 1.0, 3 ** -0.5])


def test_beta_density_and_weighted_moments_hand_values():
    x = torch.tensor([[0.3]], dtype=torch.float64)
    pdf = beta_log_pdf(x, torch.tensor([2.0, 1.0, 1.0], dtype=torch.float64),
                       torch.tensor([1.0, 2.0, 1.0], dtype=torch.float64)).exp()
    assert pdf.tolist()[0] == pytest.approx([0.6, 1.4, 1.0])  # 2x, 2(1 - x), uniform
    xs = torch.tensor([0.2, 0.4], dtype=torch.float64)
    # equal weights: xbar 0.3, s2 0.01 -> alpha = 0.3 (0.21 / 0.01 - 1) = 6, beta = 6 * 0.7 / 0.3 = 14
    # weights 3 : 1: xbar 0.25, s2 = (3 * 0.0025 + 0.0225) / 4 = 0.0075 -> alpha = 0.25 * 24 = 6, beta = 18
    alpha, beta = weighted_moments(xs, torch.tensor([[1.0, 3.0], [1.0, 1.0]], dtype=torch.float64))
    assert alpha.tolist() == pytest.approx([6.0, 6.0]) and beta.tolist() == pytest.approx([14.0, 18.0])


def test_mixture_fit_recovers_two_separated_clusters():
    x = two_clusters()
    mix = fit_beta_mixture(x, iters=10)
    means = (mix[:, 0] / (mix[:, 0] + mix[:, 1])).tolist()
    assert means == pytest.approx([2 / 22, 20 / 22], abs=0.02)  # components in their initial order
    assert mix[:, 2].tolist() == pytest.approx([0.3, 0.7], abs=0.02)
    assert mix[1, 0] / mix[1, 1] == pytest.approx(10, rel=0.25) and mix[0, 1] / mix[0, 0] == pytest.approx(10,
                                                                                                            rel=0.25)
    assert clean_component(mix) == 1
    post = clean_posterior(x, mix, 1)
    assert post[:3000].mean() < 0.01 and post[3000:].mean() > 0.99  # the posterior is ~0 / ~1 per cluster
    assert clean_posterior(torch.tensor([0.05, 0.5, 0.97]), mix, 1).tolist() == pytest.approx([0, 0.5, 1], abs=0.5)


def test_swapped_components_are_caught():
    x = two_clusters()
    swapped = fit_beta_mixture(x, init=((2.0, 1.0), (1.0, 2.0)))  # EM ends with the clean component first
    assert clean_component(swapped) == 0
    right = clean_lookup(swapped, clean_component(swapped))
    assert look_up(right, torch.tensor([0.95])).item() > 0.99 and look_up(right, torch.tensor([0.05])).item() < 0.01
    # the release's fixed choice would tabulate the noisy component's posterior, which peaks near s = 0: held at
    # that maximum from there on, it gives every sample a weight of ~1 and suppresses nothing
    release = clean_lookup(swapped, 1)
    assert (release > 0.99).all() and look_up(release, torch.tensor([0.05])).item() > 0.99
    assert clean_posterior(torch.tensor([0.95]), swapped, 1).item() < 0.01  # (before the hold: inverted)


def test_lookup_holds_its_maximum_from_the_argmax_on():
    # clean Beta(8, 2) beside a U-shaped Beta(0.5, 0.5): near s = 1 the U-shape wins again, the raw posterior falls
    mix = torch.tensor([[0.5, 0.5, 0.5], [8.0, 2.0, 0.5]], dtype=torch.float64)
    grid = torch.linspace(1e-4, 1 - 1e-4, 100, dtype=torch.float64)
    raw = clean_posterior(grid, mix, 1)
    peak = int(raw.argmax())
    assert peak < 99 and raw[-1] < raw[peak] - 0.5  # the raw posterior does fall past its peak
    table = clean_lookup(mix, 1)
    assert torch.equal(table[:peak], raw[:peak]) and (table[peak:] == raw[peak]).all()
    # weights: w = table[floor(100 s)], scores clipped to [0.001, 0.999], weights to [1e-4, 1 - 1e-4]
    s = torch.tensor([0.0, 0.004, 0.505, 0.999, 1.0, (peak + 0.5) / 100])
    assert look_up(table, s).tolist() == pytest.approx(
        [max(table[0].item(), 1e-4), max(table[0].item(), 1e-4), table[50].item(), table[99].item(),
         table[99].item(), min(table[peak].item(), 1 - 1e-4)], rel=1e-6)
    assert look_up(torch.ones(100, dtype=torch.float64), torch.tensor([0.5])).item() == pytest.approx(1 - 1e-4)


def _method(**params) -> ReSup:
    torch.manual_seed(0)
    return ReSup(spec(), params)


def _batch(epoch: int, index=(0, 1, 2, 3, 4, 5), clean=None) -> Batch:
    g = torch.Generator().manual_seed(epoch)
    idx = torch.tensor(index)
    return Batch(images=torch.randn(len(idx), 1, 32, 32, generator=g), labels=idx % 3, index=idx, epoch=epoch,
                 clean_labels=None if clean is None else torch.tensor(clean))


def test_warmup_loss_and_score_recording():
    m = _method().eval()
    b = _batch(0)
    loss, logs = m(b)
    z1, z2 = m.net1(b.images), m.net2(b.images)
    hand = (F.cross_entropy(z1, b.labels, reduction="none") + F.cross_entropy(z2, b.labels, reduction="none")).mean()
    assert loss.item() == pytest.approx(hand.item(), rel=1e-5) and "consistency" not in logs
    s1, s2 = agreement_score(z1.softmax(1), b.labels), agreement_score(z2.softmax(1), b.labels)
    assert torch.allclose(m.scores[0, :6], s1) and torch.allclose(m.scores[1, :6], s2)
    assert m.score_epoch.tolist() == [0] * 6 + [-1] * 6 and int(m.scored_epoch) == 0
    assert int(m.fitted_epoch) == -1  # nothing fitted during warm-up
    d = m.epoch_diagnostics()  # the end of epoch 0: the mixtures are fitted on the recorded scores
    assert int(m.fitted_epoch) == 0 and "resup_net1_clean_alpha" in d and "resup_w1_mean" not in d
    assert d["resup_net1_score_mean"] == pytest.approx(s1.mean().item(), rel=1e-5)


def test_weighted_loss_swaps_the_networks_weights():
    m = _method().eval()
    m(_batch(0))
    m.epoch_diagnostics()
    # hand-set state: net 1 trusts samples 0-2, net 2 samples 3-5; lookup = identity ramp
    m.scores[0, :6] = torch.tensor([0.95, 0.9, 0.85, 0.1, 0.2, 0.3])
    m.scores[1, :6] = torch.tensor([0.1, 0.2, 0.3, 0.95, 0.9, 0.85])
    m.lookup[:] = torch.linspace(0, 1, 100, dtype=torch.float64)
    set_scores = m.scores[:, :6].clone()
    b = _batch(1, clean=[0, 1, 2, 1, 2, 2])  # labels 0, 1, 2, 0, 1, 2: rows 3 and 4 carry flipped labels
    flipped = torch.tensor([False, False, False, True, True, False])
    assert torch.equal(b.labels != b.clean_labels, flipped)
    loss, logs = m(b)
    z1, z2 = m.net1(b.images), m.net2(b.images)
    ce1, ce2 = (F.cross_entropy(z, b.labels, reduction="none") for z in (z1, z2))
    w1 = torch.linspace(0, 1, 100)[(set_scores[0] * 100).long()]  # floor(100 s)
    w2 = torch.linspace(0, 1, 100)[(set_scores[1] * 100).long()]
    hand = (w2 * ce1 + w1 * ce2).mean() + 5.0 * ((z1.softmax(1) - z2.softmax(1)) ** 2).sum(1).mean() / 3
    assert loss.item() == pytest.approx(hand.item(), rel=1e-5)
    unswapped = (w1 * ce1 + w2 * ce2).mean() + 5.0 * F.mse_loss(z1.softmax(1), z2.softmax(1))
    assert abs(unswapped.item() - hand.item()) > 1e-3
    assert logs["consistency"].item() == pytest.approx(F.mse_loss(z1.softmax(1), z2.softmax(1)).item(), rel=1e-5)
    d = m.epoch_diagnostics()
    assert d["resup_w1_mean"] == pytest.approx(w1.mean().item(), rel=1e-5)
    assert d["resup_w1_flipped"] == pytest.approx(w1[flipped].mean().item(), rel=1e-5)
    assert d["resup_w2_clean"] == pytest.approx(w2[~flipped].mean().item(), rel=1e-5)
    assert d["resup_w1_flipped_below_half"] == pytest.approx((w1[flipped] < 0.5).float().mean().item())
    assert d["resup_w2_flipped_below_half"] == pytest.approx((w2[flipped] < 0.5).float().mean().item())
    # the step's own scores replaced the hand-set ones (they belong to epoch 1's fit)
    assert m.score_epoch[:6].tolist() == [1] * 6 and int(m.scored_epoch) == 1


def test_never_scored_samples_use_their_current_score():
    m = _method()
    m.lookup[:] = torch.linspace(0, 1, 100, dtype=torch.float64)
    m.scores[:, 0] = 0.9
    m.score_epoch[0] = 0
    current = torch.tensor([[0.2, 0.3], [0.4, 0.5]])
    w = m.clean_probability(torch.tensor([0, 1]), current)
    ramp = torch.linspace(0, 1, 100)
    assert torch.allclose(w, torch.stack([ramp[[90, 30]], ramp[[90, 50]]]))  # sample 0 recorded, sample 1 not


def test_refit_at_the_first_step_of_an_epoch_equals_the_diagnostics_refit():
    def run(diagnostics: bool) -> ReSup:
        m = _method()
        m(_batch(0, range(6)))
        m(_batch(0, range(6, 12)))
        if diagnostics:
            m.epoch_diagnostics()
        m(_batch(1))
        return m

    a, b = run(True), run(False)
    assert int(b.fitted_epoch) == 0  # fitted by the step without any diagnostics call
    for key, value in a.state_dict().items():
        assert torch.equal(value, b.state_dict()[key]), key
    assert not torch.equal(a.lookup, torch.ones_like(a.lookup))


def test_refit_checks_for_swapped_components(monkeypatch):
    m = _method()
    x = two_clusters(noisy=4, clean=8)
    m.scores[:] = x.float()[None, :]
    m.score_epoch[:] = 0
    m.scored_epoch.fill_(0)
    real = resup_mod.fit_beta_mixture
    monkeypatch.setattr(resup_mod, "fit_beta_mixture",
                        lambda s, iters: real(s, iters, init=((2.0, 1.0), (1.0, 2.0))))  # EM ends swapped
    d = m.epoch_diagnostics()
    assert m.clean.tolist() == [0, 0] and d["resup_net1_swapped"] == 1.0
    assert d["resup_net1_clean_alpha"] / (d["resup_net1_clean_alpha"] + d["resup_net1_clean_beta"]) > 0.8
    assert look_up(m.lookup[0], torch.tensor([0.95])).item() > 0.9  # a high score is trusted


def test_network_2_initialisation(tmp_path):
    torch.manual_seed(5)
    path = tmp_path / "pre.pt"
    torch.save(create_model("resnet18", 3, 1, width=8).state_dict(), path)  # holds a matching classifier too
    pre = torch.load(path, weights_only=True)
    same = ReSup(spec(pretrained=str(path)))
    for net in (same.net1, same.net2):
        assert torch.equal(net.conv1.weight, pre["conv1.weight"])
        assert torch.equal(net.layer4[1].conv2.weight, pre["layer4.1.conv2.weight"])
    assert torch.equal(same.net1.fc.weight, pre["fc.weight"]) and not torch.equal(same.net2.fc.weight, pre["fc.weight"])
    rand = ReSup(spec(pretrained=str(path)), {"net2_init": "random"})
    assert torch.equal(rand.net1.conv1.weight, pre["conv1.weight"])
    assert not torch.equal(rand.net2.conv1.weight, pre["conv1.weight"])
    assert same.export() is same.net1


@pytest.mark.parametrize("bad", [{"net2_init": "imagenet"}, {"warmup_epochs": 0}, {"em_iters": 0},
                                 {"lookup_bins": 1}, {"cons_weight": -1.0}])
def test_invalid_params(bad):
    with pytest.raises(LanetError):
        ReSup(spec(), bad)


@pytest.mark.parametrize("arch,size,width", helpers.BACKBONES)
def test_training_steps_on_every_backbone(arch, size, width):
    torch.manual_seed(0)
    m = build_method("resup", spec(arch, size, width=width, classes=7, num_train=16))
    opt = torch.optim.Adam(m.param_groups(1e-3))
    x = torch.randn(4, 1, size, size)
    for epoch in (0, 1):  # warm-up, then weighted (the mixture fitted at the first step of epoch 1)
        before = {k: v.clone() for k, v in m.state_dict().items()}
        loss, logs = m(Batch(images=x, labels=torch.tensor([0, 1, 2, 3]), index=torch.arange(4), epoch=epoch))
        assert torch.isfinite(loss) and ("consistency" in logs) == (epoch == 1)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        after = m.state_dict()
        for net in ("net1.", "net2."):
            assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith(net + "conv1"))
    assert int(m.fitted_epoch) == 0
    with torch.no_grad():
        assert m.eval().predict(x).shape == (4, 7)


def _read(run):
    return [{k: v for k, v in json.loads(x).items() if k not in TIMING}
            for x in (run / "metrics.jsonl").read_text().splitlines()]


def test_trains_through_the_trainer_and_resumes_bit_identically(tmp_path, monkeypatch):
    from lanet.models.io import load_classifier
    from lanet.train.evaluate import evaluate_run
    from lanet.train.trainer import train

    def cfg():
        return helpers.tiny_config("resup", epochs=2, size=200, width=16)

    s = train(cfg(), tmp_path / "full", progress=False)
    lines = _read(tmp_path / "full")
    assert "resup_net1_clean_alpha" in lines[0] and "resup_w1_mean" not in lines[0]  # warm-up: no weights yet
    for key in ("resup_net2_noisy_pi", "resup_w1_flipped", "resup_w2_clean", "resup_w1_flipped_below_half",
                "train_consistency", "train_ce_net2"):
        assert key in lines[1], key
    state = torch.load(tmp_path / "full" / "checkpoint.pt", weights_only=True)["method"]
    n = s["num_train"]
    assert state["scores"].shape == (2, n) and state["lookup"].shape == (2, 100) and int(state["fitted_epoch"]) == 1
    assert (state["score_epoch"] == 1).sum() == (n // 32) * 32  # every sample of the last epoch's steps
    model, meta = load_classifier(tmp_path / "full" / "model_final.pt")
    assert meta["module"] == "resnet" and meta["method"] == "resup"
    assert evaluate_run(tmp_path / "full", device="cpu")["final"]["test"]["accuracy"] == pytest.approx(
        s["test_accuracy"])
    # killed as epoch 2 starts: the resumed run must take scores and mixtures from the checkpoint
    restore = helpers.interrupt_second_epoch(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        train(cfg(), tmp_path / "cut", progress=False)
    restore()
    train(cfg(), tmp_path / "cut", resume=True, progress=False)
    assert _read(tmp_path / "cut") == lines


@pytest.mark.slow
def test_torchrun_gathers_the_scores_of_the_global_batch(tmp_path):
    from test_trainer import torchrun_train

    cfg = helpers.tiny_config("resup", epochs=2, size=200, width=16)
    cfg.save(tmp_path / "cfg.yaml")
    torchrun_train(tmp_path / "cfg.yaml", tmp_path / "ddp", port=29519)
    s = json.loads((tmp_path / "ddp" / "summary.json").read_text())
    assert s["world_size"] == 2 and 0 <= s["test_accuracy"] <= 1
    state = torch.load(tmp_path / "ddp" / "checkpoint.pt", weights_only=True)["method"]
    n = s["num_train"]
    # rank 0's buffer holds the scores of both processes' shares of every step
    assert (state["score_epoch"] == 1).sum() == (n // 32) * 32
    assert int(state["fitted_epoch"]) == 1
