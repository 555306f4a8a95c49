"""Nothing runs code from a run directory, nothing corrupts a run: weights-only loading, the run lock (with a
real second process), and a full disk in the middle of a run."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from helpers import tiny_config

from lanet import fileutil
from lanet.cli import main
from lanet.errors import LanetError
from lanet.fileutil import LOCK_NAME, RunDirectoryBusy, run_lock
from lanet.train.trainer import train


class _Payload:
    """A pickle that creates ``marker`` when unpickled with ``weights_only=False``."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.fixture(scope="module")
def small_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("safety") / "run"
    train(tiny_config(epochs=1, size=120, width=16), out, progress=False)
    return out


def _err_line(capsys, after_progress: bool = False) -> str:
    """The command's one error line (with ``after_progress``: the last line, after the run's progress lines)."""
    err = capsys.readouterr().err.strip()
    if after_progress:
        err = err.splitlines()[-1]
    assert len(err.splitlines()) == 1 and err.startswith("lanet: error: "), err
    return err


# ---------------------------------------------------------------------------------------------- weights only
def test_crafted_checkpoint_is_not_executed(small_run, tmp_path, capsys):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(small_run, run)
    (run / "summary.json").unlink()  # unfinished, so --resume reads the checkpoint
    marker = tmp_path / "pwned"
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    state["best_val"] = _Payload(marker)
    torch.save(state, run / "checkpoint.pt")

    assert main(["train", "--out", str(run), "--resume", "--quiet"]) == 2
    err = _err_line(capsys)
    assert "checkpoint.pt" in err and "never loads" in err
    assert not marker.exists()
    # the same file for `lanet evaluate`, as an exported model
    shutil.copy(run / "checkpoint.pt", run / "model_final.pt")
    assert main(["evaluate", str(run)]) == 2
    assert "model_final.pt" in _err_line(capsys) and not marker.exists()
    # the test is meaningful: an unrestricted torch.load would have run the payload
    torch.load(run / "checkpoint.pt", weights_only=False)
    assert marker.exists()


def test_checkpoint_holds_only_tensors_and_plain_types(small_run):
    state = torch.load(small_run / "checkpoint.pt", weights_only=True)  # raises on anything else
    assert set(state) >= {"method", "optimizer", "epoch", "best_val", "torch_rng"}
    assert isinstance(state["epoch"], int) and isinstance(state["torch_rng"], torch.Tensor)


# ---------------------------------------------------------------------------------------------- run lock
HOLDER = textwrap.dedent("""
    import sys, time
    from lanet.fileutil import run_lock
    with run_lock(sys.argv[1]):
        print("locked", flush=True)
        time.sleep(120)
""")


def _hold_lock(directory: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(directory)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_second_process_is_refused_naming_the_holder(tmp_path, capsys):
    out = tmp_path / "run"
    holder = _hold_lock(out)
    try:
        cfg_args = ["train", "--out", str(out), "--epochs", "1", "--quiet", "-o", "data.synthetic_size=120",
                    "--threads", "1", "--device", "cpu"]
        assert main(cfg_args) == 2
        err = _err_line(capsys)
        assert f"in use by process {holder.pid}" in err and str(out) in err
        assert main([*cfg_args, "--resume"]) == 2  # a resume of a run in progress as well
        assert str(holder.pid) in _err_line(capsys)
        with pytest.raises(RunDirectoryBusy):
            with run_lock(out):
                pass
    finally:
        holder.kill()  # SIGKILL: no clean-up, the lock file stays behind with a dead PID
        holder.wait()
    assert (out / LOCK_NAME).read_text().strip() == str(holder.pid)
    with run_lock(out) as took:  # a stale lock is taken over
        assert took and (out / LOCK_NAME).read_text().strip() == str(os.getpid())
    assert not (out / LOCK_NAME).exists()


def test_o_excl_fallback_takes_over_dead_pids_only(tmp_path, monkeypatch):
    """Where flock is unsupported: the PID file decides; a live PID blocks, a dead one is taken over."""
    monkeypatch.setattr(fileutil, "_lock_flock", lambda directory, lock: None)
    out = tmp_path / "run"
    out.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (out / LOCK_NAME).write_text(f"{dead.pid}\n")
    with run_lock(out):
        assert (out / LOCK_NAME).read_text().strip() == str(os.getpid())
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (out / LOCK_NAME).write_text(f"{sleeper.pid}\n")
        with pytest.raises(LanetError, match=f"process {sleeper.pid}"):
            with run_lock(out):
                pass
    finally:
        sleeper.send_signal(signal.SIGKILL)
        sleeper.wait()


def test_lock_is_reentrant_and_released(tmp_path):
    with run_lock(tmp_path / "r") as outer:
        with run_lock(tmp_path / "r") as inner:
            assert outer and not inner
        assert (tmp_path / "r" / LOCK_NAME).exists()
    assert not (tmp_path / "r" / LOCK_NAME).exists()


# ---------------------------------------------------------------------------------------------- full disk
def test_full_disk_keeps_what_was_written(tmp_path, monkeypatch, capsys):
    """ENOSPC while the second epoch's checkpoint is written: one line, the first epoch's files intact."""
    out = tmp_path / "run"
    cfg = tiny_config(epochs=2, size=120, width=16)
    cfg.save(tmp_path / "cfg.yaml")
    real_fsync = fileutil.os.fsync
    saves = {"n": 0}

    def fsync(fd):
        name = os.readlink(f"/proc/self/fd/{fd}")
        if ".checkpoint.pt." in name:
            saves["n"] += 1
            if saves["n"] == 2:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_fsync(fd)

    monkeypatch.setattr(fileutil.os, "fsync", fsync)
    assert main(["train", "--config", str(tmp_path / "cfg.yaml"), "--out", str(out), "--quiet"]) == 2
    err = _err_line(capsys, after_progress=True)
    assert "No space left on device" in err and "checkpoint.pt" in err
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]
    assert torch.load(out / "checkpoint.pt", weights_only=True)["epoch"] == 0  # the first epoch's, whole
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 2  # metrics went first
    monkeypatch.setattr(fileutil.os, "fsync", real_fsync)
    # space again: the run resumes from its first epoch and finishes
    assert main(["train", "--out", str(out), "--resume", "--quiet"]) == 0
    assert json.loads((out / "summary.json").read_text())["epochs"] == 2


def test_stale_tmp_files_are_removed_when_a_run_resumes(small_run, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(small_run, run)
    (run / "summary.json").unlink()
    (run / ".checkpoint.pt.abc123.tmp").write_bytes(b"")  # left by a process killed mid-write
    train(tiny_config(epochs=1, size=120, width=16), run, resume=True, progress=False)
    assert not list(run.glob("*.tmp")) and (run / "summary.json").is_file()


def test_bench_skips_a_run_another_process_is_writing(tmp_path, capsys):
    """Two grids on the same runs folder: the second leaves a locked run alone and says so (status 1)."""
    runs = tmp_path / "runs"
    run_dir = runs / "table1" / "baseline-symmetric-0.30-s0"
    holder = _hold_lock(run_dir)
    try:
        code = main(["bench", "table1", "--preset", "smoke", "--rates", "0.3", "--seeds", "0", "--methods",
                     "baseline", "--runs", str(runs), "--results", str(tmp_path / "res"), "--quiet"])
        err = capsys.readouterr().err
        assert code == 1 and f"in use by process {holder.pid}" in err
        assert sorted(p.name for p in run_dir.iterdir()) == [LOCK_NAME]  # nothing written into it
    finally:
        holder.kill()
        holder.wait()
