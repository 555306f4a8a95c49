"""A corpus of broken datasets, label files, configurations and run directories.

Every case runs the command line (``lanet.cli.main``) and must end with exit status 2 and exactly one line on
stderr, ``lanet: error: ...``, naming the file and row (data) or the key (configuration). All of them fail
before the first training step, and none leaves a run directory that blocks the corrected command.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lanet.cli import main

FAST = ["--epochs", "1", "--batch-size", "4", "--threads", "1", "--device", "cpu", "--quiet",
        "-o", "model.width=8", "-o", "data.load_size=32", "--image-size", "32"]


def run_cli(capsys, args: list[str]) -> str:
    """Run ``lanet ARGS``; assert status 2 and a single error line; return that line."""
    capsys.readouterr()
    code = main(args)
    err = capsys.readouterr().err.strip()
    assert code == 2, (code, err)
    assert len(err.splitlines()) == 1, err
    assert err.startswith("lanet: error: "), err
    return err


def _png(path: Path, value: int = 0, size: int = 8) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(value)
    Image.fromarray(rng.integers(0, 256, (size, size), dtype=np.uint8)).save(path)
    return path


# ------------------------------------------------------------------------------------------ CSV datasets
def _csv_dataset(root: Path, rows: list[str], images: dict[str, int] | None = None) -> Path:
    """``root/list.csv`` with ``rows`` under the header, and distinct random PNGs for ``images``."""
    for name, seed in (images or {f"img/{i}.png": i for i in range(8)}).items():
        _png(root / name, seed)
    (root / "list.csv").write_text("path,label,split\n" + "".join(r + "\n" for r in rows))
    return root / "list.csv"


GOOD_ROWS = ["img/0.png,happy,train", "img/1.png,sad,train", "img/2.png,angry,train", "img/3.png,fear,train",
             "img/4.png,happy,test", "img/5.png,sad,test"]


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:40])


CSV_CASES: dict[str, tuple[list[str], Callable[[Path], None] | None, str]] = {
    # name: (rows, what to break on disk, expected fragment of the message)
    "truncated image": (GOOD_ROWS, lambda r: _truncate(r / "img/1.png"), "img/1.png"),
    "empty image file": (GOOD_ROWS, lambda r: (r / "img/2.png").write_bytes(b""), "img/2.png"),
    "not an image": (GOOD_ROWS, lambda r: (r / "img/3.png").write_text("name,label\n"), "img/3.png"),
    "missing image": (GOOD_ROWS + ["img/nope.png,happy,train"], None, "nope.png"),
    "short row": (GOOD_ROWS[:2] + ["img/6.png"] + GOOD_ROWS[2:], None, "list.csv:4"),
    "empty path": (GOOD_ROWS + [",happy,train"], None, "list.csv:8: empty path"),
    "unknown class": (GOOD_ROWS + ["img/6.png,grumpy,train"], None, "list.csv:8"),
    "unknown split": (GOOD_ROWS + ["img/6.png,happy,holdout"], None, "list.csv:8"),
    "same image in train and test": (GOOD_ROWS + ["img/0.png,happy,test"], None, "list.csv:8"),
    "same image with two labels": (GOOD_ROWS + ["img/0.png,sad,train"], None, "list.csv:8"),
    "pixel copy in train and test": (GOOD_ROWS + ["img/copy.png,happy,test"],
                                     lambda r: shutil.copy(r / "img/0.png", r / "img/copy.png"), "img/copy.png"),
    "empty test split": ([r for r in GOOD_ROWS if r.endswith("train")], None, "no test images"),
    "no rows": ([], None, "lists no images"),
}


@pytest.mark.parametrize("case", list(CSV_CASES))
def test_broken_csv_dataset(tmp_path, capsys, case):
    rows, damage, expected = CSV_CASES[case]
    csv_file = _csv_dataset(tmp_path / "data", rows)
    if damage:
        damage(tmp_path / "data")
    out = tmp_path / "run"
    err = run_cli(capsys, ["train", "--dataset", "csv", "--root", str(csv_file), "--out", str(out), *FAST])
    assert expected in err, err
    assert not out.exists()  # nothing left behind: the corrected command is not refused


def test_csv_without_header(tmp_path, capsys):
    csv_file = _csv_dataset(tmp_path / "data", [])
    csv_file.write_text("img/0.png,happy\n")
    err = run_cli(capsys, ["train", "--dataset", "csv", "--root", str(csv_file), "--out", str(tmp_path / "r"), *FAST])
    assert "list.csv" in err and "header" in err


def test_duplicate_csv_rows_are_counted_not_trained_twice(tmp_path, capsys):
    csv_file = _csv_dataset(tmp_path / "data", GOOD_ROWS + [GOOD_ROWS[0], GOOD_ROWS[1]])
    out = tmp_path / "run"
    assert main(["train", "--dataset", "csv", "--root", str(csv_file), "--out", str(out), *FAST]) == 0
    import json

    s = json.loads((out / "summary.json").read_text())
    assert s["num_train"] == 4 and s["dropped"] == {"duplicate_row": 2}
    assert "duplicate_row 2" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------ FERPlus folders
def _ferplus(root: Path, extra: dict[str, list[str]] | None = None) -> Path:
    """A tiny prepared-folder FERPlus: 4 train, 2 valid, 2 test images; ``extra`` appends raw label.csv lines."""
    votes = ["0,10,0,0,0,0,0,0,0,0", "0,0,10,0,0,0,0,0,0,0", "10,0,0,0,0,0,0,0,0,0", "0,0,0,10,0,0,0,0,0,0"]
    k = 0
    for folder, n in (("FER2013Train", 4), ("FER2013Valid", 2), ("FER2013Test", 2)):
        lines = []
        for i in range(n):
            name = f"fer{k:07d}.png"
            _png(root / folder / name, k, size=48)
            lines.append(f'{name},"(0, 0, 48, 48)",{votes[i % 4]}')
            k += 1
        lines += (extra or {}).get(folder, [])
        (root / folder / "label.csv").write_text("\n".join(lines) + "\n")
    return root


FER_CASES: dict[str, tuple[dict[str, list[str]], str]] = {
    "non-numeric votes": ({"FER2013Train": ['fer0000001.png,"(0, 0, 48, 48)",1,x,0,0,0,0,0,0,0,0']},
                          "FER2013Train/label.csv:5"),
    "negative votes": ({"FER2013Valid": ['fer0000004.png,"(0, 0, 48, 48)",5,-1,0,0,0,0,0,0,0,0']},
                       "FER2013Valid/label.csv:3"),
    "short row": ({"FER2013Test": ['fer0000006.png,"(0, 0, 48, 48)",1,2,3']}, "FER2013Test/label.csv:3"),
    "bad face box": ({"FER2013Train": ['fer0000002.png,"(0, 0, 0)",0,10,0,0,0,0,0,0,0,0']},
                     "FER2013Train/label.csv:5"),
    "same name in two splits": ({"FER2013Test": ['fer0000000.png,"(0, 0, 48, 48)",0,10,0,0,0,0,0,0,0,0']},
                                "fer0000000.png"),
}


@pytest.mark.parametrize("case", list(FER_CASES))
def test_broken_ferplus(tmp_path, capsys, case):
    extra, expected = FER_CASES[case]
    if case == "same name in two splits":
        _png(tmp_path / "fer" / "FER2013Test" / "fer0000000.png", 0, size=48)
    root = _ferplus(tmp_path / "fer", extra)
    err = run_cli(capsys, ["train", "--dataset", "ferplus", "--root", str(root), "--out", str(tmp_path / "r"),
                           *FAST])
    assert expected in err, err
    assert not (tmp_path / "r").exists()


def test_ferplus_missing_folders(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    err = run_cli(capsys, ["prepare", "--dataset", "ferplus", "--root", str(tmp_path / "empty")])
    assert str(tmp_path / "empty") in err and "FER2013Train" in err
    (tmp_path / "nolabels" / "FER2013Train").mkdir(parents=True)
    err = run_cli(capsys, ["prepare", "--dataset", "ferplus", "--root", str(tmp_path / "nolabels")])
    assert "FER2013Train/label.csv" in err
    err = run_cli(capsys, ["prepare", "--dataset", "ferplus", "--root", str(tmp_path / "absent")])
    assert str(tmp_path / "absent") in err


def test_ferplus_dropped_rows_are_counted_and_duplicates_removed(tmp_path, capsys):
    extra = {"FER2013Train": ['fer0000000.png,"(0, 0, 48, 48)",0,10,0,0,0,0,0,0,0,0',  # duplicated row
                              'fer0000098.png,"(0, 0, 48, 48)",0,10,0,0,0,0,0,0,0,0',  # PNG missing
                              'fer0000099.png,"(0, 0, 48, 48)",0,0,0,0,0,0,0,0,0,0']}  # no votes
    _png(tmp_path / "fer" / "FER2013Train" / "fer0000099.png", 99, size=48)
    root = _ferplus(tmp_path / "fer", extra)
    out = tmp_path / "run"
    assert main(["train", "--dataset", "ferplus", "--root", str(root), "--out", str(out), *FAST]) == 0
    import json

    s = json.loads((out / "summary.json").read_text())
    assert s["num_train"] == 4
    assert s["dropped"] == {"duplicate_name": 1, "missing_image": 1, "no_votes": 1}
    err = capsys.readouterr().err
    assert "dropped 3 row(s) (duplicate_name 1, missing_image 1, no_votes 1)" in err


# ------------------------------------------------------------------------------------------ other layouts
def test_folders_dataset_errors(tmp_path, capsys):
    root = tmp_path / "tree"
    _png(root / "train" / "happy" / "a.png", 1)
    _png(root / "train" / "grumpy" / "b.png", 2)
    err = run_cli(capsys, ["prepare", "--dataset", "folders", "--root", str(root)])
    assert "grumpy" in err
    shutil.rmtree(root / "train" / "grumpy")
    (root / "train" / "happy" / "a.png").unlink()
    err = run_cli(capsys, ["prepare", "--dataset", "folders", "--root", str(root)])
    assert "no images under" in err and str(root) in err


def test_rafdb_bad_line(tmp_path, capsys):
    (tmp_path / "raf" / "EmoLabel").mkdir(parents=True)
    (tmp_path / "raf" / "EmoLabel" / "list_patition_label.txt").write_text("train_00001.jpg 4\ntrain_00002.jpg\n")
    err = run_cli(capsys, ["prepare", "--dataset", "rafdb", "--root", str(tmp_path / "raf")])
    assert "list_patition_label.txt:2" in err


# ------------------------------------------------------------------------------------------ label files
@pytest.mark.parametrize("content,expected", [
    ("name,label\nfer0000000.png,grumpy\n", "labels.csv:2"),
    ("name,label\nfer0000000.png,happy\nfer0000077.png,sad\n", "labels.csv:3: image 'fer0000077.png'"),
    ("fer0000000.png,happy\n", "labels.csv: the first line must be the header"),
    ("name,label\nfer0000000.png,happy\nfer0000000.png,sad\n", "labels.csv:3"),
    ("name,label\nfer0000000.png\n", "labels.csv:2"),
])
def test_broken_label_file(tmp_path, capsys, content, expected):
    root = _ferplus(tmp_path / "fer")
    (tmp_path / "labels.csv").write_text(content)
    err = run_cli(capsys, ["train", "--dataset", "ferplus", "--root", str(root), "--labels",
                           str(tmp_path / "labels.csv"), "--out", str(tmp_path / "r"), *FAST])
    assert expected in err, err


# ------------------------------------------------------------------------------------------ configuration
@pytest.mark.parametrize("args,key", [
    (["--epochs", "0"], "train.epochs"),
    (["--epochs", "-2"], "train.epochs"),
    (["--epochs", "2.5"], "train.epochs"),
    (["--batch-size", "0"], "train.batch_size"),
    (["--lr", "-1"], "train.lr"),
    (["--lr", "nan"], "train.lr"),
    (["-o", "train.eval_batch_size=0"], "train.eval_batch_size"),
    (["--threads", "-3"], "train.threads"),
    (["--limit", "-5"], "data.limit"),
    (["--image-size", "10"], "data.image_size"),
    (["--image-size", "big"], "data.image_size"),
    (["--noise-rate", "0.5"], "noise.rate"),
    (["--noise", "symmetric", "--noise-rate", "1.5"], "noise.rate"),
    (["--noise", "annotator", "--noise-rate", "0.3"], "noise.rate"),
    (["--noise", "gaussian"], "noise.type"),
    (["--dataset", "imagenet"], "data.name"),
    (["--device", "tpu"], "train.device"),
    (["--channels", "2"], "data.channels"),
    (["--seed", "-1"], "train.seed"),
    (["-o", "train.weight_decay=-0.1"], "train.weight_decay"),
    (["-o", "train.deterministic=maybe"], "train.deterministic"),
    (["-o", "data.val_fraction=1"], "data.val_fraction"),
    (["-o", "augment.flip=2"], "augment.flip"),
    (["-o", "augment.crop_scale=[0.9, 0.1]"], "augment.crop_scale"),
    (["-o", "model.dropout=1.5"], "model.dropout"),
    (["-o", "train.nope=1"], "train.nope"),
    (["-o", "epochs"], "section.key=value"),
    (["--method", "lanet", "-o", "method.params.nope=1"], "nope"),
    (["--method", "lanet", "-o", "method.params.K=many"], "method.params.K"),
    (["--method", "magic"], "magic"),
])
def test_bad_configuration_values(tmp_path, capsys, args, key):
    out = tmp_path / "run"
    err = run_cli(capsys, ["train", "--out", str(out), *args])
    assert key in err, err
    assert not out.exists()


def test_method_parameter_error_leaves_nothing_behind(tmp_path, capsys):
    """LA-Net's K is checked when the method is built (after the data is loaded), still before config.yaml."""
    out = tmp_path / "run"
    small = ["-o", "data.synthetic_size=120", "-o", "method.params.queue_size=16", *FAST]
    err = run_cli(capsys, ["train", "--method", "lanet", "-o", "method.params.K=0", "--out", str(out), *small])
    assert "LA-Net" in err and not out.exists()
    assert main(["train", "--method", "lanet", "-o", "method.params.K=2", "--out", str(out), *small]) == 0
    assert (out / "summary.json").is_file()


