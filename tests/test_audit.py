"""lanet audit: scores and ranking metrics on hand-computed cases, the audit of tiny runs, one-line errors."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from analysis_runs import copy_run, tiny_runs
from PIL import Image

from lanet.audit import (
    CSV_COLUMNS,
    audit_run,
    auroc,
    average_ranks,
    label_scores,
    precision_at_k,
    rank_order,
    spearman,
)
from lanet.classes import CLASSES
from lanet.cli import main
from lanet.data.faceset import FaceSet
from lanet.data.noise import apply_noise
from lanet.errors import LanetError
from lanet.rundata import cross_entropy, open_run, softmax


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return tiny_runs(tmp_path_factory)


# ---------------------------------------------------------------------------------------------- hand cases
def test_label_scores_hand_case():
    p = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8], [0.5, 0.5, 0.0]])
    s = label_scores(p, np.array([0, 0, 1]))
    np.testing.assert_allclose(s.score, [0.3, 0.9, 0.5])
    np.testing.assert_allclose(s.margin, [0.0, 0.7, 0.0])
    np.testing.assert_array_equal(s.suggested, [0, 2, 0])  # a tie goes to the lower class id
    np.testing.assert_allclose(s.p_given, [0.7, 0.1, 0.5])
    np.testing.assert_allclose(s.p_suggested, [0.7, 0.8, 0.5])
    with pytest.raises(ValueError, match="0..2"):
        label_scores(p, np.array([0, 3, 1]))


def test_rank_order_breaks_ties_by_margin_then_index():
    order = rank_order(np.array([0.5, 0.9, 0.5, 0.5]), np.array([0.0, 0.1, 0.2, 0.0]))
    np.testing.assert_array_equal(order, [1, 2, 0, 3])


def test_precision_at_k_hand_case():
    score = np.array([0.9, 0.8, 0.7, 0.1, 0.05])
    truth = np.array([1, 0, 1, 0, 0], dtype=bool)
    assert precision_at_k(score, truth, 1) == 1.0
    assert precision_at_k(score, truth, 2) == 0.5
    assert precision_at_k(score, truth, 3) == pytest.approx(2 / 3)
    assert precision_at_k(score, truth, 100) == pytest.approx(2 / 5)  # k > n: all images
    with pytest.raises(ValueError):
        precision_at_k(score, truth, 0)


def test_auroc_hand_cases():
    # positives 0.35, 0.8 vs negatives 0.1, 0.4: 3 of the 4 pairs ordered correctly
    assert auroc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1], dtype=bool)) == pytest.approx(0.75)
    assert auroc(np.array([0.5, 0.5]), np.array([1, 0], dtype=bool)) == pytest.approx(0.5)  # a tie counts 1/2
    assert auroc(np.array([3.0, 2.0, 1.0]), np.array([1, 1, 0], dtype=bool)) == 1.0
    assert auroc(np.array([0.1, 0.2]), np.array([0, 0], dtype=bool)) is None


def test_average_ranks_and_spearman():
    np.testing.assert_allclose(average_ranks(np.array([3.0, 1.0, 3.0, 2.0])), [3.5, 1.0, 3.5, 2.0])
    x = np.array([1.0, 2.0, 5.0, 9.0])
    assert spearman(x, x ** 2) == pytest.approx(1.0)
    assert spearman(x, -x) == pytest.approx(-1.0)
    assert spearman(x, np.ones(4)) is None


def test_cross_entropy_and_softmax_are_stable():
    logits = np.array([[1000.0, 0.0], [0.0, 0.0]])
    np.testing.assert_allclose(softmax(logits), [[1.0, 0.0], [0.5, 0.5]])
    np.testing.assert_allclose(cross_entropy(logits, np.array([1, 0])), [1000.0, np.log(2)])


# ---------------------------------------------------------------------------------------------- runs
def test_training_labels_rebuild_the_noise(runs):
    run = open_run(runs["lanet"])
    lab = run.training_labels()
    noisy, record = apply_noise(run.faceset, "symmetric", 0.3, run.cfg.train.seed)
    np.testing.assert_array_equal(lab.given, noisy[lab.index])
    assert int(lab.flipped.sum()) == record.num_changed == json.loads((runs["lanet"] / "noise.json").read_text())[
        "num_changed"]
    with np.load(runs["lanet"] / "label_distributions.npz") as z:
        np.testing.assert_array_equal(z["train_labels"], lab.given)
    assert open_run(runs["clean"]).training_labels().has_noise is False


def test_audit_of_lanet_uses_learned_distributions(runs, tmp_path):
    audit = audit_run(runs["lanet"])
    assert audit.source == "distributions"
    dist, _ = open_run(runs["lanet"]).label_distributions()
    np.testing.assert_allclose(audit.scores.score, 1 - dist[np.arange(len(dist)), audit.given])
    out = tmp_path / "issues.csv"
    assert main(["audit", str(runs["lanet"]), "--out", str(out)]) == 0
    rows = list(csv.DictReader(out.open()))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert len(rows) == len(audit.order) == 168
    assert [int(r["rank"]) for r in rows] == list(range(1, 169))
    scores = [float(r["score"]) for r in rows]
    assert scores == sorted(scores, reverse=True)
    for r in rows[:20]:
        assert float(r["score"]) == pytest.approx(1 - float(r["p_given"]), abs=1e-5)
        assert float(r["margin"]) == pytest.approx(float(r["p_suggested"]) - float(r["p_given"]), abs=1e-5)
        assert r["suggested_label"] in CLASSES and r["source"] == "distributions"
        assert 0.0 <= float(r["human_share_given"]) <= 1.0  # synthetic faces carry votes
    assert sum(int(r["changed_by_noise"]) for r in rows) == int(audit.changed.sum())
    m = audit.injected_noise_metrics()
    assert m is not None and 0.0 <= m["auroc"] <= 1.0 and m["changed"] == int(audit.changed.sum())


def test_audit_fallback_uses_the_model_in_sample(runs, tmp_path, capsys):
    audit = audit_run(runs["baseline"])
    assert audit.source == "model" and "in-sample" in audit.source_text
    csv_path, sheet = tmp_path / "b.csv", tmp_path / "sheet.png"
    assert main(["audit", str(runs["baseline"]), "--out", str(csv_path), "--top", "10", "--sheet", str(sheet)]) == 0
    rows = list(csv.DictReader(csv_path.open()))
    assert len(rows) == 10 and {r["source"] for r in rows} == {"model"}
    img = Image.open(sheet)
    assert img.format == "PNG" and img.size[0] == 8 * (96 + 8)  # 10 tiles: 8 columns, 2 rows
    out = capsys.readouterr().out
    assert "in-sample" in out and "precision@100" in out and "AUROC" in out
    with pytest.raises(LanetError, match="learns no label distributions"):
        audit_run(runs["baseline"], source="distributions")


def test_audit_of_a_clean_run_has_no_noise_column(runs, tmp_path):
    out = tmp_path / "c.csv"
    assert main(["audit", str(runs["clean"]), "--out", str(out), "--top", "3"]) == 0
    rows = list(csv.DictReader(out.open()))
    assert [r["changed_by_noise"] for r in rows] == ["", "", ""]
    assert audit_run(runs["clean"]).injected_noise_metrics() is None


# ---------------------------------------------------------------------------------------------- errors
def _one_line_error(capsys, argv, match):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("lanet: error: ") and match in err, err


def test_audit_errors_are_one_line(runs, tmp_path, capsys):
    _one_line_error(capsys, ["audit", str(tmp_path / "nope"), "--out", str(tmp_path / "x.csv")],
                    "run directory not found")
    (tmp_path / "empty").mkdir()
    _one_line_error(capsys, ["audit", str(tmp_path / "empty"), "--out", str(tmp_path / "x.csv")],
                    "not a run directory (config.yaml missing)")
    _one_line_error(capsys, ["audit", str(runs["lanet"]), "--out", str(tmp_path / "x.csv"), "--top", "0"],
                    "--top must be a positive integer")
    _one_line_error(capsys, ["audit", str(runs["lanet"]), "--out", str(tmp_path)], "is a folder")
    broken = copy_run(runs["lanet"], tmp_path / "broken")
    text = (broken / "noise_changes.csv").read_text().splitlines()
    text[2] = "not-an-image.png,anger,fear"
    (broken / "noise_changes.csv").write_text("\n".join(text) + "\n")
    _one_line_error(capsys, ["audit", str(broken), "--out", str(tmp_path / "x.csv")],
                    "noise_changes.csv:3: 'not-an-image.png' is not a training image")
    nomodel = copy_run(runs["baseline"], tmp_path / "nomodel", drop=("model_*.pt",))
    _one_line_error(capsys, ["audit", str(nomodel), "--out", str(tmp_path / "x.csv")], "no exported classifier")
    assert not (tmp_path / "x.csv").exists()


# ---------------------------------------------------------------------------------------------- the benchmark
def _audit_compare():
    import importlib.util
    import sys
    from pathlib import Path

    if "audit_compare" not in sys.modules:
        path = Path(__file__).resolve().parents[1] / "benchmarks" / "audit_compare.py"
        spec = importlib.util.spec_from_file_location("audit_compare", path)
        module = importlib.util.module_from_spec(spec)
        sys.modules["audit_compare"] = module  # dataclasses look their module up there
        spec.loader.exec_module(module)
    return sys.modules["audit_compare"]


def test_stratified_folds_deal_each_class_evenly():
    ac = _audit_compare()
    labels = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2])
    fold = ac.stratified_folds(labels, 2, seed=0)
    assert sorted(np.bincount(fold).tolist()) == [4, 5]
    for c in range(3):
        counts = np.bincount(fold[labels == c], minlength=2)
        assert abs(int(counts[0]) - int(counts[1])) <= 1
    np.testing.assert_array_equal(fold, ac.stratified_folds(labels, 2, seed=0))


def _fold_case():
    n = 12
    split = np.array([0] * 6 + [1] * 2 + [2] * 4, dtype=np.int8)  # train, val, test
    fs = FaceSet(images=np.zeros((n, 8, 8, 1), np.uint8), labels=np.arange(n) % 3, split=split,
                 names=np.array([f"i{i}" for i in range(n)]), num_classes=3, name="t")
    train_index = np.arange(6)
    given = (fs.labels[:6] + 1) % 3  # every training label moved
    held = np.array([1, 4])
    return fs, train_index, given, held


def test_fold_faceset_trains_on_noisy_labels_without_validation():
    ac = _audit_compare()
    fs, train_index, given, held = _fold_case()
    fold = ac.fold_faceset(fs, train_index, given, held)
    assert sorted(fold.names[fold.indices("train")].tolist()) == ["i0", "i2", "i3", "i5"]
    np.testing.assert_array_equal(fold.labels[fold.indices("train")], given[[0, 2, 3, 5]])
    assert len(fold.indices("val")) == 0  # nothing is selected on validation in a fold
    assert fold.names[fold.indices("test")].tolist() == [f"i{i}" for i in range(8, 12)][: ac.FOLD_TEST_IMAGES]
    np.testing.assert_array_equal(fold.labels[fold.indices("test")], fs.labels[8:12])


def test_fold_faceset_keeps_only_the_first_test_images(monkeypatch):
    ac = _audit_compare()
    monkeypatch.setattr(ac, "FOLD_TEST_IMAGES", 2)
    fold = ac.fold_faceset(*_fold_case())
    assert fold.names[fold.indices("test")].tolist() == ["i8", "i9"]


def test_audit_compare_smoke_and_resume(runs, tmp_path, capsys):
    ac = _audit_compare()
    argv = [str(runs["lanet"]), str(runs["baseline"]), "--folds", "2", "--work", str(tmp_path / "folds"),
            "--out", str(tmp_path / "ac.json"), "--threads", "1", "--quiet", "--note", "test"]
    assert ac.main(argv) == 0
    assert "training on" in capsys.readouterr().err
    result = json.loads((tmp_path / "ac.json").read_text())
    assert result["note"] == "test" and result["machine"]["nproc"] >= 1 and result["folds"] == 2
    (group,) = result["groups"]
    assert group["labels"]["noise"] == "symmetric" and group["changed"] > 0
    methods = {m["method"]: m for m in group["methods"]}
    assert {"lanet_distributions", "small_loss", "kfold_self_confidence", "cleanlab"} <= set(methods)
    for name in ("lanet_distributions", "small_loss", "kfold_self_confidence"):
        m = methods[name]
        assert 0 <= m["precision_at_100"] <= 1 and 0 <= m["auroc"] <= 1 and m["compute_seconds"] > 0
        assert m["vote_share_given_top100"] is not None  # synthetic faces carry votes
    # the LA-Net row is lanet audit's score
    audit = audit_run(runs["lanet"])
    assert methods["lanet_distributions"]["auroc"] == pytest.approx(audit.injected_noise_metrics()["auroc"])
    # finished folds are not trained again
    assert ac.main(argv) == 0
    assert "training on" not in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "folds" / "baseline").iterdir()) == ["fold1of2", "fold2of2"]
