import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lanet.config import AugmentConfig
from lanet.data.augment import BatchAugment
from lanet.errors import LanetError

# A hand-made symmetric 5-point scheme: eye (image left), eye (image right), nose, mouth corners.
DOTS = np.array([[20.3, 22.7], [43.6, 21.9], [31.8, 33.1], [24.2, 45.5], [40.4, 46.2]], dtype=np.float32)
PERM = np.array([1, 0, 2, 4, 3])
BRIGHT = np.array([1.0, 0.8, 0.62, 0.47, 0.33])
SIGMA = 1.3


def ibug68_flip() -> np.ndarray:
    """The iBUG-68 mirror permutation, written out from the scheme (independent of lanet.landmarks)."""
    perm = np.arange(68)
    pairs = [(i, 16 - i) for i in range(8)] + [(17 + i, 26 - i) for i in range(5)] + [(31, 35), (32, 34)]
    pairs += [(36, 45), (37, 44), (38, 43), (39, 42), (40, 47), (41, 46)]
    pairs += [(48, 54), (49, 53), (50, 52), (55, 59), (56, 58), (60, 64), (61, 63), (65, 67)]
    for a, b in pairs:
        perm[a], perm[b] = b, a
    return perm


def dot_images(n: int, h: int = 64, w: int = 64, dots: np.ndarray = DOTS, jitter: float = 0.0, seed: int = 0):
    """n float images (N x H x W x 1, values in [0, 1]) with Gaussian dots at (jittered) landmark positions."""
    rng = np.random.default_rng(seed)
    lm = np.repeat(dots[None] * [w / 64, h / 64], n, 0) + rng.uniform(-jitter, jitter, (n, len(dots), 2))
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.zeros((n, h, w), np.float64)
    for k in range(len(dots)):
        d2 = (xx[None] - lm[:, k, 0, None, None]) ** 2 + (yy[None] - lm[:, k, 1, None, None]) ** 2
        img += BRIGHT[k] * np.exp(-d2 / (2 * SIGMA**2))
    return torch.tensor(img[..., None], dtype=torch.float32), torch.tensor(lm, dtype=torch.float32)


def cfg(**kw) -> AugmentConfig:
    base = dict(crop_scale=[1.0, 1.0], crop_ratio=[1.0, 1.0], flip=0.0, color_jitter=0.0, erasing=0.0)
    base.update(kw)
    return AugmentConfig(**base)


def find_peaks(img: torch.Tensor, k: int, margin: int):
    """The k brightest local maxima of a 2-D image (integer positions) and their sub-pixel centroids."""
    mx = F.max_pool2d(img[None, None], 3, 1, 1)[0, 0]
    cand = (img == mx) & (img > 0.05)
    ys, xs = cand.nonzero(as_tuple=True)
    order = img[ys, xs].argsort(descending=True)
    out = []
    for y, x in zip(ys[order].tolist(), xs[order].tolist()):
        if len(out) == k:
            break
        if any(abs(x - q[0]) <= margin and abs(y - q[1]) <= margin for q, _ in out):
            continue  # a plateau or shoulder of a peak already taken
        y0, y1, x0, x1 = max(0, y - margin), y + margin + 1, max(0, x - margin), x + margin + 1
        win = img[y0:y1, x0:x1].clamp_min(0)
        gy, gx = torch.meshgrid(torch.arange(y0, y0 + win.shape[0]), torch.arange(x0, x0 + win.shape[1]),
                                indexing="ij")
        out.append(((x, y), (float((win * gx).sum() / win.sum()), float((win * gy).sum() / win.sum()))))
    return out


def amplitude(img: torch.Tensor, p: torch.Tensor, zx: float, zy: float) -> float:
    """Amplitude of the Gaussian dot around p, from its integral (robust to sub-pixel position)."""
    rx, ry = math.ceil(3.5 * SIGMA * float(zx)), math.ceil(3.5 * SIGMA * float(zy))
    x, y = p.round().long().tolist()
    win = img[max(0, y - ry):y + ry + 1, max(0, x - rx):x + rx + 1]
    return float(win.sum()) / (2 * math.pi * SIGMA**2 * float(zx) * float(zy))


