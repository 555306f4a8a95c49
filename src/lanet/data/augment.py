"""Batched training augmentation on tensors (the paper's recipe), with landmarks carried along.

One :class:`BatchAugment` turns a batch of stored images (``N x H x W x C`` uint8, as in a
:class:`~lanet.data.faceset.FaceSet`) into network input (``N x C x S x S`` float32, normalised):

1. **geometry**, one affine warp per sample (``F.affine_grid`` + ``F.grid_sample``, bilinear,
   ``align_corners=False``, border padding): a random resized crop (area fraction ``cfg.crop_scale``, aspect
   ``cfg.crop_ratio``, like torchvision's ``RandomResizedCrop``) and a horizontal flip (``cfg.flip``). The same
   transform maps the landmarks; on a flip the point identities are permuted with ``flip_perm`` so that, e.g.,
   the subject's left eye keeps its label.
2. **colour jitter**: brightness, contrast and saturation factors uniform in ``[max(0, 1 - s), 1 + s]``,
   ``s = cfg.color_jitter``, applied in that fixed order with clamping to [0, 1] (saturation only for RGB).
3. **normalisation**: ``(x - mean) / std`` (default 0.5 / 0.5 for grayscale, ImageNet statistics for RGB).
4. **random erasing** (``cfg.erasing``): one rectangle of area fraction ``cfg.erasing_scale`` and aspect
   0.3 .. 3.3 (torchvision's ``RandomErasing`` rejection sampling) is set to **0**, i.e. to the mean colour
   after normalisation (torchvision's default ``value=0``; no random-noise fill, so parameters stay small).

**Coordinate convention.** Landmarks are ``(x, y)`` pixel coordinates in array-index convention: ``(x, y) =
(j, i)`` is the centre of pixel ``image[i, j]``, so a pixel spans ``[j - 0.5, j + 0.5]``. (With
``align_corners=False`` a pixel ``j`` covers ``[j, j + 1]`` in continuous coordinates, centre ``j + 0.5``; the
code converts with that half-pixel shift.) Output landmarks are in the same convention on the ``S x S``
output. Landmarks that fall outside the crop are kept, with coordinates outside ``[-0.5, S - 0.5]``; nothing
is clipped or dropped.

**Crop parameters are relative**: the crop box is sampled in fractions of the input's width and height (the
aspect ratio is relative to the input's own aspect, the true pixel aspect for square images), so
:meth:`BatchAugment.sample` needs no image size and one parameter set serves any input size.

**Distributed training**: :meth:`BatchAugment.sample` draws every random number for a whole batch up front,
each parameter with the batch as its first dimension, and :meth:`BatchAugment.apply` treats samples
independently. So a distributed trainer samples once for the *global* batch with a generator seeded the
same way on every process and applies each process's slice: ``aug.apply(x_local, lm_local, {k: v[a:b] for
k, v in params.items()})`` gives exactly rows ``a:b`` of applying the full parameters to the full batch.

**Resolution**: when the input is larger than needed, it is first resized with an anti-aliasing filter to
``ceil(S / sqrt(crop_scale[0]))`` pixels per side (so the smallest crops keep their detail and the largest are
at most that factor over-sampled), then warped. :meth:`BatchAugment.eval` is the deterministic path: an
anti-aliased resize to ``S x S`` and normalisation; with every augmentation switched off (no jitter, no
erasing, crop scale and ratio [1, 1], no flip) the training path gives the same result up to float rounding.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..config import AugmentConfig
from ..errors import LanetError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
ERASING_RATIO = (0.3, 3.3)
ATTEMPTS = 10  # rejection-sampling attempts per crop / erasing box (torchvision uses 10)
_LUMA = (0.299, 0.587, 0.114)


def _pair(value: Any, key: str, lo: float, hi: float, hi_open: bool = False) -> tuple[float, float]:
    """Validate a ``[a, b]`` range from the configuration with ``lo < a <= b <= hi`` (``< hi`` if hi_open)."""
    try:
        a, b = (float(v) for v in value)
    except (TypeError, ValueError) as exc:
        raise LanetError(f"augment.{key} must be a list of two numbers, got {value!r}") from exc
    if not (lo < a <= b and (b < hi if hi_open else b <= hi)):
        raise LanetError(f"augment.{key} must satisfy {lo} < low <= high {'<' if hi_open else '<='} {hi}, "
                         f"got {value!r}")
    return a, b


class BatchAugment:
    """Batched random resized crop + flip + colour jitter + normalisation + random erasing, with landmarks.

    Args:
        cfg: the augmentation configuration (``crop_scale``, ``crop_ratio``, ``flip``, ``color_jitter``,
            ``erasing``, ``erasing_scale``; ``balanced`` belongs to the sampler and is ignored here).
        out_size: output side ``S`` in pixels.
        channels: output channels (1 or 3); 1-channel input is replicated to 3, 3-channel input converted to
            luma for 1.
        flip_perm: ``P`` ints, the index each landmark takes after a horizontal mirror (for iBUG-68: left and
            right eye, brow, jaw and mouth points swap). Required when flipping batches with landmarks.
        mean, std: per-channel normalisation (default 0.5 / 0.5 for 1 channel, ImageNet for 3).

    Attributes ``mean`` and ``std`` are tuples of ``channels`` floats.
    """

    def __init__(self, cfg: AugmentConfig, out_size: int, channels: int, flip_perm: np.ndarray | None = None,
                 mean: tuple | None = None, std: tuple | None = None) -> None:
        if int(out_size) < 1:
            raise LanetError(f"image size must be positive, got {out_size}")
        if channels not in (1, 3):
            raise LanetError(f"channels must be 1 or 3, got {channels}")
        self.cfg = cfg
        self.out_size = int(out_size)
        self.channels = int(channels)
        self.crop_scale = _pair(cfg.crop_scale, "crop_scale", 0.0, 1.0)
        self.crop_ratio = _pair(cfg.crop_ratio, "crop_ratio", 0.0, math.inf)
        self.erasing_scale = _pair(cfg.erasing_scale, "erasing_scale", 0.0, 1.0, hi_open=True)
        for key in ("flip", "erasing"):
            if not 0.0 <= float(getattr(cfg, key)) <= 1.0:
                raise LanetError(f"augment.{key} is a probability in [0, 1], got {getattr(cfg, key)!r}")
        if float(cfg.color_jitter) < 0:
            raise LanetError(f"augment.color_jitter must be >= 0, got {cfg.color_jitter!r}")
        default_mean, default_std = ((0.5,), (0.5,)) if channels == 1 else (IMAGENET_MEAN, IMAGENET_STD)
        self.mean = tuple(float(v) for v in (default_mean if mean is None else mean))
        self.std = tuple(float(v) for v in (default_std if std is None else std))
        if len(self.mean) != channels or len(self.std) != channels or min(self.std) <= 0:
            raise LanetError(f"mean/std need {channels} values (std > 0), got {self.mean} / {self.std}")
        self.flip_perm: np.ndarray | None = None
        self._flip_inverse: np.ndarray | None = None
        if flip_perm is not None:
            perm = np.asarray(flip_perm, dtype=np.int64).reshape(-1)
            if not np.array_equal(np.sort(perm), np.arange(len(perm))):
                raise LanetError(f"flip_perm must be a permutation of 0..{len(perm) - 1}")
            self.flip_perm = perm
            self._flip_inverse = np.argsort(perm)  # new[:, k] = old[:, inverse[k]], i.e. new[perm[k]] = old[k]

    # ------------------------------------------------------------------ random parameters
    def sample(self, n: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """All random parameters for ``n`` samples, drawn from ``generator`` (on its device).

        Returns (first dimension ``n`` everywhere, so ``{k: v[a:b]}`` selects samples ``a:b``):
            ``crop``: ``n x 4`` float (x0, y0, w, h) of the crop box in fractions of the input width/height;
            ``flip``: ``n`` bool; ``jitter``: ``n x 3`` float brightness, contrast, saturation factors;
            ``erase``: ``n`` bool; ``erase_box``: ``n x 4`` int64 (x0, y0, w, h) in output pixels.
        The same generator state always gives the same parameters; the number of draws does not depend on
        the configuration values.
        """
        dev = generator.device

        def rand(*shape: int) -> torch.Tensor:
            return torch.rand(*shape, generator=generator, device=dev)

        # random resized crop: torchvision's rejection sampling, in relative units (input aspect 1)
        lo, hi = self.crop_scale
        log_lo, log_hi = math.log(self.crop_ratio[0]), math.log(self.crop_ratio[1])
        area = lo + (hi - lo) * rand(n, ATTEMPTS)  # n x A
        ratio = torch.exp(log_lo + (log_hi - log_lo) * rand(n, ATTEMPTS))
        w, h = (area * ratio).sqrt(), (area / ratio).sqrt()
        ok = (w <= 1) & (h <= 1)
        first = ok.to(torch.uint8).argmax(1, keepdim=True)  # first valid attempt
        w, h = w.gather(1, first)[:, 0], h.gather(1, first)[:, 0]
        if self.crop_ratio[0] > 1:  # fallback: the whole image, aspect clamped into the ratio range
            fw, fh = 1.0, 1.0 / self.crop_ratio[0]
        elif self.crop_ratio[1] < 1:
            fw, fh = self.crop_ratio[1], 1.0
        else:
            fw, fh = 1.0, 1.0
        found = ok.any(1)
        w = torch.where(found, w, torch.full_like(w, fw))
        h = torch.where(found, h, torch.full_like(h, fh))
        pos = rand(n, 2)
        crop = torch.stack([pos[:, 0] * (1 - w), pos[:, 1] * (1 - h), w, h], 1)  # n x 4
        flip = rand(n) < float(self.cfg.flip)
        s = float(self.cfg.color_jitter)
        j_lo = max(0.0, 1.0 - s)
        jitter = j_lo + (1.0 + s - j_lo) * rand(n, 3)  # n x 3
        # random erasing: torchvision's rejection sampling in output pixels
        S = self.out_size
        e_lo, e_hi = self.erasing_scale
        e_area = (e_lo + (e_hi - e_lo) * rand(n, ATTEMPTS)) * (S * S)
        e_ratio = torch.exp(math.log(ERASING_RATIO[0])
                            + (math.log(ERASING_RATIO[1]) - math.log(ERASING_RATIO[0])) * rand(n, ATTEMPTS))
        eh, ew = (e_area * e_ratio).sqrt().round(), (e_area / e_ratio).sqrt().round()
        e_ok = (eh < S) & (ew < S) & (eh > 0) & (ew > 0)
        first = e_ok.to(torch.uint8).argmax(1, keepdim=True)
        eh, ew = eh.gather(1, first)[:, 0], ew.gather(1, first)[:, 0]
        erase = (rand(n) < float(self.cfg.erasing)) & e_ok.any(1)
        epos = rand(n, 2)
        ey0 = torch.floor(epos[:, 0] * (S - eh + 1)).clamp(max=S - 1)
        ex0 = torch.floor(epos[:, 1] * (S - ew + 1)).clamp(max=S - 1)
        erase_box = torch.stack([ex0, ey0, ew, eh], 1).to(torch.int64)  # n x 4
        return {"crop": crop, "flip": flip, "jitter": jitter, "erase": erase, "erase_box": erase_box}

    # ------------------------------------------------------------------ application
    def __call__(self, images: torch.Tensor, landmarks: torch.Tensor | None,
                 generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor | None]:
        """:meth:`sample` for the batch, then :meth:`apply`."""
        return self.apply(images, landmarks, self.sample(len(images), generator))

    def apply(self, images: torch.Tensor, landmarks: torch.Tensor | None,
              params: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Augment ``images`` (``N x H x W x C`` uint8) and ``landmarks`` (``N x P x 2`` or None) with ``params``.

        Returns ``N x C x S x S`` float32 normalised images and ``N x P x 2`` float32 landmarks in output
        pixel coordinates (or None), on the images' device.
        """
        x = self._to_float(images)  # N x C x H x W in [0, 1]
        n, _, H, W = x.shape
        dev = x.device
        p = {k: v.to(dev) for k, v in params.items()}
        if len(p["crop"]) != n:
            raise LanetError(f"augmentation parameters are for {len(p['crop'])} samples, the batch has {n}")
        S = self.out_size
        R = math.ceil(S / math.sqrt(self.crop_scale[0]))
        if H > R or W > R:  # anti-aliased pre-resize; normalised coordinates are unchanged
            x = F.interpolate(x, size=(min(H, R), min(W, R)), mode="bilinear", align_corners=False, antialias=True)
        x0, y0, cw, ch = p["crop"].unbind(1)
        flip = p["flip"]
        sx = torch.where(flip, -cw, cw)  # output normalised x -> input normalised x scale
        tx, ty = 2 * x0 + cw - 1, 2 * y0 + ch - 1  # crop centre, normalised
        zero = torch.zeros_like(cw)
        theta = torch.stack([torch.stack([sx, zero, tx], 1), torch.stack([zero, ch, ty], 1)], 1)  # N x 2 x 3
        grid = F.affine_grid(theta.to(x.dtype), [n, x.shape[1], S, S], align_corners=False)  # N x S x S x 2
        out = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)  # N x C x S x S

        lm = None
        if landmarks is not None:
            lm = torch.as_tensor(landmarks).to(device=dev, dtype=torch.float32)  # N x P x 2
            self._check_landmarks(lm, n)
            xn = (2 * lm[..., 0] + 1) / W - 1  # input normalised
            yn = (2 * lm[..., 1] + 1) / H - 1
            xo = (xn - tx[:, None]) / sx[:, None]  # output normalised
            yo = (yn - ty[:, None]) / ch[:, None]
            lm = torch.stack([((xo + 1) * S - 1) / 2, ((yo + 1) * S - 1) / 2], -1)  # N x P x 2, output pixels
            if bool(flip.any()):
                if self._flip_inverse is None:
                    raise LanetError("flipping landmarks needs flip_perm (which point becomes which after a mirror)")
                inv = torch.as_tensor(self._flip_inverse, device=dev)
                lm = torch.where(flip[:, None, None], lm[:, inv], lm)

        if float(self.cfg.color_jitter) > 0:
            out = self._jitter(out, p["jitter"])
        out = self._normalise(out)
        if bool(p["erase"].any()):
            ex0, ey0, ew, eh = (v[:, None, None] for v in p["erase_box"].unbind(1))
            ar = torch.arange(S, device=dev)
            rows, cols = ar[None, :, None], ar[None, None, :]
            mask = (rows >= ey0) & (rows < ey0 + eh) & (cols >= ex0) & (cols < ex0 + ew)  # N x S x S
            mask &= p["erase"][:, None, None]
            out = out.masked_fill(mask[:, None], 0.0)
        return out, lm

    def eval(self, images: torch.Tensor,
             landmarks: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Deterministic path: anti-aliased resize to ``S x S`` and normalisation; landmarks scaled alike."""
        x = self._to_float(images)  # N x C x H x W
        _, _, H, W = x.shape
        S = self.out_size
        if (H, W) != (S, S):
            x = F.interpolate(x, size=(S, S), mode="bilinear", align_corners=False, antialias=True)
        lm = None
        if landmarks is not None:
            lm = torch.as_tensor(landmarks).to(device=x.device, dtype=torch.float32)  # N x P x 2
            self._check_landmarks(lm, len(x))
            scale = torch.tensor([S / W, S / H], device=x.device)
            lm = (lm + 0.5) * scale - 0.5
        return self._normalise(x), lm

    # ------------------------------------------------------------------ helpers
    def _to_float(self, images: torch.Tensor | np.ndarray) -> torch.Tensor:
        """``N x H x W x C`` uint8 (or float in [0, 1]) -> ``N x channels x H x W`` float32 in [0, 1]."""
        x = torch.as_tensor(images)
        if x.ndim != 4 or x.shape[-1] not in (1, 3):
            raise LanetError(f"images must be N x H x W x C with C in (1, 3), got {tuple(x.shape)}")
        x = x.permute(0, 3, 1, 2)
        x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
        if x.shape[1] == self.channels:
            return x.contiguous()
        if self.channels == 3:
            return x.expand(-1, 3, -1, -1).contiguous()
        luma = torch.tensor(_LUMA, device=x.device, dtype=x.dtype)
        return (x * luma[None, :, None, None]).sum(1, keepdim=True)

    def _check_landmarks(self, lm: torch.Tensor, n: int) -> None:
        if lm.ndim != 3 or lm.shape[0] != n or lm.shape[2] != 2:
            raise LanetError(f"landmarks must be {n} x P x 2, got {tuple(lm.shape)}")
        if self.flip_perm is not None and lm.shape[1] != len(self.flip_perm):
            raise LanetError(f"landmarks have {lm.shape[1]} points but flip_perm has {len(self.flip_perm)}")

    def _jitter(self, x: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
        """Brightness, contrast, saturation (torchvision's formulas, fixed order): N x C x S x S in [0, 1]."""
        b, c, s = (f.to(x.dtype)[:, None, None, None] for f in factors.unbind(1))
        x = (x * b).clamp(0, 1)
        mean = self._gray(x).mean((1, 2, 3), keepdim=True)  # N x 1 x 1 x 1
        x = (c * x + (1 - c) * mean).clamp(0, 1)
        if x.shape[1] == 3:
            x = (s * x + (1 - s) * self._gray(x)).clamp(0, 1)
        return x

    @staticmethod
    def _gray(x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] == 1:
            return x
        luma = torch.tensor(_LUMA, device=x.device, dtype=x.dtype)
        return (x * luma[None, :, None, None]).sum(1, keepdim=True)  # N x 1 x H x W

    def _normalise(self, x: torch.Tensor) -> torch.Tensor:
        mean = torch.tensor(self.mean, device=x.device, dtype=x.dtype)[None, :, None, None]
        std = torch.tensor(self.std, device=x.device, dtype=x.dtype)[None, :, None, None]
        return (x - mean) / std
