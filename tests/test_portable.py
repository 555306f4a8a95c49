"""Committed results hold no folder of the machine that made them (lanet.portable)."""

from pathlib import Path

from lanet.portable import machine_paths, portable_command, portable_path

REPO = Path(__file__).resolve().parents[1]


def test_portable_path_rules():
    assert portable_path("runs/bench/x") == "runs/bench/x"  # relative: unchanged
    assert portable_path("/work/runs/bench/cpu/table1/lanet-s0") == "runs/bench/cpu/table1/lanet-s0"
    assert portable_path("/a/runs/b/runs/c") == "runs/c"  # the innermost runs folder
    assert portable_path("/work/main/benchmarks/results/cpu", start="/work/main") == "benchmarks/results/cpu"
    assert portable_path("/work/shared/data/ferplus", start="/work/main") == "../shared/data/ferplus"
    assert portable_path("/tmp/lp/bwork/model.pt", start="/work/main") == "<abs>/model.pt"


def test_portable_command_rewrites_every_path_argument():
    cmd = portable_command(["/work/main/.venv/bin/python3", "x.py", "--runs", "/work/runs/bench/cpu",
                            "--out=/tmp/q/o.json", "--seed", "3"], start="/work/main")
    assert cmd == "python3 x.py --runs runs/bench/cpu '--out=<abs>/o.json' --seed 3"
    assert not machine_paths(cmd)


def test_machine_paths_finds_them_and_only_them():
    assert machine_paths('{"run": "/work/runs/x", "f": "/tmp/a/b.pt"}') == ["/work/runs/x", "/tmp/a/b.pt"]
    assert machine_paths("C:\\Users\\me\\runs") == ["C:\\Users\\me\\runs"]
    assert not machine_paths("runs/bench/cpu ../shared/data/ferplus <abs>/model.pt 3/4 https://x.org/tmp/a")


def test_committed_results_hold_no_machine_path():
    found = {}
    for p in sorted((REPO / "benchmarks" / "results").rglob("*")):
        if p.is_file() and p.suffix in (".json", ".jsonl", ".md", ".csv", ".txt"):
            hits = machine_paths(p.read_text(errors="replace"))
            if hits:
                found[str(p.relative_to(REPO))] = hits[:2]
    assert not found, f"machine paths in committed results (lanet.portable rewrites them): {found}"