@pytest.mark.parametrize("text,expected", [
    ("train:\n  epochs: [1\n", "cfg.yaml:3: not valid YAML"),
    ("- 1\n- 2\n", "top level must be a mapping"),
    ("train:\n  epochs: ten\n", "train.epochs"),
    ("train:\n  colour: red\n", "train.colour"),
    ("train: 5\n", "train must be a mapping"),
    ("train:\n  lr: 0\n", "train.lr"),
])
def test_bad_configuration_files(tmp_path, capsys, text, expected):
    (tmp_path / "cfg.yaml").write_text(text)
    err = run_cli(capsys, ["train", "--config", str(tmp_path / "cfg.yaml"), "--out", str(tmp_path / "r")])
    assert expected in err, err
    assert "cfg.yaml" in err or "train.lr" in err
    assert not (tmp_path / "r").exists()


def test_scientific_notation_is_a_number(tmp_path, capsys):
    (tmp_path / "cfg.yaml").write_text("train:\n  lr: 1e-4\n  weight_decay: 5E-5\nmethod:\n  name: lanet\n"
                                       "  params: {tau: 2e-1}\n")
    from lanet.config import load_config

    cfg = load_config(tmp_path / "cfg.yaml", ["method.params.omega=9e-1", "train.epochs=1e1"])
    assert (cfg.train.lr, cfg.train.weight_decay, cfg.train.epochs) == (1e-4, 5e-5, 10)
    assert cfg.method.params == {"tau": 0.2, "omega": 0.9}
    # on the command line too: --lr 1e-4 and -o method.params.tau=1e-2 reach training (here: the next check)
    err = run_cli(capsys, ["train", "--out", str(tmp_path / "r"), "--lr", "1e-4", "--method", "lanet",
                           "-o", "method.params.tau=1e-2", "--epochs", "0"])
    assert "train.epochs" in err