def check_dots(out: torch.Tensor, lm: torch.Tensor, zoom: np.ndarray, coarse: float = 1.0, fine: float = 0.3):
    """Every in-frame landmark has one of the brightest maxima within `coarse` px and a centroid within `fine`."""
    S = out.shape[-1]
    img = out[:, 0] * 0.5 + 0.5  # undo the 0.5/0.5 normalisation
    checked = 0
    for i in range(len(out)):
        margin = max(2, math.ceil(3 * SIGMA * zoom[i]))
        inside = ((lm[i] >= margin) & (lm[i] <= S - 1 - margin)).all(1)
        if inside.sum() == 0:
            continue
        peaks = find_peaks(img[i], lm.shape[1], margin)  # each dot gives at most one maximum
        for p in lm[i][inside]:
            d_int = min(math.dist(q, p.tolist()) for q, _ in peaks)
            d_sub = min(math.dist(c, p.tolist()) for _, c in peaks)
            assert d_int <= coarse, (i, p, peaks)
            assert d_sub <= fine, (i, p, peaks)
            checked += 1
    return checked


def test_eval_maps_landmarks_by_the_pure_resize():
    x, lm = dot_images(2)
    for S in (48, 64, 150):
        aug = BatchAugment(cfg(), S, 1)
        out, lo = aug.eval(x, lm)
        assert out.shape == (2, 1, S, S) and out.dtype == torch.float32
        expected = (lm + 0.5) * S / 64 - 0.5
        assert torch.allclose(lo, expected)
        assert check_dots(out, lo, np.full(2, S / 64)) == 10
    # non-square input is squashed to S x S; x and y scale separately
    x, lm = dot_images(2, h=80, w=64)
    out, lo = BatchAugment(cfg(), 48, 1).eval(x, lm)
    assert torch.allclose(lo, (lm + 0.5) * torch.tensor([48 / 64, 48 / 80]) - 0.5)
    check_dots(out, lo, np.full(2, 0.7))


@pytest.mark.parametrize("S", [48, 96])
def test_random_crop_moves_dots_and_landmarks_together(S):
    x, lm = dot_images(12, jitter=2.0, seed=1)
    aug = BatchAugment(cfg(crop_scale=[0.45, 1.0], crop_ratio=[0.75, 1.333]), S, 1)
    params = aug.sample(12, torch.Generator().manual_seed(5))
    assert not torch.allclose(params["crop"][:, 2], torch.ones(12))  # crops actually vary
    out, lo = aug.apply(x, lm, params)
    zoom = (S / (params["crop"][:, 2] * 64)).numpy()
    assert check_dots(out, lo, zoom) >= 30
    # the landmarks are not simply the resized ones
    assert (lo - ((lm + 0.5) * S / 64 - 0.5)).abs().max() > 3


def test_flip_mirrors_and_swaps_identities():
    x, lm = dot_images(6, jitter=1.5, seed=2)
    plain = BatchAugment(cfg(), 64, 1, flip_perm=PERM)
    flipper = BatchAugment(cfg(flip=1.0), 64, 1, flip_perm=PERM)
    out0, lm0 = plain(x, lm, torch.Generator().manual_seed(0))
    out1, lm1 = flipper(x, lm, torch.Generator().manual_seed(0))
    assert torch.allclose(out1, out0.flip(-1), atol=1e-5)
    mirrored = torch.stack([63 - lm0[..., 0], lm0[..., 1]], -1)
    assert torch.allclose(lm1[:, PERM], mirrored, atol=1e-4)  # new[perm[k]] = mirror(old[k])
    assert check_dots(out1, lm1, np.ones(6)) == 30
    # identity: each flipped landmark sits on the dot of its mirror partner (recognised by its brightness)
    img = out1[:, 0] * 0.5 + 0.5
    for i in range(6):
        for k in range(5):
            assert abs(amplitude(img[i], lm1[i, k], 1.0, 1.0) - BRIGHT[PERM[k]]) < 0.05, (i, k)


