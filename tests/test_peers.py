"""The peer methods SCN, RUL and EAC: their equations on small hand-built tensors, and a tiny training run each."""

import json

import helpers
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lanet.config import Config
from lanet.errors import LanetError
from lanet.methods.base import Batch, MethodSpec
from lanet.methods.eac import EAC, class_activation_maps, erase_boxes, flip_consistency, random_erase
from lanet.methods.registry import available
from lanet.methods.rul import (
    RUL,
    RULClassifier,
    mixed_loss,
    relative_uncertainty_mix,
    step_permutation,
    uncertainty,
)
from lanet.methods.scn import SCN, rank_regularisation, relabel_rule, split_groups
from lanet.models.resnet import ResNet


def tiny_spec(num_train: int = 8, labels=None, image_size: int = 32) -> MethodSpec:
    labels = np.zeros(num_train, dtype=np.int64) if labels is None else np.asarray(labels)
    return MethodSpec(num_classes=3, num_train=num_train, in_chans=1, image_size=image_size, num_landmarks=0,
                      arch="resnet18", pretrained="", dropout=0.0, epochs=1, width=8, train_labels=labels)


def test_peers_are_registered():
    assert {"scn", "rul", "eac"} <= set(available())


# ---------------------------------------------------------------------------------------------- SCN
def test_scn_rank_regularisation_hand_computed():
    a = torch.tensor([0.9, 0.2, 0.8, 0.7, 0.1, 0.6, 0.5, 0.4, 0.3, 0.65])  # N = 10, beta 0.7 -> 7 high
    high, low = split_groups(a, 0.7)
    assert sorted(a[high].tolist()) == pytest.approx([0.4, 0.5, 0.6, 0.65, 0.7, 0.8, 0.9])
    assert sorted(a[low].tolist()) == pytest.approx([0.1, 0.2, 0.3])
    # means: high 4.55/7 = 0.65, low 0.2 -> gap 0.45 > 0.15: no loss
    assert rank_regularisation(a, 0.7, 0.15).item() == pytest.approx(0.0)
    # a flat vector: gap 0.02 -> loss 0.15 - 0.02 = 0.13, gradients push the groups apart
    b = torch.tensor([0.51, 0.51, 0.51, 0.49, 0.49, 0.49, 0.51, 0.51, 0.51, 0.51], requires_grad=True)
    # high: the 7 values 0.51 -> 0.51; low: 0.49 x3 -> 0.49
    loss = rank_regularisation(b, 0.7, 0.15)
    assert loss.item() == pytest.approx(0.13, abs=1e-6)
    loss.backward()
    assert (b.grad[[0, 1, 2, 6, 7, 8, 9]] < 0).all() and (b.grad[[3, 4, 5]] > 0).all()
    assert rank_regularisation(torch.tensor([0.3]), 0.7, 0.15).item() == 0.0


def test_scn_relabel_rule_margin_and_eligibility():
    probs = torch.tensor([[0.6, 0.3, 0.1],   # label 1: 0.6 - 0.3 = 0.3 > 0.2 -> relabel to 0
                          [0.5, 0.35, 0.15],  # label 1: 0.15 <= 0.2 -> keep
                          [0.1, 0.2, 0.7],   # label 2 is the argmax -> keep
                          [0.7, 0.1, 0.2]])  # label 1: 0.6 > 0.2 -> relabel to 0, unless not eligible
    labels = torch.tensor([1, 1, 2, 1])
    new, changed = relabel_rule(probs, labels, 0.2)
    assert new.tolist() == [0, 1, 2, 0] and changed.tolist() == [True, False, False, True]
    new, changed = relabel_rule(probs, labels, 0.2, eligible=torch.tensor([True, True, True, False]))
    assert new.tolist() == [0, 1, 2, 1] and changed.tolist() == [True, False, False, False]
    assert relabel_rule(probs, labels, 0.65)[1].sum() == 0


