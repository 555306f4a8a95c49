"""``lanet summary``: rendered bench tables side by side, the best mean per column bold among rows on the same seeds."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from lanet.bench.summary import summarise, to_csv, to_markdown
from lanet.cli import main
from lanet.errors import LanetError


def _row(row, labels, seeds, final, val, peak, last5, method=None, std=0.01):
    return {"row": row, "method": method or row.lower(), "training_labels": labels, "seed_list": seeds,
            "seeds": len(seeds), "test_accuracy_mean": final, "test_accuracy_std": std,
            "val_selected_mean": val, "val_selected_std": std, "peak_test_accuracy_mean": peak,
            "peak_test_accuracy_std": std, "last5_test_accuracy_mean": last5, "last5_test_accuracy_std": std,
            "train_seconds_mean": 100.0}


def _table(path: Path, title: str, rows: list[dict]) -> Path:
    path.write_text(json.dumps({"title": title, "rows": rows,
                                "provenance": {"preset": "p", "commit": "abc1234", "date": "2026-12-04"}}))
    return path


@pytest.fixture
def tables(tmp_path):
    t1 = _table(tmp_path / "table1.json", "symmetric", [
        _row("baseline", "clean", [0, 1, 2], 0.70, 0.71, 0.72, 0.70),
        _row("EAC", "clean", [], None, None, None, None),  # not run: left out
        _row("baseline", "symmetric 30%", [0, 1, 2], 0.50, 0.60, 0.61, 0.51),
        _row("EAC", "symmetric 30%", [0, 1, 2], 0.55, 0.64, 0.65, 0.56),
        _row("LA-Net", "symmetric 30%", [0, 1, 2], 0.60, 0.62, 0.63, 0.60, method="lanet"),
        _row("SCN", "symmetric 30%", [0], 0.90, 0.90, 0.90, 0.90),  # one seed: shown, never bold
    ])
    t5 = _table(tmp_path / "table5.json", "asymmetric", [
        _row("baseline", "asymmetric 30%", [0, 1, 2], 0.52, 0.63, 0.63, 0.52),
        _row("LA-Net (sharpen=0.5)", "asymmetric 30%", [0, 1, 2], 0.52, 0.61, 0.62, 0.58, method="lanet"),
    ])
    return t1, t5


def test_best_per_column_among_rows_on_the_same_seeds(tables):
    s = summarise(list(tables))
    by = {(r.block, r.row): r for r in s.rows}
    assert ("clean", "EAC") not in by  # rows without runs are left out
    sym = {r.row: r.bold for r in s.rows if r.block == "symmetric 30%"}
    assert sym["LA-Net"] == {"test_accuracy_mean", "last5_test_accuracy_mean"}
    assert sym["EAC"] == {"val_selected_mean", "peak_test_accuracy_mean"}
    assert sym["SCN"] == set() and sym["baseline"] == set()  # SCN's 0.90 is on one seed only
    asym = {r.row: r.bold for r in s.rows if r.block == "asymmetric 30%"}
    assert "test_accuracy_mean" in asym["baseline"] and "test_accuracy_mean" in asym["LA-Net (sharpen=0.5)"]  # a tie
    assert by[("clean", "baseline")].bold == set()  # alone in its block: nothing to lead


def test_markdown_csv_and_order(tables):
    s = summarise(list(tables), blocks=["asymmetric 30%", "symmetric 30%"], methods=["lanet", "EAC"])
    assert [(r.block, r.row) for r in s.rows] == [("asymmetric 30%", "LA-Net (sharpen=0.5)"),
                                                  ("symmetric 30%", "EAC"), ("symmetric 30%", "LA-Net")]
    md = to_markdown(s)
    assert "| symmetric 30% | LA-Net | **60.00 ± 1.00** | 62.00 ± 1.00 | 63.00 ± 1.00 | **60.00 ± 1.00** |" in md
    assert "`" + tables[1].as_posix() + "`: asymmetric (preset `p`, commit `abc1234`" in md
    rows = list(csv.DictReader(to_csv(s).splitlines()))
    assert rows[1]["row"] == "EAC" and rows[1]["best_in_block"] == "val_selected_mean peak_test_accuracy_mean"
    assert float(rows[1]["test_accuracy_mean"]) == pytest.approx(0.55)


def test_bad_inputs_are_one_line_errors(tmp_path, tables):
    with pytest.raises(LanetError, match="no such table"):
        summarise([tmp_path / "missing.json"])
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(LanetError, match="broken.json: not a readable bench table JSON"):
        summarise([tmp_path / "broken.json"])
    (tmp_path / "list.json").write_text("[]")
    with pytest.raises(LanetError, match="no 'rows' list"):
        summarise([tmp_path / "list.json"])
    bad = _table(tmp_path / "bad.json", "t", [_row("EAC", "clean", [0], "0.5", 0.5, 0.5, 0.5)])
    with pytest.raises(LanetError, match=r"bad.json: row 'EAC': test_accuracy_mean is '0.5', not a number"):
        summarise([bad])
    with pytest.raises(LanetError, match=r"no rows for training labels \['annotator'\]"):
        summarise(list(tables), blocks=["clean", "annotator"])


def test_cli_writes_three_files(tables, tmp_path, capsys):
    out = tmp_path / "out" / "summary"
    assert main(["summary", *map(str, tables), "--labels-order", "symmetric 30%", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| symmetric 30% | EAC |" in printed and "asymmetric" not in printed.split("Sources:")[0]
    for suffix in (".md", ".csv", ".json"):
        assert (tmp_path / "out" / f"summary{suffix}").is_file()
    data = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert {r["row"] for r in data["rows"]} == {"baseline", "EAC", "LA-Net", "SCN"}


def test_cli_error_exit_status(tmp_path, capsys):
    assert main(["summary", str(tmp_path / "nope.json")]) == 2
    assert "nope.json: no such table" in capsys.readouterr().err


def test_last5_and_seconds_from_the_runs_of_an_older_table(tmp_path):
    """A table rendered before its last-5 column: the means come from the per-epoch curves kept for its runs."""
    row = _row("EAC", "symmetric 30%", [0, 1], 0.5, 0.6, 0.7, None)
    row.update(noise="symmetric", rate=0.3, train_seconds_mean=None)
    runs = [{"row": "EAC", "noise": "symmetric", "rate": 0.3, "seed": 0, "train_seconds": 10.0,
             "test_accuracy_per_epoch": [0.1, 0.5, 0.5, 0.5, 0.5, 0.5]},  # last 5: 0.5
            {"row": "EAC", "noise": "symmetric", "rate": 0.3, "seed": 1, "train_seconds": 30.0,
             "test_accuracy_per_epoch": [0.9, 0.6, 0.6, 0.6, 0.7, 0.5]},  # last 5: 0.6
            {"row": "EAC", "noise": "asymmetric", "rate": 0.3, "seed": 0, "train_seconds": 99.0,
             "test_accuracy_per_epoch": [0.0] * 6}]  # another column: not mixed in
    path = tmp_path / "old.json"
    path.write_text(json.dumps({"title": "old", "rows": [row], "runs": runs}))
    (r,) = summarise([path]).rows
    assert r.values["last5_test_accuracy_mean"] == pytest.approx(0.55)
    assert r.values["last5_test_accuracy_std"] == pytest.approx(0.0707107, abs=1e-6)  # sample std of 0.5, 0.6
    assert r.train_seconds == pytest.approx(20.0)
    runs.pop(1)  # a seed without its run: no last-5 rather than a mean over fewer seeds
    path.write_text(json.dumps({"title": "old", "rows": [row], "runs": runs}))
    (r,) = summarise([path]).rows
    assert r.values["last5_test_accuracy_mean"] is None and r.train_seconds is None
