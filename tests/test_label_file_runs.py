"""Issue 23: a second annotation (``--labels FILE``) is real label noise, recorded, diagnosed and reported against
the dataset's own labels. Tiny LA-Net runs on synthetic faces with a label file that changes a third of the
training labels; one more with symmetric noise injected on top."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from helpers import tiny_config

from lanet.audit import audit_run, summary_lines
from lanet.classes import CLASSES
from lanet.data.loaders import load_faceset
from lanet.rundata import open_run
from lanet.train.trainer import train


def _write_label_file(path: Path, cfg) -> tuple[dict[str, int], dict[str, int]]:
    """A name,label file for every training image: every third one moved to the next class. Returns
    (name -> file label, name -> dataset label) of the training images."""
    fs = load_faceset(cfg.data)
    train = fs.indices("train")
    file_labels, dataset = {}, {}
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["name", "label"])
        for k, i in enumerate(train):
            y = int(fs.labels[i])
            new = (y + 1) % fs.num_classes if k % 3 == 0 else y
            w.writerow([fs.names[i], CLASSES[new]])
            file_labels[str(fs.names[i])], dataset[str(fs.names[i])] = new, y
    return file_labels, dataset


@pytest.fixture(scope="module")
def label_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("label_file_runs")
    base = tiny_config("lanet", epochs=2, size=240, width=8)
    base.noise.type, base.noise.rate = "none", 0.0
    labels_csv = root / "second_annotation.csv"
    file_labels, dataset = _write_label_file(labels_csv, base)
    runs = {}
    for name, noise, rate in (("file", "none", 0.0), ("file_sym", "symmetric", 0.3)):
        cfg = tiny_config("lanet", epochs=2, size=240, width=8)
        cfg.data.labels = str(labels_csv)
        cfg.noise.type, cfg.noise.rate = noise, rate
        train(cfg, root / name, progress=False)
        runs[name] = root / name
    return runs, labels_csv, file_labels, dataset


def test_the_run_records_every_label_the_file_changed(label_runs, capsys):
    runs, labels_csv, file_labels, dataset = label_runs
    changed = {n for n in file_labels if file_labels[n] != dataset[n]}
    assert len(changed) == 56  # a third of the 168 training images
    d = runs["file"]
    noise = json.loads((d / "noise.json").read_text())
    assert noise["type"] == "label_file" and noise["num_changed"] == len(changed)
    assert noise["realised_rate"] == pytest.approx(56 / 168)
    assert noise["label_file"] == {"path": str(labels_csv), "name": "second_annotation.csv", "changed": 56,
                                   "realised_rate": pytest.approx(56 / 168)}
    rows = list(csv.reader((d / "noise_changes.csv").open()))
    assert rows[0] == ["name", "clean", "noisy", "label_file"]
    assert {r[0] for r in rows[1:]} == changed
    for name, clean, noisy, by_file in rows[1:]:
        assert (clean, noisy, by_file) == (CLASSES[dataset[name]], CLASSES[file_labels[name]],
                                           CLASSES[file_labels[name]])
    summary = json.loads((d / "summary.json").read_text())
    assert summary["noise"]["type"] == "label_file"
    assert summary["realised_noise_rate"] == summary["label_file_noise_rate"] == pytest.approx(56 / 168)


def test_label_correction_diagnostics_use_the_dataset_labels(label_runs):
    runs, *_ = label_runs
    lines = [json.loads(x) for x in (runs["file"] / "metrics.jsonl").read_text().splitlines()]
    for line in lines:
        # 5 steps of 32 see 160 of the 168 training images, 56 of them relabelled by the file
        assert (112 - 8) / 160 <= line["train_label_is_clean"] <= 112 / 160
        assert "target_corrects_flipped" in line and "target_moves_clean" in line  # absent when no label differs
    with np.load(runs["file"] / "label_distributions.npz") as z:
        names, train_labels = [str(n) for n in z["names"]], z["train_labels"]
    _, _, file_labels, _ = label_runs
    assert [file_labels[n] for n in names] == train_labels.tolist()  # trained on the file's labels


def test_training_labels_audit_and_report_use_the_dataset_as_reference(label_runs, tmp_path):
    runs, labels_csv, file_labels, dataset = label_runs
    run = open_run(runs["file"])
    lab = run.training_labels()
    names = [str(n) for n in run.faceset.names[lab.index]]
    np.testing.assert_array_equal(lab.clean, [dataset[n] for n in names])
    np.testing.assert_array_equal(lab.given, [file_labels[n] for n in names])
    np.testing.assert_array_equal(lab.flipped, [file_labels[n] != dataset[n] for n in names])
    np.testing.assert_array_equal(lab.file_changed, lab.flipped)
    assert lab.noise_type == "label_file" and lab.label_file == "second_annotation.csv" and lab.has_noise
    assert run.noise_text == "label file second_annotation.csv (33.3% differ from the dataset's labels)"

    audit = audit_run(runs["file"])
    np.testing.assert_array_equal(audit.changed, lab.flipped)
    m = audit.injected_noise_metrics()
    assert m is not None and m["changed"] == 56 and m["auroc"] is not None
    assert any("the 56 labels the run's label file changed from the dataset's" in s for s in summary_lines(audit))

    pytest.importorskip("matplotlib", reason="lanet report needs the report extra (matplotlib)")
    pytest.importorskip("sklearn", reason="lanet report needs the report extra (scikit-learn)")
    from lanet.report import make_report

    res = make_report([runs["file"]], tmp_path / "rep", tsne_points=40, samples=2, progress=False)
    text = res.index.read_text().replace("&#x27;", "'")
    assert "label file second_annotation.csv (33.3% differ from the dataset's labels)" in text
    assert "file/loss_hist.png" in text  # the loss histograms are drawn: the file's changes are the truth
    assert "lanet audit's score (learned distributions) finds them with AUROC" in text
    assert "clean labels" not in text and "noise none" not in text and "flipped" not in text
    assert [w for _, w, _ in res.skipped] == []


def test_noise_injected_on_top_of_the_file_is_recorded_apart(label_runs):
    runs, _, file_labels, dataset = label_runs
    d = runs["file_sym"]
    noise = json.loads((d / "noise.json").read_text())
    assert noise["type"] == "label_file+symmetric" and noise["label_file"]["changed"] == 56
    assert noise["injected"]["type"] == "symmetric" and 0 < noise["injected"]["changed"] < 168
    run = open_run(d)
    lab = run.training_labels()
    names = [str(n) for n in run.faceset.names[lab.index]]
    start = np.array([file_labels[n] for n in names])
    assert int((lab.given != start).sum()) == noise["injected"]["changed"]
    np.testing.assert_array_equal(lab.flipped, lab.given != np.array([dataset[n] for n in names]))
    assert int(lab.flipped.sum()) == noise["num_changed"]
    np.testing.assert_array_equal(lab.file_changed, start != lab.clean)
    assert run.noise_text.startswith("label file second_annotation.csv (33.3% differ") and \
        run.noise_text.endswith("+ symmetric 30% noise")


def test_the_record_suffices_once_the_label_file_moved(label_runs, tmp_path):
    runs, labels_csv, *_ = label_runs
    want = open_run(runs["file_sym"]).training_labels()
    moved = tmp_path / "moved.csv"
    shutil.move(labels_csv, moved)
    try:
        from lanet import rundata

        rundata._FACESETS.clear()
        lab = open_run(runs["file_sym"]).training_labels()
    finally:
        shutil.move(moved, labels_csv)
    np.testing.assert_array_equal(lab.given, want.given)
    np.testing.assert_array_equal(lab.flipped, want.flipped)


def test_runs_recorded_before_label_files_were_noise_still_read(label_runs, tmp_path):
    """Older runs wrote the file's labels as ``clean`` and no label-file record: their given labels come from the
    file, and the labels it changed still count as differing from the dataset's."""
    runs, labels_csv, file_labels, dataset = label_runs
    old = tmp_path / "old"
    shutil.copytree(runs["file"], old, ignore=shutil.ignore_patterns(".lock", "checkpoint.pt"))
    record = json.loads((old / "noise.json").read_text())
    old_record = {k: record[k] for k in ("rate", "seed", "num_train")}
    old_record.update(type="none", realised_rate=0.0, num_changed=0)
    (old / "noise.json").write_text(json.dumps(old_record))
    (old / "noise_changes.csv").write_text("name,clean,noisy\n")
    lab = open_run(old).training_labels()
    names = [str(n) for n in open_run(old).faceset.names[lab.index]]
    np.testing.assert_array_equal(lab.given, [file_labels[n] for n in names])
    np.testing.assert_array_equal(lab.flipped, [file_labels[n] != dataset[n] for n in names])
    assert lab.noise_type == "label_file"


