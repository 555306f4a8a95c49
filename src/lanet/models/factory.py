"""The backbone factory: :func:`create_model` builds any architecture by name, the ResNets of
:mod:`lanet.models.resnet` and dlib's face-recognition ResNet of :mod:`lanet.models.dlib_resnet`. It lives apart
from both so that neither architecture module imports the other."""

from __future__ import annotations

from ..errors import LanetError
from .dlib_resnet import VARIANTS, DlibResNet, create_dlib_resnet
from .resnet import ARCHS, ResNet
from .state import load_pretrained


def create_model(arch: str, num_classes: int, in_chans: int, dropout: float = 0.0, pretrained: str = "",
                 width: int = 64) -> ResNet | DlibResNet:
    """Create a backbone + classifier by name; ``pretrained`` is a checkpoint loaded with :func:`load_pretrained`.

    ``width`` is the base channel count of the ResNets (64 for the standard networks; 32 gives a ~4x cheaper
    network of the same depth for laptop-scale runs; pretrained checkpoints need 64). The ``dlib_resnet*``
    architectures (:mod:`lanet.models.dlib_resnet`: dlib's face-recognition ResNet, fixed widths, ``width`` does
    not apply) also take ``pretrained="dlib"``: the weights installed with ``face_recognition_models``."""
    if arch in VARIANTS:
        return create_dlib_resnet(arch, num_classes, in_chans, dropout, pretrained)
    if arch not in ARCHS:
        raise LanetError(f"unknown architecture {arch!r}; expected one of {', '.join([*ARCHS, *VARIANTS])}")
    if width < 8 or width % 8:
        raise LanetError(f"model.width must be a multiple of 8 and at least 8, got {width}")
    if pretrained == "dlib":
        raise LanetError(f"model.pretrained=dlib is dlib's face-recognition ResNet: it needs --arch dlib_resnet or "
                         f"dlib_resnet_small, not {arch}")
    model = ARCHS[arch](num_classes=num_classes, in_chans=in_chans, dropout=dropout, width=width)
    if pretrained:
        load_pretrained(model, pretrained)
    return model
