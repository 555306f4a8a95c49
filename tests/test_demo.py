import json

from lanet.cli import main


def test_demo_writes_one_summary_entry_per_method(tmp_path, capsys):
    out = tmp_path / "demo"
    code = main(["demo", "--out", str(out), "--epochs", "2", "--size", "300", "--train-images", "120",
                 "--device", "cpu", "--quiet"])
    assert code == 0
    s = json.loads((out / "summary.json").read_text())
    assert set(s["methods"]) == {"baseline", "lanet"}
    assert s["noise"] == {"type": "symmetric", "rate": 0.3} and s["train_images"] == 120
    for name, r in s["methods"].items():
        run = json.loads((out / name / "summary.json").read_text())
        assert r["test_accuracy"] == run["test_accuracy"] and run["method"] == name
        assert 0.15 < run["realised_noise_rate"] < 0.45
        curve = r["test_accuracy_by_epoch"]
        assert len(curve) == 2 and r["test_accuracy"] == curve[-1]
        assert r["test_accuracy_peak"] == max(curve) and curve[r["test_peak_epoch"] - 1] == max(curve)
    printed = capsys.readouterr().out
    assert "baseline" in printed and "lanet" in printed and "clean test accuracy" in printed
    # the per-epoch curve: one row per epoch, each method's peak starred
    assert "clean test accuracy per epoch" in printed
    rows = [ln.split() for ln in printed.splitlines() if ln.split()[:1] in (["1"], ["2"])]
    assert [r[0] for r in rows] == ["1", "2"] and sum(cell.endswith("*") for r in rows for cell in r) == 2
