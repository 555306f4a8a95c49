"""A corpus of broken datasets, label files, configurations and run directories.

Every case runs the command line (``lanet.cli.main``) and must end with exit status 2 and exactly one line on
stderr, ``lanet: error: ...``, naming the file and row (data) or the key (configuration). All of them fail
before the first training step, and none leaves a run directory that blocks the corrected command.
"""

from __future__ import annotations

import os
import shutil
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lanet.cli import main

FAST = ["--epochs", "1", "--batch-size", "4", "--threads", "1", "--device", "cpu", "--quiet",
        "-o", "model.width=8", "-o", "data.load_size=32", "--image-size", "32"]


def run_cli(capsys, args: list[str]) -> str:
    """Run ``lanet ARGS``; assert status 2 and a single error line, with no warning beside it (pytest would
    otherwise capture a warning that adds lines on a terminal); return that line."""
    capsys.readouterr()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code = main(args)
    err = capsys.readouterr().err.strip()
    assert code == 2, (code, err)
    assert len(err.splitlines()) == 1, err
    assert err.startswith("lanet: error: "), err
    shown = [w for w in caught if not issubclass(w.category, (DeprecationWarning, PendingDeprecationWarning))]
    assert not shown, [str(w.message) for w in shown]
    return err


def _tree(root: Path, skip: Path | None = None) -> dict[str, bytes]:
    """Every file under ``root`` (but not under ``skip``) with its bytes; links as their target text."""
    out = {}
    for p in sorted(root.rglob("*")):
        if skip is not None and (p == skip or skip in p.parents):
            continue
        if p.is_symlink():
            out[str(p)] = b"-> " + os.readlink(p).encode()
        elif p.is_file():
            out[str(p)] = p.read_bytes()
        else:
            out[str(p)] = b"<dir>"
    return out


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
    # upper bounds and values that crashed instead (issue 22)
    (["--threads", "1e30"], "train.threads"),
    (["--threads", "100000"], "train.threads"),
    (["-o", "model.width=100000"], "model.width"),
    (["-o", "model.width=12"], "model.width"),
    (["-o", "data.synthetic_size=1e9"], "data.synthetic_size"),
    (["-o", "data.synthetic_size=400000", "-o", "data.load_size=512"], "data.synthetic_size"),
    (["-o", "train=5"], "train is a section"),
    (["-o", "method=lanet"], "method is a section"),
    (["--lr", "1e30"], "train.lr"),
    (["-o", "train.weight_decay=1e30"], "train.weight_decay"),
    (["--epochs", "0x10"], "train.epochs"),
    (["--epochs", "1:30"], "train.epochs"),
    (["-o", "noise.seed=1e20"], "noise.seed"),
    (["--method", "lanet", "-o", "method.params.tau=nan"], "method.params.tau"),
    (["--method", "lanet", "-o", "method.params.K=2.5"], "method.params.K"),
    (["--method", "lanet", "-o", "method.params.queue_size=1e9"], "queue_size"),
    (["--method", "lanet", "-o", "method.params.K=16", "--batch-size", "16"], "train.batch_size >= 17"),
    (["--method", "scn", "--batch-size", "1"], "train.batch_size must be >= 2"),
])
def test_bad_configuration_values(tmp_path, capsys, args, key):
    out = tmp_path / "run"
    before = _tree(tmp_path)
    err = run_cli(capsys, ["train", "--out", str(out), *args])
    assert key in err, err
    assert not out.exists()
    assert _tree(tmp_path) == before  # nothing written anywhere


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


# ------------------------------------------------------------------------------------------ hostile files (issue 22)
class _Planted(torch.nn.Module):
    """TorchScript whose ``__setstate__`` (run by ``torch.jit.load``) and ``forward`` write marker files."""

    def __init__(self, marker: str):
        super().__init__()
        self.marker = marker

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        torch.save(torch.ones(1), self.marker + ".forward")
        return x.mean([2, 3])[:, :1].repeat(1, 8)

    @torch.jit.export
    def __getstate__(self) -> tuple[str, bool]:
        return (self.marker, self.training)

    @torch.jit.export
    def __setstate__(self, state: tuple[str, bool]) -> None:
        self.marker = state[0]
        self.training = state[1]
        torch.save(torch.ones(1), self.marker)