def test_flip_requires_a_permutation_for_landmarks():
    x, lm = dot_images(2)
    with pytest.raises(LanetError):
        BatchAugment(cfg(flip=1.0), 48, 1)(x, lm, torch.Generator().manual_seed(0))
    with pytest.raises(LanetError):
        BatchAugment(cfg(), 48, 1, flip_perm=np.array([0, 0, 1, 2, 3]))
    with pytest.raises(LanetError):
        BatchAugment(cfg(), 48, 1, flip_perm=np.arange(4))(x, lm, torch.Generator().manual_seed(0))
    out, lo = BatchAugment(cfg(flip=1.0), 48, 1)(x, None, torch.Generator().manual_seed(0))  # no landmarks: fine
    assert lo is None and out.shape == (2, 1, 48, 48)


def test_combined_crop_and_flip_several_draws():
    x, lm = dot_images(16, jitter=2.0, seed=3)
    aug = BatchAugment(cfg(crop_scale=[0.5, 1.0], crop_ratio=[0.75, 1.333], flip=0.5), 56, 1, flip_perm=PERM)
    total = 0
    for seed in range(3):
        params = aug.sample(16, torch.Generator().manual_seed(seed))
        assert 0 < int(params["flip"].sum()) < 16
        out, lo = aug.apply(x, lm, params)
        zoom = (56 / (params["crop"][:, 2] * 64)).numpy()
        total += check_dots(out, lo, zoom)
        # a flipped sample is the mirror image of the same crop unflipped, with identities swapped
        flipped = params["flip"]
        out_nf, lo_nf = aug.apply(x, lm, params | {"flip": torch.zeros_like(flipped)})
        assert torch.allclose(out[flipped], out_nf[flipped].flip(-1), atol=1e-5)
        assert torch.allclose(out[~flipped], out_nf[~flipped])
        mirrored = torch.stack([55 - lo_nf[..., 0], lo_nf[..., 1]], -1)
        assert torch.allclose(lo[flipped][:, PERM], mirrored[flipped], atol=1e-4)
        assert torch.equal(lo[~flipped], lo_nf[~flipped])
        img = out[:, 0] * 0.5 + 0.5
        zx, zy = (56 / (params["crop"][:, 2:] * 64)).unbind(1)
        for i in range(16):
            edge = 3.5 * SIGMA * max(zx[i], zy[i]) + 1
            for k in range(5):
                if ((lo[i, k] > edge) & (lo[i, k] < 55 - edge)).all():
                    want = BRIGHT[PERM[k]] if flipped[i] else BRIGHT[k]
                    assert abs(amplitude(img[i], lo[i, k], zx[i], zy[i]) - want) < 0.05, (seed, i, k)
    assert total >= 150


def test_noop_configuration_equals_eval():
    for h, w, S in ((64, 64, 48), (32, 32, 48), (48, 48, 48), (64, 80, 40)):
        x, lm = dot_images(4, h=h, w=w)
        x8 = (x * 255).round().to(torch.uint8)
        aug = BatchAugment(cfg(), S, 1)
        a, la = aug(x8, lm, torch.Generator().manual_seed(0))
        b, lb = aug.eval(x8, lm)
        assert torch.allclose(a, b, atol=2e-5), (h, w, S, (a - b).abs().max())
        assert torch.allclose(la, lb, atol=1e-4)


