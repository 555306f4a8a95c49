from pathlib import Path

from lanet.config import reference

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_has_the_current_configuration_reference():
    text = README.read_text()
    missing = [line for line in reference().splitlines() if line.strip() and line not in text]
    assert not missing, f"README configuration reference is stale; regenerate with `lanet config`: {missing[:3]}"


def test_readme_opens_with_the_two_commands():
    lines = README.read_text().splitlines()[:25]
    cmds = [x for x in lines if x.startswith("python -m venv")]
    assert len(cmds) == 2 and cmds[0].endswith("lanet demo") and cmds[1].endswith("python -m pytest -q")