def _scn_with_fixed_outputs(logits: torch.Tensor, a: torch.Tensor, labels, **params) -> SCN:
    scn = SCN(tiny_spec(len(labels), labels), params)
    scn.weighted_logits = lambda images: (a[:, None] * logits, a)  # hand-made network outputs
    return scn


def test_scn_relabels_only_the_low_group_and_only_from_relabel_epoch():
    n = 10
    labels = [1] * n
    logits = torch.full((n, 3), 0.0)
    logits[:, 0] = 10.0  # every sample: class 0 much more probable than its label 1
    a = torch.linspace(1.0, 0.1, n)  # samples 7, 8, 9 are the low group (beta 0.7)
    idx = torch.arange(n).flip(0)  # batch row i is training image n-1-i
    batch = Batch(images=torch.zeros(n, 1, 32, 32), labels=torch.tensor(labels), index=idx, epoch=8,
                  clean_labels=torch.tensor([0] * 8 + [2] * 2))
    scn = _scn_with_fixed_outputs(logits, a, labels)
    scn(batch)  # epoch 9 (1-based): before relabel_epoch 10
    assert scn.train_labels.tolist() == labels
    batch.epoch = 9
    scn(batch)
    expect = [1] * n
    for row in (7, 8, 9):
        expect[int(idx[row])] = 0
    assert scn.train_labels.tolist() == expect
    d = scn.epoch_diagnostics()
    assert d["relabelled_fraction"] == pytest.approx(3 / 10)  # 3 relabels over the 10 samples of relabelling steps
    assert d["relabel_to_clean"] == pytest.approx(1 / 3)  # rows 7, 8, 9: clean labels 0, 2, 2
    assert d["labels_changed_total"] == pytest.approx(0.3)
    assert d["importance_high"] == pytest.approx(float(a[:7].mean()))
    assert d["importance_low"] == pytest.approx(float(a[7:].mean()))
    # the release's behaviour: every sample of the batch
    scn_all = _scn_with_fixed_outputs(logits, a, labels, relabel_all=True)
    scn_all(batch)
    assert scn_all.train_labels.tolist() == [0] * n
    # the buffer is state: it travels in the state dict (checkpoints, resume)
    restored = SCN(tiny_spec(n, labels))
    restored.load_state_dict(scn.state_dict())
    assert restored.train_labels.tolist() == expect


def test_scn_loss_is_ce_of_weighted_logits_on_stored_labels_plus_rr():
    torch.manual_seed(0)
    n = 6
    scn = SCN(tiny_spec(n, [0, 1, 2, 0, 1, 2]), {"relabel_epoch": 100})
    scn.train_labels[2] = 0  # a label relabelled earlier: the loss must use it, not batch.labels
    x = torch.randn(n, 1, 32, 32)
    batch = Batch(images=x, labels=torch.tensor([0, 1, 2, 0, 1, 2]), index=torch.arange(n))
    scn.eval()  # fixed BatchNorm statistics so the manual pass sees the same network
    loss, logs = scn(batch)
    feat = scn.model.pool(scn.model.forward_features(x))
    a = torch.sigmoid(scn.attention(feat)).squeeze(1)
    logits = scn.model.fc(feat)
    y = torch.tensor([0, 1, 0, 0, 1, 2])
    ce = F.cross_entropy(a[:, None] * logits, y)
    k = int(n * 0.7)
    s = a.sort(descending=True).values
    rr = F.relu(0.15 - (s[:k].mean() - s[k:].mean()))
    assert logs["ce"].item() == pytest.approx(ce.item(), rel=1e-5)
    assert loss.item() == pytest.approx((ce + rr).item(), rel=1e-5)
    assert not torch.allclose(ce, F.cross_entropy(logits, y))  # the weights matter
    assert scn.export() is scn.model and isinstance(scn.export(), ResNet)


