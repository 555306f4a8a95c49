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


def _run(row: str, seed: int, val: list[float], test: list[float], params: dict | None = None) -> dict:
    return {"name": f"{row}-s{seed}", "row": row, "method": "lanet", "params": params or {}, "noise": "symmetric",
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
