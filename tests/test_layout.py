"""The code layout: no module of ``src/lanet`` over 700 lines."""

from __future__ import annotations

from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
MAX_LINES = 700


def test_no_module_over_700_lines():
    sizes = {str(p.relative_to(SRC)): len(p.read_text(encoding="utf-8").splitlines())
             for p in sorted((SRC / "lanet").rglob("*.py"))}
    assert sizes, f"no modules found under {SRC / 'lanet'}"
    long = {path: n for path, n in sizes.items() if n > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines (split them by responsibility): {long}"