def _plant_torchscript(path: Path, marker: Path, meta: dict) -> None:
    import json

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.script(_Planted(str(marker))), str(path),
                       _extra_files={"lanet.json": json.dumps(meta)})


def _model_meta(run: Path) -> dict:
    return {k: v for k, v in torch.load(run / "model_final.pt", weights_only=True).items() if k != "state_dict"}


def test_planted_torchscript_is_never_executed(finished_run, tmp_path, capsys):
    from lanet import LanetError, Predictor

    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    marker = tmp_path / "pwned"
    _plant_torchscript(run / "model_val_selected.pt", marker, _model_meta(run))
    face = _png(tmp_path / "face.png", 1, size=48)
    before = _tree(tmp_path)
    for model in (run, run / "model_val_selected.pt"):  # the run directory, and its file named explicitly
        err = run_cli(capsys, ["predict", str(face), "--model", str(model), "--detector", "none", "--quiet"])
        assert "model_val_selected.pt" in err and "TorchScript archive" in err, err
        with pytest.raises(LanetError, match="TorchScript archive"):
            Predictor(model, detector="none", device="cpu")
    err = run_cli(capsys, ["evaluate", str(run)])
    assert "model_val_selected.pt" in err and "TorchScript" in err
    err = run_cli(capsys, ["export", str(run), "--format", "torchscript", "--out", str(tmp_path / "x.ts")])
    assert "model_val_selected.pt" in err and "TorchScript" in err
    assert not marker.exists() and not Path(f"{marker}.forward").exists()
    assert _tree(tmp_path) == before
    # the test is meaningful: loading the archive runs its code
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.load(str(run / "model_val_selected.pt"))
    assert marker.exists()


@pytest.mark.parametrize("dangling", [False, True])
@pytest.mark.parametrize("flock", [True, False])
def test_lock_symlink_is_refused(finished_run, tmp_path, capsys, monkeypatch, dangling, flock):
    from lanet import fileutil

    if not flock:  # the O_EXCL fallback for file systems without flock
        monkeypatch.setattr(fileutil, "_lock_flock", lambda directory, lock: None)
    run = _partial_copy(finished_run, tmp_path / "run")
    target = tmp_path / ("absent.txt" if dangling else "precious.txt")
    if not dangling:
        target.write_text("precious\n")
    (run / ".lock").symlink_to(target)
    before = _tree(tmp_path)
    err = run_cli(capsys, ["train", "--out", str(run), "--resume", "--quiet"])
    assert f"{run / '.lock'} is a symbolic link" in err, err
    assert _tree(tmp_path) == before and target.exists() == (not dangling)


def test_files_in_a_run_directory_are_replaced_not_written_through(finished_run, tmp_path):
    run = _partial_copy(finished_run, tmp_path / "run")
    precious = tmp_path / "precious.txt"
    precious.write_text("precious\n")
    (run / "model_final.pt").unlink()
    (run / "model_final.pt").symlink_to(precious)
    assert main(["train", "--out", str(run), "--resume", "--quiet"]) == 0
    assert precious.read_text() == "precious\n"
    assert not (run / "model_final.pt").is_symlink() and (run / "summary.json").is_file()


def test_method_values_that_depend_on_others_are_checked_before_writing(tmp_path, capsys):
    """K=16 needs a batch of 17: refused before anything is written, so the corrected command just runs."""
    out = tmp_path / "D"
    small = ["train", "--method", "lanet", "-o", "method.params.K=16", "-o", "data.synthetic_size=120",
             "-o", "method.params.queue_size=64", "--out", str(out), *FAST]
    err = run_cli(capsys, [*small, "--batch-size", "16"])
    assert "method.params.K=16" in err and "train.batch_size >= 17" in err
    assert not out.exists()
    assert main([*small, "--batch-size", "32"]) == 0


