"""lanet: facial expression recognition that stays reliable when labels are wrong (LA-Net, ICCV 2023)."""

from .classes import CLASSES
from .errors import LanetError

__version__ = "0.1.0"
__all__ = ["CLASSES", "LanetError", "__version__"]
