"""EAC: Erasing Attention Consistency (Zhang, Wang, Liu & Deng, "Learn From All: Erasing Attention Consistency
for Noisy Label Facial Expression Recognition", ECCV 2022).

Every training image is seen twice per step: the image and its horizontal mirror, each with random erasing
drawn independently. Both views go through the ResNet; class activation maps (CAMs) come from the last feature
map with the classifier weights detached, ``CAM_c = sum_k w_ck F_k`` (N x C x h x w). The loss is::

    L = CE(logits of view 1, labels) + lambda * MSE(CAM(view 1), flip(CAM(view 2))),   lambda = 5

so the attention of the mirrored image, mirrored back, must match the original's, which keeps the network from
memorising noisy labels through a few (erased) regions. Inference is the plain ResNet (:meth:`EAC.export`).

Details decided here:

* Erasing is the method's own, on top of the trainer's augmentation (which may already have erased a region),
  torchvision ``RandomErasing`` semantics with the release's ``scale=(0.02, 0.25)``: with probability
  ``erase_p`` (0.5, torchvision's default, which the release keeps) pick an area fraction uniformly in
  ``[erase_min, erase_max]`` and a log-uniform aspect ratio in [0.3, 3.3]; up to 10 tries to fit the image,
  else no erasing. It acts on the normalised tensors with fill 0 (the dataset mean), like torchvision's
  ``value=0`` after ``Normalize``. Its draws come from a ``torch.Generator`` seeded with ``batch.step``
  (deterministic, identical across resumes). Under torchrun each process draws for its own share.
* The flip of the second CAM is ``torch.flip(cam, dims=[3])``. The release resamples the map with
  ``grid_sample`` on a mirrored grid (align_corners=True); on a pixel grid that samples exactly column
  ``w - 1 - j`` for column ``j``, i.e. the same map.
* The two views go through the network in two forward passes (as the release does), so each view's BatchNorm
  statistics are its own. Only view 1's logits enter the cross-entropy; view 2 acts only through its CAM.
* The CAM has no bias term (the release's ``sum_k w_ck F_k``); the ResNet's dropout sits after pooling and does
  not touch the CAMs.
* ``ramp`` (a switch beyond the paper, off by default): the weight rises linearly from 0 to ``lam`` over that
  share of the run. Measured (docs/methods.md#variants-beyond-the-paper): at Adam 1e-3 (the ``faithful`` preset)
  EAC predicts one class for 18-27 epochs, its consistency term near 0 and cross-entropy at the class prior's
  entropy; ``ramp=0.05`` does not prevent that, a learning-rate warm-up (``train.warmup_steps``) does.
* The release's recipe (ResNet-50 pretrained on faces, Adam 1e-4, exponential decay) is not reproduced: the
  trainer is shared by every method.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..errors import LanetError
from ..models.factory import create_model
from ..models.resnet import ResNet
from .base import Batch, Method, MethodSpec
from .registry import register


def class_activation_maps(fmap: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """CAM_c = sum_k w_ck F_k: fmap N x K x h x w, classifier weight C x K (detached here) -> N x C x h x w."""
    return torch.einsum("ck,nkhw->nchw", weight.detach(), fmap)


def flip_consistency(cam1: torch.Tensor, cam2: torch.Tensor) -> torch.Tensor:
    """MSE between the first view's CAMs and the horizontally flipped CAMs of the mirrored view (N x C x h x w)."""
    return F.mse_loss(cam1, torch.flip(cam2, dims=[3]))


def ramp_factor(ramp: float, step: int, total_steps: int) -> float:
    """Linear warm-up of a loss weight: 0 at step 0, rising to 1 after ``ramp`` x total_steps steps (ramp 0: 1
    from the first step, the papers' form). Step-based, so a resumed run takes exactly the same value."""
    if ramp <= 0:
        return 1.0
    return min(1.0, (int(step) + 1) / max(1.0, ramp * max(1, int(total_steps))))


