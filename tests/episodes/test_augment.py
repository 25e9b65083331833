"""AffineAugment: affine maps, random-resized crop, flip and colour jitter against per-pixel
references, exact special cases, seeding, the sampler, and (gpu marker) CPU/GPU equality."""

from __future__ import annotations

import math

import pytest
import torch

from metamem.config import ConfigError, load_config
from metamem.data.synthetic import make_synthetic
from metamem.episodes import AffineAugment, EpisodeSampler, build_augment
from metamem.episodes.augment import affine_matrices
from metamem.validate import validate_config


def _reference(img: torch.Tensor, angle: float, tx: float, ty: float, log_scale: float,
               shear: float) -> torch.Tensor:
    """Per-pixel inverse mapping + bilinear interpolation with zero padding (plain Python).

    Forward map in pixels about the centre (x right, y down): shear along x, rotate
    counter-clockwise as displayed, zoom, shift by (tx*W, ty*H).
    """
    h, w = img.shape
    out = torch.zeros(h, w, dtype=torch.float64)
    scale = math.exp(log_scale)
    c, s, k = math.cos(angle), math.sin(angle), math.tan(shear)
    for i in range(h):
        for j in range(w):
            x, y = j + 0.5 - w / 2 - tx * w, i + 0.5 - h / 2 - ty * h
            x, y = x / scale, y / scale
            # undo the rotation (counter-clockwise on screen = clockwise in y-down coordinates)
            x, y = c * x - s * y, s * x + c * y
            x = x - k * y  # undo the shear
            col, row = x + w / 2 - 0.5, y + h / 2 - 0.5
            c0, r0 = math.floor(col), math.floor(row)
            fc, fr = col - c0, row - r0
            acc = 0.0
            for dr, wr in ((0, 1 - fr), (1, fr)):
                for dc, wc in ((0, 1 - fc), (1, fc)):
                    rr, cc = r0 + dr, c0 + dc
                    if 0 <= rr < h and 0 <= cc < w:
                        acc += wr * wc * float(img[rr, cc])
            out[i, j] = acc
    return out


@pytest.mark.parametrize("shape", [(7, 7), (5, 9)])
def test_matches_per_pixel_reference(shape: tuple[int, int]) -> None:
    g = torch.Generator().manual_seed(3)
    h, w = shape
    x = torch.rand(2, 3, 1, h, w, generator=g, dtype=torch.float64)
    aug = AffineAugment(rotate=30.0, translate=0.2, scale=0.3, shear=15.0)
    keys = torch.tensor([11, 987654321], dtype=torch.int64)
    out = aug(x, keys)
    u = aug.params(keys, 3)
    for b in range(2):
        for n in range(3):
            p = u[b, n].tolist()
            ref = _reference(
                x[b, n, 0], p[0] * math.radians(30.0), p[1] * 0.2, p[2] * 0.2,
                p[3] * math.log1p(0.3), p[4] * math.radians(15.0),
            )
            torch.testing.assert_close(out[b, n, 0], ref, atol=1e-9, rtol=0)


def test_exact_quarter_turn_and_pixel_shift() -> None:
    x = torch.rand(1, 1, 6, 6, dtype=torch.float64)

    def apply(angle: float, tx: float, ty: float) -> torch.Tensor:
        def t(v: float) -> torch.Tensor:
            return torch.tensor(v, dtype=torch.float64)

        theta = affine_matrices(t(angle), t(tx), t(ty), t(0.0), t(0.0))
        grid = torch.nn.functional.affine_grid(theta[None], [1, 1, 6, 6], align_corners=False)
        return torch.nn.functional.grid_sample(x, grid, align_corners=False)

    torch.testing.assert_close(apply(math.pi / 2, 0, 0), torch.rot90(x, 1, dims=(2, 3)))
    shifted = torch.zeros_like(x)
    shifted[..., 1:, :-1] = x[..., :-1, 1:]  # one pixel left (tx = -1/6), one down (ty = 1/6)
    torch.testing.assert_close(apply(0.0, -1 / 6, 1 / 6), shifted)


def test_draws_depend_only_on_key_and_position() -> None:
    aug = AffineAugment(rotate=10.0, translate=0.1)
    x = torch.rand(4, 5, 1, 8, 8)
    keys = torch.tensor([5, 6, 7, 8])
    full = aug(x, keys)
    torch.testing.assert_close(aug(x[2:], keys[2:]), full[2:])  # batch composition free
    torch.testing.assert_close(aug(x, keys), full)  # deterministic
    tail = aug(x[:, 2:], keys, offset=2)  # the same positions in a second call
    torch.testing.assert_close(tail, full[:, 2:])
    u = aug.params(keys, 5)
    assert u.min() >= -1 and u.max() < 1
    assert len({round(v, 6) for v in u[..., 0].flatten().tolist()}) == 20  # one map per image