def test_a_run_that_fails_in_its_first_epoch_leaves_nothing_behind(tmp_path, capsys, monkeypatch):
    """A loss that turns non-finite at once (a learning rate too high): the hint to lower it can be followed."""
    from lanet.errors import LanetError
    from lanet.train import trainer

    def diverged(run, epoch, progress):
        raise LanetError(f"loss became nan at epoch {epoch + 1} step 0; try a lower train.lr")

    out = tmp_path / "run"
    args = ["train", "--out", str(out), "-o", "data.synthetic_size=120", *FAST]
    real = trainer.train_one_epoch
    monkeypatch.setattr(trainer, "train_one_epoch", diverged)
    capsys.readouterr()
    assert main([*args, "--lr", "0.5"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]  # after the data line the run prints as it starts
    assert err.startswith("lanet: error: ") and "try a lower train.lr" in err and not out.exists()
    monkeypatch.setattr(trainer, "train_one_epoch", real)
    assert main([*args, "--lr", "1e-3"]) == 0


# ------------------------------------------------------------------------------------------ bytes that are not UTF-8
def test_non_utf8_ferplus_label_csv(tmp_path, capsys):
    root = _ferplus(tmp_path / "fer")
    with open(root / "FER2013Train" / "label.csv", "ab") as fh:
        fh.write(b'fer0000009\xff.png,"(0, 0, 48, 48)",0,10,0,0,0,0,0,0,0,0\n')
    err = run_cli(capsys, ["train", "--dataset", "ferplus", "--root", str(root), "--out", str(tmp_path / "r"),
                           *FAST])
    assert "FER2013Train/label.csv:5: not UTF-8 text (byte 0xff" in err, err
    assert not (tmp_path / "r").exists()


def test_non_utf8_csv_dataset_and_label_file(tmp_path, capsys):
    csv_file = _csv_dataset(tmp_path / "data", GOOD_ROWS)
    csv_file.write_bytes(csv_file.read_bytes().replace(b"img/1.png,sad", b"img/1.png,s\xe9d"))
    err = run_cli(capsys, ["train", "--dataset", "csv", "--root", str(csv_file), "--out", str(tmp_path / "r"), *FAST])
    assert "list.csv:3: not UTF-8 text (byte 0xe9 at column 12)" in err, err
    root = _ferplus(tmp_path / "fer")
    (tmp_path / "labels.csv").write_bytes(b"name,label\nfer0000000.png,happy\nfer0000001.png,\x80\n")
    err = run_cli(capsys, ["train", "--dataset", "ferplus", "--root", str(root), "--labels",
                           str(tmp_path / "labels.csv"), "--out", str(tmp_path / "r"), *FAST])
    assert "labels.csv:3: not UTF-8" in err, err
    (tmp_path / "cfg.yaml").write_bytes(b"train:\n  epochs: 1 # \xfe\n")
    err = run_cli(capsys, ["train", "--config", str(tmp_path / "cfg.yaml"), "--out", str(tmp_path / "r")])
    assert "cfg.yaml:2: not UTF-8" in err, err
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("command", ["report", "audit", "resume"])
def test_binary_metrics_file(finished_run, tmp_path, capsys, command):
    run = _partial_copy(finished_run, tmp_path / "run") if command == "resume" else tmp_path / "run"
    if command != "resume":
        shutil.copytree(finished_run, run)
    (run / "metrics.jsonl").write_bytes(b'{"epoch": 0}\n\x00\x9c\xfe\xff binary\n')
    if command == "report":
        pytest.importorskip("matplotlib", reason="lanet report needs matplotlib")
        args = ["report", str(run), "--out", str(tmp_path / "rep"), "--quiet"]
    elif command == "audit":
        args = ["audit", str(run), "--out", str(tmp_path / "a.csv")]
    else:
        args = ["train", "--out", str(run), "--resume", "--quiet"]
    before = _tree(tmp_path)
    err = run_cli(capsys, args)
    assert "metrics.jsonl:2: not UTF-8 text (byte 0x9c at column 2)" in err, err
    assert _tree(tmp_path) == before


# ------------------------------------------------------------------------------------------ wrong values in files
def _set(key: str, value):
    def change(state: dict) -> None:
        state[key] = value(state[key]) if callable(value) else value
    return change


CHECKPOINT_CASES = {
    "best_val None": (_set("best_val", None), "best_val"),
    "best_val a string": (_set("best_val", "0.5"), "best_val"),
    "optimizer a string": (_set("optimizer", "adam"), "optimizer"),
    "method a list": (_set("method", [1, 2]), "method"),
    "torch_rng float": (_set("torch_rng", lambda t: t.float()), "torch_rng"),
    "torch_rng short": (_set("torch_rng", lambda t: t[:100]), "torch_rng"),
    "epoch a string": (_set("epoch", "0"), "epoch"),
}


@pytest.mark.parametrize("case", list(CHECKPOINT_CASES))
def test_wrong_values_in_a_checkpoint(finished_run, tmp_path, capsys, case):
    change, key = CHECKPOINT_CASES[case]
    run = _partial_copy(finished_run, tmp_path / "run")
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    change(state)
    torch.save(state, run / "checkpoint.pt")
    before = _tree(tmp_path)
    err = run_cli(capsys, ["train", "--out", str(run), "--resume", "--quiet"])
    assert f"{run / 'checkpoint.pt'}: {key}" in err, err
    assert _tree(tmp_path) == before


MODEL_CASES = {
    "class_names an int": ({"class_names": 7}, "class_names"),
    "image_size a string": ({"image_size": "32"}, "image_size"),
    "image_size 200000": ({"image_size": 200000}, "image_size"),
    "width a string": ({"width": "8"}, "width"),
    "source_size 0": ({"source_size": 0}, "source_size"),
    "std zero": ({"std": [0.0]}, "std"),
    "mean for 3 channels": ({"mean": [0.5, 0.5, 0.5]}, "mean"),
    "arch a number": ({"arch": 18}, "arch"),
    "crop_margin nan": ({"crop_margin": float("nan")}, "crop_margin"),
}


@pytest.mark.parametrize("case", list(MODEL_CASES))
def test_wrong_values_in_a_model_file(finished_run, tmp_path, capsys, case):
    change, key = MODEL_CASES[case]
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    for name in ("model_final.pt", "model_val_selected.pt"):
        payload = torch.load(run / name, weights_only=True)
        payload.update(change)
        torch.save(payload, run / name)
    face = _png(tmp_path / "face.png", 1, size=48)
    before = _tree(tmp_path)
    for args in (["predict", str(face), "--model", str(run), "--detector", "none", "--quiet"],
                 ["evaluate", str(run)],
                 ["export", str(run), "--format", "torchscript", "--out", str(tmp_path / "m.ts")]):
        err = run_cli(capsys, args)
        assert "model_" in err and f".pt: {key}" in err, err
    assert _tree(tmp_path) == before


def test_wrong_values_in_onnx_metadata(finished_run, tmp_path, capsys):
    onnx = pytest.importorskip("onnx", reason="onnx not installed")
    pytest.importorskip("onnxruntime", reason="onnxruntime not installed")
    import json

    assert main(["export", str(finished_run / "model_final.pt"), "--out", str(tmp_path / "m.onnx")]) == 0
    proto = onnx.load(str(tmp_path / "m.onnx"))
    for entry in proto.metadata_props:
        if entry.key == "lanet":
            meta = json.loads(entry.value)
            meta["class_names"] = 8
            entry.value = json.dumps(meta)
    onnx.save(proto, str(tmp_path / "m.onnx"))
    face = _png(tmp_path / "face.png", 1, size=48)
    before = _tree(tmp_path)
    err = run_cli(capsys, ["predict", str(face), "--model", str(tmp_path / "m.onnx"), "--detector", "none", "--quiet"])
    assert "m.onnx: class_names must be a list of class names, got 8" in err, err
    assert _tree(tmp_path) == before


# ------------------------------------------------------------------------------------------ export, predict
def test_export_never_replaces_a_run_file(finished_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    before = _tree(tmp_path)
    err = run_cli(capsys, ["export", str(run), "--format", "torchscript", "--out", str(run / "model_final.pt")])
    assert "model_final.pt is a file of the run" in err and "--force" in err
    err = run_cli(capsys, ["export", str(run), "--format", "torchscript", "--out", str(run / "model_val_selected.pt"),
                           "--force"])
    assert "would overwrite the model it exports" in err
    assert _tree(tmp_path) == before
    # a new file and an earlier export may be written; --force replaces a run file
    assert main(["export", str(run), "--format", "torchscript"]) == 0
    assert main(["export", str(run), "--format", "torchscript"]) == 0
    assert main(["export", str(run), "--format", "torchscript", "--out", str(run / "summary.json"), "--force"]) == 0


def test_onnx_bytes_in_a_model_file_are_named_as_such(finished_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    (run / "model_final.pt").write_bytes(b"\x08\x07\x12\x07pytorch\x1a\x032.13 (an ONNX protobuf)")
    err = run_cli(capsys, ["evaluate", str(run)])
    assert "model_final.pt is not a lanet model file: not a PyTorch file" in err and "Python objects" not in err


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_predict_threshold_must_be_finite(finished_run, tmp_path, capsys, value):
    face = _png(tmp_path / "face.png", 1, size=48)
    err = run_cli(capsys, ["predict", str(face), "--model", str(finished_run), f"--threshold={value}", "--quiet"])
    assert "--threshold" in err and "finite" in err


def test_predict_on_a_full_disk_names_the_file_and_leaves_no_empty_csv(finished_run, tmp_path, capsys):
    if not Path("/dev/full").exists():
        pytest.skip("/dev/full (a device whose writes fail with ENOSPC) is Linux-only")
    face = _png(tmp_path / "face.png", 1, size=48)
    out = tmp_path / "f.csv"
    out.symlink_to("/dev/full")
    err = run_cli(capsys, ["predict", str(face), "--model", str(finished_run / "model_final.pt"), "--detector",
                           "none", "--out", str(out), "--quiet"])
    assert f"cannot write {out}: No space left on device" in err, err
    assert not out.exists() and not out.is_symlink()


# ------------------------------------------------------------------------------------------ spreadsheet formulas
def test_csv_cells_never_start_a_formula():
    from lanet.fileutil import csv_cell, csv_value

    for text, safe in (("=3+4.png", "'=3+4.png"), ("+1.png", "'+1.png"), ("-x.png", "'-x.png"), ("@a", "'@a"),
                       ("\t=x", "'\t=x"), ("'=x", "''=x"), ("plain.png", "plain.png"), ("'quoted", "'quoted"),
                       ("-0.5", "-0.5"), ("+3e-2", "+3e-2"), ("", "")):
        assert csv_cell(text) == safe and csv_value(safe) == text, text
    assert csv_cell(-0.5) == -0.5 and csv_cell(3) == 3


def test_file_names_are_written_as_text_in_every_csv(tmp_path, capsys, monkeypatch):
    """Image names starting with =, +, - or @: predict CSV, noise_changes.csv and the audit CSV start them with
    ', numbers stay numbers, and reading noise_changes.csv back (the audit) restores the names."""
    import csv

    names = ["=0.png", "+1.png", "-2.png", "@3.png", "=4.png", "=5.png", "=6.png", "=7.png"]
    rows = [f"{n},{c},{s}" for n, c, s in zip(names, ["happy", "sad", "angry", "fear"] * 2,
                                               ["train"] * 6 + ["test"] * 2)]
    csv_file = _csv_dataset(tmp_path / "data", rows, {n: i for i, n in enumerate(names)})
    run = tmp_path / "run"
    assert main(["train", "--dataset", "csv", "--root", str(csv_file), "--out", str(run), "--noise", "symmetric",
                 "--noise-rate", "0.5", *FAST]) == 0
    changes = list(csv.reader((run / "noise_changes.csv").open()))[1:]
    assert changes and all(r[0].startswith("'") and r[0][1:] in names for r in changes), changes
    assert main(["audit", str(run), "--out", str(tmp_path / "audit.csv")]) == 0
    audit = list(csv.DictReader((tmp_path / "audit.csv").open()))
    assert sorted(r["name"] for r in audit) == sorted("'" + n for n in names[:6])
    assert all(float(r["score"]) >= 0 for r in audit)
    out = tmp_path / "p.csv"
    monkeypatch.chdir(tmp_path / "data")  # lanet predict '=0.png': the record's file is the name as given
    assert main(["predict", "=0.png", "--model", str(run), "--detector", "none", "--out", str(out), "--quiet"]) == 0
    rec = next(csv.DictReader(out.open()))
    assert rec["file"] == "'=0.png" and float(rec["top_probability"]) > 0 and rec["status"] == "ok"
    # a file name whose text is a negative number stays a number
    shutil.copy("=0.png", "-0.5")
    assert main(["predict", "-0.5", "--model", str(run), "--detector", "none", "--out", str(out), "--quiet"]) == 0
    assert next(csv.DictReader(out.open()))["file"] == "-0.5"


# ------------------------------------------------------------------------------------------ report figures
@pytest.fixture(scope="module")
def lanet_run(tmp_path_factory) -> Path:
    from analysis_runs import tiny_runs

    return tiny_runs(tmp_path_factory)["lanet"]


_DIST, _LOSS = "Learned label distributions vs human votes", "Per-sample training loss, clean vs flipped labels"


@pytest.mark.parametrize("damage,lost,kept", [
    ("label_distributions.npz", {_DIST}, {"confusion.png", "tsne.png", "loss_hist.png", "gradcam.png"}),
    ("noise_changes.csv", {_DIST, _LOSS}, {"confusion.png", "tsne.png", "gradcam.png"}),
    ("model_final.pt", {_LOSS, "Confusion matrix and per-class accuracy", "t-SNE of the test features"},
     {"curves.png", "distributions.png"}),
])
def test_one_bad_file_hides_only_its_figures(lanet_run, tmp_path, damage, lost, kept):
    pytest.importorskip("matplotlib", reason="lanet report needs matplotlib")
    pytest.importorskip("sklearn", reason="lanet report needs scikit-learn")
    from analysis_runs import copy_run

    from lanet.report import make_report

    run = copy_run(lanet_run, tmp_path / "run")
    (run / damage).write_bytes(b"name,clean,noisy\n\xff\xfe broken\n" if damage.endswith(".csv") else b"PK\x03\x04")
    res = make_report([run], tmp_path / "rep", tsne_points=50, samples=2, progress=False)
    skipped = {title: why for _, title, why in res.skipped}
    for title in lost:
        assert damage in skipped[title] and "dataset could not be read" not in skipped[title], skipped
    shown = {p.name for p in res.figures}
    assert kept <= shown, (shown, skipped)


# ------------------------------------------------------------------------------------------ minor
def test_empty_test_split_names_its_label_file(tmp_path, capsys):
    root = _ferplus(tmp_path / "fer")
    (root / "FER2013Test" / "label.csv").write_text("")
    err = run_cli(capsys, ["train", "--dataset", "ferplus", "--root", str(root), "--out", str(tmp_path / "r"),
                           *FAST])
    assert f"{root / 'FER2013Test' / 'label.csv'}: no test images" in err, err
    shutil.rmtree(root / "FER2013Test")
    err = run_cli(capsys, ["train", "--dataset", "ferplus", "--root", str(root), "--out", str(tmp_path / "r"),
                           *FAST])
    assert f"{root / 'FER2013Test'} (folder missing): no test images" in err, err


def test_missing_ferplus_validation_folder_is_a_warning(tmp_path, capsys):
    root = _ferplus(tmp_path / "fer")
    shutil.rmtree(root / "FER2013Valid")
    out = tmp_path / "run"
    assert main(["train", "--dataset", "ferplus", "--root", str(root), "--out", str(out), *FAST]) == 0
    err = capsys.readouterr().err
    assert f"warning: no {root / 'FER2013Valid'} folder, so no validation split" in err, err
    assert not (out / "model_val_selected.pt").exists()


@pytest.mark.parametrize("args,key", [
    (["-o", "train.lr=-1"], "train.lr"),
    (["--seeds", "-1"], "train.seed"),
    (["-o", "model.width=100000"], "model.width"),
    (["--methods", "lanet", "-o", "method.params.K=64"], "method.params.K=64"),
])
def test_bench_rejects_bad_values_before_any_run(tmp_path, capsys, args, key):
    runs = tmp_path / "runs"
    err = run_cli(capsys, ["bench", "table1", "--preset", "smoke", "--runs", str(runs), "--results",
                           str(tmp_path / "res"), "--quiet", *args])
    assert key in err, err
    assert not runs.exists() and not (tmp_path / "res").exists()


def test_report_seed_must_be_a_seed(finished_run, tmp_path, capsys):
    err = run_cli(capsys, ["report", str(finished_run), "--out", str(tmp_path / "rep"), "--seed", "-1"])
    assert "--seed" in err and not (tmp_path / "rep").exists()