def test_same_seed_same_output_and_slicing():
    x, lm = dot_images(10, jitter=3, seed=4)
    x8 = torch.cat([(x * 255).round().to(torch.uint8)] * 3, -1)  # RGB
    aug = BatchAugment(AugmentConfig(erasing=0.5), 40, 3, flip_perm=PERM)  # the default recipe
    a, la = aug(x8, lm, torch.Generator().manual_seed(11))
    b, lb = aug(x8, lm, torch.Generator().manual_seed(11))
    c, _ = aug(x8, lm, torch.Generator().manual_seed(12))
    assert torch.equal(a, b) and torch.equal(la, lb) and not torch.equal(a, c)
    assert a.shape == (10, 3, 40, 40)
    params = aug.sample(10, torch.Generator().manual_seed(11))
    assert all(v.shape[0] == 10 for v in params.values())
    for lo_, hi_ in ((0, 4), (4, 10), (3, 7)):
        part, lpart = aug.apply(x8[lo_:hi_], lm[lo_:hi_], {k: v[lo_:hi_] for k, v in params.items()})
        assert torch.allclose(part, a[lo_:hi_], atol=1e-6) and torch.allclose(lpart, la[lo_:hi_], atol=1e-5)


def test_erasing_statistics():
    n, S = 2000, 64
    x = torch.full((n, 8, 8, 1), 200, dtype=torch.uint8)
    aug = BatchAugment(cfg(erasing=0.3, erasing_scale=[0.02, 0.2]), S, 1)
    params = aug.sample(n, torch.Generator().manual_seed(0))
    out, _ = aug.apply(x, None, params)
    erased = (out[:, 0] == 0).float().mean((1, 2))  # fraction of zeroed pixels per image
    hit = erased > 0
    assert torch.equal(hit, params["erase"])
    assert abs(hit.float().mean().item() - 0.3) < 5 * math.sqrt(0.3 * 0.7 / n)
    frac = erased[hit]
    assert frac.min() >= 0.015 and frac.max() <= 0.21
    assert abs(frac.mean().item() - 0.11) < 0.01  # mean of U(0.02, 0.2)
    box = params["erase_box"][hit]
    aspect = (box[:, 3] / box[:, 2]).float()
    assert aspect.min() >= 0.25 and aspect.max() <= 3.6
    assert (torch.log(aspect).mean()).abs() < 0.1  # log-uniform aspect, symmetric around 1
    # untouched pixels keep the normalised value
    assert torch.allclose(out[~hit], torch.full_like(out[~hit], (200 / 255 - 0.5) / 0.5))


def test_crop_statistics_match_configuration():
    aug = BatchAugment(cfg(crop_scale=[0.3, 0.9], crop_ratio=[0.5, 2.0]), 32, 1)
    p = aug.sample(4000, torch.Generator().manual_seed(0))["crop"]
    x0, y0, w, h = p.unbind(1)
    area, ratio = w * h, w / h
    assert area.min() >= 0.3 - 1e-6 and area.max() <= 0.9 + 1e-6
    assert ratio.min() >= 0.5 - 1e-5 and ratio.max() <= 2.0 + 1e-5
    assert (x0 >= 0).all() and (y0 >= 0).all() and (x0 + w <= 1 + 1e-6).all() and (y0 + h <= 1 + 1e-6).all()
    # an impossible configuration falls back to the whole image with the aspect clamped
    p = BatchAugment(cfg(crop_scale=[1.0, 1.0], crop_ratio=[2.0, 3.0]), 32, 1).sample(5, torch.Generator())
    assert torch.allclose(p["crop"][:, 2:], torch.tensor([1.0, 0.5]).expand(5, 2))


