"""benchmarks/prior_correction.py: the sampler's prior shift by hand, and a saved classifier re-evaluated."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from lanet.cli import main
from lanet.rundata import read_metrics

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "prior_correction.py"
_spec = importlib.util.spec_from_file_location("prior_correction", _PATH)
pc = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(pc)


def test_prior_shift_by_hand():
    given = np.array([0, 0, 0, 1])  # pi = (3/4, 1/4), class 2 has no image
    # epoch 2 of 4: p = 0.5 * pi + 0.5 * (1/3 each), class 2 zeroed and the rest renormalised
    p = 0.5 * np.array([0.75, 0.25, 0.0]) + 0.5 / 3
    p[2] = 0.0
    p = p / p.sum()
    got = pc.prior_shift(given, 3, 2, 4, balanced=True)
    assert got[:2] == pytest.approx(np.log([0.75, 0.25]) - np.log(p[:2]))
    assert got[2] == 0.0  # never drawn: no shift rather than inf
    assert pc.prior_shift(given, 3, 0, 4, balanced=True)[:2] == pytest.approx([0.0, 0.0])  # epoch 0: p = pi
    assert pc.prior_shift(given, 3, 3, 4, balanced=False) == pytest.approx([0.0, 0.0, 0.0])


def test_a_balanced_run_reevaluated(tmp_path):
    out = tmp_path / "run"
    assert main(["train", "--method", "baseline", "--dataset", "synthetic", "-o", "data.synthetic_size=200",
                 "--image-size", "32", "-o", "model.width=8", "--epochs", "2", "--batch-size", "32", "--noise",
                 "symmetric", "--noise-rate", "0.3", "--threads", "1", "--quiet", "-o", "augment.balanced=true",
                 "--out", str(out)]) == 0
    res = pc.analyse(out)
    final = res["models"]["final"]
    reported = read_metrics(out / "metrics.jsonl")[-1]["test_accuracy"]
    assert final["epoch"] == 2 and final["test_accuracy"] == pytest.approx(reported, abs=5e-4)
    assert 0 <= final["test_accuracy_prior_corrected"] <= 1
    assert sum(final["prediction_share"]) == pytest.approx(1) and sum(res["test_true_share"]) == pytest.approx(1)
    assert any(s != 0 for s in final["logit_shift"])  # epoch 1 of 2 (0-based) is half-way to class-balanced
    assert pc.main([str(out), "--out", str(tmp_path / "pc.json")]) == 0 and (tmp_path / "pc.json").is_file()
    assert pc.main([str(tmp_path / "nothing")]) == 2
