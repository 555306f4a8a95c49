"""Model files of the ``face_recognition_models`` package (dlib's detectors, landmark predictors and face ResNet).

The package is located without importing it: its ``__init__`` needs ``pkg_resources``, which recent setuptools
no longer ships. Each file can be overridden with an environment variable naming another copy.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from .errors import LanetError

INSTALL_HINT = "pip install 'lanet[landmarks]'"


def face_model_file(name: str, env: str, needed_for: str) -> Path:
    """Path of ``models/<name>`` in the installed package, or of the file ``$env`` names.

    ``needed_for`` completes the error message ("<needed_for> needs the package ...").
    """
    override = os.environ.get(env, "")
    if override:
        path = Path(override).expanduser()
        if not path.is_file():
            raise LanetError(f"{env}={override}: file not found")
        return path
    try:
        spec = importlib.util.find_spec("face_recognition_models")
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise LanetError(f"{needed_for} needs the package face_recognition_models: {INSTALL_HINT}")
    path = Path(list(spec.submodule_search_locations)[0]) / "models" / name
    if not path.is_file():
        raise LanetError(f"{name} not found at {path}: reinstall with {INSTALL_HINT}")
    return path