# ---------------------------------------------------------------------------------------------- RUL
def test_rul_uncertainty_and_mixing_weights_hand_computed():
    mu = torch.tensor([[1.0, 0.0], [0.0, 1.0], [2.0, 2.0]])
    logvar = torch.log(torch.tensor([[1.0, 3.0], [1.0, 1.0], [4.0, 2.0]]))  # u = 2, 1, 3
    assert uncertainty(logvar).tolist() == pytest.approx([2.0, 1.0, 3.0])
    perm = torch.tensor([1, 2, 0])
    z, wi, wj = relative_uncertainty_mix(mu, logvar, perm)
    assert wi.tolist() == pytest.approx([2 / 3, 1 / 4, 3 / 5])
    assert wj.tolist() == pytest.approx([1 / 3, 3 / 4, 2 / 5])
    expect = torch.tensor([[2 / 3, 1 / 3], [0.25 * 0 + 0.75 * 2, 0.25 * 1 + 0.75 * 2], [0.6 * 2 + 0.4, 0.6 * 2]])
    assert torch.allclose(z, expect)
    # paired with itself: z = mu
    z_self, w_self, _ = relative_uncertainty_mix(mu, logvar, torch.arange(3))
    assert torch.allclose(z_self, mu) and w_self.tolist() == pytest.approx([0.5] * 3)


def test_rul_mixed_loss_hand_formula():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
    y, perm = torch.tensor([0, 2]), torch.tensor([1, 0])
    ls = torch.log_softmax(logits, 1)
    hand = 0.5 * -(ls[0, 0] + ls[1, 2]) / 2 + 0.5 * -(ls[0, 2] + ls[1, 0]) / 2
    assert mixed_loss(logits, y, perm).item() == pytest.approx(hand.item())


def test_rul_training_loss_equals_hand_formula_and_predict_uses_mu():
    torch.manual_seed(0)
    rul = RUL(tiny_spec(8, image_size=40))
    assert rul.mu_head[3].in_features == 64 * 2 * 2  # width 8 -> 64 channels; 40 px -> 2 x 2 map
    x = torch.randn(8, 1, 40, 40)
    y = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    batch = Batch(images=x, labels=y, index=torch.arange(8), step=17)
    rul.eval()  # no dropout, fixed BatchNorm: the manual pass sees the same network
    loss, _ = rul(batch)
    perm = step_permutation(8, 17)
    assert torch.equal(perm, step_permutation(8, 17)) and not torch.equal(perm, step_permutation(8, 18))
    fmap = rul.backbone.forward_features(x)
    mu, logvar = rul.mu_head(fmap), rul.logvar_head(fmap)
    u = logvar.exp().mean(1)
    w = (u / (u + u[perm]))[:, None]
    z = w * mu + (1 - w) * mu[perm]
    hand = 0.5 * F.cross_entropy(rul.fc(z), y) + 0.5 * F.cross_entropy(rul.fc(z), y[perm])
    assert loss.item() == pytest.approx(hand.item(), rel=1e-5)
    # inference: fc(mu), and the logvar head plays no part
    with torch.no_grad():
        pred = rul.predict(x)
        assert torch.allclose(pred, rul.fc(mu), atol=1e-6)
        rul.logvar_head[3].weight.mul_(5.0)
        assert torch.allclose(rul.predict(x), pred)
    exported = rul.export()
    assert isinstance(exported, RULClassifier) and not isinstance(exported, ResNet)
    assert exported.fc is rul.fc and exported.mu_head is rul.mu_head  # shared weights, not copies
    keys = rul.state_dict().keys()
    assert not any(k.startswith("classifier.") for k in keys)  # every weight stored once


def test_rul_param_groups_have_per_part_learning_rates():
    rul = RUL(tiny_spec(), {"head_lr_mult": 10})
    g = rul.param_groups(2e-4)
    assert [x["lr"] for x in g] == pytest.approx([2e-4, 2e-3])
    assert {id(p) for p in g[1]["params"]} == {id(p) for m in (rul.mu_head, rul.logvar_head, rul.fc)
                                               for p in m.parameters()}
    assert sum(len(x["params"]) for x in g) == len(list(rul.parameters()))


