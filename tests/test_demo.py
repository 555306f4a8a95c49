import json

from lanet.cli import main


def test_demo_writes_one_summary_entry_per_method(tmp_path, capsys):
    out = tmp_path / "demo"
    code = main(["demo", "--out", str(out), "--epochs", "1", "--size", "300", "--device", "cpu", "--quiet"])
    assert code == 0
    s = json.loads((out / "summary.json").read_text())
    assert set(s["methods"]) == {"baseline", "lanet"}
    assert s["noise"] == {"type": "symmetric", "rate": 0.3}
    for name, r in s["methods"].items():
        run = json.loads((out / name / "summary.json").read_text())
        assert r["test_accuracy"] == run["test_accuracy"] and run["method"] == name
        assert 0.2 < run["realised_noise_rate"] < 0.4
    printed = capsys.readouterr().out
    assert "baseline" in printed and "lanet" in printed and "clean test accuracy" in printed
