"""NLA: Navigating Label Ambiguity (Lee, Choi, Kim, Kim & Nam, "Navigating Label Ambiguity for Facial Expression
Recognition in the Wild", AAAI 2025; arXiv 2502.09993).

Noise-aware adaptive weighting (NAW) plus a mirror-consistency term, on one ResNet. For a training image with
logits ``z`` (view 1), ``p = softmax(z)`` and given label ``y``:

* ``p_GT = p[y]`` and the nearest negative ``p_NN = max_{c != y} p_c`` (the second-largest ``p`` when the image is
  predicted right, ``argmax p = y``; the largest otherwise). ``v = (p_GT, p_NN)``.
* Weight: ``w = t_lambda * N(v; mu_t, Sigma_t(e))`` when predicted right, ``w = N(v; mu_f, Sigma_f)`` otherwise,
  with ``N`` the normalised bivariate Gaussian density ``(2 pi)^-1 |Sigma|^-1/2 exp(-1/2 d^T Sigma^-1 d)``,
  ``d = v - mu``. With ``s`` a major standard deviation and ``r`` a ratio::

      Sigma_t(e) = [[a_t, eps_e b_t], [eps_e b_t, a_t]],  a_t = s_t^2 + (s_t/r_t)^2,  b_t = (s_t/r_t)^2 - s_t^2
      Sigma_f    = [[a_f, b_f], [b_f, a_f]],            a_f = s_f^2 + (s_f/r_f)^2,  b_f = s_f^2 - (s_f/r_f)^2
      eps_e = 1 - exp(slope * e / E)          (e: 0-based epoch; eps_e = 1 throughout with sch_bool=false)

  Near-ties (ambiguous images) get the most weight; labels the network confidently contradicts get almost none
  (``Sigma_f`` is narrow along the margin ``p_GT - p_NN``).
* Mirror consistency: ``z'`` = logits of the horizontal mirror, ``m = (z + z') / 2`` (a mean of logits);
  ``L_reg = 1/2 [KL(softmax(m) || softmax(z)) + KL(softmax(m) || softmax(z'))]`` per image.
* Loss: ``L = lam_a mean_i CE_i + lam_b mean_i w_i CE_i + lam_c L_reg`` (CE and ``w`` from view 1 only).

Inference is the plain ResNet (:meth:`NLA.export`): the weighting and the mirror only shape training.

Details decided here (from the authors' release at ``jungyu0413/NLA`` b86f31f, which has no licence: written
from its facts, nothing copied):

* Defaults are the release's (lam_a = lam_b = lam_c = 0.5, slope -15, t_lambda 1, mu_t = (0.5, 0.5),
  mu_f = (0.30, 0.15), s_t = 0.8, r_t = 2, s_f = 0.91, r_f = 6, schedule on).
* Schedule length ``E``: the release uses E = 60, its number of epochs; here ``schedule_epochs=0`` (default) takes
  the run's ``train.epochs``, so the schedule keeps its shape (eps ~ 0.95 a fifth of the way through) whatever
  the run's length. A positive value fixes E.
* ``detach_weight=false`` (default) lets the gradient flow through ``w`` as well as through CE, as the release
  does (nothing is detached there; the paper's intent is not known); ``true`` treats ``w`` as a constant.
* ``jsd_reduction="mean"`` (default) averages ``L_reg`` over the batch, on the scale of the CE terms. The release
  sums over batch and classes (``"sum"``), which at its batch of 32 makes the term 32x larger; ``"sum"``
  reproduces that, over the global batch (under torchrun the local sum is multiplied by the number of processes,
  since DistributedDataParallel averages the processes' gradients).
* The mirror is ``torch.flip`` of the augmented tensor the trainer gives (any erased box is mirrored with it), as
  in the release. The two views go through the network in two forward passes (as EAC here), so each view's
  BatchNorm statistics are its own.
* Ties: "predicted right" is ``argmax p == y`` with torch's argmax (the first maximal index).
* The weight is computed in float32 whatever the autocast precision; the 2x2 inverse and determinant are the
  closed forms, computed once per epoch value (the release rebuilds its module every step). The weights are not
  normalised over the batch (as released).
* The release's recipe (Adam 1e-4 with exponential decay, 60 epochs, Gaussian pixel noise augmentation) is not
  reproduced: trainer and augmentation are shared by every method. Under torchrun each process weights its own
  share of the batch (the weights are per sample, nothing to gather).

Diagnostics per epoch (this process's share of each batch): ``nla_eps`` (the schedule value of the epoch),
``nla_predicted_right`` (share of images with ``argmax p = y``), ``nla_weight_right`` / ``nla_weight_wrong``
(mean weight of those predicted right / wrong), and, where the dataset's labels are known (diagnostics only,
never in a loss), ``nla_weight_flipped`` / ``nla_weight_clean`` (mean weight of images whose training label was
flipped / kept).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..errors import LanetError
from ..models.factory import create_model
from ..models.resnet import ResNet
from ..train.distributed import is_distributed
from .base import Batch, Method, MethodSpec
from .registry import register


def gt_and_nearest_negative(probs: torch.Tensor, labels: torch.Tensor
                            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """probs N x C, labels N -> (p_GT N, p_NN N, predicted right N bool).

    ``p_NN = max_{c != y} p_c``: the second-largest probability where ``argmax p = y``, the largest otherwise."""
    p_gt = probs.gather(1, labels[:, None]).squeeze(1)
    p_nn = probs.scatter(1, labels[:, None], float("-inf")).max(1).values
    return p_gt, p_nn, probs.argmax(1) == labels


def covariance(std_major: float, std_ratio: float, sign: float, off_scale: float = 1.0) -> tuple[float, float]:
    """(diagonal a, off-diagonal b) of ``[[a, b], [b, a]]``: ``a = s^2 + (s/r)^2``, ``b = off_scale * sign *
    (s^2 - (s/r)^2)``. ``sign=-1`` is Sigma_t (wide along the margin), ``+1`` Sigma_f (narrow along it)."""
    minor = std_major / std_ratio
    return std_major ** 2 + minor ** 2, off_scale * sign * (std_major ** 2 - minor ** 2)


def gaussian_density(v: torch.Tensor, mu: tuple[float, float], a: float, b: float) -> torch.Tensor:
    """Normalised 2-D Gaussian density of v (N x 2) with mean mu and covariance [[a, b], [b, a]] (|b| < a): N."""
    det = a * a - b * b
    d = v - v.new_tensor(mu)  # N x 2
    quad = (a * (d[:, 0] ** 2 + d[:, 1] ** 2) - 2.0 * b * d[:, 0] * d[:, 1]) / det  # d^T Sigma^-1 d
    return torch.exp(-0.5 * quad) / (2.0 * math.pi * math.sqrt(det))


def schedule_eps(epoch: int, epochs: int, slope: float) -> float:
    """eps_e = 1 - exp(slope * e / E) (0 at e = 0, -> 1)."""
    return 1.0 - math.exp(slope * epoch / epochs)


def mirror_consistency(z1: torch.Tensor, z2: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """L_reg for logits z1, z2 (N x C) of an image and its mirror: with m = (z1 + z2) / 2,
    ``1/2 [KL(softmax(m) || softmax(z1)) + KL(softmax(m) || softmax(z2))]`` per image, then its batch mean
    (``"mean"``) or sum (``"sum"``, the release). Gradients flow into z1, z2 and m."""
    log_m = F.log_softmax((z1 + z2) / 2, dim=1)
    p_m = log_m.exp()
    kl1 = (p_m * (log_m - F.log_softmax(z1, dim=1))).sum(1)  # N
    kl2 = (p_m * (log_m - F.log_softmax(z2, dim=1))).sum(1)
    per_image = 0.5 * (kl1 + kl2)
    if reduction == "mean":
        return per_image.mean()
    if reduction == "sum":
        return per_image.sum()
    raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")


@register
class NLA(Method):
    """Navigating Label Ambiguity (AAAI 2025): Gaussian weights of (p_GT, p_NN) on CE, mirror consistency."""

    name = "nla"

    @dataclass
    class Params:
        lam_a: float = 0.5  # weight of the plain CE mean
        lam_b: float = 0.5  # weight of the NAW-weighted CE mean
        lam_c: float = 0.5  # weight of the mirror-consistency term
        slope: float = -15.0  # schedule: eps_e = 1 - exp(slope * e / E)
        t_lambda: float = 1.0  # scale of the "right" Gaussian
        sch_bool: bool = True  # schedule Sigma_t's off-diagonal (false: eps = 1 throughout)
        mu_x_t: float = 0.5  # mean of the "right" Gaussian, p_GT
        mu_y_t: float = 0.5  # ... p_NN
        mu_x_f: float = 0.30  # mean of the "wrong" Gaussian, p_GT
        mu_y_f: float = 0.15  # ... p_NN
        t_std_major: float = 0.8
        t_std_ratio: float = 2.0
        f_std_major: float = 0.91
        f_std_ratio: float = 6.0
        schedule_epochs: int = 0  # E of the schedule; 0 = the run's train.epochs (the release: E = its 60 epochs)
        detach_weight: bool = False  # false: gradient flows through w (the release)
        jsd_reduction: str = "mean"  # "mean" over the batch, or "sum" over batch and classes (the release)

    def __init__(self, spec: MethodSpec, params: dict | None = None):
        super().__init__(spec, params)
        p = self.params
        if min(p.t_std_major, p.t_std_ratio, p.f_std_major, p.f_std_ratio) <= 0:
            raise LanetError(f"nla: the std_major/std_ratio parameters must be positive: {p}")
        if min(p.lam_a, p.lam_b, p.lam_c, p.t_lambda) < 0 or p.slope > 0 or p.schedule_epochs < 0:
            raise LanetError(f"nla: lam_a/b/c and t_lambda must be >= 0, slope <= 0, schedule_epochs >= 0: {p}")
        if p.jsd_reduction not in ("mean", "sum"):
            raise LanetError(f"nla: method.params.jsd_reduction must be 'mean' or 'sum', got {p.jsd_reduction!r}")
        self.schedule_length = p.schedule_epochs or max(1, spec.epochs)
        self.model = create_model(spec.arch, spec.num_classes, spec.in_chans, spec.dropout, spec.pretrained,
                                  spec.width)
        self._diag: dict[str, torch.Tensor] = {}
        self._eps = 0.0

    def eps(self, epoch: int) -> float:
        """The schedule value of ``epoch`` (0-based): Sigma_t's off-diagonal is ``eps * b_t``."""
        return schedule_eps(epoch, self.schedule_length, self.params.slope) if self.params.sch_bool else 1.0

    def weights(self, probs: torch.Tensor, labels: torch.Tensor, epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """NAW weights of probs N x C (float) and labels N at ``epoch``: (w N, predicted right N bool)."""
        p = self.params
        p_gt, p_nn, right = gt_and_nearest_negative(probs, labels)
        v = torch.stack([p_gt, p_nn], dim=1)  # N x 2
        w_right = p.t_lambda * gaussian_density(v, (p.mu_x_t, p.mu_y_t),
                                                *covariance(p.t_std_major, p.t_std_ratio, -1.0, self.eps(epoch)))
        w_wrong = gaussian_density(v, (p.mu_x_f, p.mu_y_f), *covariance(p.f_std_major, p.f_std_ratio, 1.0))
        return torch.where(right, w_right, w_wrong), right

    def forward(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        p = self.params
        z1 = self.model(batch.images).float()  # N x C
        z2 = self.model(torch.flip(batch.images, dims=[3])).float()  # the mirror, N x C
        ce = F.cross_entropy(z1, batch.labels, reduction="none")  # N
        w, right = self.weights(z1.softmax(1), batch.labels, batch.epoch)
        if p.detach_weight:
            w = w.detach()
        reg = mirror_consistency(z1, z2, p.jsd_reduction)
        if p.jsd_reduction == "sum" and is_distributed():
            reg = reg * torch.distributed.get_world_size()  # the sum over the global batch (see the docstring)
        weighted = (w * ce).mean()
        loss = p.lam_a * ce.mean() + p.lam_b * weighted + p.lam_c * reg
        with torch.no_grad():
            self._tally(w.detach(), right, batch)
        self._eps = self.eps(batch.epoch)
        return loss, {"ce": ce.mean().detach(), "weighted_ce": weighted.detach(), "mirror_jsd": reg.detach(),
                      "naw_weight": w.mean().detach()}

    # ---------------------------------------------------------------------------------------- reporting
    def _tally(self, w: torch.Tensor, right: torch.Tensor, batch: Batch) -> None:
        """Accumulate (sum of w, count) per group on the device, without a host sync per step."""
        groups = {"right": right, "wrong": ~right}
        if batch.clean_labels is not None:
            flipped = batch.labels != batch.clean_labels
            groups.update(flipped=flipped, clean=~flipped)
        for key, mask in groups.items():
            m = mask.float()
            add = torch.stack([(w * m).sum(), m.sum()])
            self._diag[key] = self._diag[key] + add if key in self._diag else add

    def epoch_diagnostics(self) -> dict[str, float]:
        out: dict[str, float] = {"nla_eps": self._eps}
        sums = {k: v.tolist() for k, v in self._diag.items()}
        for key, (wsum, count) in sums.items():
            if count > 0:
                out[f"nla_weight_{key}"] = wsum / count
        if "right" in sums:
            seen = sums["right"][1] + sums["wrong"][1]
            out["nla_predicted_right"] = sums["right"][1] / max(seen, 1.0)
        self._diag = {}
        return out

    def export(self) -> ResNet:
        return self.model
