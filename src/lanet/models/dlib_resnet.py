"""dlib's face-recognition ResNet (``dlib_face_recognition_resnet_model_v1.dat``) as a lanet backbone.

A face-identity network that installs offline: the ``face_recognition_models`` package (lanet's ``landmarks``
extra) ships the weights of dlib's 128-d face descriptor, trained by Davis King on about 3 M faces of 7,485
identities; the package declares its models public domain (CC0 1.0). This module rebuilds the network in
PyTorch (29 conv layers, 5.6 M parameters), reads the weights with :mod:`lanet.models.dlib_io` (numpy, no
dlib), and puts it behind the same interface as :class:`lanet.models.resnet.ResNet` (``stem``,
``layer1..layer4``, ``pool``, ``forward_features``, ``forward_head``, ``fc``, ``num_features``,
``stage_channels``), so every method trains it unchanged. ``descriptor(x)`` gives dlib's 128-d face descriptor
(equal to ``dlib.face_recognition_model_v1(path).compute_face_descriptor(chip)`` to float32 rounding on
150 x 150 chips, in eval mode).

**Topology** (dlib's ``dnn_face_recognition_ex.cpp``): conv 7x7/2 (32), affine, ReLU, max-pool 3x3/2; residual
stages of 32 (3 blocks), 64 (4), 128 (3), 256 (3) and 256 (1), each stage after the first starting with a
downsampling block; global average pool; fc 256 -> 128 (no bias). A block is conv 3x3, affine, ReLU, conv 3x3,
affine, add the skip, ReLU; a downsampling block strides its first conv and average-pools (2x2/2) its skip.
dlib pads 0 wherever the stride is not 1, and its ``add_prev`` adds maps of different shapes by zero-padding
both at the END of the channel, row and column axes (top-left aligned); at 150 px that happens spatially in
the last two downsampling blocks. :func:`add_prev` does the same.

**Mapping onto layer1..layer4** (what LA-Net's two branches share): ``stem`` = conv, affine, ReLU, max-pool;
``layer1`` = the 32 stage (stride 4); ``layer2`` = the 64 stage; ``layer3`` = the 128 stage; ``layer4`` = both
256 stages (blocks 0-2 the first, block 3 the second). LA-Net shares ``stem`` + ``layer1`` between its
expression and landmark branches and deep-copies ``layer2..layer4`` (both 256 stages) for the landmark
branch, so both branches start from the same pretrained weights; its landmark pyramid works on
``stage_channels = (32, 64, 128, 256)``.

**Variants** (``--arch``): ``dlib_resnet`` is the exact topology and needs inputs of at least
:data:`MIN_EXACT_SIZE` px (its features are dlib's at 150 px). ``dlib_resnet_small`` pads the stride-2 layers
(conv 7x7 pad 3, max-pool pad 1, strided 3x3 convs pad 1, skip pools rounding up), runs on 48-96 px inputs and
reuses the same weights; its features no longer match dlib's, so the weights are only an initialisation that
fine-tuning must adapt.

**The affine layers** are BatchNorm with its statistics folded in (``y = scale * x + shift`` per channel).
Two forms, chosen by the arch name:

* ``..._affine`` (``dlib_resnet_affine``, ``dlib_resnet_small_affine``): :class:`Affine`, a learnable
  per-channel scale and shift without batch statistics. Exactly dlib's layer; fine-tuning without batch
  statistics is fragile at higher learning rates (a backbone at Adam 3e-4 collapsed to the majority class in
  our notes; 1e-4 trained).
* default (``dlib_resnet``, ``dlib_resnet_small``): :class:`FoldedBatchNorm2d`, a BatchNorm2d with gamma/beta
  = scale/shift, running mean 0 and running variance ``1 - eps`` (so eval mode is exactly dlib's layer). Plain
  training-mode BatchNorm would then re-normalise with batch statistics and distort the pretrained features
  (``scale * (x - mu_b) / sigma_b + shift`` instead of ``scale * x + shift``), so on its first training batch
  each converted layer re-parametrises itself to that batch's statistics (data-dependent init, as Glow's
  ActNorm): ``gamma = scale * sigma_b``, ``beta = shift + scale * mu_b``, running stats = (mu_b, sigma_b^2).
  Training then starts from the pretrained function in both modes and keeps BatchNorm's robustness. This
  is the default because the trainer uses one learning rate (Adam 1e-3 by default) for backbone and head,
  where the statistics-free form is at risk; ``benchmarks/dlib_backbone.py`` measures both.

**Input normalisation.** dlib feeds ``(pixel - mean_c) / 256`` with its per-channel means (R 122.782,
G 117.001, B 104.298), pixels 0..255 in RGB order. lanet's augmentation feeds ``(x - mean) / std`` with
``x`` in [0, 1] and its default statistics (ImageNet for RGB, 0.5 / 0.5 for grey:
:class:`lanet.data.augment.BatchAugment`). ``stem`` first undoes the latter and applies the former, a fixed
per-channel affine map (buffers ``input_scale``, ``input_shift``), so the pretrained filters see the inputs
they were trained on whatever lanet's normalisation.

**Grey input** (``in_chans=1``): a grey image replicated to RGB gives ``sum_c W_c * (p - mean_c) / 256``, so
the 1-channel conv1 takes the SUM of the three RGB filters over ``(p - m) / 256`` with ``m`` the average of
the three means, and its bias absorbs the rest, ``-sum_c (sum of W_c) * (mean_c - m) / 256`` (exact where the
conv is unpadded, i.e. ``dlib_resnet``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

from ..data.augment import IMAGENET_MEAN, IMAGENET_STD
from ..errors import LanetError
from ..facemodels import face_model_file
from .dlib_io import DlibNet, read_dlib_net
from .state import _normalise_key, load_state_dict_into, read_state_dict

#: dlib's input means (R, G, B) in pixel units (0..255), as stored in the model file.
DLIB_MEAN_RGB = (122.782, 117.001, 104.298)
DLIB_SCALE = 256.0  # dlib divides by 256, not 255
MODEL_FILE = "dlib_face_recognition_resnet_model_v1.dat"
INSTALL_HINT = "pip install 'lanet[landmarks]' (or face_recognition_models)"
STAGES = ((32, 3, 1), (64, 4, 2), (128, 3, 2), (256, 3, 2), (256, 1, 2))  # channels, blocks, first stride
DESCRIPTOR_DIM = 128

#: arch name -> (pad the stride-2 layers, normalisation form, output stride)
VARIANTS: dict[str, tuple[bool, str, int]] = {
    "dlib_resnet": (False, "bn", 32),
    "dlib_resnet_affine": (False, "affine", 32),
    "dlib_resnet_small": (True, "bn", 32),
    "dlib_resnet_small_affine": (True, "affine", 32),
    # both 256 stages at stride 1: a 4 x 4 last map at 64 px instead of 1 x 1 (EAC's attention maps need area)
    "dlib_resnet_small_os16": (True, "bn", 16),
}


def stage_strides(output_stride: int) -> tuple[int, ...]:
    """First-block stride of each of :data:`STAGES` for an output stride of 32 (dlib's) or 16 (the two 256
    stages unstrided; the filters are the same, only their step changes)."""
    if output_stride not in (16, 32):
        raise LanetError(f"dlib_resnet output stride must be 16 or 32, got {output_stride}")
    strides = tuple(s for _, _, s in STAGES)
    return strides if output_stride == 32 else strides[:3] + (1, 1)


# ------------------------------------------------------------------------------------------------ layers
class Affine(nn.Module):
    """dlib's ``affine`` layer: ``y = weight[c] * x + bias[c]``, a BatchNorm with its statistics folded in.

    ``weight`` and ``bias`` are learnable; there are no batch statistics in training or eval."""

    def __init__(self, channels: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def load_affine(self, scale: torch.Tensor, shift: torch.Tensor) -> None:
        with torch.no_grad():
            self.weight.copy_(scale)
            self.bias.copy_(shift)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)  # N x C x H x W


class FoldedBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d that starts as a folded affine layer (``scale * x + shift``) in eval AND training mode.

    :meth:`load_affine` sets gamma/beta = scale/shift, running mean 0, running var ``1 - eps`` (eval output is
    then exactly ``scale * x + shift``) and marks the layer for calibration: on its next training-mode forward it
    sets gamma = scale * sigma_b, beta = shift + scale * mu_b and the running statistics to (mu_b, sigma_b^2) of
    that batch (averaged over processes under torch.distributed), so that batch-statistics normalisation
    reproduces ``scale * x + shift`` on that batch. Without :meth:`load_affine` it is a plain BatchNorm2d.
    The flag is the buffer ``pending_calibration`` (saved in checkpoints, so a resumed run does not recalibrate).
    """

    def __init__(self, channels: int):
        super().__init__(channels)
        self.register_buffer("pending_calibration", torch.zeros((), dtype=torch.bool))

    def load_affine(self, scale: torch.Tensor, shift: torch.Tensor) -> None:
        with torch.no_grad():
            self.weight.copy_(scale)
            self.bias.copy_(shift)
            self.running_mean.zero_()
            self.running_var.fill_(1.0 - self.eps)  # sqrt(var + eps) = 1: eval mode is exactly the affine map
            self.num_batches_tracked.zero_()
            self.pending_calibration.fill_(True)

    @torch.no_grad()
    def _calibrate(self, x: torch.Tensor) -> None:
        xf = x.detach().float()
        stats = torch.stack([xf.mean((0, 2, 3)), (xf * xf).mean((0, 2, 3))])  # 2 x C: E[x], E[x^2]
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(stats)
            stats /= dist.get_world_size()
        mean, var = stats[0], (stats[1] - stats[0] ** 2).clamp(min=0)
        self.bias.add_(self.weight * mean)  # shift + scale * mu_b (weight still holds the scale)
        self.weight.mul_(torch.sqrt(var + self.eps))  # scale * sigma_b
        self.running_mean.copy_(mean)
        self.running_var.copy_(var)
        self.pending_calibration.fill_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and bool(self.pending_calibration):
            self._calibrate(x)
            # batch statistics as usual, but momentum 0: the running statistics stay exactly (mu_b, sigma_b^2)
            return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, True, 0.0, self.eps)
        return super().forward(x)