def test_inactive_is_identity_and_bad_options_rejected() -> None:
    x = torch.rand(2, 3, 1, 4, 4)
    assert AffineAugment()(x, torch.tensor([1, 2])) is x
    assert build_augment({}) is None and build_augment({"rotate": 0}) is None
    with pytest.raises(ValueError, match="unknown key 'rotation'.*valid keys: rotate"):
        build_augment({"rotation": 10})
    with pytest.raises(ValueError, match=r"augment.rotate must be in \[0, 180\], got -1"):
        AffineAugment(rotate=-1)


def test_sampler_augments_same_episodes() -> None:
    ds = make_synthetic("train", num_classes=12, per_class=6, image_size=8)
    kw = dict(n_way=3, k_shot=2, n_query=2, batch_size=4, seed=7)
    plain = EpisodeSampler(ds, **kw).sample()
    aug = AffineAugment(rotate=20.0, translate=0.1)
    a = EpisodeSampler(ds, augment=aug, **kw).sample()
    b = EpisodeSampler(ds, augment=aug, **kw).sample()
    assert torch.equal(a.support_index, plain.support_index)
    assert torch.equal(a.query_index, plain.query_index)
    assert not torch.allclose(a.support_x, plain.support_x)
    torch.testing.assert_close(a.support_x, b.support_x)
    torch.testing.assert_close(a.query_x, aug(plain.query_x, plain.episode_keys, offset=6))