# ------------------------------------------------------------------------------------------ run directories
@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """One tiny 2-epoch baseline run, copied by each test that damages it."""
    out = tmp_path_factory.mktemp("runs") / "run"
    args = ["train", "--out", str(out), "-o", "data.synthetic_size=120", "--noise", "symmetric", "--noise-rate",
            "0.2", *FAST]
    args[args.index("--epochs") + 1] = "2"
    assert main(args) == 0
    return out


def _partial_copy(finished_run: Path, dest: Path) -> Path:
    """The run as if killed after its first epoch (checkpoint at epoch 1, no summary)."""
    shutil.copytree(finished_run, dest)
    (dest / "summary.json").unlink()
    lines = (dest / "metrics.jsonl").read_text().splitlines()
    (dest / "metrics.jsonl").write_text(lines[0] + "\n")
    import torch

    state = torch.load(dest / "checkpoint.pt", weights_only=True)
    state["epoch"] = 0
    torch.save(state, dest / "checkpoint.pt")
    return dest


@pytest.mark.parametrize("damage,expected", [
    (lambda d: (d / "config.yaml").write_text(""), "config.yaml is empty"),
    (lambda d: (d / "config.yaml").write_text("train: {epochs: [\n"), "config.yaml:2: not valid YAML"),
    (lambda d: (d / "config.yaml").write_text("train:\n  epochs: 0\n"), "config.yaml: train.epochs"),
    (lambda d: _truncate(d / "checkpoint.pt"), "checkpoint.pt: unreadable lanet checkpoint"),
    (lambda d: (d / "checkpoint.pt").write_bytes(b""), "checkpoint.pt: unreadable lanet checkpoint"),
    (lambda d: (d / "metrics.jsonl").unlink(), "metrics.jsonl is missing"),
    (lambda d: (d / "metrics.jsonl").write_text("{\"epoch\": 0}\n{oops\n{\"epoch\": 3}\n"), "metrics.jsonl:2"),
])
def test_damaged_run_directory_on_resume(finished_run, tmp_path, capsys, damage, expected):
    run = _partial_copy(finished_run, tmp_path / "run")
    damage(run)
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    err = run_cli(capsys, ["train", "--out", str(run), "--resume", "--quiet"])
    assert expected in err, err
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before  # nothing already written is lost