def test_audit_compare_judges_against_the_labels_the_file_changed(label_runs, tmp_path):
    import importlib.util
    import sys

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "audit_compare.py"
    if "audit_compare" not in sys.modules:
        spec = importlib.util.spec_from_file_location("audit_compare", path)
        module = importlib.util.module_from_spec(spec)
        sys.modules["audit_compare"] = module  # dataclasses look their module up there
        spec.loader.exec_module(module)
    ac = sys.modules["audit_compare"]
    runs, *_ = label_runs
    (group,) = ac.compare([str(runs["file"])], folds=2, work=tmp_path / "folds", seed=0, threads=1, batch_size=64,
                          root="", progress=False)
    assert group["changed"] == 56 and group["realised_noise_rate"] == pytest.approx(56 / 168)
    assert group["labels"]["label_file"] == "second_annotation.csv" and group["labels"]["record"] == "label_file"
    assert not Path(group["labels"]["label_file_path"]).is_absolute()  # a committed result holds no machine path
    assert group["labels"]["label_file_path"].endswith("second_annotation.csv")
    (row,) = group["methods"]
    assert row["method"] == "lanet_distributions" and row["changed"] == 56
    assert row["auroc"] == pytest.approx(audit_run(runs["file"]).injected_noise_metrics()["auroc"])
    assert "### synthetic, label file second_annotation.csv: 56 of 168 training labels differ" in ac.markdown([group])