def test_config_key_checked(tmp_path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(
        "learner: {name: protonet, backbone: conv4}\n"
        "data: {name: synthetic}\nepisodes: {augment: {rotate: 10, shift: 2}}\n"
    )
    with pytest.raises(ConfigError, match=r"episodes.augment: unknown key 'shift'"):
        validate_config(load_config(path), source=str(path))


# ---------------------------------------------------------------- crop, flip, colour jitter
def _bilinear_reference(img: torch.Tensor, xs: float, ys: float) -> float:
    """Bilinear sample of ``img [H, W]`` at normalised (align_corners=False) coordinates."""
    h, w = img.shape
    col, row = ((xs + 1) * w - 1) / 2, ((ys + 1) * h - 1) / 2
    c0, r0 = math.floor(col), math.floor(row)
    acc = 0.0
    for dr, wr in ((0, 1 - (row - r0)), (1, row - r0)):
        for dc, wc in ((0, 1 - (col - c0)), (1, col - c0)):
            rr, cc = r0 + dr, c0 + dc
            if 0 <= rr < h and 0 <= cc < w:
                acc += wr * wc * float(img[rr, cc])
    return acc


def test_crop_and_flip_match_per_pixel_reference() -> None:
    g = torch.Generator().manual_seed(5)
    x = torch.rand(3, 2, 1, 6, 9, generator=g, dtype=torch.float64)
    aug = AffineAugment(crop_area=0.2, crop_aspect=2.0, flip=0.5)
    keys = torch.tensor([3, 44, 2**60 + 1])
    out = aug(x, keys)
    v = aug.crop_params(keys, 2)
    flips = 0
    for b in range(3):
        for n in range(2):
            area, lr, ux, uy, uf = v[b, n, :5].tolist()
            a = 0.2 + 0.8 * area
            r = math.exp((2 * lr - 1) * math.log(2.0))
            w, h = min(math.sqrt(a * r), 1.0), min(math.sqrt(a / r), 1.0)
            cx, cy = (2 * ux - 1) * (1 - w), (2 * uy - 1) * (1 - h)
            sign = -1.0 if uf < 0.5 else 1.0
            flips += sign < 0
            img = x[b, n, 0]
            for i in range(6):
                for j in range(9):
                    xo, yo = (2 * j + 1) / 9 - 1, (2 * i + 1) / 6 - 1
                    want = _bilinear_reference(img, sign * w * xo + cx, h * yo + cy)
                    assert float(out[b, n, 0, i, j]) == pytest.approx(want, abs=1e-9)
    assert 0 < flips < 6  # both branches exercised with these keys


def test_flip_alone_mirrors_exactly() -> None:
    x = torch.rand(2, 3, 3, 5, 7, dtype=torch.float64)
    out = AffineAugment(flip=1.0)(x, torch.tensor([1, 2]))
    torch.testing.assert_close(out, x.flip(-1))


def test_colour_jitter_matches_per_image_reference() -> None:
    g = torch.Generator().manual_seed(2)
    x = torch.rand(2, 3, 3, 4, 5, generator=g, dtype=torch.float64)
    aug = AffineAugment(brightness=0.4, contrast=0.5, saturation=0.6)
    keys = torch.tensor([7, 8])
    out = aug(x, keys, offset=1)
    v = aug.crop_params(keys, 4)[:, 1:]
    lum = torch.tensor([0.299, 0.587, 0.114], dtype=torch.float64).view(3, 1, 1)
    for b in range(2):
        for n in range(3):
            fb, fc, fs = (1 + a * (2 * float(v[b, n, i]) - 1) for i, a in ((5, 0.4), (6, 0.5), (7, 0.6)))
            img = (x[b, n] * fb).clamp(0, 1)
            m = float((img * lum).sum(0).mean())
            img = (fc * img + (1 - fc) * m).clamp(0, 1)
            gray = (img * lum).sum(0, keepdim=True)
            img = (fs * img + (1 - fs) * gray).clamp(0, 1)
            torch.testing.assert_close(out[b, n], img)
    assert AffineAugment(saturation=0.5)(x[:, :, :1], keys).shape == x[:, :, :1].shape  # gray: no-op


def test_crop_draws_leave_affine_draws_unchanged_and_are_seeded() -> None:
    keys = torch.tensor([5, 6, 7])
    a = AffineAugment(rotate=10.0)
    b = AffineAugment(rotate=10.0, crop_area=0.5, flip=0.5, brightness=0.2)
    assert torch.equal(a.params(keys, 4), b.params(keys, 4))
    x = torch.rand(3, 4, 3, 8, 8)
    torch.testing.assert_close(b(x, keys), b(x, keys))
    assert not torch.allclose(b(x, keys), a(x, keys))
    ds = make_synthetic("train", num_classes=12, per_class=6, image_size=8)
    kw = dict(n_way=3, k_shot=2, n_query=2, batch_size=4, seed=7, augment=b)
    s1, s2 = EpisodeSampler(ds, **kw), EpisodeSampler(ds, **kw)
    for _ in range(2):
        e1, e2 = s1.sample(), s2.sample()
        assert torch.equal(e1.support_x, e2.support_x) and torch.equal(e1.query_x, e2.query_x)
    assert build_augment({"crop_area": 0.08, "crop_aspect": 1.333, "flip": 0.5, "brightness": 0.4,
                          "contrast": 0.4, "saturation": 0.4}) is not None
    assert build_augment({"crop_area": 1, "flip": 0}) is None
    with pytest.raises(ValueError, match=r"augment.crop_area must be in \[0, 1\], got 0"):
        AffineAugment(crop_area=0)


def test_mini_imagenet_style_config_validates(tmp_path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(
        "learner: {name: protonet, backbone: conv4}\n"
        "data: {name: synthetic, options: {image_size: 16}}\n"
        "episodes: {augment: {crop_area: 0.08, crop_aspect: 1.333, flip: 0.5, brightness: 0.4}}\n"
    )
    validate_config(load_config(path), source=str(path))


@pytest.mark.gpu
def test_same_augmented_episodes_on_cpu_and_gpu() -> None:
    ds = make_synthetic("train", num_classes=12, per_class=6, image_size=16, channels=3)
    aug = AffineAugment(rotate=10.0, translate=0.1, crop_area=0.3, crop_aspect=1.5, flip=0.5,
                        brightness=0.3, contrast=0.3, saturation=0.3)
    kw = dict(n_way=3, k_shot=2, n_query=2, batch_size=16, seed=3, augment=aug)
    cpu, gpu = EpisodeSampler(ds, **kw), EpisodeSampler(ds, device="cuda", **kw)
    for _ in range(2):
        a, b = cpu.sample(), gpu.sample()
        assert torch.equal(a.support_index, b.support_index.cpu())
        assert torch.equal(aug.crop_params(a.episode_keys, 4), aug.crop_params(b.episode_keys, 4).cpu())
        torch.testing.assert_close(a.support_x, b.support_x.cpu(), atol=1e-4, rtol=0)
        torch.testing.assert_close(a.query_x, b.query_x.cpu(), atol=1e-4, rtol=0)
