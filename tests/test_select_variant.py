"""benchmarks/select_variant.py: variants ranked on validation accuracy of tuning seeds only, never test."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "select_variant.py"
_spec = importlib.util.spec_from_file_location("select_variant", _PATH)
sv = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(sv)


def _run(row: str, seed: int, val: list[float], test: list[float], params: dict | None = None,
         method: str = "lanet") -> dict:
    return {"name": f"{row}-s{seed}", "row": row, "method": method, "params": params or {}, "noise": "symmetric",
            "rate": 0.3, "seed": seed, "val_accuracy_per_epoch": val, "test_accuracy_per_epoch": test,
            "test_accuracy": test[-1]}


def test_ranks_on_validation_and_ignores_test(tmp_path, capsys):
    # A's validation is better, B's test is far better: the choice must follow validation
    runs = [_run("LA-Net", 100, [0.50, 0.60, 0.55], [0.90, 0.95, 0.99]),
            _run("LA-Net", 101, [0.52, 0.58, 0.56], [0.90, 0.95, 0.99]),
            _run("LA-Net (consistency=1.0)", 100, [0.55, 0.62, 0.61], [0.10, 0.10, 0.10], {"consistency": 1.0}),
            _run("LA-Net (consistency=1.0)", 101, [0.57, 0.60, 0.59], [0.10, 0.10, 0.10], {"consistency": 1.0})]
    res = sv.select(sv.validation_view({"runs": runs}))["symmetric 0.30"]
    assert res["chosen"] == "LA-Net (consistency=1.0)"
    top = res["ranking"][0]
    assert top["val_final"] == pytest.approx(0.60) and top["val_best"] == pytest.approx(0.61)
    assert top["criterion"] == pytest.approx(0.605) and top["seeds"] == [100, 101]
    assert res["ranking"][1]["criterion"] == pytest.approx((0.555 + 0.59) / 2)
    assert not any("test" in k for k in sv.validation_view({"runs": runs})[0])  # test never reaches the choice
    table = tmp_path / "table1.json"
    table.write_text(json.dumps({"runs": runs}))
    assert sv.main([str(table), "--out", str(tmp_path / "sel.json")]) == 0
    assert "chosen LA-Net (consistency=1.0)" in capsys.readouterr().out
    assert json.loads((tmp_path / "sel.json").read_text())["columns"]["symmetric 0.30"]["chosen"].startswith("LA-Net (")


def test_refuses_reported_seeds_and_unequal_grids(tmp_path, capsys):
    with pytest.raises(sv.SelectionError, match="seed 0 is a reported seed"):
        sv.validation_view({"runs": [_run("LA-Net", 0, [0.5], [0.5])]})
    with pytest.raises(sv.SelectionError, match="different tuning seeds"):
        sv.select(sv.validation_view({"runs": [_run("A", 100, [0.5], [0.5]), _run("A", 101, [0.5], [0.5]),
                                               _run("B", 100, [0.6], [0.6])]}))
    with pytest.raises(sv.SelectionError, match="no finished runs"):
        sv.validation_view({"runs": []})
    bad = tmp_path / "bad.json"
    bad.write_text("{nope")
    assert sv.main([str(bad)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("select_variant: ") and "bad.json" in err and len(err.strip().splitlines()) == 1


def test_peers_are_references_not_candidates(tmp_path, capsys):
    runs = [_run("LA-Net", 100, [0.50, 0.60, 0.58], [0.5, 0.5, 0.5]),
            _run("LA-Net (sharpen=0.5)", 100, [0.52, 0.61, 0.59], [0.5, 0.5, 0.5], {"sharpen": 0.5}),
            _run("EAC", 100, [0.60, 0.64, 0.63], [0.5, 0.5, 0.5], method="eac")]
    res = sv.select(sv.validation_view({"runs": runs}))["symmetric 0.30"]
    assert res["chosen"] == "LA-Net (sharpen=0.5)" and res["leads_references"] is False
    assert [x["candidate"] for x in res["ranking"]] == [False, True, True]  # EAC ranks first, as a reference
    assert sv.select(sv.validation_view({"runs": runs}), None)["symmetric 0.30"]["chosen"] == "EAC"
    with pytest.raises(sv.SelectionError, match="no row of method 'rul'"):
        sv.select(sv.validation_view({"runs": runs}), "rul")
    table = tmp_path / "table1.json"
    table.write_text(json.dumps({"runs": runs}))
    assert sv.main([str(table)]) == 0
    out = capsys.readouterr().out
    assert "chosen LA-Net (sharpen=0.5) (a reference row ranks above it on validation)" in out
    assert "| EAC | reference |" in out
