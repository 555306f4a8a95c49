"""LA-Net equations on tiny hand-computed tensors (eq. numbers of the paper)."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lanet.errors import LanetError
from lanet.methods.base import Batch, MethodSpec
from lanet.methods.lanet import (
    LANet,
    adaptive_wing_loss,
    aggregate,
    el_term,
    ema_target,
    gaussian_heatmaps,
    heatmap_peak_region,
    knn,
    positive_mask,
    pseudo_labels,
)


def test_knn_cosine_excludes_self():  # eq. 1-2
    f = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [-1.0, 0.0], [0.7, 0.7]])
    nb = knn(f, f, 2, torch.arange(5))
    assert set(nb[0].tolist()) == {1, 4}  # nearest by angle, itself excluded
    assert set(nb[2].tolist()) == {4, 1}
    assert 3 not in nb[0].tolist()
    # scale does not matter (cosine)
    assert torch.equal(knn(f * torch.tensor([[3.0], [1], [2], [5], [0.5]]), f, 2, torch.arange(5)), nb)
    with pytest.raises(LanetError, match="K=5"):
        knn(f, f, 5, torch.arange(5))


def test_aggregate_hand_computed():  # eq. 4, one space
    probs = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]])
    nb = torch.tensor([[1, 2]])
    scores = torch.tensor([[0.2, 0.6]])
    # weights 0.25, 0.75 -> 0.25*[0,1] + 0.75*[0.5,0.5] = [0.375, 0.625]
    assert torch.allclose(aggregate(scores, probs, nb), torch.tensor([[0.375, 0.625]]))


def test_ema_update():  # eq. 5
    mem = torch.tensor([[1.0, 0.0]])
    cur = torch.tensor([[0.2, 0.8]])
    assert torch.allclose(ema_target(mem, cur, 0.9), torch.tensor([[0.92, 0.08]]))


def test_pseudo_labels_and_positive_mask():  # eq. 8-9
    t = torch.tensor([[0.8, 0.1, 0.1], [0.5, 0.4, 0.1], [0.1, 0.75, 0.15], [0.05, 0.05, 0.9], [0.6, 0.3, 0.1]])
    idx = torch.tensor([0, 7, 2, 3, 9])
    pl = pseudo_labels(t, 0.7, idx, 3)
    assert pl.tolist() == [0, 3 + 7, 1, 2, 3 + 9]
    assert (pl[[1, 4]] >= 3).all()  # ambiguous ids never equal a class id, even for training index 0
    assert pseudo_labels(torch.tensor([[0.4, 0.6, 0.0]]), 0.7, torch.tensor([0]), 3).item() == 3
    m = positive_mask(pl, pl)
    assert m.diagonal().all()
    assert m.sum().item() == 5  # every pseudo-label here is distinct: only the sample itself
    m2 = positive_mask(torch.tensor([1, 5]), torch.tensor([1, 1, 5, 2]))
    assert m2.tolist() == [[True, True, False, False], [False, False, True, False]]


def loop_el(q, k, queue, a, b, ql, tau, batch_negatives=False):
    """Eq. 11 written as plain loops."""
    total = 0.0
    for i in range(len(q)):
        pos = [j for j in range(len(k)) if b[j] == a[i]]
        negs = [queue[m] for m in range(len(queue)) if ql[m] != a[i]]
        if batch_negatives:
            negs += [k[m] for m in range(len(k)) if b[m] != a[i]]
        li = 0.0
        for j in pos:
            num = math.exp(float(q[i] @ k[j]) / tau)
            den = num + sum(math.exp(float(q[i] @ n) / tau) for n in negs)
            li += -math.log(num / den)
        total += li / len(pos)
    return total / len(q)


@pytest.mark.parametrize("batch_negatives", [False, True])
def test_el_loss_matches_loop(batch_negatives):  # eq. 11-12
    g = torch.Generator().manual_seed(0)
    q = F.normalize(torch.randn(6, 4, generator=g), dim=1)
    k = F.normalize(torch.randn(6, 4, generator=g), dim=1)
    queue = F.normalize(torch.randn(10, 4, generator=g), dim=1)
    a = torch.tensor([0, 1, 0, 9, 2, 1])  # 9 = an ambiguous sample's own id
    ql = torch.tensor([0, 0, 1, 2, 2, -1, -1, 1, 9, 0])
    got = el_term(q, k, queue, a, a, ql, 0.1, batch_negatives)
    want = loop_el(q, k, queue, a, a, ql, 0.1, batch_negatives)
    assert got.item() == pytest.approx(want, rel=1e-5)


def test_el_loss_shape_errors():
    with pytest.raises(ValueError, match="expected q N x D"):
        el_term(torch.randn(3, 4), torch.randn(3, 5), torch.randn(2, 4), torch.zeros(3), torch.zeros(3),
                torch.zeros(2), 0.1)


def test_gaussian_heatmap_peak():
    # stride 4: cell (x 2, y 1) covers input pixels 8..11 x 4..7, centre (9.5, 5.5) in pixel-index coordinates
    hm = gaussian_heatmaps(torch.tensor([[[9.5, 5.5]]]), (8, 8), 4, 1.5)
    assert hm.shape == (1, 1, 8, 8)
    y, x = divmod(int(hm.argmax()), 8)
    assert (x, y) == (2, 1) and hm.max().item() == pytest.approx(1.0)
    # one input pixel right of the centre moves the peak by a quarter cell
    hm2 = gaussian_heatmaps(torch.tensor([[[10.5, 5.5]]]), (8, 8), 4, 1.5)
    assert hm2[0, 0, 1, 2].item() == pytest.approx(math.exp(-(0.25**2) / (2 * 1.5**2)))


def test_adaptive_wing_values():
    # |diff| < theta: omega * ln(1 + (|diff|/eps)^(alpha - y))
    pred, tgt, w = torch.tensor([0.3]), torch.tensor([0.1]), torch.ones(1)
    assert adaptive_wing_loss(pred, tgt, w).item() == pytest.approx(14 * math.log(1 + 0.2 ** 2.0), rel=1e-5)
    # continuous at theta
    a = adaptive_wing_loss(torch.tensor([0.5 - 1e-4]), torch.tensor([0.0]), w)
    b = adaptive_wing_loss(torch.tensor([0.5 + 1e-4]), torch.tensor([0.0]), w)
    assert a.item() == pytest.approx(b.item(), abs=1e-2)


# ------------------------------------------------------------------------------------------- the module
def small_lanet(**params):
    labels = np.array([0, 1, 2, 3, 4, 5, 6, 0, 1, 2, 3, 4, 5, 6, 0, 1] * 2)
    spec = MethodSpec(num_classes=7, num_train=len(labels), in_chans=1, image_size=32, num_landmarks=5,
                      arch="resnet18", pretrained="", dropout=0.0, epochs=1, train_labels=labels)
    torch.manual_seed(0)
    return LANet(spec, {"queue_size": 40, **params}), labels


def make_batch(labels, n=16):
    g = torch.Generator().manual_seed(1)
    idx = torch.arange(n)
    return Batch(images=torch.randn(n, 1, 32, 32, generator=g), labels=torch.as_tensor(labels[:n]), index=idx,
                 landmarks=torch.rand(n, 5, 2, generator=g) * 32, landmark_found=torch.ones(n, dtype=torch.bool),
                 clean_labels=torch.as_tensor(labels[:n]))


def score_grads(m):
    grads = [p.grad for mod in (m.score_u, m.score_v) for p in mod.parameters()]
    return [0.0 if g is None else g.abs().sum().item() for g in grads]


def test_score_mlps_learn_only_through_kl():
    m, labels = small_lanet(alpha=0.0)
    loss, _ = m(make_batch(labels))
    loss.backward()
    assert all(g == 0.0 for g in score_grads(m))
    m, labels = small_lanet(alpha=1.0)
    loss, logs = m(make_batch(labels))
    loss.backward()
    assert sum(score_grads(m)) > 0 and "kl" in logs and "el" in logs and "lm" in logs


def test_momentum_encoder_gets_no_gradient_and_moves_by_momentum():
    m, labels = small_lanet(momentum=0.9)
    loss, _ = m(make_batch(labels))
    loss.backward()
    assert all(p.grad is None for p in m.encoder_k.parameters())
    with torch.no_grad():
        for p in m.encoder.parameters():
            p.add_(1.0)
    before = [p.clone() for p in m.encoder_k.parameters()]
    m.after_step(None)
    for pk, pb, pq in zip(m.encoder_k.parameters(), before, m.encoder.parameters()):
        assert torch.allclose(pk, 0.9 * pb + 0.1 * pq, atol=1e-6)
    for bk, bq in zip(m.encoder_k.buffers(), m.encoder.buffers()):
        assert torch.equal(bk, bq)


def test_memory_starts_one_hot_and_tracks_targets():
    m, labels = small_lanet()
    assert torch.equal(m.memory, F.one_hot(torch.as_tensor(labels), 7).float())
    b = make_batch(labels)
    old = m.memory[b.index].clone()
    m(b)
    new = m.memory[b.index]
    assert torch.allclose(new.sum(1), torch.ones(len(b.index)), atol=1e-5)
    # each row moved at most (1 - omega) away from its one-hot start
    assert ((new - old).abs().sum(1) <= 2 * 0.1 + 1e-5).all() and not torch.equal(new, old)
    untouched = m.memory[16:]
    assert torch.equal(untouched, F.one_hot(torch.as_tensor(labels[16:]), 7).float())


def test_queue_wraps_around():
    m, labels = small_lanet()  # queue of 40 slots
    d = m.queue_u.shape[1]
    keys = [F.normalize(torch.randn(16, d), dim=1) for _ in range(3)]
    for step, k in enumerate(keys):
        m._enqueue(k, -k, torch.full((16,), step))
    # batches land at slots 0-15, 16-31, then 32-39 and (wrapping) 0-7
    assert m.queue_ptr.item() == 8
    assert torch.equal(m.queue_u[32:40], keys[2][:8]) and torch.equal(m.queue_u[0:8], keys[2][8:])
    assert torch.equal(m.queue_u[8:16], keys[0][8:]) and torch.equal(m.queue_u[16:32], keys[1])
    assert torch.equal(m.queue_v[0:8], -keys[2][8:])
    assert m.queue_labels.tolist() == [2] * 8 + [0] * 8 + [1] * 16 + [2] * 8
    # a training step enqueues its own batch of keys with their pseudo-labels, after backward (after_step), so
    # the queue the loss read is not modified before its gradient is taken
    batch = make_batch(labels)
    queue_before = m.queue_u.clone()
    loss, _ = m(batch)
    assert m.queue_ptr.item() == 8 and torch.equal(m.queue_u, queue_before)
    loss.backward()
    m.after_step(batch)
    assert m.queue_ptr.item() == 24 and (m.queue_labels[8:24] >= 0).all()


def test_export_is_a_plain_resnet_with_identical_outputs():
    from lanet.models.resnet import create_model

    m, labels = small_lanet()
    m(make_batch(labels))
    m.eval()
    x = torch.randn(4, 1, 32, 32)
    plain = create_model("resnet18", 7, 1)
    plain.load_state_dict(m.export().state_dict())
    plain.eval()
    with torch.no_grad():
        assert torch.equal(plain(x), m.predict(x))
    assert sum(p.numel() for p in plain.parameters()) < sum(p.numel() for p in m.parameters()) / 2


@pytest.mark.parametrize("switches", [dict(LD=True, LM=False, EL=False, PL=False),
                                      dict(LD=True, LM=True, EL=False, PL=False),
                                      dict(LD=True, LM=True, EL=True, PL=False),
                                      dict(LD=False, LM=False, EL=False, PL=False),
                                      dict(landmark_head="regression")])
def test_ablation_switches_run(switches):
    m, labels = small_lanet(**switches)
    loss, logs = m(make_batch(labels))
    loss.backward()
    assert torch.isfinite(loss)
    assert ("kl" in logs) == switches.get("LD", True)
    assert ("el" in logs) == switches.get("EL", True)
    assert ("lm" in logs) == (switches.get("LM", True) or switches.get("EL", True))


def test_invalid_switch_combinations():
    with pytest.raises(LanetError, match="LM needs LD"):
        small_lanet(LD=False, LM=True)
    with pytest.raises(LanetError, match="no parameter"):
        small_lanet(gamma=1.0)


def test_peak_region_equals_dilated_threshold():
    g = torch.Generator().manual_seed(3)
    pts = torch.rand(4, 7, 2, generator=g) * 48
    hm = gaussian_heatmaps(pts, (12, 12), 4, 1.5)
    want = F.max_pool2d((hm > 0.2).float(), 3, 1, 1) > 0
    assert torch.equal(heatmap_peak_region(pts, (12, 12), 4, 1.5), want)


def test_adaptive_wing_matches_the_direct_formula():
    g = torch.Generator().manual_seed(4)
    pred, tgt = torch.rand(500, generator=g) * 1.5 - 0.2, torch.rand(500, generator=g)
    w = torch.rand(500, generator=g)
    alpha, omega, eps, theta = 2.1, 14.0, 1.0, 0.5
    power = alpha - tgt
    diff = (pred - tgt).abs()
    a = omega * (1 / (1 + (theta / eps) ** power)) * power * ((theta / eps) ** (power - 1)) / eps
    c = theta * a - omega * torch.log1p((theta / eps) ** power)
    direct = torch.where(diff < theta, omega * torch.log1p((diff / eps) ** power), a * diff - c)
    assert adaptive_wing_loss(pred, tgt, w).item() == pytest.approx((direct * w).mean().item(), rel=1e-5)


def test_adaptive_wing_gradient_equals_autograd_of_the_formula():
    """The fused backward equals autograd through the direct formula, on both branches, at |diff| = 0, at the
    targets 0 and 1, and through a broadcast weight (the landmark loss's N x P x 1 x 1 validity factor)."""
    g = torch.Generator().manual_seed(5)
    tgt = torch.rand(4, 3, 6, 6, generator=g, dtype=torch.float64)
    tgt[0, 0, 0, :3] = torch.tensor([0.0, 1.0, 0.5], dtype=torch.float64)
    pred = (tgt + torch.randn(4, 3, 6, 6, generator=g, dtype=torch.float64) * 0.6).requires_grad_(True)
    with torch.no_grad():
        pred[0, 0, 0, 2] = tgt[0, 0, 0, 2]  # |diff| = 0
    valid = torch.tensor([1.0, 0.0, 1.0, 1.0], dtype=torch.float64)[:, None, None, None]
    w = torch.rand(4, 3, 6, 6, generator=g, dtype=torch.float64) * valid
    alpha, omega, eps, theta = 2.1, 14.0, 1.0, 0.5
    power = alpha - tgt
    diff = (pred - tgt).abs()
    a = omega * (1 / (1 + (theta / eps) ** power)) * power * ((theta / eps) ** (power - 1)) / eps
    c = theta * a - omega * torch.log1p((theta / eps) ** power)
    direct = (torch.where(diff < theta, omega * torch.log1p((diff / eps) ** power), a * diff - c) * w).mean()
    (want,) = torch.autograd.grad(direct, pred)
    got_loss = adaptive_wing_loss(pred, tgt, w)
    (got,) = torch.autograd.grad(got_loss * 3.0, pred)  # an upstream factor reaches the gradient
    assert (diff < theta).any() and (diff >= theta).any()
    assert got_loss.item() == pytest.approx(direct.item(), rel=1e-12)
    torch.testing.assert_close(got, 3.0 * want, rtol=1e-10, atol=1e-14)
    assert torch.autograd.gradcheck(lambda p: adaptive_wing_loss(p, tgt, w), (pred.detach().clone().requires_grad_(),))


def test_ema_memory_cannot_change_a_label_in_fewer_than_seven_visits():
    """Eq. 5 with omega = 0.9 keeps 0.9^n of the one-hot start after n visits: even a current distribution that
    is one-hot on another class overturns the given label only once 0.9^n < 1/2, i.e. at the 7th visit (epoch).
    A 5-epoch protocol can therefore correct no label at all; softer currents need more visits."""
    memory = torch.tensor([[1.0, 0.0, 0.0]])  # given label 0
    perfect = torch.tensor([[0.0, 1.0, 0.0]])
    soft = torch.tensor([[0.1, 0.4, 0.5]])  # top mass 0.5 on class 2, 0.1 left on the given label
    flips = {}
    for name, current in (("perfect", perfect), ("soft", soft)):
        m = memory.clone()
        for visit in range(1, 60):
            m = ema_target(m, current, 0.9)
            if m.argmax(1).item() != 0:
                flips[name] = visit
                break
    assert flips["perfect"] == 7
    # margin 0.4 between the new top class and the given label: 0.9^n < 0.4 / 1.4, so n >= 12
    assert flips["soft"] == 12
