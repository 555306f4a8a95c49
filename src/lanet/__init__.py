"""lanet: facial expression recognition that stays reliable when labels are wrong (LA-Net, ICCV 2023)."""

from .classes import CLASSES
from .errors import LanetError

__version__ = "0.1.0"
__all__ = ["CLASSES", "LanetError", "Predictor", "__version__"]


def __getattr__(name: str) -> type:  # lazy: ``import lanet`` (and ``lanet --help``) need not load torch
    if name == "Predictor":
        from .predict import Predictor

        return Predictor
    raise AttributeError(f"module 'lanet' has no attribute {name!r}")
