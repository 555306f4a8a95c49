"""Backbones: the ResNets (:mod:`.resnet`), dlib's face-recognition ResNet (:mod:`.dlib_resnet`, its weights read
by :mod:`.dlib_io`), checkpoint loading by key mapping shared by both (:mod:`.state`), the factory that builds
either by name (:mod:`.factory`) and exported classifiers (:mod:`.io`)."""

from . import resnet
from .factory import create_model

# ``create_model`` lived in resnet.py before the factory had its own module; ``from lanet.models.resnet import
# create_model`` keeps working because this package is initialised before any of its modules is imported.
# Set here, not imported by resnet.py, so that resnet.py needs neither the factory nor dlib_resnet.
resnet.create_model = create_model  # type: ignore[attr-defined]

__all__ = ["create_model"]