def erase_boxes(n: int, height: int, width: int, generator: torch.Generator, p: float = 0.5,
                scale: tuple[float, float] = (0.02, 0.25), ratio: tuple[float, float] = (0.3, 3.3)
                ) -> list[tuple[int, int, int, int] | None]:
    """Draw one erasing box (top, left, h, w) or None per image, torchvision ``RandomErasing`` style."""
    boxes: list[tuple[int, int, int, int] | None] = []
    area = height * width
    log_r = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(n):
        box = None
        if float(torch.rand((), generator=generator)) < p:
            for _ in range(10):
                target = area * float(torch.empty(()).uniform_(scale[0], scale[1], generator=generator))
                aspect = math.exp(float(torch.empty(()).uniform_(log_r[0], log_r[1], generator=generator)))
                h = int(round(math.sqrt(target * aspect)))
                w = int(round(math.sqrt(target / aspect)))
                if 0 < h < height and 0 < w < width:
                    top = int(torch.randint(0, height - h + 1, (), generator=generator))
                    left = int(torch.randint(0, width - w + 1, (), generator=generator))
                    box = (top, left, h, w)
                    break
        boxes.append(box)
    return boxes


def random_erase(images: torch.Tensor, generator: torch.Generator, p: float = 0.5,
                 scale: tuple[float, float] = (0.02, 0.25)) -> torch.Tensor:
    """A copy of images (N x C x H x W) with one rectangle per image set to 0 with probability p."""
    out = images.clone()
    for i, box in enumerate(erase_boxes(len(images), images.shape[2], images.shape[3], generator, p, scale)):
        if box is not None:
            top, left, h, w = box
            out[i, :, top:top + h, left:left + w] = 0
    return out


@register
class EAC(Method):
    """Erasing Attention Consistency (ECCV 2022): flip-consistent CAMs of two independently erased views."""

    name = "eac"

    @dataclass
    class Params:
        lam: float = 5.0  # weight of the flip-consistency loss
        erase_p: float = 0.5  # probability of erasing one rectangle per view
        erase_min: float = 0.02  # erased area fraction, lower bound
        erase_max: float = 0.25  # erased area fraction, upper bound
        ramp: float = 0.0  # share of the run over which lam rises linearly from 0 (0 = the paper: lam from step 0)

    def __init__(self, spec: MethodSpec, params: dict | None = None):
        super().__init__(spec, params)
        p = self.params
        if (p.lam < 0 or not 0 <= p.erase_p <= 1 or not 0 < p.erase_min <= p.erase_max < 1
                or not 0 <= p.ramp <= 1):
            raise LanetError(f"invalid EAC hyperparameters: {p}")
        self.model = create_model(spec.arch, spec.num_classes, spec.in_chans, spec.dropout, spec.pretrained,
                                  spec.width)

    def views(self, images: torch.Tensor, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The two erased views of images N x C x S x S: (erased original, erased mirror), drawn from ``step``."""
        g = torch.Generator().manual_seed(2_000_003 * 11 + int(step))
        scale = (self.params.erase_min, self.params.erase_max)
        v1 = random_erase(images, g, self.params.erase_p, scale)
        v2 = random_erase(torch.flip(images, dims=[3]), g, self.params.erase_p, scale)
        return v1, v2

    def forward(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        m = self.model
        v1, v2 = self.views(batch.images, batch.step)
        f1, f2 = m.forward_features(v1), m.forward_features(v2)  # N x K x h x w each
        logits = m.forward_head(m.pool(f1))  # N x C
        ce = F.cross_entropy(logits, batch.labels)
        consistency = flip_consistency(class_activation_maps(f1.float(), m.fc.weight.float()),
                                       class_activation_maps(f2.float(), m.fc.weight.float()))
        lam = self.params.lam * ramp_factor(self.params.ramp, batch.step, batch.total_steps)
        loss = ce + lam * consistency
        return loss, {"ce": ce.detach(), "flip_consistency": consistency.detach()}

    def export(self) -> ResNet:
        return self.model
