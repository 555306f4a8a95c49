"""The rasteriser of :mod:`lanet.data.synthetic`: one chunk of faces drawn from their parameters and landmarks.

Every shape is a soft, anti-aliased signed distance in the canonical face frame (:class:`_Raster`), evaluated on
the whole image or on small windows around the eyes, brows and mouth (:class:`_Window`); the result is
``n x C x H x W`` floats in 0..255 (:func:`_render_chunk`).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from .synthetic_model import _centre, _openings, _yaw, _yaw_inverse


class _Raster:
    """Canonical coordinates of every pixel of a chunk of images and soft-shape helpers.

    ``U``, ``V``: ``n x H x W`` canonical (pre-yaw) coordinates; ``px``: ``n x 1 x 1`` canonical units per
    pixel, used to turn signed distances into anti-aliased coverage.
    """

    def __init__(self, U: torch.Tensor, V: torch.Tensor, px: torch.Tensor) -> None:
        self.U, self.V, self.px = U, V, px

    def cover(self, sd: torch.Tensor, grow: float = 0.0) -> torch.Tensor:
        """Coverage in [0, 1] of the region ``sd < 0`` (signed distance in canonical units), dilated by ``grow`` px."""
        return (0.5 - sd / self.px + grow).clamp(0.0, 1.0)

    def ellipse_sd(self, cx: torch.Tensor, cy: torch.Tensor, a: torch.Tensor, b_up: torch.Tensor,
                   b_lo: torch.Tensor | None = None) -> torch.Tensor:
        """Approximate signed distance to an axis-aligned ellipse (different half-heights above/below cy)."""
        du, dv = self.U - cx, self.V - cy
        b = b_up if b_lo is None else torch.where(dv < 0, b_up, b_lo)
        x, y = du / a, dv / b
        f = (x * x + y * y).sqrt()
        grad = ((x / a) ** 2 + (y / b) ** 2).sqrt() / f.clamp_min(1e-6)
        return (f - 1) / grad.clamp_min(1e-6)

    def segments_sd(self, pts: torch.Tensor, radius: torch.Tensor | float, closed: bool = False,
                    polygon: bool = False) -> torch.Tensor:
        """Distance to a polyline through ``pts`` (n x K x 2) minus ``radius``; signed (inside < 0) if polygon."""
        K = pts.shape[1]
        d2 = None
        inside = torch.zeros_like(self.U, dtype=torch.bool) if polygon else None
        for k in range(K if (closed or polygon) else K - 1):
            a, b = pts[:, k, :, None, None], pts[:, (k + 1) % K, :, None, None]  # n x 2 x 1 x 1
            ex, ey = b[:, 0] - a[:, 0], b[:, 1] - a[:, 1]
            inv = 1.0 / (ex * ex + ey * ey).clamp_min(1e-12)
            wx, wy = self.U - a[:, 0], self.V - a[:, 1]
            t = torch.addcmul(wx * (ex * inv), wy, ey * inv).clamp_(0.0, 1.0)
            dx, dy = torch.addcmul(wx, t, ex, value=-1), torch.addcmul(wy, t, ey, value=-1)
            e2 = torch.addcmul(dx * dx, dy, dy)
            d2 = e2 if d2 is None else torch.minimum(d2, e2, out=d2)
            if inside is not None:
                crosses = (wy < 0) != (self.V < b[:, 1])
                slope = ex / torch.where(ey.abs() < 1e-12, torch.full_like(ey, 1e-12), ey)
                inside ^= crosses & (wx < wy * slope)
        d = d2.sqrt() - radius
        return torch.where(inside, -d, d) if inside is not None else d


def _blend(img: torch.Tensor, alpha: torch.Tensor, color: torch.Tensor) -> None:
    """In place: img (n x C x H x W) <- (1 - alpha) img + alpha color; alpha n x H x W, color n x C."""
    a = alpha[:, None]
    img.mul_(1 - a).add_(a * color[:, :, None, None])


def _subset(mask: torch.Tensor, raster: _Raster, fn: Callable[[_Raster, torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """Evaluate ``fn`` (an alpha map) only for the images where ``mask`` is set; zero elsewhere."""
    out = torch.zeros_like(raster.U)
    idx = mask.nonzero().flatten()
    if len(idx):
        out[idx] = fn(_Raster(raster.U[idx], raster.V[idx], raster.px[idx]), idx)
    return out


def _coords(q: dict[str, np.ndarray], size: int, xs: torch.Tensor, ys: torch.Tensor) -> _Raster:
    """Canonical (pre-yaw) coordinates of pixel centres ``xs`` (n x 1 x W') and ``ys`` (n x H' x 1)."""
    col = lambda a: torch.as_tensor(np.asarray(a), dtype=torch.float32)[:, None, None]  # noqa: E731
    s = col(q["scale"] * size)  # pixels per canonical unit
    cx, cy = _centre(q, size)
    dx, dy = (xs - col(cx)) / s, (ys - col(cy)) / s
    cos, sin = col(np.cos(q["rot"])), col(np.sin(q["rot"]))
    U = _yaw_inverse(cos * dx + sin * dy, col(q["yaw"]))  # n x H' x W'
    V = -sin * dx + cos * dy
    return _Raster(U, V, 1.0 / s)


class _Window:
    """A square patch of every image around one canonical point: coordinates, and gather / scatter of pixels.

    Shapes are drawn into ``patch`` (n x C x Wp x Wp) with :attr:`raster`, then :meth:`put` writes the patch
    back into the padded canvas (pixels of the window outside the image land in the padding).
    """

    def __init__(self, q: dict[str, np.ndarray], size: int, pad: int, canvas: torch.Tensor, u: np.ndarray,
                 v: np.ndarray, radius: float) -> None:
        n = len(u)
        s = q["scale"] * size
        side = int(math.ceil(2 * radius * float(s.max()))) + 2
        if side > pad:
            raise RuntimeError("window larger than the canvas padding")
        cx, cy = _centre(q, size)
        cos, sin = np.cos(q["rot"]), np.sin(q["rot"])
        uy = _yaw(u, q["yaw"])
        px, py = cx + s * (cos * uy - sin * v), cy + s * (sin * uy + cos * v)
        # top-left pixel; a window far outside the image stays inside the padding (its shapes are unseen)
        x0 = np.clip(np.floor(px - side / 2 + 0.5), -pad, size + pad - side).astype(np.int64)
        y0 = np.clip(np.floor(py - side / 2 + 0.5), -pad, size + pad - side).astype(np.int64)
        ar = torch.arange(side)
        self.cols = torch.as_tensor(x0)[:, None] + ar  # n x Wp, image pixel index
        self.rows = torch.as_tensor(y0)[:, None] + ar
        self.raster = _coords(q, size, self.cols[:, None, :].float(), self.rows[:, :, None].float())
        self.index = (torch.arange(n)[:, None, None], (self.rows + pad)[:, :, None], (self.cols + pad)[:, None, :])
        self.canvas = canvas
        self.patch = canvas[self.index].permute(0, 3, 1, 2).contiguous()  # n x C x Wp x Wp

    def put(self) -> None:
        self.canvas[self.index] = self.patch.permute(0, 2, 3, 1)


def _render_chunk(q: dict[str, np.ndarray], P: np.ndarray, size: int, channels: int,
                  gen: torch.Generator) -> torch.Tensor:
    """Render one chunk: ``n x C x H x W`` float in 0..255."""
    n = len(P)
    T = lambda a: torch.as_tensor(np.asarray(a), dtype=torch.float32)  # noqa: E731
    col = lambda a: T(a)[:, None, None]  # noqa: E731  n -> n x 1 x 1
    if channels == 1:
        paint = lambda rgb: (T(rgb) @ torch.tensor([0.299, 0.587, 0.114]))[:, None]  # noqa: E731  n x 1
    else:
        paint = lambda rgb: T(rgb)  # noqa: E731  n x 3
    Pt = T(P)  # n x 68 x 2 canonical
    ii = torch.arange(size, dtype=torch.float32)
    R = _coords(q, size, ii[None, None, :], ii[None, :, None])  # full image
    U, V = R.U, R.V
    zero = torch.zeros(n, 1, 1)
    skin_rgb = q["skin"]
    shade = paint(skin_rgb * 0.55)
    dark = paint(np.full((n, 3), 20.0))

    # background with a soft vertical gradient, clothes at the bottom
    img = paint(q["background"])[:, :, None, None] * (1 + 0.1 * ((ii - size / 2) / size)[None, None, :, None]
                                                      * col(q["light"] * np.cos(q["light_dir"]))[:, None])
    img = img.expand(n, channels, size, size).contiguous()
    a, b_up = col(q["a"]), col(q["b_up"])
    o_up, o_lo = _openings(q)
    b_lo = col(q["b_lo"] + 0.8 * o_lo)
    _blend(img, R.cover(b_lo * 1.3 - V), paint(q["clothes"]))
    # neck
    _blend(img, R.cover(torch.maximum(U.abs() - 0.55 * a, 0.3 * b_lo - V)), paint(skin_rgb * 0.8))
    # back hair (head outline behind the face)
    hair_col = paint(q["hair"])
    hair_len = col(q["hair_len"])
    back = R.ellipse_sd(zero, col(-0.1 * q["b_up"]), a * col(q["hair_w"]), b_up * 1.12, hair_len + 0.1)
    back = torch.maximum(back, V - hair_len)
    has_hair = col(~q["bald"])
    _blend(img, R.cover(back) * has_hair, hair_col)
    # face with radial shading
    face_cov = R.cover(R.ellipse_sd(zero, zero, a, b_up, b_lo))
    rr = ((U / a) ** 2 + (V / torch.where(V < 0, b_up, b_lo)) ** 2).clamp(max=1.0)
    skin = paint(skin_rgb)[:, :, None, None] * (1.06 - 0.22 * rr[:, None])
    img.mul_(1 - face_cov[:, None]).add_(face_cov[:, None] * skin)
    # fringe: hair over the forehead above the hairline
    hl = col(q["hairline"]) * b_up + col(q["hair_side"]) * U + 0.35 * U * U
    _blend(img, R.cover(V - hl) * face_cov * has_hair, hair_col)

    # forehead lines and brow furrows, only where present
    fore = T(q["forehead"])
    brow_y = (Pt[:, 19, 1] + Pt[:, 24, 1]) / 2

    def forehead(r: _Raster, idx: torch.Tensor) -> torch.Tensor:
        out = torch.zeros_like(r.U)
        for off in (0.12, 0.21):
            y = brow_y[idx] - off
            pts = torch.stack([torch.stack([-0.38 + 0 * y, y + 0.025], -1), torch.stack([0 * y, y - 0.01], -1),
                               torch.stack([0.38 + 0 * y, y + 0.025], -1)], 1)
            out = torch.maximum(out, r.cover(r.segments_sd(pts, 0.25 * r.px)))
        return out * fore[idx, None, None].clamp(0, 1) * 0.5

    _blend(img, _subset(fore > 0.1, R, forehead), shade)
    furrow_s = T(q["furrow"])

    def furrows(r: _Raster, idx: torch.Tensor) -> torch.Tensor:
        out = torch.zeros_like(r.U)
        y = Pt[idx, 21, 1]
        for side in (-1.0, 1.0):
            pts = torch.stack([torch.stack([side * 0.04 + 0 * y, y - 0.12], -1),
                               torch.stack([side * 0.06 + 0 * y, y + 0.04], -1)], 1)
            out = torch.maximum(out, r.cover(r.segments_sd(pts, 0.25 * r.px)))
        return out * furrow_s[idx, None, None].clamp(0, 1) * 0.6

    _blend(img, _subset(furrow_s > 0.1, R, furrows), shade)

    # ---- windows: eyes + brows, mouth + nostrils + folds (drawn on small patches of a padded canvas)
    pad = int(math.ceil(2 * 0.75 * float(q["scale"].max()) * size)) + 4
    canvas = F.pad(img, (pad, pad, pad, pad)).permute(0, 2, 3, 1).contiguous()  # n x H+2p x W+2p x C
    brow_col = paint(q["hair"] * 0.7 + 10)
    ey, ew = col(q["eye_y"]), col(q["eye_w"])
    hu, hlo = col(q["eye_h"] * q["eye_up"]), col(0.75 * q["eye_h"] * q["eye_lo"])
    for side, brow in ((-1.0, slice(17, 22)), (1.0, slice(22, 27))):
        win = _Window(q, size, pad, canvas, side * q["eye_dx"], q["eye_y"] - 0.2, 0.56)
        w, r, wpx = win.patch, win.raster, win.raster.px
        ex = side * col(q["eye_dx"])
        sock = r.ellipse_sd(ex, ey - 0.04, ew * 1.5, ew * 0.9)
        _blend(w, 0.16 * (-sock / (ew * 0.9)).clamp(0, 1), paint(skin_rgb * 0.5))
        eye_sd = r.ellipse_sd(ex, ey, ew, hu, hlo)
        eye_cov = r.cover(eye_sd)
        _blend(w, eye_cov * 0.9, paint(np.full((n, 3), 235.0)))
        gx, gy = ex + col(q["gaze_x"]) * ew, ey + col(q["gaze_y"]) * ew
        _blend(w, r.cover(r.ellipse_sd(gx, gy, ew * col(q["iris_r"]), ew * col(q["iris_r"]))) * eye_cov,
               paint(q["iris"]))
        _blend(w, r.cover(r.ellipse_sd(gx, gy, ew * 0.25, ew * 0.25)) * eye_cov, dark)
        lash = r.cover(eye_sd.abs() - 0.35 * wpx) * torch.where(r.V < ey, 1.0, 0.45)
        _blend(w, lash * 0.9, dark)
        _blend(w, r.cover(r.segments_sd(Pt[:, brow], col(q["brow_t"]))) * 0.95, brow_col)
        win.put()

    win = _Window(q, size, pad, canvas, np.zeros(n), q["mouth_y"] - 0.12, 0.74)
    w, r = win.patch, win.raster
    for k, side in ((31, -1.0), (35, 1.0)):  # nose sides: faint lines from the bridge to the nostril wings
        top = (Pt[:, 28] + Pt[:, 29]) / 2 + torch.tensor([side * 0.06, 0.0])
        _blend(w, r.cover(r.segments_sd(torch.stack([top, Pt[:, k]], 1), 0.3 * r.px)) * 0.25, shade)
    for k in (32, 34):  # nostrils
        nos = r.ellipse_sd(col(P[:, k, 0]), col(P[:, k, 1] - 0.01), col(np.full(n, 0.045)), col(np.full(n, 0.022)))
        _blend(w, r.cover(nos) * 0.75, paint(skin_rgb * 0.3))
    naso = T(q["naso"])

    def folds(r: _Raster, idx: torch.Tensor) -> torch.Tensor:
        out = torch.zeros_like(r.U)
        for k_nose, k_mouth, side in ((31, 48, -1.0), (35, 54, 1.0)):
            top = Pt[idx, k_nose] + torch.tensor([side * 0.07, -0.05])
            bottom = Pt[idx, k_mouth] + torch.tensor([side * 0.07, 0.06])
            mid = (top + bottom) / 2 + torch.tensor([side * 0.06, 0.0])
            out = torch.maximum(out, r.cover(r.segments_sd(torch.stack([top, mid, bottom], 1), 0.3 * r.px)))
        return out * naso[idx, None, None].clamp(0, 1) * 0.55

    _blend(w, _subset(naso > 0.1, r, folds), shade)
    # lips (outer polygon), interior (inner polygon, dilated so a closed mouth shows its slit), teeth
    _blend(w, r.cover(r.segments_sd(Pt[:, 48:60], 0.0, polygon=True)) * 0.9, paint(q["lips"]))
    inner = r.segments_sd(Pt[:, 60:68], 0.0, polygon=True)
    _blend(w, r.cover(inner, grow=0.35), paint(np.array([[70.0, 25.0, 30.0]]).repeat(n, 0)))
    mw = col(q["mouth_hw"] * q["width"])
    tt = (r.U / mw).clamp(-1, 1)
    env = (1 - tt * tt).clamp_min(0).sqrt()
    corner = torch.where(tt < 0, col(q["corner"] + np.where(q["asym_side"] < 0, q["asym"], 0)),
                         col(q["corner"] + np.where(q["asym_side"] > 0, q["asym"], 0)))
    upper = col(q["mouth_y"]) - corner * tt * tt - col(o_up) * env
    teeth = r.cover(r.V - (upper + 0.5 * col(o_up + o_lo) * env)) * r.cover(inner) * col(np.clip(q["teeth"], 0, 1))
    _blend(w, teeth * 0.9, paint(np.full((n, 3), 235.0)))
    win.put()
    img = canvas[:, pad:pad + size, pad:pad + size].permute(0, 3, 1, 2).contiguous()

    # occluders: rectangles, hands (palm + four fingers), sunglasses
    occ = T(q["occluder"])
    ox, oy, ow, oh, orot = (T(q[k]) for k in ("occ_x", "occ_y", "occ_w", "occ_h", "occ_rot"))

    def local(r: _Raster, idx: torch.Tensor) -> _Raster:
        c, s_ = orot[idx].cos()[:, None, None], orot[idx].sin()[:, None, None]
        du, dv = r.U - ox[idx, None, None], r.V - oy[idx, None, None]
        return _Raster(c * du + s_ * dv, -s_ * du + c * dv, r.px)

    def rectangle(r: _Raster, idx: torch.Tensor) -> torch.Tensor:
        lr = local(r, idx)
        return r.cover(torch.maximum(lr.U.abs() - ow[idx, None, None], lr.V.abs() - oh[idx, None, None]))

    _blend(img, _subset(occ == 1, R, rectangle), paint(q["occ_color"]))

    def hand(r: _Raster, idx: torch.Tensor) -> torch.Tensor:
        lr = local(r, idx)
        m = len(idx)
        sd = lr.ellipse_sd(torch.zeros(m, 1, 1), torch.zeros(m, 1, 1), torch.full((m, 1, 1), 0.3),
                           torch.full((m, 1, 1), 0.26))
        for f, length in zip((-0.18, -0.06, 0.06, 0.18), (0.4, 0.5, 0.48, 0.38)):
            pts = torch.tensor([[f, 0.0], [f * 1.15, -0.2 - length]]).expand(m, 2, 2)
            sd = torch.minimum(sd, lr.segments_sd(pts, 0.065))
        return r.cover(sd)

    _blend(img, _subset(occ == 2, R, hand), paint(q["hand_skin"]))

    def glasses(r: _Raster, idx: torch.Tensor) -> torch.Tensor:
        sd = None
        for side in (-1.0, 1.0):
            e = r.ellipse_sd(side * T(q["eye_dx"])[idx, None, None], T(q["eye_y"])[idx, None, None] + 0.01,
                             T(q["eye_w"])[idx, None, None] * 1.35, torch.full((len(idx), 1, 1), 0.16))
            sd = e if sd is None else torch.minimum(sd, e)
        y = T(q["eye_y"])[idx] - 0.04
        bridge = torch.stack([torch.stack([-0.25 + 0 * y, y], -1), torch.stack([0.25 + 0 * y, y], -1)], 1)
        return r.cover(torch.minimum(sd, r.segments_sd(bridge, 0.03)))

    _blend(img, _subset(occ == 3, R, glasses), paint(np.full((n, 3), 15.0)))

    # lighting, brightness, contrast, blur, noise
    ldir = T(q["light_dir"])
    gx, gy = ldir.cos()[:, None, None], ldir.sin()[:, None, None]
    ramp = (gx * (ii[None, None, :] - size / 2) + gy * (ii[None, :, None] - size / 2)) / (size / 2)
    img = img * (1 + col(q["light"]) * ramp)[:, None] * col(q["brightness"])[:, None]
    img = (img - 128) * col(q["contrast"])[:, None] + 128
    img = _gaussian_blur(img, T(q["blur"]) * size / 48)
    img = img + torch.randn(img.shape, generator=gen) * col(q["noise"])[:, None]
    return img


def _gaussian_blur(img: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian blur with a per-image sigma (pixels; 0 = unchanged): n x C x H x W."""
    if not bool((sigma > 0).any()):
        return img
    n, c, h, w = img.shape
    r = max(1, math.ceil(3 * float(sigma.max())))
    x = torch.arange(-r, r + 1, dtype=torch.float32)
    k = torch.exp(-0.5 * (x[None] / sigma.clamp_min(1e-3)[:, None]) ** 2)  # n x K
    k = torch.where(sigma[:, None] > 0, k, (x[None] == 0).float())
    k = (k / k.sum(1, keepdim=True)).repeat_interleave(c, 0)  # nC x K
    flat = F.pad(img.reshape(1, n * c, h, w), (r, r, r, r), mode="replicate")
    flat = F.conv2d(flat, k[:, None, :, None], groups=n * c)
    flat = F.conv2d(flat, k[:, None, None, :], groups=n * c)
    return flat.reshape(n, c, h, w)
