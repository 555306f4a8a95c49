"""Grad-CAM (Selvaraju et al., ICCV 2017): where a classifier looks for a class.

For the activations ``A`` (N x K x h x w) of a convolutional stage and the logit ``y_c`` of class ``c``::

    alpha_k = mean_{i,j} d y_c / d A_k[i, j]          (eq. 1: channel weights, global-average-pooled gradients)
    L_c     = ReLU(sum_k alpha_k A_k)                  (eq. 2: the class activation map, h x w)

``L_c`` is upsampled bilinearly to the input size and scaled to [0, 1] per image for display. LA-Net's
Figure 6 shows such maps on the expression branch's last stage; every exported ``lanet`` classifier has
``layer1`` .. ``layer4``. At the low input sizes of CPU runs the last stage is too coarse to show anything (2 x 2
for ResNet-18 at 48 px, 1 x 1 for dlib's small ResNet at 64 px: one weight for the whole face, so the image is
tinted one colour): :func:`choose_layer` (``--cam-layer auto``, the default of ``lanet report``) takes the deepest
stage whose map is at least :data:`MIN_CAM_SIZE` x :data:`MIN_CAM_SIZE` at the run's input size.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .errors import LanetError


def find_layer(model: nn.Module, name: str = "layer4") -> nn.Module:
    """The sub-module called ``name`` (a dotted path such as ``layer4`` or ``backbone.layer4``); a bare name
    also matches the last module whose path ends with it (RUL's classifier holds its ResNet as ``backbone``)."""
    modules = dict(model.named_modules())
    if name in modules:
        return modules[name]
    matches = [m for path, m in modules.items() if path.split(".")[-1] == name]
    if not matches:
        stages = [p for p in modules if p.split(".")[-1].startswith("layer")]
        raise LanetError(f"{type(model).__name__} has no layer {name!r}" + (f"; it has {', '.join(stages)}"
                                                                            if stages else ""))
    return matches[-1]


#: the smallest map (per side) :func:`choose_layer` accepts: 3 x 3 can say left, centre, right, top and bottom
MIN_CAM_SIZE = 3
STAGES = ("layer4", "layer3", "layer2", "layer1")


def map_size(model: nn.Module, layer: nn.Module | str, in_chans: int, size: int,
             device: torch.device | str = "cpu") -> tuple[int, int]:
    """The spatial size ``(h, w)`` of ``layer``'s output for a ``size`` x ``size`` input of ``in_chans`` channels."""
    module = find_layer(model, layer) if isinstance(layer, str) else layer
    shape: list[int] = []
    hook = module.register_forward_hook(lambda m, i, o: shape.extend(o.shape[-2:]))
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, in_chans, size, size, device=device))
    finally:
        hook.remove()
        model.train(was_training)
    if len(shape) < 2:
        raise LanetError(f"Grad-CAM layer {layer!r} gives no N x K x h x w activation map")
    return int(shape[0]), int(shape[1])


def choose_layer(model: nn.Module, in_chans: int, size: int, device: torch.device | str = "cpu",
                 min_size: int = MIN_CAM_SIZE) -> tuple[str, tuple[int, int]]:
    """(name, map size) of the deepest of ``layer4`` .. ``layer1`` whose map is at least ``min_size`` per side at a
    ``size`` px input; the stage with the largest map where none is (an input too small for any)."""
    found: list[tuple[str, tuple[int, int]]] = []
    for name in STAGES:
        try:
            hw = map_size(model, name, in_chans, size, device)
        except LanetError:
            continue  # the model has no such stage
        if min(hw) >= min_size:
            return name, hw
        found.append((name, hw))
    if not found:
        raise LanetError(f"{type(model).__name__} has none of the stages {', '.join(STAGES)} for Grad-CAM")
    return max(found, key=lambda f: min(f[1]))


def grad_cam(model: nn.Module, x: torch.Tensor, layer: nn.Module | str = "layer4",
             target: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(maps ``N x H x W`` in [0, 1], logits ``N x C``) for inputs ``x`` (``N x C_in x H x W``, normalised).

    ``target``: the class per image whose evidence is shown (default: the predicted class). A map whose ReLU
    is zero everywhere (no positive evidence at this stage) stays zero. The model is put in eval mode.
    """
    if x.ndim != 4:
        raise ValueError(f"x must be N x C x H x W, got {tuple(x.shape)}")
    module = find_layer(model, layer) if isinstance(layer, str) else layer
    model.eval()
    store: dict[str, torch.Tensor] = {}

    def keep(_m: nn.Module, _inp: object, out: torch.Tensor) -> None:
        store["A"] = out

    hook = module.register_forward_hook(keep)
    try:
        with torch.enable_grad():
            logits = model(x)  # N x C
            acts = store.get("A")
            if acts is None or acts.ndim != 4:
                raise LanetError(f"Grad-CAM layer {layer!r} gives no N x K x h x w activation map")
            cls = logits.argmax(1) if target is None else target.to(logits.device).long()
            chosen = logits.gather(1, cls[:, None]).sum()  # images are independent in eval mode
            grads = torch.autograd.grad(chosen, acts)[0]  # N x K x h x w
    finally:
        hook.remove()
    alpha = grads.mean((2, 3), keepdim=True)  # N x K x 1 x 1 (eq. 1)
    cam = F.relu((alpha * acts).sum(1, keepdim=True))  # N x 1 x h x w (eq. 2)
    cam = F.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0]  # N x H x W
    peak = cam.flatten(1).max(1).values.clamp_min(1e-12)[:, None, None]
    return (cam / peak).detach(), logits.detach()
