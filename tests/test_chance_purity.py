"""benchmarks/chance_purity.py: the purity of random neighbours, by hand, for both samplers."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from lanet.errors import LanetError

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "chance_purity.py"
_spec = importlib.util.spec_from_file_location("chance_purity", _PATH)
cp = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(cp)


def test_chance_purity_by_hand():
    # 6 images: clean 0,0,0,0,1,1; given 0,0,0,1,1,0 (two flipped)
    clean = np.array([0, 0, 0, 0, 1, 1])
    given = np.array([0, 0, 0, 1, 1, 0])
    got = cp.chance_purity(clean, given, 2)
    assert got["instance_chance_purity"] == pytest.approx((4 / 6) ** 2 + (2 / 6) ** 2)
    assert got["instance_given_is_clean"] == pytest.approx(4 / 6)
    # balanced by given label: given 0 holds clean (0,0,0,1) -> (3/4, 1/4); given 1 holds clean (0,1) -> (1/2, 1/2)
    p0, p1 = (3 / 4 + 1 / 2) / 2, (1 / 4 + 1 / 2) / 2
    assert got["balanced_chance_purity"] == pytest.approx(p0 ** 2 + p1 ** 2)
    assert got["balanced_given_is_clean"] == pytest.approx((3 / 4 + 1 / 2) / 2)


def test_clean_labels_under_balanced_sampling_of_rare_noisy_classes():
    # a rare class that is mostly noise as labelled: balancing by the given labels draws more noise
    clean = np.array([0] * 90 + [1] * 10)
    given = clean.copy()
    given[:9] = 1  # 9 of class 0 flipped into class 1, which now holds 19 images, 10 genuine
    got = cp.chance_purity(clean, given, 2)
    assert got["instance_given_is_clean"] == pytest.approx(0.91)
    assert got["balanced_given_is_clean"] == pytest.approx((1.0 + 10 / 19) / 2)
    with pytest.raises(LanetError, match="equal-length"):
        cp.chance_purity(clean, given[:5], 2)