# ---------------------------------------------------------------------------------------------- EAC
def test_eac_cam_is_the_classifier_weighted_feature_sum():
    torch.manual_seed(0)
    fmap, w = torch.randn(2, 4, 3, 5), torch.randn(3, 4, requires_grad=True)
    cam = class_activation_maps(fmap, w)
    manual = torch.zeros(2, 3, 3, 5)
    for n in range(2):
        for c in range(3):
            for k in range(4):
                manual[n, c] += w[c, k].item() * fmap[n, k]
    assert cam.shape == (2, 3, 3, 5) and torch.allclose(cam, manual, atol=1e-6)
    assert not cam.requires_grad  # classifier weights detached


def test_eac_flip_consistency_hand_values():
    cam = torch.tensor([[[[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]]])  # 1 x 1 x 2 x 3
    assert flip_consistency(cam, torch.flip(cam, dims=[3])).item() == 0.0  # mirrored view, mirrored back
    assert flip_consistency(cam, cam).item() == pytest.approx((4 + 0 + 4) * 2 / 6)  # unflipped: |1-3|^2 ...
    shifted = cam + 0.5
    assert flip_consistency(cam, torch.flip(shifted, dims=[3])).item() == pytest.approx(0.25)
    # grid_sample on a mirrored grid (the release's resampling) equals torch.flip on a pixel grid
    theta = torch.tensor([[[-1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]])
    grid = F.affine_grid(theta, list(cam.shape), align_corners=True)
    assert torch.allclose(F.grid_sample(cam, grid, mode="bilinear", padding_mode="border", align_corners=True),
                          torch.flip(cam, dims=[3]), atol=1e-6)


def test_eac_erasing_area_within_range_and_deterministic():
    g = torch.Generator().manual_seed(0)
    boxes = erase_boxes(400, 32, 32, g, p=1.0)
    fitted = [b for b in boxes if b is not None]
    assert len(fitted) > 350
    for top, left, h, w in fitted:
        assert 0 <= top and top + h <= 32 and 0 <= left and left + w <= 32
        # rounding of h and w moves the area a little around the drawn fraction in [0.02, 0.25]
        assert 0.015 <= h * w / (32 * 32) <= 0.27
    fracs = [h * w / 1024 for _, _, h, w in fitted]
    assert min(fracs) < 0.05 and max(fracs) > 0.2  # the whole range is used
    assert sum(b is None for b in erase_boxes(400, 32, 32, torch.Generator().manual_seed(1), p=0.5)) in range(150, 251)
    x = torch.ones(3, 2, 32, 32)
    e = random_erase(x, torch.Generator().manual_seed(3), p=1.0)
    assert torch.equal(e, random_erase(x, torch.Generator().manual_seed(3), p=1.0))
    assert torch.equal(x, torch.ones(3, 2, 32, 32))  # input untouched
    zero = (e == 0).float().mean(dim=(1, 2, 3))
    assert ((zero >= 0.015) & (zero <= 0.27)).all()
    assert torch.equal(e[:, 0] == 0, e[:, 1] == 0)  # the same box on every channel


def test_eac_views_and_loss():
    torch.manual_seed(0)
    eac = EAC(tiny_spec(), {"erase_p": 0.0})
    x = torch.randn(4, 1, 32, 32)
    v1, v2 = eac.views(x, step=3)
    assert torch.equal(v1, x) and torch.equal(v2, torch.flip(x, dims=[3]))
    eac_e = EAC(tiny_spec(), {"erase_p": 1.0})
    e1, e2 = eac_e.views(x, step=3)
    assert not torch.equal(e1 == 0, torch.flip(e2, dims=[3]) == 0)  # independent erasing of the two views
    eac.eval()
    y = torch.tensor([0, 1, 2, 0])
    loss, logs = eac(Batch(images=x, labels=y, index=torch.arange(4)))
    m = eac.model
    f1, f2 = m.forward_features(x), m.forward_features(torch.flip(x, dims=[3]))
    ce = F.cross_entropy(m(x), y)
    cons = F.mse_loss(torch.einsum("ck,nkhw->nchw", m.fc.weight, f1),
                      torch.flip(torch.einsum("ck,nkhw->nchw", m.fc.weight, f2), dims=[3]))
    assert logs["ce"].item() == pytest.approx(ce.item(), rel=1e-5)
    assert loss.item() == pytest.approx((ce + 5.0 * cons).item(), rel=1e-5)
    assert eac.export() is eac.model


def test_eac_ramp_factor_by_hand():
    from lanet.methods.eac import ramp_factor
    assert ramp_factor(0.0, 0, 100) == 1.0  # off: the paper's full weight from the first step
    assert ramp_factor(0.1, 0, 100) == pytest.approx(0.1)  # 10 ramp steps: 1/10 at the first
    assert ramp_factor(0.1, 4, 100) == pytest.approx(0.5)
    assert ramp_factor(0.1, 9, 100) == 1.0 and ramp_factor(0.1, 99, 100) == 1.0
    vals = [ramp_factor(0.25, s, 40) for s in range(40)]
    assert all(0 < a <= b <= 1 for a, b in zip(vals, vals[1:]))  # rises monotonically, never past 1


def test_eac_ramp_scales_only_the_consistency_term():
    torch.manual_seed(0)
    x, y = torch.randn(4, 1, 32, 32), torch.tensor([0, 1, 2, 0])
    full, ramped = EAC(tiny_spec(), {"erase_p": 0.0}), EAC(tiny_spec(), {"erase_p": 0.0, "ramp": 0.5})
    ramped.load_state_dict(full.state_dict())
    full.eval(), ramped.eval()
    b = Batch(images=x, labels=y, index=torch.arange(4), step=9, total_steps=100)  # 10/50 of the ramp
    lf, logf = full(b)
    lr, logr = ramped(b)
    assert logr["ce"].item() == pytest.approx(logf["ce"].item())
    assert logr["flip_consistency"].item() == pytest.approx(logf["flip_consistency"].item())
    assert lr.item() == pytest.approx(logf["ce"].item() + 5.0 * 0.2 * logf["flip_consistency"].item(), rel=1e-5)
    with pytest.raises(LanetError, match="invalid EAC"):
        EAC(tiny_spec(), {"ramp": 1.5})


# ---------------------------------------------------------------------------------------------- training
def tiny_config(method: str, **params) -> Config:
    return helpers.tiny_config(method, epochs=1, size=200, width=16, **params)


@pytest.mark.parametrize("method,params", [("scn", {"relabel_epoch": 1}), ("rul", {}), ("eac", {})])
def test_peer_trains_through_the_trainer(tmp_path, method, params):
    from lanet.models.io import load_classifier
    from lanet.train.trainer import train

    run = tmp_path / "run"
    s = train(tiny_config(method, **params), run, progress=False)
    assert (run / "summary.json").is_file() and s["method"] == method
    assert json.loads((run / "summary.json").read_text())["epochs"] == 1
    assert 0.0 <= s["test_accuracy"] <= 1.0
    line = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    if method == "scn":
        assert {"relabelled_fraction", "importance_high", "importance_low", "labels_changed_total"} <= set(line)
        state = torch.load(run / "checkpoint.pt", weights_only=True)["method"]
        assert state["train_labels"].shape == (s["num_train"],)
    model, meta = load_classifier(run / "model_final.pt")
    assert meta["num_classes"] == 7 and meta["module"] == ("method" if method == "rul" else "resnet")
    # the reloaded classifier reproduces the evaluation of the saved run
    from lanet.train.evaluate import evaluate_run

    ev = evaluate_run(run, device="cpu")
    assert ev["final"]["test"]["accuracy"] == pytest.approx(s["test_accuracy"])
