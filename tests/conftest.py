import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FERPLUS = Path(os.environ.get("LANET_FERPLUS", REPO.parent / "shared" / "data" / "ferplus"))


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Every test writes caches into its own temporary folder, never into ~/.cache."""
    monkeypatch.setenv("LANET_CACHE", str(tmp_path_factory.mktemp("cache")))


@pytest.fixture
def ferplus_root() -> Path:
    if not (FERPLUS / "FER2013Train" / "label.csv").is_file():
        pytest.skip(f"FERPlus not found at {FERPLUS}; set LANET_FERPLUS to its folder")
    return FERPLUS