def test_color_jitter_formulas():
    n = 400
    x = torch.full((n, 16, 16, 1), 100, dtype=torch.uint8)
    aug = BatchAugment(cfg(color_jitter=0.4), 16, 1)
    params = aug.sample(n, torch.Generator().manual_seed(0))
    j = params["jitter"]
    assert j.min() >= 0.6 and j.max() <= 1.4 and j.std() > 0.15
    out, _ = aug.apply(x, None, params)
    # a flat gray image: contrast and saturation change nothing, brightness scales it
    want = ((100 / 255 * j[:, 0]).clamp(0, 1) - 0.5) / 0.5
    assert torch.allclose(out[:, 0], want[:, None, None].expand(n, 16, 16), atol=1e-5)
    # contrast on a two-level image: distance to the mean scales by the factor
    x = torch.zeros(3, 16, 16, 1, dtype=torch.uint8)
    x[:, :, :8] = 200
    x[:, :, 8:] = 50
    p = {k: v[:3] for k, v in params.items()}
    p["jitter"] = torch.tensor([[1.0, 0.5, 1.0], [1.0, 1.2, 1.0], [1.0, 1.0, 1.0]])
    out, _ = aug.apply(x, None, p)
    spread = (out[:, 0, 0, 0] - out[:, 0, 0, -1]) * 0.5  # back to [0, 1] units
    assert torch.allclose(spread, torch.tensor([0.5, 1.2, 1.0]) * 150 / 255, atol=1e-5)
    # saturation 0 makes an RGB image gray
    rgb = torch.randint(0, 256, (2, 16, 16, 3), dtype=torch.uint8)
    aug3 = BatchAugment(cfg(color_jitter=0.5), 16, 3, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    p3 = aug3.sample(2, torch.Generator().manual_seed(0))
    p3["jitter"] = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    out, _ = aug3.apply(rgb, None, p3)
    assert torch.allclose(out[0, 0], out[0, 1], atol=1e-6) and torch.allclose(out[0, 1], out[0, 2], atol=1e-6)
    assert torch.allclose(out[1], rgb[1].permute(2, 0, 1).float() / 255, atol=1e-6)


def test_flip_on_synthetic_faces_keeps_ibug_sides():
    from lanet.data.synthetic import make_synthetic

    fs = make_synthetic(24, seed=5)
    aug = BatchAugment(AugmentConfig(flip=1.0), 48, 1, flip_perm=ibug68_flip())
    out, lm = aug(torch.from_numpy(fs.images), torch.from_numpy(fs.landmarks), torch.Generator().manual_seed(0))
    for a, b in ((36, 45), (39, 42), (48, 54), (0, 16), (17, 26), (31, 35)):
        assert (lm[:, a, 0] < lm[:, b, 0]).all()  # image-left points stay on the image left after the swap


def test_channels_defaults_and_validation():
    x8 = torch.randint(0, 256, (2, 20, 20, 1), dtype=torch.uint8)
    aug3 = BatchAugment(cfg(), 20, 3)
    assert aug3.mean == (0.485, 0.456, 0.406) and aug3.std == (0.229, 0.224, 0.225)
    out, _ = aug3.eval(x8)
    assert out.shape == (2, 3, 20, 20)
    assert BatchAugment(cfg(), 20, 1).mean == (0.5,)
    rgb = torch.randint(0, 256, (2, 20, 20, 3), dtype=torch.uint8)
    out, _ = BatchAugment(cfg(), 20, 1).eval(rgb)
    assert out.shape == (2, 1, 20, 20)
    for bad in (dict(crop_scale=[0.0, 1.0]), dict(crop_scale=[0.9, 0.5]), dict(flip=1.5), dict(erasing=-0.1),
                dict(color_jitter=-1), dict(erasing_scale=[0.1, 1.0]), dict(crop_ratio=[1.0])):
        with pytest.raises(LanetError):
            BatchAugment(cfg(**bad), 32, 1)
    with pytest.raises(LanetError):
        BatchAugment(cfg(), 32, 3, mean=(0.5,))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    x, lm = dot_images(8, jitter=2, seed=6)
    x8 = (x * 255).round().to(torch.uint8)
    aug = BatchAugment(AugmentConfig(erasing=0.5), 48, 1, flip_perm=PERM)
    params = aug.sample(8, torch.Generator().manual_seed(0))
    a, la = aug.apply(x8, lm, params)
    b, lb = aug.apply(x8.cuda(), lm.cuda(), params)
    assert b.is_cuda and lb.is_cuda
    assert torch.allclose(a, b.cpu(), atol=1e-4) and torch.allclose(la, lb.cpu(), atol=1e-4)
    g = torch.Generator(device="cuda").manual_seed(0)
    c, lc = aug(x8.cuda(), lm.cuda(), g)
    assert c.is_cuda and lc.shape == lm.shape