def test_resume_with_other_values_lists_them(finished_run, tmp_path, capsys):
    run = _partial_copy(finished_run, tmp_path / "run")
    err = run_cli(capsys, ["train", "--out", str(run), "--resume", "--epochs", "5", "--lr", "1e-2", "--threads", "1"])
    assert "train.epochs: run 2, command 5" in err and "train.lr: run 0.001, command 0.01" in err
    assert "train.threads" not in err.split("only")[0]  # threads and device may change
    assert main(["train", "--out", str(run), "--resume", "--threads", "1", "--device", "cpu", "--quiet"]) == 0
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 2


def test_new_run_into_a_run_directory_is_refused(finished_run, tmp_path, capsys):
    err = run_cli(capsys, ["train", "--out", str(finished_run), *FAST])
    assert "already holds a run" in err and str(finished_run) in err


def test_evaluate_errors(finished_run, tmp_path, capsys):
    err = run_cli(capsys, ["evaluate", str(finished_run), "--batch-size", "0"])
    assert "--batch-size" in err
    err = run_cli(capsys, ["evaluate", str(tmp_path)])
    assert "config.yaml missing" in err
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    _truncate(run / "model_final.pt")
    err = run_cli(capsys, ["evaluate", str(run)])
    assert "model_final.pt" in err