def add_prev(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """dlib's ``add_prev``: ``a + b`` where each is first zero-padded at the END of the channel, row and column
    axes to the larger of the two sizes (top-left aligned). N x C x H x W each."""
    if a.shape == b.shape:
        return a + b
    c, h, w = (max(a.shape[i], b.shape[i]) for i in (1, 2, 3))

    def pad(t: torch.Tensor) -> torch.Tensor:
        return F.pad(t, (0, w - t.shape[3], 0, h - t.shape[2], 0, c - t.shape[1]))

    return pad(a) + pad(b)


class DlibBlock(nn.Module):
    """conv 3x3 (stride s) -> norm -> ReLU -> conv 3x3 -> norm, plus the skip (2x2/2 average pool when s = 2),
    added with :func:`add_prev`, then ReLU."""

    def __init__(self, inplanes: int, planes: int, stride: int, pad_strided: bool, norm: Callable[[int], nn.Module]):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1 if stride == 1 or pad_strided else 0)
        self.bn1 = norm(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1)
        self.bn2 = norm(planes)
        # the padded variant rounds the pooled skip up, like its conv, so no border is dropped
        self.downsample = nn.AvgPool2d(2, 2, ceil_mode=pad_strided) if stride != 1 else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)  # N x C_in x H' x W'
        out = F.relu(self.bn1(self.conv1(x)), inplace=True)
        out = self.bn2(self.conv2(out))  # N x C x H' x W'
        return F.relu(add_prev(out, identity), inplace=True)


