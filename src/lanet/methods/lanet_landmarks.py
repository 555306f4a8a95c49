"""LA-Net's landmark branch pieces: the top-down pyramid whose pooled stride-4 map is the landmark feature
(:class:`LandmarkPyramid`), Gaussian heatmap targets in the project's landmark convention
(:func:`gaussian_heatmaps`, :func:`heatmap_peak_region`) and the Adaptive Wing loss of the authors' release
(:func:`adaptive_wing_loss`), i.e. L_lm of eq. 14 with ``landmark_head=heatmap``.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F


class LandmarkPyramid(nn.Module):
    """Top-down pyramid over the landmark branch's layer2..4 outputs, down to stride 4 (layer1 added).

    Returns the stride-4 map (N x 64e x H/4 x W/4) whose pooled value is the landmark feature ``v``.
    """

    def __init__(self, stage_channels: tuple[int, int, int, int]):
        super().__init__()
        c = stage_channels[0]  # 64 * expansion for the standard widths
        self.lat2 = nn.Conv2d(stage_channels[1], c, 1)
        self.lat3 = nn.Conv2d(stage_channels[2], c, 1)
        self.lat4 = nn.Conv2d(stage_channels[3], c, 1)

    @staticmethod
    def _up(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, size=like.shape[-2:], mode="bilinear", align_corners=False)

    def forward(self, c1: torch.Tensor, c2: torch.Tensor, c3: torch.Tensor, c4: torch.Tensor) -> torch.Tensor:
        p = self.lat4(c4)  # N x 64e x H/32
        p = self.lat3(c3) + self._up(p, c3)  # H/16
        p = self.lat2(c2) + self._up(p, c2)  # H/8
        return c1 + self._up(p, c1)  # N x 64e x H/4 x W/4


def _axis_gaussians(points: torch.Tensor, size: tuple[int, int], stride: float, sigma: float
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """The separable factors of :func:`gaussian_heatmaps`: gy N x P x h and gx N x P x w."""
    h, w = size
    ys = torch.arange(h, device=points.device, dtype=points.dtype)
    xs = torch.arange(w, device=points.device, dtype=points.dtype)
    px = (points[..., 0] + 0.5) / stride - 0.5  # N x P in heatmap cells
    py = (points[..., 1] + 0.5) / stride - 0.5
    gx = torch.exp(-((xs[None, None, :] - px[..., None]) ** 2) / (2 * sigma**2))  # N x P x w
    gy = torch.exp(-((ys[None, None, :] - py[..., None]) ** 2) / (2 * sigma**2))  # N x P x h
    return gy, gx


def gaussian_heatmaps(points: torch.Tensor, size: tuple[int, int], stride: float, sigma: float) -> torch.Tensor:
    """N x P x h x w Gaussian heatmaps for ``points`` N x P x 2 (x, y) in input pixels, with (x, y) = (j, i) the
    centre of pixel [i, j] (the project's landmark convention). Heatmap cell c covers input pixels
    [c * stride, (c + 1) * stride), so its centre is at input coordinate (c + 0.5) * stride - 0.5."""
    gy, gx = _axis_gaussians(points, size, stride, sigma)
    return gy[..., :, None] * gx[..., None, :]


def heatmap_peak_region(points: torch.Tensor, size: tuple[int, int], stride: float, sigma: float,
                        level: float = 0.2) -> torch.Tensor:
    """N x P x h x w bool: cells within one cell (3 x 3 window) of a heatmap cell above ``level``.

    Equal to ``max_pool2d(gaussian_heatmaps(...) > level, 3, 1, 1)``, computed on the separable factors: the
    window maximum of gy[i] * gx[j] (both non-negative) is the product of their 1-D window maxima.
    """
    gy, gx = _axis_gaussians(points, size, stride, sigma)
    my = F.max_pool1d(gy.flatten(0, 1)[:, None], 3, 1, 1).view_as(gy)
    mx = F.max_pool1d(gx.flatten(0, 1)[:, None], 3, 1, 1).view_as(gx)
    return my[..., :, None] * mx[..., None, :] > level


class _AdaptiveWing(torch.autograd.Function):
    """Weighted-mean Adaptive Wing loss with its gradient formed in the forward pass.

    Autograd would keep and differentiate every intermediate (abs, pow, log1p, where, the products): about a
    tenth of an LA-Net step on a CPU at 64 px. Here the forward computes the loss and dL/dpred in one pass and
    the backward is one multiplication. dL/d|d| is omega * p * |d|^(p-1) / (1 + |d|^p) below theta (zero at
    |d| = 0, since p - 1 = alpha - 1 - y > 0 for y <= 1) and the constant slope A above; d|d|/dpred = sign(d).
    """

    @staticmethod
    def forward(ctx, pred, target, weight, alpha, omega, epsilon, theta):  # type: ignore[override]
        with torch.no_grad():
            d = pred - target
            diff = d.abs()
            power = alpha - target
            r = torch.exp(power * math.log(theta / epsilon))  # (theta / epsilon) ** power: target only
            a = omega / (1 + r) * power * (r * (epsilon / theta)) / epsilon
            small = diff < theta
            x = diff / epsilon
            xp = x.pow(power)  # (|d| / eps) ** p
            loss = torch.where(small, omega * torch.log1p(xp), a * diff - (theta * a - omega * torch.log1p(r)))
            scale = weight / loss.numel()
            # below theta: omega * p * x^(p-1) / (eps * (1 + x^p)), written x^p / x so no second pow is needed
            slope_small = omega * power * torch.where(x > 0, xp / x.clamp(min=1e-30), torch.zeros_like(x)) / (
                epsilon * (1 + xp))
            grad = torch.where(small, slope_small, a) * torch.sign(d) * scale
            ctx.save_for_backward(grad)
            return (loss * scale).sum()

    @staticmethod
    def backward(ctx, grad_out):  # type: ignore[override]
        (grad,) = ctx.saved_tensors
        return grad * grad_out, None, None, None, None, None, None


def adaptive_wing_loss(pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor, alpha: float = 2.1,
                       omega: float = 14.0, epsilon: float = 1.0, theta: float = 0.5) -> torch.Tensor:
    """Adaptive Wing loss (Wang et al., ICCV 2019) per element, weighted and averaged.

    Only ``pred`` receives a gradient (the heatmap target and the weights are data). The target-only terms use
    r = (theta / epsilon) ** (alpha - y) computed once as an exponential; the gradient comes from the forward
    pass (:class:`_AdaptiveWing`), equal to autograd's through the same formula.
    """
    weight = weight.to(pred.dtype).expand_as(pred)
    return _AdaptiveWing.apply(pred, target.to(pred.dtype), weight, alpha, omega, epsilon, theta)
