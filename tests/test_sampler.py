import numpy as np
import pytest

from lanet.data.sampler import class_counts, class_probabilities, epoch_order
from lanet.errors import LanetError


def _labels(counts, seed=0):
    labels = np.concatenate([np.full(c, k) for k, c in enumerate(counts)])
    return np.random.default_rng(seed).permutation(labels)


COUNTS = [6000, 2500, 1000, 400, 100, 0, 0]  # imbalanced, two classes absent
C = len(COUNTS)


def _freq(order, labels):
    return np.bincount(labels[order], minlength=C) / len(order)


def _assert_close(freq, prob, n):
    sigma = np.sqrt(prob * (1 - prob) / n)
    assert np.all(np.abs(freq - prob) <= 5 * sigma + 1e-12), (freq, prob)


def test_plain_is_a_seeded_permutation():
    labels = _labels(COUNTS)
    a = epoch_order(labels, C, 0, 10, seed=3, balanced=False)
    assert a.dtype == np.int64 and len(a) == len(labels)
    assert np.array_equal(np.sort(a), np.arange(len(labels)))
    assert not np.array_equal(a, np.arange(len(labels)))
    assert np.array_equal(a, epoch_order(labels, C, 0, 10, seed=3, balanced=False))
    assert not np.array_equal(a, epoch_order(labels, C, 1, 10, seed=3, balanced=False))
    assert not np.array_equal(a, epoch_order(labels, C, 0, 10, seed=4, balanced=False))


def test_balanced_epoch0_matches_instance_frequencies():
    labels = _labels(COUNTS)
    n = len(labels)
    order = epoch_order(labels, C, 0, 20, seed=0, balanced=True)
    assert len(order) == n and order.min() >= 0 and order.max() < n
    # exact instance counts: epoch 0 visits every image exactly once
    assert np.array_equal(np.sort(order), np.arange(n))
    assert not np.array_equal(order, np.arange(n))


def test_balanced_last_epoch_approaches_uniform():
    labels = _labels(COUNTS)
    n = len(labels)
    E = 50
    order = epoch_order(labels, C, E - 1, E, seed=0, balanced=True)
    freq = _freq(order, labels)
    present = np.array(COUNTS) > 0
    expected = ((1 / E) * np.array(COUNTS) / n + (1 - 1 / E) / C) * present
    expected /= expected.sum()
    _assert_close(freq, expected, n)
    assert np.all(freq[~present] == 0)
    # close to uniform over the 5 present classes: the rarest class (1% of images) gets ~20% of draws
    assert np.all(np.abs(freq[present] - 0.2) < 0.03)


def test_balanced_intermediate_epoch_follows_the_schedule():
    labels = _labels(COUNTS)
    n = len(labels)
    for e in (5, 10):
        prob = class_probabilities(labels, C, e, 20)
        t = e / 20
        want = ((1 - t) * np.array(COUNTS) / n + t / C) * (np.array(COUNTS) > 0)  # absent classes: 0
        assert np.allclose(prob, want / want.sum())
        _assert_close(_freq(epoch_order(labels, C, e, 20, seed=1, balanced=True), labels), prob, n)
    assert np.allclose(class_probabilities(labels, C, 20, 20)[:5], 0.2)  # epoch >= epochs: fully balanced


def test_balanced_uniform_within_class_and_deterministic():
    labels = np.array([0] * 10 + [1] * 5000)
    order = epoch_order(labels, 2, 10, 10, seed=7, balanced=True)  # t = 1: class 0 gets half the draws
    picks = order[labels[order] == 0]
    assert abs(len(picks) / len(order) - 0.5) < 5 * np.sqrt(0.25 / len(order))
    counts = np.bincount(picks, minlength=10)
    # without replacement within a cycle: the 10 minority images are repeated evenly (each 250 or 251 times)
    assert counts.max() - counts.min() <= 1
    assert np.array_equal(order, epoch_order(labels, 2, 10, 10, seed=7, balanced=True))
    assert not np.array_equal(order, epoch_order(labels, 2, 9, 10, seed=7, balanced=True))


def test_errors_and_empty():
    assert len(epoch_order(np.zeros(0, dtype=np.int64), 7, 0, 5, 0, True)) == 0
    with pytest.raises(LanetError):
        epoch_order(np.array([0, 7]), 7, 0, 5, 0, True)
    with pytest.raises(LanetError):
        epoch_order(np.array([0, 1]), 7, -1, 5, 0, False)
    with pytest.raises(LanetError):
        epoch_order(np.array([0, 1]), 7, 0, 0, 0, False)


def test_exact_counts_sum_to_n_and_follow_the_schedule():
    labels = _labels(COUNTS)
    n = len(labels)
    for e in range(0, 21, 5):
        counts = class_counts(labels, C, e, 20)
        assert counts.sum() == n and np.all(counts[np.array(COUNTS) == 0] == 0)
        assert np.all(np.abs(counts - class_probabilities(labels, C, e, 20) * n) < 1)
        order = epoch_order(labels, C, e, 20, seed=2, balanced=True)
        assert np.array_equal(np.bincount(labels[order], minlength=C), counts)


def test_cycles_visit_every_image_before_any_twice():
    """A majority class that gets fewer slots than images resumes its cycle in the next epoch: over the epochs,
    every image is seen once before any is seen a second time, so no per-sample state goes stale."""
    labels = _labels([900, 100], seed=1)
    E = 4
    seen = [epoch_order(labels, 2, e, E, seed=5, balanced=True) for e in range(E)]
    for e in range(E):
        # after each epoch, every majority image has been visited k or k + 1 times (an even cycle)
        visits = np.bincount(np.concatenate([x[labels[x] == 0] for x in seen[:e + 1]]), minlength=len(labels))
        assert visits[labels == 0].max() - visits[labels == 0].min() <= 1
    assert (visits[labels == 0] >= 1).all()  # over the run, every image was seen
    # deterministic and resumable: an epoch's order depends only on its arguments
    assert np.array_equal(seen[2], epoch_order(labels, 2, 2, E, seed=5, balanced=True))
