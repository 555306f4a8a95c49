"""``lanet bench``: the smoke preset end to end (CI proves the harness with it), resumability, crash handling,
rendering from run directories, JS divergence and Table 6."""

import csv
import json
import math
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import interrupt_second_epoch

from lanet.bench import (
    PRESETS,
    TABLES,
    Bench,
    RunSpec,
    get_preset,
    grid,
    js_divergence,
    label_distribution_js,
    run_benchmark,
)
from lanet.bench import runs as bench_mod  # the grid runner calls runs.train: tests replace it there
from lanet.cli import build_parser, main
from lanet.errors import LanetError
from lanet.portable import machine_paths, portable_command

REAL_TRAIN = bench_mod.train


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """table1 on the smoke preset through the CLI: one rate, both methods, seeds 0 and 1 (4 runs)."""
    base = tmp_path_factory.mktemp("bench")
    runs, results = base / "runs", base / "results"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LANET_CACHE", str(base / "cache"))
        argv = ["bench", "table1", "--preset", "smoke", "--rates", "0.3", "--methods", "baseline,lanet",
                "--seeds", "0", "1", "--runs", str(runs), "--results", str(results), "--quiet"]
        code = main(argv)
    assert code == 0
    return runs, results, argv


def _csv_rows(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _summaries(runs: Path, prefix: str) -> list[dict]:
    return [json.loads((d / "summary.json").read_text()) for d in sorted((runs / "table1").glob(f"{prefix}-s*"))]


# ---------------------------------------------------------------------------------------------- end to end
def test_smoke_grid_writes_run_directories(smoke):
    runs, _, _ = smoke
    names = sorted(p.name for p in (runs / "table1").iterdir())
    assert names == ["baseline-symmetric-0.30-s0", "baseline-symmetric-0.30-s1",
                     "lanet-symmetric-0.30-s0", "lanet-symmetric-0.30-s1"]
    for n in names:
        d = runs / "table1" / n
        s = json.loads((d / "summary.json").read_text())
        assert s["method"] == n.split("-")[0] and s["seed"] == int(n[-1])
        assert s["noise"] == {"type": "symmetric", "rate": 0.3} and s["dataset"] == "synthetic"
        assert s["epochs"] == 1 and s["image_size"] == 32 and s["config"]["model"]["width"] == 16
        assert s["config"]["train"]["threads"] == 1
        prov = json.loads((d / "bench_run.json").read_text())
        assert prov["preset"] == "smoke" and "bench table1" in prov["command"] and prov["wall_seconds"] > 0
    assert (runs / "table1" / "lanet-symmetric-0.30-s0" / "label_distributions.npz").is_file()
    # seeds differ: different noise draws and initialisations
    s0, s1 = _summaries(runs, "baseline-symmetric-0.30")
    assert s0["config"]["train"]["seed"] == 0 and s1["config"]["train"]["seed"] == 1


def test_smoke_tables_hold_mean_and_std_of_the_summaries(smoke):
    runs, results, argv = smoke
    rows = {r["method"]: r for r in _csv_rows(results / "table1.csv")}
    assert set(rows) == {"baseline", "lanet"}
    md = (results / "table1.md").read_text()
    for method in ("baseline", "lanet"):
        ss = _summaries(runs, f"{method}-symmetric-0.30")
        assert len(ss) == 2
        fin = [100 * s["test_accuracy"] for s in ss]
        sel = [100 * s["test_accuracy_val_selected"] for s in ss]
        r = rows[method]
        assert r["seeds"] == "2" and r["seed_list"] == "0 1" and r["noise"] == "symmetric" and r["rate"] == "0.30"
        assert float(r["test_accuracy_mean_pct"]) == pytest.approx(statistics.mean(fin), abs=1e-5)
        assert float(r["test_accuracy_std_pct"]) == pytest.approx(statistics.stdev(fin), abs=1e-5)
        assert float(r["val_selected_mean_pct"]) == pytest.approx(statistics.mean(sel), abs=1e-5)
        assert float(r["val_selected_std_pct"]) == pytest.approx(statistics.stdev(sel), abs=1e-5)
        assert float(r["realised_noise_rate_mean"]) == pytest.approx(
            statistics.mean(s["realised_noise_rate"] for s in ss), abs=1e-6)
        row = "LA-Net" if method == "lanet" else "baseline"
        # the best test epoch (the release's rule) and the last-5 mean (EAC's) come from metrics.jsonl; a 1-epoch
        # smoke run has no 5 last epochs, so that rule shows a dash rather than a mean of fewer epochs
        peaks = [100 * max(json.loads(x)["test_accuracy"]
                           for x in (runs / "table1" / f"{method}-symmetric-0.30-s{seed}" / "metrics.jsonl")
                           .read_text().splitlines()) for seed in (0, 1)]
        cell = (f"| {row} | symmetric 30% | {statistics.mean(fin):.2f} ± {statistics.stdev(fin):.2f} | "
                f"{statistics.mean(sel):.2f} ± {statistics.stdev(sel):.2f} | "
                f"{statistics.mean(peaks):.2f} ± {statistics.stdev(peaks):.2f} | – | 2 |")
        assert cell in md, (cell, md)
        row_json = next(r for r in json.loads((results / "table1.json").read_text())["rows"] if r["method"] == method)
        assert 100 * row_json["peak_test_accuracy_mean"] == pytest.approx(statistics.mean(peaks))
        assert row_json["last5_test_accuracy_mean"] is None and row_json["last5_test_accuracy_std"] is None
        assert float(r["peak_test_accuracy_mean_pct"]) == pytest.approx(statistics.mean(peaks), abs=1e-5)
        has_mechanism = row_json["target_corrects_flipped_mean"] is not None
        assert has_mechanism == (row_json["method"] == "lanet")
    data = json.loads((results / "table1.json").read_text())
    assert len(data["runs"]) == 4 and not data["missing"] and not data["failed"]
    # run directories are stored relative to the runs folder: no machine path enters a results file
    assert sorted(r["run_dir"] for r in data["runs"]) == sorted(
        f"table1/{m}-symmetric-0.30-s{seed}" for m in ("baseline", "lanet") for seed in (0, 1))
    assert {r["seed"] for r in data["runs"]} == {0, 1}
    prov = data["provenance"]
    for key in ("machine", "torch", "preset", "commit", "command", "date"):
        assert prov[key], key
    # the command as typed, with the machine's folders made portable (runs/..., <abs>/name)
    assert prov["preset"] == "smoke" and prov["command"] == portable_command(["lanet", *argv])
    assert not machine_paths(json.dumps(data)), machine_paths(json.dumps(data))
    assert prov["machine"]["nproc"] >= 1
    assert "commit `" in md and "lanet bench table1" in md


def test_rerun_skips_finished_runs_and_renders_the_same(smoke, monkeypatch, tmp_path):
    runs, results, _ = smoke

    def must_not_train(*a, **kw):
        raise AssertionError("train called for a finished run")

    monkeypatch.setattr(bench_mod, "train", must_not_train)
    rep = run_benchmark(["table1"], "smoke", runs=runs, results=tmp_path, seeds=[0, 1], rates=[0.3],
                        methods=["baseline", "lanet"], progress=False)
    assert [o.status for o in rep.outcomes] == ["finished"] * 4 and not rep.failed
    old, new = _csv_rows(results / "table1.csv"), _csv_rows(tmp_path / "table1.csv")
    assert old == new
    # render-only without --seeds finds every seed on disk
    rep = run_benchmark(["table1"], "smoke", runs=runs, results=tmp_path, rates=[0.3], methods=["baseline", "lanet"],
                        render_only=True)
    assert rep.outcomes == [] and _csv_rows(tmp_path / "table1.csv") == old
    # without --methods every row of the table is rendered; the peers have no runs on disk here
    run_benchmark(["table1"], "smoke", runs=runs, results=tmp_path, rates=[0.3], render_only=True)
    rows = _csv_rows(tmp_path / "table1.csv")
    assert [r["method"] for r in rows] == ["baseline", "scn", "rul", "eac", "nla", "resup", "lanet"]
    assert [r["seeds"] for r in rows] == ["2", "0", "0", "0", "0", "0", "2"]
    # a table without LA-Net rows has no mechanism columns: every Markdown row has its header's cell count
    run_benchmark(["table1"], "smoke", runs=runs, results=tmp_path, rates=[0.3], methods=["baseline"], render_only=True)
    _assert_tables_well_formed((tmp_path / "table1.md").read_text())
    run_benchmark(["table1"], "smoke", runs=runs, results=tmp_path, rates=[0.3], render_only=True)
    _assert_tables_well_formed((tmp_path / "table1.md").read_text())


def _assert_tables_well_formed(md: str) -> None:
    """Each Markdown table's rows have as many cells as its header, and no cell is empty."""
    for block in md.split("\n\n"):
        lines = [x for x in block.splitlines() if x.startswith("|")]
        if not lines:
            continue
        width = lines[0].count("|")
        for line in lines:
            assert line.count("|") == width, (lines[0], line)
            assert "|  |" not in line and not line.endswith("| |"), line


def test_other_tables_reuse_equal_runs(smoke, monkeypatch, tmp_path):
    runs, _, _ = smoke
    b = Bench(get_preset("smoke"), runs)
    spec = next(s for s in grid("table2", [0]) if s.row == "LD+LM+EL+PL" and s.noise == "symmetric")
    assert spec.name == "lanet-symmetric-0.30-s0"
    plan = b.plan(spec)
    assert plan.status == "reused" and plan.run_dir == runs / "table1" / "lanet-symmetric-0.30-s0"
    k4 = next(s for s in grid("fig2", [0]) if s.row == "K=4" and s.noise == "symmetric")
    assert b.plan(k4).status == "new"
    # table2 rendered from the runs it can reuse: the full LA-Net row on 30% noise has both seeds, others none
    monkeypatch.setattr(bench_mod, "train", None)
    rep = run_benchmark(["table2"], "smoke", runs=runs, results=tmp_path, render_only=True)
    rows = {(r["row"], r["noise"]): r for r in _csv_rows(tmp_path / "table2.csv")}
    assert rows[("LD+LM+EL+PL", "symmetric")]["seeds"] == "2"
    assert rows[("LD", "symmetric")]["seeds"] == "0" and rows[("LD", "symmetric")]["test_accuracy_mean_pct"] == ""
    assert "missing runs" in rep.rendered[0].markdown
    # a run with another configuration under the same name is not used
    other = Bench(get_preset("smoke"), runs, overrides=["train.epochs=2"])
    own = RunSpec("table1", "LA-Net", "lanet", (), "symmetric", 0.3, 0)
    assert other.plan(own).status == "stale" and "train.epochs" in other.plan(own).message


def test_committed_records_continue_a_grid_on_a_machine_without_its_run_directories(smoke, monkeypatch, tmp_path):
    """A new machine has the committed results but not the run directories: the grid trains nothing the records
    hold (same name and configuration fingerprint), renders them unchanged, and trains what they do not hold."""
    _, results, _ = smoke
    committed = tmp_path / "committed"
    committed.mkdir()
    ledger = (results / "records.jsonl").read_text()
    assert len(ledger.splitlines()) == 4 and all(json.loads(x)["config_fingerprint"] for x in ledger.splitlines())
    (committed / "records.jsonl").write_text(ledger)
    old = {r["method"]: r for r in _csv_rows(results / "table1.csv")}
    trained = []

    def fake_train(cfg, out, resume=False, progress=True):
        trained.append(Path(out).name)
        raise RuntimeError("stop here")

    monkeypatch.setattr(bench_mod, "train", fake_train)
    empty_runs = tmp_path / "new-machine-runs"
    rep = run_benchmark(["table1"], "smoke", runs=empty_runs, results=committed, seeds=[0, 1, 2], rates=[0.3],
                        methods=["baseline", "lanet"], progress=False)
    assert [o.status for o in rep.outcomes] == ["recorded", "recorded", "failed"] * 2
    assert trained == ["baseline-symmetric-0.30-s2", "lanet-symmetric-0.30-s2"]  # only the seed no record holds
    new = {r["method"]: r for r in _csv_rows(committed / "table1.csv")}
    for method in ("baseline", "lanet"):
        for key in ("seeds", "seed_list", "test_accuracy_mean_pct", "val_selected_mean_pct",
                    "peak_test_accuracy_mean_pct", "target_accuracy_mean"):
            assert new[method][key] == old[method][key], (method, key)
    data = json.loads((committed / "table1.json").read_text())
    assert data["runs_from_records"] == 4 and len(data["runs"]) == 4
    assert "taken from the committed results" in (committed / "table1.md").read_text()
    # a record is matched by its configuration, not only its name: another epoch count retrains
    rep = run_benchmark(["table1"], "smoke", runs=empty_runs, results=committed, seeds=[0], rates=[0.3],
                        methods=["baseline"], overrides=["train.epochs=2"], progress=False)
    assert [o.status for o in rep.outcomes] == ["failed"]
    # ... and rendering it never drops the records of the other configuration
    assert (committed / "records.jsonl").read_text() == ledger
    (committed / "records.jsonl").write_text(ledger + "{not json\n")
    with pytest.raises(LanetError, match="records.jsonl, line 5"):
        run_benchmark(["table1"], "smoke", runs=empty_runs, results=committed, render_only=True)


def test_partial_run_is_resumed(tmp_path, monkeypatch):
    runs = tmp_path / "runs"
    kw = dict(runs=runs, results=tmp_path / "res", seeds=[0], rates=[0.3], methods=["baseline"],
              overrides=["train.epochs=2"], progress=False)
    restore = interrupt_second_epoch(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        run_benchmark(["table1"], "smoke", **kw)
    run = runs / "table1" / "baseline-symmetric-0.30-s0"
    assert (run / "checkpoint.pt").is_file() and not (run / "summary.json").exists()
    first_epoch = (run / "metrics.jsonl").read_text().splitlines()
    assert len(first_epoch) == 1
    restore()

    calls = []

    def spy(cfg, out, resume=False, progress=True):
        calls.append((Path(out).name, resume))
        return REAL_TRAIN(cfg, out, resume=resume, progress=progress)

    monkeypatch.setattr(bench_mod, "train", spy)
    rep = run_benchmark(["table1"], "smoke", **kw)
    assert calls == [("baseline-symmetric-0.30-s0", True)]
    assert [o.status for o in rep.outcomes] == ["resumed"]
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 2 and json.loads(lines[0])["test_accuracy"] == json.loads(first_epoch[0])["test_accuracy"]
    assert json.loads((run / "summary.json").read_text())["epochs"] == 2
    assert json.loads((run / "bench_run.json").read_text())["resumed"] is True


def test_a_failing_run_does_not_stop_the_grid(tmp_path, monkeypatch, capsys):
    runs = tmp_path / "runs"

    def flaky(cfg, out, resume=False, progress=True):
        if cfg.method.name == "baseline":
            raise RuntimeError("disk on fire")
        return REAL_TRAIN(cfg, out, resume=resume, progress=progress)

    monkeypatch.setattr(bench_mod, "train", flaky)
    args = ["bench", "table1", "--preset", "smoke", "--rates", "0.3", "--seeds", "0", "--runs", str(runs),
            "--results", str(tmp_path / "res"), "--methods", "baseline,lanet", "--quiet"]
    assert main(args) == 1
    captured = capsys.readouterr()
    assert "table1/baseline-symmetric-0.30-s0" in captured.err and "disk on fire" in captured.err
    bad, good = runs / "table1" / "baseline-symmetric-0.30-s0", runs / "table1" / "lanet-symmetric-0.30-s0"
    assert "RuntimeError: disk on fire" in (bad / "bench_error.txt").read_text()
    assert (good / "summary.json").is_file()
    rows = {r["method"]: r for r in _csv_rows(tmp_path / "res" / "table1.csv")}
    assert rows["baseline"]["seeds"] == "0" and rows["lanet"]["seeds"] == "1"
    md = (tmp_path / "res" / "table1.md").read_text()
    assert "failed runs: baseline-symmetric-0.30-s0: RuntimeError: disk on fire" in md
    # the next invocation retries the failed run and skips the finished one
    monkeypatch.setattr(bench_mod, "train", REAL_TRAIN)
    rep = run_benchmark(["table1"], "smoke", runs=runs, results=tmp_path / "res", seeds=[0], rates=[0.3],
                        methods=["baseline", "lanet"], progress=False)
    assert [o.status for o in rep.outcomes] == ["trained", "finished"] and not rep.failed
    assert not (bad / "bench_error.txt").exists() and (bad / "summary.json").is_file()


# ---------------------------------------------------------------------------------------------- JS and table6
def test_js_divergence_on_hand_computed_distributions():
    assert js_divergence([1.0, 0.0], [0.0, 1.0]) == pytest.approx(math.log(2))
    assert js_divergence([0.3, 0.7], [0.3, 0.7]) == pytest.approx(0.0, abs=1e-12)
    # p = (1/2, 1/2), q = (1, 0): m = (3/4, 1/4); KL(p||m) = 1/2 ln(4/3), KL(q||m) = ln(4/3); JS = 3/4 ln(4/3)
    assert js_divergence([0.5, 0.5], [1.0, 0.0]) == pytest.approx(0.75 * math.log(4 / 3))
    assert js_divergence([1.0, 0.0], [0.5, 0.5]) == pytest.approx(0.75 * math.log(4 / 3))  # symmetric
    assert js_divergence([2.0, 2.0], [3.0, 0.0]) == pytest.approx(0.75 * math.log(4 / 3))  # counts are normalised
    rows = js_divergence(np.array([[1, 0, 0], [0.2, 0.3, 0.5]]), np.array([[0, 0, 1], [0.2, 0.3, 0.5]]))
    assert rows.shape == (2,) and rows == pytest.approx([math.log(2), 0.0], abs=1e-12)
    with pytest.raises(ValueError):
        js_divergence([1, 0], [1, 0, 0])


def _js_reference(p, q):
    p = [x / sum(p) for x in p]
    q = [x / sum(q) for x in q]
    m = [(a + b) / 2 for a, b in zip(p, q)]
    kl = lambda a, b: sum(x * math.log(x / y) for x, y in zip(a, b) if x > 0)  # noqa: E731
    return 0.5 * kl(p, m) + 0.5 * kl(q, m)


def test_table6_on_synthetic_runs(smoke, tmp_path, monkeypatch):
    from lanet.data.synthetic import make_synthetic

    runs, _, _ = smoke
    monkeypatch.setattr(bench_mod, "train", None)  # rendering never trains
    rep = run_benchmark(["table6"], "smoke", runs=runs, results=tmp_path, render_only=True)
    md = rep.rendered[0].markdown
    assert "natural log" in md and "ln 2" in md
    rows = _csv_rows(tmp_path / "table6.csv")
    assert len(rows) == 1 and rows[0]["source_table"] == "table1" and rows[0]["run"] == "lanet-symmetric-0.30"
    assert rows[0]["seeds"] == "2"
    fs = make_synthetic(n=300, seed=0, size=32, channels=1)
    per_seed = {"js_learned": [], "js_onehot_train": [], "js_smoothed_train": [], "js_onehot_dataset": []}
    for seed in (0, 1):
        z = np.load(runs / "table1" / f"lanet-symmetric-0.30-s{seed}" / "label_distributions.npz")
        idx = [int(str(n)[3:10]) for n in z["names"]]  # syn0000123.png -> 123
        assert all(fs.split[i] == 0 for i in idx) and len(idx) == int(rows[0]["images"]) == 210
        votes = fs.votes[idx]
        onehot = lambda k: [1.0 if j == k else 0.0 for j in range(fs.num_classes)]  # noqa: E731
        per_seed["js_learned"].append(np.mean([_js_reference(list(d), list(v))
                                               for d, v in zip(z["distributions"], votes)]))
        per_seed["js_onehot_train"].append(np.mean([_js_reference(onehot(k), list(v))
                                                    for k, v in zip(z["train_labels"], votes)]))
        dist = z["distributions"]
        eps = (1 - dist.max(1).mean()) * fs.num_classes / (fs.num_classes - 1)
        per_seed["js_smoothed_train"].append(np.mean([
            _js_reference([(1 - eps) * a + eps / fs.num_classes for a in onehot(k)], list(v))
            for k, v in zip(z["train_labels"], votes)]))
        per_seed["js_onehot_dataset"].append(np.mean([_js_reference(onehot(fs.labels[i]), list(v))
                                                      for i, v in zip(idx, votes)]))
    for key, vals in per_seed.items():
        assert float(rows[0][f"{key}_mean"]) == pytest.approx(statistics.mean(vals), abs=1e-5), key
        assert float(rows[0][f"{key}_std"]) == pytest.approx(statistics.stdev(vals), abs=1e-5), key
    # the training labels carry 30% symmetric noise, the dataset labels do not: the noisy one-hots are further
    # from the human votes
    assert statistics.mean(per_seed["js_onehot_train"]) > statistics.mean(per_seed["js_onehot_dataset"])
    data = json.loads((tmp_path / "table6.json").read_text())
    assert data["log_base"] == "e" and len(data["runs"]) == 2


def test_table6_lists_runs_it_cannot_compute(smoke, tmp_path):
    import shutil

    runs, _, _ = smoke
    copy = tmp_path / "runs" / "table6" / "lanet-none-0.00-s0"
    shutil.copytree(runs / "table1" / "lanet-symmetric-0.30-s0", copy)
    z = dict(np.load(copy / "label_distributions.npz"))
    z["names"] = np.array([f"elsewhere{i}.png" for i in range(len(z["names"]))])
    np.savez(copy / "label_distributions.npz", **z)
    rep = run_benchmark(["table6"], "smoke", runs=tmp_path / "runs", results=tmp_path / "res", render_only=True)
    assert rep.rendered[0].data["rows"] == [] and "table6/lanet-none-0.00-s0" in rep.rendered[0].data["errors"][0]
    assert "not computed: table6/lanet-none-0.00-s0" in rep.rendered[0].markdown


def test_label_distribution_js_matches_by_name_not_order(tmp_path):
    from lanet.data.faceset import FaceSet

    votes = np.array([[10, 0], [5, 5], [0, 10], [1, 9]], dtype=np.float32)
    fs = FaceSet(images=np.zeros((4, 8, 8, 1), np.uint8), labels=[0, 0, 1, 1], split=[0, 0, 0, 2],
                 names=["a.png", "b.png", "c.png", "t.png"], num_classes=2, votes=votes)
    # rows in another order than the dataset: c, a, b
    np.savez(tmp_path / "label_distributions.npz", distributions=np.array([[0, 1], [1, 0], [0.5, 0.5]]),
             train_labels=np.array([0, 0, 0]), names=np.array(["c.png", "a.png", "b.png"]))
    js = label_distribution_js(tmp_path, fs)
    assert js["images"] == 3 and js["js_learned"] == pytest.approx(0.0, abs=1e-12)  # every row equals its votes
    # one-hot training labels (0, 0, 0) vs votes (c: [0,1], a: [1,0], b: [.5,.5]) -> (ln 2 + 0 + 3/4 ln 4/3) / 3
    assert js["js_onehot_train"] == pytest.approx((math.log(2) + 0.75 * math.log(4 / 3)) / 3)
    # dataset labels (c: 1, a: 0, b: 0) -> (0 + 0 + 3/4 ln 4/3) / 3
    assert js["js_onehot_dataset"] == pytest.approx(0.75 * math.log(4 / 3) / 3)
    # control: mean max of the learned rows is (1 + 1 + .5) / 3 = 5/6, so eps = (1 - 5/6) * 2 = 1/3 and the
    # smoothed training label is [5/6, 1/6] for every row
    assert js["smoothing_epsilon"] == pytest.approx(1 / 3) and js["learned_mean_max"] == pytest.approx(5 / 6)
    smooth = [5 / 6, 1 / 6]
    assert js["js_smoothed_train"] == pytest.approx(
        np.mean([_js_reference(smooth, v) for v in ([0, 1], [1, 0], [0.5, 0.5])]))
    assert js["train_label_differs_from_dataset"] == pytest.approx(1 / 3)
    # rows that leaked mass (saved before the eq. 4 fix) are normalised before the control's maximum is taken:
    # the same rows at a quarter of their mass give the same numbers, and the raw sums are reported
    np.savez(tmp_path / "label_distributions.npz", distributions=0.25 * np.array([[0, 1], [1, 0], [0.5, 0.5]]),
             train_labels=np.array([0, 0, 0]), names=np.array(["c.png", "a.png", "b.png"]))
    leaked = label_distribution_js(tmp_path, fs)
    assert leaked["learned_mean_max"] == pytest.approx(5 / 6) and leaked["saved_row_sum_max"] == pytest.approx(0.25)
    assert leaked["js_smoothed_train"] == pytest.approx(js["js_smoothed_train"])
    np.savez(tmp_path / "label_distributions.npz", distributions=np.array([[0, 1]]), train_labels=np.array([0]),
             names=np.array(["t.png"]))
    with pytest.raises(LanetError, match="not training images"):
        label_distribution_js(tmp_path, fs)


# ---------------------------------------------------------------------------------------------- grids and CLI
def test_grids_are_data_and_names_encode_specs():
    assert set(TABLES) == {"table1", "table5", "table2", "fig2", "annotator", "labelfile", "table6"}
    assert set(PRESETS) == {"smoke", "cpu", "cpu-face", "faithful", "paper"}
    t1 = grid("table1", [0, 1])
    assert len(t1) == 42 and {s.method for s in t1} == {"baseline", "scn", "rul", "eac", "nla", "resup", "lanet"}
    # the paper's row order: baseline, SCN, RUL, EAC, LA-Net, with the newer peers before LA-Net
    assert [s.row for s in t1 if s.rate == 0.1 and s.seed == 0] == ["baseline", "SCN", "RUL", "EAC", "NLA", "ReSup",
                                                                    "LA-Net"]
    assert [s.method for s in grid("table5", [0], rates=[0.3])] == ["baseline", "scn", "rul", "eac", "nla", "resup",
                                                                    "lanet"]
    assert [s.row for s in grid("table5", [0], methods=["eac", "baseline"], rates=[0.3])] == ["EAC", "baseline"]
    assert sorted({s.rate for s in t1}) == [0.1, 0.2, 0.3] and {s.noise for s in t1} == {"symmetric"}
    assert {s.noise for s in grid("table5", [0])} == {"asymmetric"}
    t2 = grid("table2", [0])
    assert [s.name for s in t2 if s.noise == "none"] == [
        "lanet-LD0-LM0-EL0-PL0-none-0.00-s0", "lanet-LM0-EL0-PL0-none-0.00-s0", "lanet-EL0-PL0-none-0.00-s0",
        "lanet-PL0-none-0.00-s0", "lanet-none-0.00-s0"]
    assert {(s.noise, s.rate) for s in t2} == {("none", 0.0), ("symmetric", 0.3)}
    assert dict(t2[0].params) == {"LD": False, "LM": False, "EL": False, "PL": False}
    f2 = grid("fig2", [0])
    assert [s.name for s in f2 if s.noise == "symmetric"] == [
        "lanet-K4-symmetric-0.30-s0", "lanet-symmetric-0.30-s0", "lanet-K12-symmetric-0.30-s0",
        "lanet-K16-symmetric-0.30-s0"]
    ann = grid("annotator", [0])
    assert [(s.method, s.noise) for s in ann] == [("baseline", "annotator"), ("lanet", "annotator")]
    assert {(s.method, s.noise) for s in grid("table6", [0])} == {("lanet", "none"), ("lanet", "annotator")}
    # --rates replaces the noisy columns (the clean column stays); --methods selects rows
    assert [(s.noise, s.rate) for s in grid("table2", [0], rates=[0.2]) if s.row == "none"] == [
        ("none", 0.0), ("symmetric", 0.2)]
    assert [s.name for s in grid("table1", [3], methods=["lanet"], rates=[0.4])] == ["lanet-symmetric-0.40-s3"]
    assert grid("fig2", [0], methods=["baseline"]) == []
    # rate 0 adds the clean column (CE on clean labels at the same budget), first
    assert [s.name for s in grid("table1", [0], methods=["baseline"], rates=[0, 0.3])] == [
        "baseline-none-0.00-s0", "baseline-symmetric-0.30-s0"]
    assert [s.noise for s in grid("table2", [0], rates=[0, 0.3]) if s.row == "none"] == ["none", "symmetric"]
    # every spec's configuration: the preset, then the spec
    b = Bench(get_preset("paper"), Path("unused"), root="/data/fp", device="cuda")
    cfg = b.config(next(s for s in f2 if s.row == "K=12" and s.noise == "symmetric"))
    assert (cfg.data.name, cfg.data.image_size, cfg.data.channels, cfg.data.root) == ("ferplus", 224, 3, "/data/fp")
    assert (cfg.model.width, cfg.train.batch_size, cfg.train.epochs, cfg.train.lr) == (64, 128, 80, 1e-3)
    assert cfg.augment.balanced and cfg.train.device == "cuda" and cfg.method.params == {"K": 12}
    assert (cfg.noise.type, cfg.noise.rate, cfg.train.seed, cfg.noise.seed) == ("symmetric", 0.3, 0, -1)
    cpu = Bench(get_preset("cpu"), Path("unused")).config(t1[0])
    assert (cpu.data.image_size, cpu.model.width, cpu.train.batch_size, cpu.train.epochs) == (48, 32, 64, 5)
    face = Bench(get_preset("cpu-face"), Path("unused")).config(t1[0])
    assert (face.data.train_limit, face.data.image_size, face.model.arch, face.model.pretrained) == (
        2000, 64, "dlib_resnet_small", "dlib")
    assert (face.train.epochs, face.train.lr, face.data.limit) == (40, 3e-4, 0)
    assert PRESETS["cpu-face"].seeds == (0, 1, 2)
    assert PRESETS["cpu"].seeds == (0,) and len(PRESETS["paper"].seeds) == 3 and PRESETS["smoke"].seeds == (0, 1)


def test_unknown_tables_presets_and_bad_options_are_errors(tmp_path, capsys):
    with pytest.raises(LanetError, match="unknown table 'table9'"):
        run_benchmark(["table9"], "smoke", runs=tmp_path)
    with pytest.raises(LanetError, match="unknown preset 'fast'"):
        run_benchmark(["table1"], "fast", runs=tmp_path)
    with pytest.raises(LanetError, match="rates"):
        run_benchmark(["table1"], "smoke", runs=tmp_path, rates="0.3,x")
    with pytest.raises(LanetError, match="unknown method"):
        run_benchmark(["table1"], "smoke", runs=tmp_path, methods=["magic"])
    assert main(["bench", "table9", "--preset", "smoke", "--runs", str(tmp_path)]) == 2
    assert "unknown table" in capsys.readouterr().err
    assert main(["bench", "table1", "--preset", "cpu", "--root", str(tmp_path / "nowhere"),
                 "--runs", str(tmp_path / "r")]) == 2
    assert "nowhere" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_dry_run_lists_runs_and_writes_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(bench_mod, "train", None)
    assert main(["bench", "all", "--preset", "smoke", "--seeds", "0", "--runs", str(tmp_path / "r"),
                 "--results", str(tmp_path / "res"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "[64/64] table6/lanet-annotator-0.00-s0: new" in out  # 7 rows x 6 columns of table1/5 + the rest
    assert "table2/lanet-symmetric-0.30-s0: new (reuses table1/lanet-symmetric-0.30-s0" in out
    assert not (tmp_path / "r").exists() and not (tmp_path / "res").exists()


def test_bench_help_explains_every_option():
    out = subprocess.run([sys.executable, "-m", "lanet.cli", "bench", "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    sub = build_parser()._subparsers._group_actions[0].choices["bench"]  # noqa: SLF001
    for action in sub._actions:  # noqa: SLF001
        if action.option_strings:
            assert action.help, action.option_strings
            assert action.option_strings[-1] in out.stdout
    for word in list(TABLES) + list(PRESETS):
        assert word in out.stdout


@pytest.mark.ferplus
def test_cpu_preset_plans_ferplus_runs(ferplus_root, capsys):
    """Dry run only: no FERPlus training in the test suite."""
    rep = run_benchmark(["table1", "annotator"], "cpu", root=str(ferplus_root), runs="/nonexistent/runs",
                        dry_run=True)
    assert len(rep.outcomes) == 23 and {o.status for o in rep.outcomes} == {"new"}  # 7 x 3 rates + 2
    cfg = Bench(get_preset("cpu"), Path("x"), root=str(ferplus_root)).config(rep.outcomes[-1].spec)
    assert cfg.data.name == "ferplus" and Path(cfg.data.root) == ferplus_root.resolve()
    assert cfg.noise.type == "annotator"


def test_trajectory_gives_the_release_rule_and_eacs_last5_rule(tmp_path):
    """Best test epoch (first of ties), mean of exactly the last 5 epochs, final-epoch mechanism diagnostics."""
    from lanet.bench.render import _trajectory

    accs = [0.50, 0.70, 0.62, 0.70, 0.60, 0.58, 0.56, 0.54]
    lines = [{"epoch": e, "test_accuracy": a} for e, a in enumerate(accs)]
    lines[-1].update({"neighbour_purity_u": 0.4, "neighbour_purity_v": 0.3, "target_agrees_clean_label": 0.65})
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    t = _trajectory(tmp_path)
    assert t["peak_test_accuracy"] == 0.70 and t["peak_epoch"] == 2
    assert t["last5_test_accuracy"] == pytest.approx(statistics.mean(accs[-5:]))
    assert t["neighbour_purity_u"] == 0.4 and t["neighbour_purity_v"] == 0.3
    assert t["target_agrees_clean_label"] == 0.65 and "confident" not in t
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines[:4]))
    assert _trajectory(tmp_path)["last5_test_accuracy"] is None  # fewer than 5 epochs: no last-5 mean


# ---------------------------------------------------------------------------------------------- labelfile
def _vote_label_file():
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "vote_label_file.py"
    spec = importlib.util.spec_from_file_location("vote_label_file", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_labelfile_table_trains_on_the_file_and_reports_against_the_dataset(tmp_path, monkeypatch):
    from lanet.config import Config, apply_dict
    from lanet.data.loaders import load_faceset

    monkeypatch.setenv("LANET_CACHE", str(tmp_path / "cache"))
    specs = grid("labelfile", [0])
    assert [(s.method, s.noise, s.name) for s in specs] == [("baseline", "label_file", "baseline-label_file-0.00-s0"),
                                                           ("lanet", "label_file", "lanet-label_file-0.00-s0")]
    with pytest.raises(LanetError, match="pass --labels FILE.csv"):
        Bench(get_preset("smoke"), tmp_path).config(specs[0])
    with pytest.raises(LanetError, match="table labelfile trains on a label file: pass --labels"):
        run_benchmark(["labelfile"], "smoke", runs=tmp_path / "r")
    # a second annotation drawn from the synthetic faces' own votes (the FERPlus example's script)
    cfg = Config()
    apply_dict(cfg, json.loads(json.dumps(get_preset("smoke").config)))
    labels = tmp_path / "one_vote.csv"
    rows, differ = _vote_label_file().write_label_file(load_faceset(cfg.data), 0, labels)
    assert rows == len(load_faceset(cfg.data).indices("train")) and 0 < differ < rows
    with pytest.raises(LanetError, match="--labels is used by the label-file table"):
        run_benchmark(["table1"], "smoke", runs=tmp_path / "r", labels=str(labels))
    with pytest.raises(LanetError, match="label file not found"):
        run_benchmark(["labelfile"], "smoke", runs=tmp_path / "r", labels=str(tmp_path / "nope.csv"))
    run_cfg = Bench(get_preset("smoke"), tmp_path, labels=str(labels)).config(specs[1])
    assert run_cfg.data.labels == str(labels.resolve()) and run_cfg.noise.type == "none"

    rep = run_benchmark(["labelfile"], "smoke", runs=tmp_path / "r", results=tmp_path / "res", seeds=[0],
                        methods=["baseline"], labels=str(labels), progress=False)
    (o,) = rep.outcomes
    assert o.status == "trained"
    summary = json.loads((o.run_dir / "summary.json").read_text())
    assert summary["noise"]["type"] == "label_file" and summary["realised_noise_rate"] == pytest.approx(differ / rows)
    (r,) = rep.rendered
    assert "--labels one_vote.csv" in r.markdown and "| label file |" in r.markdown
    assert f"{100 * differ / rows:.1f}%" in r.markdown
    assert r.data["label_file"]["sha256"] and r.data["label_file"]["rows"] == rows
    assert "--labels" in r.data["provenance"]["command"]
    # rendering again needs the same file; 'all' without one leaves the table out
    again = run_benchmark(["labelfile"], "smoke", runs=tmp_path / "r", results=tmp_path / "res2", seeds=[0],
                          methods=["baseline"], labels=str(labels), render_only=True)
    assert again.rendered[0].data["rows"][0]["seeds"] == 1
    plan = run_benchmark(["all"], "smoke", runs=tmp_path / "r", seeds=[0], dry_run=True)
    assert all(o.spec.table != "labelfile" for o in plan.outcomes)


def test_method_variants_are_rows_of_their_own(tmp_path):
    """``--methods lanet:consistency=1:sharpen=0.5``: a labelled row, its own run names, typed hyperparameters,
    the paper's LA-Net row beside it, and a one-line error for a bad spec."""
    from lanet.bench.tables import parse_method_spec, table_layout

    assert parse_method_spec("lanet:consistency=1:sharpen=0.5:PL=0:neighbours=memory") == (
        "lanet", (("consistency", 1.0), ("sharpen", 0.5), ("PL", False), ("neighbours", "memory")))
    assert parse_method_spec("eac") == ("eac", ())
    rows, _ = table_layout("table1", ["baseline", "lanet", "lanet:consistency=1"], [0.3])
    assert [r.label for r in rows] == ["baseline", "LA-Net", "LA-Net (consistency=1.0)"]
    specs = grid("table1", [100], ["lanet", "lanet:consistency=1", "lanet:sharpen=1.0"], [0.3])
    assert [s.name for s in specs] == ["lanet-symmetric-0.30-s100", "lanet-consistency1.0-symmetric-0.30-s100",
                                       "lanet-symmetric-0.30-s100"]  # a default value names the paper's run
    bench = Bench(get_preset("smoke"), tmp_path / "runs")
    assert bench.config(specs[1]).method.params["consistency"] == 1.0
    for bad, what in (("lanet:nope=1", "no hyperparameter 'nope'"), ("lanet:K=eight", "K must be int, got 'eight'"),
                      ("lanet:K", "is not KEY=VALUE"), ("nosuch:K=1", "nosuch")):
        with pytest.raises(LanetError, match=what):
            table_layout("table1", [bad], [0.3])
    with pytest.raises(LanetError, match="set their own hyperparameters"):
        table_layout("table2", ["lanet:K=4"], [0.3])


def test_tuning_seeds_stay_out_of_reported_tables(smoke, tmp_path):
    """A run at a tuning seed (100 and up) in the same runs folder is shown only when --seeds names it."""
    import shutil

    src, _, _ = smoke
    runs = tmp_path / "runs"
    shutil.copytree(src, runs)
    kw = dict(runs=runs, rates=[0.3], methods=["baseline"], progress=False)
    run_benchmark(["table1"], "smoke", results=tmp_path / "tune", seeds=[100], **kw)
    assert _csv_rows(tmp_path / "tune" / "table1.csv")[0]["seed_list"] == "100"
    run_benchmark(["table1"], "smoke", results=tmp_path / "rep", render_only=True, **kw)
    assert _csv_rows(tmp_path / "rep" / "table1.csv")[0]["seed_list"] == "0 1"
    run_benchmark(["table1"], "smoke", results=tmp_path / "rep", render_only=True, seeds=[0, 1, 100], **kw)
    assert _csv_rows(tmp_path / "rep" / "table1.csv")[0]["seed_list"] == "0 1 100"


def test_a_render_keeps_every_row_its_results_folder_has_shown(smoke, tmp_path):
    """Finishing one row (--methods baseline) re-renders the table with every row the results folder's ledger
    holds, so a subset run or a second lane cannot drop committed rows; records of another configuration and
    tuning seeds stay out."""
    import shutil

    from lanet.bench.known import method_spec_text
    from lanet.bench.tables import parse_method_spec

    runs, results, _ = smoke
    folder = tmp_path / "results"
    shutil.copytree(results, folder)
    run_benchmark(["table1"], "smoke", runs=runs, results=folder, rates=[0.3], methods=["baseline"], render_only=True)
    rows = _csv_rows(folder / "table1.csv")
    assert [r["method"] for r in rows] == ["baseline", "lanet"] and [r["seeds"] for r in rows] == ["2", "2"]
    # the ledger of another results folder is not this one's: a fresh folder renders what it is asked
    run_benchmark(["table1"], "smoke", runs=runs, results=tmp_path / "fresh", rates=[0.3], methods=["baseline"],
                  render_only=True)
    assert [r["method"] for r in _csv_rows(tmp_path / "fresh" / "table1.csv")] == ["baseline"]
    # another configuration matches no record: no row is added for it
    run_benchmark(["table1"], "smoke", runs=runs, results=folder, rates=[0.3], methods=["baseline"],
                  overrides=["train.epochs=2"], render_only=True)
    assert [r["method"] for r in _csv_rows(folder / "table1.csv")] == ["baseline"]
    for method, params in (("lanet", {"consistency": 1.0, "neighbours": "memory"}), ("lanet", {"PL": False}),
                           ("eac", {})):
        assert parse_method_spec(method_spec_text(method, params)) == (method, tuple(params.items()))