def _size_after(size: int, pad_strided: bool, output_stride: int = 32) -> list[int]:
    """Spatial size after the stem and after each stage for a ``size`` x ``size`` input (0 = too small)."""
    p = 1 if pad_strided else 0

    def strided(n: int, k: int) -> int:  # a k x k window at stride 2, padded k // 2 in the small variant
        pad = p * (k // 2)
        return (n + 2 * pad - k) // 2 + 1 if n > 0 and n + 2 * pad >= k else 0

    s = strided(strided(size, 7), 3)  # conv 7x7/2, max-pool 3x3/2
    sizes = [s]
    for stride in stage_strides(output_stride)[1:]:
        if stride == 1:
            sizes.append(s)
            continue
        conv = strided(s, 3)
        pool = (-(-s // 2) if pad_strided else s // 2) if s > 0 else 0  # the skip's 2x2/2 average pool
        s = max(conv, pool) if conv else 0  # add_prev pads to the larger map
        sizes.append(s)
    return sizes


def min_input_size(pad_strided: bool, output_stride: int = 32) -> int:
    """Smallest square input every layer of the variant can process."""
    return next(n for n in range(1, 1024) if min(_size_after(n, pad_strided, output_stride)) > 0)


def last_map_size(arch: str, image_size: int) -> int:
    """Side of the last feature map (``layer4``'s output) of a :data:`VARIANTS` network at ``image_size``."""
    pad_strided, _, output_stride = VARIANTS[arch]
    return _size_after(image_size, pad_strided, output_stride)[-1]


MIN_EXACT_SIZE = min_input_size(False)


# ------------------------------------------------------------------------------------------------ network
class DlibResNet(nn.Module):
    """dlib's face-recognition ResNet with a classifier head. ``forward(x)`` gives N x num_classes logits for
    N x in_chans x H x W input normalised the lanet way; ``descriptor(x)`` gives dlib's 128-d descriptor.

    Args:
        num_classes: classifier outputs (``fc``: 256 -> num_classes).
        in_chans: 1 (grey) or 3 (RGB).
        dropout: dropout before ``fc``.
        pad_strided: the small-input variant (padding on the stride-2 layers).
        output_stride: 32 (dlib's) or 16 (the two 256 stages unstrided: 4x the last map's area).
        norm: ``"bn"`` (:class:`FoldedBatchNorm2d`) or ``"affine"`` (:class:`Affine`).
        input_mean, input_std: the normalisation lanet applied to the input (default: BatchAugment's).
    """

    def __init__(self, num_classes: int = 8, in_chans: int = 3, dropout: float = 0.0, pad_strided: bool = False,
                 norm: str = "bn", input_mean: tuple[float, ...] | None = None,
                 input_std: tuple[float, ...] | None = None, output_stride: int = 32):
        super().__init__()
        if in_chans not in (1, 3):
            raise LanetError(f"dlib_resnet takes 1 or 3 input channels, got {in_chans}")
        if norm not in ("bn", "affine"):
            raise LanetError(f"dlib_resnet normalisation must be 'bn' or 'affine', got {norm!r}")
        self.num_classes, self.in_chans, self.pad_strided, self.norm = num_classes, in_chans, pad_strided, norm
        self.output_stride = output_stride
        strides = stage_strides(output_stride)
        self.min_size = min_input_size(pad_strided, output_stride)
        make_norm: Callable[[int], nn.Module] = FoldedBatchNorm2d if norm == "bn" else Affine
        p = 1 if pad_strided else 0
        self.conv1 = nn.Conv2d(in_chans, 32, 7, 2, 3 * p)
        self.bn1 = make_norm(32)
        self.maxpool = nn.MaxPool2d(3, 2, p)
        layers: list[list[nn.Module]] = []
        inplanes = 32
        for (planes, blocks, _), stride in zip(STAGES, strides):
            stage = [DlibBlock(inplanes, planes, stride, pad_strided, make_norm)]
            stage += [DlibBlock(planes, planes, 1, pad_strided, make_norm) for _ in range(1, blocks)]
            layers.append(stage)
            inplanes = planes
        self.layer1 = nn.Sequential(*layers[0])
        self.layer2 = nn.Sequential(*layers[1])
        self.layer3 = nn.Sequential(*layers[2])
        self.layer4 = nn.Sequential(*layers[3], *layers[4])  # both 256 stages: blocks 0-2, then block 3
        self.num_features = 256
        self.stage_channels = (32, 64, 128, 256)  # outputs of layer1..4
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.fc = nn.Linear(self.num_features, num_classes)
        # dlib's 256 -> 128 descriptor projection: not a parameter (training never uses it), not saved
        self.register_buffer("descriptor_weight", torch.zeros(DESCRIPTOR_DIM, 256), persistent=False)
        scale, shift = input_transform(in_chans, input_mean, input_std)
        self.register_buffer("input_scale", scale.view(1, -1, 1, 1), persistent=False)
        self.register_buffer("input_shift", shift.view(1, -1, 1, 1), persistent=False)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
        for m in self.modules():  # zero-init the last norm of each residual branch: blocks start as identity
            if isinstance(m, DlibBlock):
                nn.init.zeros_(m.bn2.weight)

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        if min(h, w) < self.min_size:
            small = "" if self.pad_strided else "; use dlib_resnet_small for 48-96 px inputs"
            raise LanetError(f"{'dlib_resnet_small' if self.pad_strided else 'dlib_resnet'} needs inputs of at "
                             f"least {self.min_size} px, got {h}x{w}{small}")
        x = x * self.input_scale + self.input_shift  # lanet's normalisation -> dlib's (pixel - mean) / 256
        return self.maxpool(F.relu(self.bn1(self.conv1(x)), inplace=True))  # N x 32 x ~H/4 x ~W/4

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer1(self.stem(x))
        return self.layer4(self.layer3(self.layer2(x)))  # N x 256 x h x w

    def pool(self, fmap: torch.Tensor) -> torch.Tensor:
        return torch.flatten(F.adaptive_avg_pool2d(fmap, 1), 1)  # N x 256

    def forward_head(self, feat: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dropout(feat))  # N x num_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.pool(self.forward_features(x)))

    def descriptor(self, x: torch.Tensor) -> torch.Tensor:
        """dlib's face descriptor, N x 128 (not L2-normalised; dlib compares Euclidean distances, threshold 0.6).
        Meaningful after :func:`load_dlib_weights`, in eval mode, on dlib-aligned 150 x 150 chips."""
        return self.pool(self.forward_features(x)) @ self.descriptor_weight.T

    def norm_layers(self) -> list[nn.Module]:
        """The 29 affine/BatchNorm layers in dlib's forward order."""
        return [m for m in self.modules() if isinstance(m, (Affine, FoldedBatchNorm2d))]

    def conv_layers(self) -> list[nn.Conv2d]:
        """The 29 convolutions in dlib's forward order."""
        return [m for m in self.modules() if isinstance(m, nn.Conv2d)]


def input_transform(in_chans: int, mean: tuple[float, ...] | None = None,
                    std: tuple[float, ...] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel (scale, shift) taking lanet's ``(x - mean) / std`` to dlib's ``(255 x - m_c) / 256``.

    For grey input ``m_c`` is the average of dlib's three means (conv1's bias takes the remainder)."""
    default_mean, default_std = (IMAGENET_MEAN, IMAGENET_STD) if in_chans == 3 else ((0.5,), (0.5,))
    mean_t = torch.tensor(default_mean if mean is None else mean, dtype=torch.float32)
    std_t = torch.tensor(default_std if std is None else std, dtype=torch.float32)
    dlib_mean = torch.tensor(DLIB_MEAN_RGB if in_chans == 3 else (sum(DLIB_MEAN_RGB) / 3,), dtype=torch.float32)
    if len(mean_t) != in_chans or len(std_t) != in_chans:
        raise LanetError(f"input mean/std need {in_chans} values, got {tuple(mean_t.tolist())} / "
                         f"{tuple(std_t.tolist())}")
    return 255.0 * std_t / DLIB_SCALE, (255.0 * mean_t - dlib_mean) / DLIB_SCALE


def grey_stem(weight: torch.Tensor, bias: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """RGB conv1 (O x 3 x 7 x 7, O) over dlib's per-channel input -> the grey conv1 (O x 1 x 7 x 7, O) over
    ``(p - m) / 256`` with m the mean of dlib's means: filters summed, bias corrected (see the module doc)."""
    m = torch.tensor(DLIB_MEAN_RGB, dtype=weight.dtype)
    offset = (m - m.mean()) / DLIB_SCALE  # 3
    return weight.sum(1, keepdim=True), bias - (weight.sum((2, 3)) * offset).sum(1)


# ------------------------------------------------------------------------------------------------ weights
def dlib_model_path() -> Path:
    """Path of ``dlib_face_recognition_resnet_model_v1.dat`` from ``face_recognition_models`` (``LANET_DLIB_RESNET``
    overrides it)."""
    return face_model_file(MODEL_FILE, "LANET_DLIB_RESNET", "model.pretrained=dlib")


def _expected_layers(model: DlibResNet) -> list[tuple[str, dict[str, int]]]:
    """dlib's records for this topology in forward order: (tag, hyper-parameters that must match)."""

    def con(n: int, k: int, stride: int) -> tuple[str, dict[str, int]]:
        pad = 0 if stride != 1 else k // 2  # dlib's default padding, whatever our variant uses
        return "con_4", {"num_filters": n, "rows": k, "cols": k, "stride_y": stride, "stride_x": stride,
                         "padding_y": pad, "padding_x": pad}

    def pool(tag: str, k: int, stride: int) -> tuple[str, dict[str, int]]:
        return tag, {"rows": k, "cols": k, "stride_y": stride, "stride_x": stride, "padding_y": 0, "padding_x": 0}

    out = [con(32, 7, 2), ("affine_", {}), ("relu_", {}), pool("max_pool_2", 3, 2)]
    for planes, blocks, stride in STAGES:
        for b in range(blocks):
            s = stride if b == 0 else 1
            out += [con(planes, 3, s), ("affine_", {}), ("relu_", {}), con(planes, 3, 1), ("affine_", {})]
            if s != 1:
                out.append(pool("avg_pool_2", 2, 2))
            out += [("add_prev_", {}), ("relu_", {})]
    out += [pool("avg_pool_2", 0, 1), ("fc_2", {"num_outputs": DESCRIPTOR_DIM, "num_inputs": 256})]
    return out


def load_dlib_net(model: DlibResNet, net: DlibNet) -> None:
    """Copy a parsed dlib network into ``model`` (conv filters and biases, affine scale/shift, descriptor fc).

    Checks every record against the expected topology; raises LanetError naming the file on a mismatch."""
    path = net.path
    expected = _expected_layers(model)
    if len(net.layers) != len(expected):
        raise LanetError(f"{path}: {len(net.layers)} layers, but dlib_face_recognition_resnet_model_v1 has "
                         f"{len(expected)}: not that network (or a truncated file)")
    if net.input_size[0] < 1 or any(abs(a - b) > 1e-3 for a, b in zip(net.input_mean_rgb, DLIB_MEAN_RGB)):
        raise LanetError(f"{path}: input means {net.input_mean_rgb} differ from dlib's {DLIB_MEAN_RGB}")
    convs, norms = iter(model.conv_layers()), iter(model.norm_layers())
    fc_weight: np.ndarray | None = None
    for i, (layer, (tag, want)) in enumerate(zip(net.layers, expected)):
        got = {k: layer.fields.get(k) for k in want}
        if layer.tag != tag or got != want:
            raise LanetError(f"{path}: layer {i} is {layer.tag} {got}, expected {tag} {want}: not "
                             f"dlib_face_recognition_resnet_model_v1")
        if tag == "con_4":
            conv = next(convs)
            o = conv.out_channels
            w = torch.from_numpy(layer.params[:-o].copy()).view(o, -1, conv.kernel_size[0], conv.kernel_size[1])
            b = torch.from_numpy(layer.params[-o:].copy())
            if i == 0:
                if w.shape[1] != 3:
                    raise LanetError(f"{path}: the first conv has {w.shape[1]} input channels, expected 3 (RGB)")
                if conv.in_channels == 1:
                    w, b = grey_stem(w, b)
            if w.shape != conv.weight.shape:
                raise LanetError(f"{path}: layer {i} filters {tuple(w.shape)} != {tuple(conv.weight.shape)}")
            with torch.no_grad():
                conv.weight.copy_(w)
                conv.bias.copy_(b)
        elif tag == "affine_":
            norm = next(norms)
            c = layer.params.size // 2
            if c != norm.weight.numel():
                raise LanetError(f"{path}: layer {i} affine has {c} channels, expected {norm.weight.numel()}")
            params = torch.from_numpy(layer.params.copy())
            norm.load_affine(params[:c], params[c:])  # type: ignore[operator]
        elif tag == "fc_2":
            fc_weight = layer.params.reshape(256, DESCRIPTOR_DIM)  # stored (inputs, outputs)
    assert fc_weight is not None
    model.descriptor_weight.copy_(torch.from_numpy(fc_weight.T.copy()))


def load_dlib_weights(model: DlibResNet, path: str | Path) -> DlibNet:
    """Read dlib's model file at ``path`` and load it into ``model``; returns the parsed file."""
    net = read_dlib_net(path)
    load_dlib_net(model, net)
    return net


def convert_norm_state(model: DlibResNet, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Make a state dict saved with either normalisation form fit ``model``'s form.

    Affine -> BatchNorm: gamma/beta = scale/shift, running stats 0 / 1 - eps, calibration pending (as
    :meth:`FoldedBatchNorm2d.load_affine`). BatchNorm -> affine: the statistics are folded in,
    ``scale = gamma / sqrt(var + eps)``, ``shift = beta - mean * scale``. Keys are normalised first."""
    state = {_normalise_key(k): v for k, v in state.items() if torch.is_tensor(v)}
    for name, m in model.named_modules():
        p = name + "."
        has_stats = p + "running_mean" in state and p + "running_var" in state
        if p + "weight" not in state or p + "bias" not in state:
            continue
        if isinstance(m, FoldedBatchNorm2d) and not has_stats:
            state[p + "running_mean"] = torch.zeros_like(state[p + "weight"])
            state[p + "running_var"] = torch.full_like(state[p + "weight"], 1.0 - m.eps)
            state[p + "num_batches_tracked"] = torch.zeros((), dtype=torch.long)
            state[p + "pending_calibration"] = torch.ones((), dtype=torch.bool)
        elif isinstance(m, Affine) and has_stats:
            scale = state[p + "weight"] / torch.sqrt(state.pop(p + "running_var") + 1e-5)
            state[p + "bias"] = state[p + "bias"] - state.pop(p + "running_mean") * scale
            state[p + "weight"] = scale
            state.pop(p + "num_batches_tracked", None)
            state.pop(p + "pending_calibration", None)
    w, b = state.get("conv1.weight"), state.get("conv1.bias")
    if w is not None and b is not None and w.ndim == 4 and w.shape[1] == 3 and model.in_chans == 1:
        state["conv1.weight"], state["conv1.bias"] = grey_stem(w, b)
    return state


def create_dlib_resnet(arch: str, num_classes: int, in_chans: int, dropout: float = 0.0,
                       pretrained: str = "") -> DlibResNet:
    """Build a :data:`VARIANTS` network. ``pretrained``: ``""`` (random init), ``"dlib"`` (the weights installed
    with face_recognition_models), a dlib ``.dat`` model file, or a PyTorch state dict of this network (either
    normalisation form; ``module.`` prefixes and checkpoint wrappers are handled; a classifier for another
    number of classes is dropped with a message)."""
    if arch not in VARIANTS:
        raise LanetError(f"unknown dlib architecture {arch!r}; expected one of {', '.join(VARIANTS)}")
    pad_strided, norm, output_stride = VARIANTS[arch]
    model = DlibResNet(num_classes, in_chans, dropout, pad_strided=pad_strided, norm=norm, output_stride=output_stride)
    if pretrained == "dlib":
        load_dlib_weights(model, dlib_model_path())
    elif pretrained.endswith(".dat"):
        load_dlib_weights(model, pretrained)
    elif pretrained:
        state = convert_norm_state(model, read_state_dict(pretrained))
        load_state_dict_into(model, state, pretrained, optional=("pending_calibration",))
    return model
