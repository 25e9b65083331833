"""Seeded, batched augmentation of episode images, on the sampler's device.

:class:`AffineAugment` distorts every image of a batch of episodes by its own random
geometric map -- a small affine distortion (rotation, translation, scale, shear), a
random-resized crop and a horizontal flip, composed into one matrix per image and applied in
one ``affine_grid`` + ``grid_sample`` -- then its own colour jitter (brightness, contrast,
saturation) as a few batched pointwise ops: no Python loop over episodes or images. The parameters of an image are a
pure function of its episode key and its position in the episode (the counter-based hash of
:mod:`metamem.rng`), so augmented episodes are as reproducible as the episodes
themselves, whatever else is in the batch, and the sampler needs no extra generator state.

Santoro et al. (2016) and the public MANN reimplementations that reach the paper's curve
(papers.md §12: snowkylin/ntm, ntm-one-shot) distort each image by a small random rotation
and translation (about ±11° and ±10 of 105 pixels); ``AffineAugment(rotate=11.25,
translate=0.1)`` is that setting. Koch et al. (2015) use small affine distortions on
Omniglot too. The maps are applied to the stored (inverted) images, so the zero padding is
background.

For mini-ImageNet the usual training augmentation (e.g. Tian et al. 2020; Chen et al. 2019)
is a random-resized crop, a horizontal flip and colour jitter: ``AffineAugment(crop_area=0.08,
crop_aspect=4/3, flip=0.5, brightness=0.4, contrast=0.4, saturation=0.4)`` (torchvision's
``RandomResizedCrop`` / ``ColorJitter`` semantics; crops are clamped inside the image instead
of re-drawn, and the jitter is applied in that fixed order). The crop, flip and jitter draws
come from their own stream of the hash, so turning them on leaves the affine draws (and runs
that used only those) unchanged. Bilinear sampling and float rounding may differ between CPU
and GPU in the last bits; the drawn parameters are identical.

Shapes follow :mod:`metamem.types` (B episodes, C/H/W image).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F

from metamem.config import augment_kwargs, check_augment_value
from metamem.rng import M31, random_keys

__all__ = ["AffineAugment", "build_augment", "affine_matrices"]

_AUGMENT_STREAM = 11  # rng stream of the augmentation parameters (distinct from the sampler's)
_PARAMS = 5  # rotation, translation x, translation y, log-scale, shear
_CROP_STREAM = 12  # crop area, crop log-aspect, crop centre x, y, flip, brightness, contrast, saturation
_CROP_PARAMS = 8
_GRAY = (0.299, 0.587, 0.114)  # ITU-R 601 luma weights (as torchvision's rgb_to_grayscale)


@dataclass(frozen=True)
class AffineAugment:
    """Random affine distortion of every image, drawn from its episode key.

    Each parameter is uniform in a symmetric range; 0 turns that part off.

    Attributes:
        rotate: largest rotation in degrees (angle uniform in ``[-rotate, rotate]``).
        translate: largest shift along each axis, as a fraction of the image side.
        scale: largest relative zoom: the factor is ``exp(u)``, ``u`` uniform in
            ``[-log(1+scale), log(1+scale)]``.
        shear: largest shear angle in degrees (along x).
        crop_area: random-resized crop: the crop's area is a fraction uniform in
            ``[crop_area, 1]`` of the image, resized back to the full size; 1 (default)
            turns cropping off.
        crop_aspect: largest aspect ratio of the crop (log-uniform in
            ``[1/crop_aspect, crop_aspect]``); 1 keeps the image's aspect.
        flip: probability of a horizontal flip.
        brightness, contrast, saturation: colour jitter: each factor is uniform in
            ``[1 - v, 1 + v]`` (saturation acts on 3-channel images only); the result is
            clamped to ``[0, 1]``.

    Raises:
        ValueError: for a negative or non-finite value, ``rotate``/``shear`` above 180/60
            degrees, ``translate``/``flip``/jitter above 1, ``crop_area`` outside ``(0, 1]`` or
            ``crop_aspect`` outside ``[1, 10]``.
    """

    rotate: float = 0.0
    translate: float = 0.0
    scale: float = 0.0
    shear: float = 0.0
    crop_area: float = 1.0
    crop_aspect: float = 1.0
    flip: float = 0.0
    brightness: float = 0.0
    contrast: float = 0.0
    saturation: float = 0.0

    def __post_init__(self) -> None:
        for f in fields(self):
            check_augment_value(f.name, getattr(self, f.name))

    @property
    def affine_active(self) -> bool:
        """Whether the small affine distortion is on."""
        return any(float(getattr(self, k)) > 0 for k in ("rotate", "translate", "scale", "shear"))

    @property
    def crop_active(self) -> bool:
        """Whether the crop, flip or colour jitter is on (they share one stream of draws)."""
        return (self.crop_area < 1.0 or self.crop_aspect > 1.0 or self.flip > 0
                or self.brightness > 0 or self.contrast > 0 or self.saturation > 0)

    @property
    def active(self) -> bool:
        """Whether any augmentation is on (an inactive augment returns its input)."""
        return self.affine_active or self.crop_active

    def to_dict(self) -> dict[str, float]:
        return {k: float(v) for k, v in asdict(self).items()}

    def params(self, keys: torch.Tensor, n: int) -> torch.Tensor:
        """Uniform draws in ``[-1, 1)`` for ``n`` images of each episode: float64 ``[B, n, 5]``.

        A pure function of ``(key, image position)``.
        """
        raw = random_keys(keys, _AUGMENT_STREAM, (n, _PARAMS))
        return raw.to(torch.float64) * (2.0 / (M31 + 1)) - 1.0

    def matrices(self, u: torch.Tensor, aspect: float = 1.0) -> torch.Tensor:
        """The ``affine_grid`` matrices ``[..., 2, 3]`` for draws ``u [..., 5]`` (float64)
        on images of height/width ``aspect``."""
        return affine_matrices(
            u[..., 0] * math.radians(self.rotate),
            u[..., 1] * self.translate,
            u[..., 2] * self.translate,
            u[..., 3] * math.log1p(self.scale),
            u[..., 4] * math.radians(self.shear),
            aspect=aspect,
        )

    def crop_params(self, keys: torch.Tensor, n: int) -> torch.Tensor:
        """Uniform draws in ``[0, 1)`` for the crop, flip and jitter of ``n`` images of each
        episode: float64 ``[B, n, 8]`` (a pure function of ``(key, image position)``)."""
        raw = random_keys(keys, _CROP_STREAM, (n, _CROP_PARAMS))
        return raw.to(torch.float64) * (1.0 / (M31 + 1))

    def crop_matrices(self, v: torch.Tensor) -> torch.Tensor:
        """Output-to-input maps ``[..., 3, 3]`` (homogeneous, normalised coordinates) of the
        flip and the random-resized crop for draws ``v [..., 8]``."""
        log_r = math.log(self.crop_aspect)
        area = self.crop_area + (1.0 - self.crop_area) * v[..., 0]
        ratio = torch.exp((2.0 * v[..., 1] - 1.0) * log_r)
        w = torch.sqrt(area * ratio).clamp(max=1.0)  # crop width / image width
        h = torch.sqrt(area / ratio).clamp(max=1.0)
        cx = (2.0 * v[..., 2] - 1.0) * (1.0 - w)  # the crop stays inside the image
        cy = (2.0 * v[..., 3] - 1.0) * (1.0 - h)
        sign = torch.where(v[..., 4] < self.flip, -1.0, 1.0).to(v.dtype)
        zero, one = torch.zeros_like(w), torch.ones_like(w)
        return torch.stack((
            torch.stack((w * sign, zero, cx), -1),
            torch.stack((zero, h, cy), -1),
            torch.stack((zero, zero, one), -1),
        ), -2)

    def jitter(self, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Colour jitter of ``x [M, C, H, W]`` with draws ``v [M, 8]`` (brightness, contrast,
        saturation in that order), clamped to ``[0, 1]``."""
        def factor(i: int, amount: float) -> torch.Tensor:
            return (1.0 + amount * (2.0 * v[:, i] - 1.0)).to(x.dtype).view(-1, 1, 1, 1)

        def gray(t: torch.Tensor) -> torch.Tensor:
            if t.shape[1] != 3:
                return t.mean(dim=1, keepdim=True)
            w = torch.tensor(_GRAY, dtype=t.dtype, device=t.device).view(1, 3, 1, 1)
            return (t * w).sum(dim=1, keepdim=True)

        if self.brightness > 0:
            x = (x * factor(5, self.brightness)).clamp_(0.0, 1.0)
        if self.contrast > 0:
            m = gray(x).mean(dim=(1, 2, 3), keepdim=True)
            x = torch.lerp(m, x, factor(6, self.contrast)).clamp_(0.0, 1.0)
        if self.saturation > 0 and x.shape[1] == 3:
            x = torch.lerp(gray(x), x, factor(7, self.saturation)).clamp_(0.0, 1.0)
        return x

    def __call__(self, x: torch.Tensor, keys: torch.Tensor, offset: int = 0) -> torch.Tensor:
        """Augment ``x [B, n, C, H, W]`` (floats in ``[0, 1]``) image by image.

        Args:
            x: B episodes of n images each.
            keys: int64 ``[B]`` episode keys.
            offset: position of ``x[:, 0]`` within the episode (so that the support and the
                query images of an episode, augmented in two calls, draw different maps).

        Returns:
            A new tensor like ``x``.
        """
        if not self.active or x.numel() == 0:
            return x
        b, n = x.shape[:2]
        flat = x.reshape(b * n, *x.shape[2:])
        theta: torch.Tensor | None = None
        v: torch.Tensor | None = None
        if self.affine_active:
            u = self.params(keys, offset + n)[:, offset:]
            theta = self.matrices(u, x.shape[-2] / x.shape[-1]).reshape(b * n, 2, 3)
        if self.crop_active:
            v = self.crop_params(keys, offset + n)[:, offset:].reshape(b * n, _CROP_PARAMS)
            if self.crop_area < 1.0 or self.crop_aspect > 1.0 or self.flip > 0:
                crop = self.crop_matrices(v)  # distorted image <- output
                theta = crop[:, :2] if theta is None else theta @ crop  # source <- output
        if theta is not None:
            grid = F.affine_grid(theta.to(x.dtype), list(flat.shape), align_corners=False)
            flat = F.grid_sample(flat, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        if v is not None and (self.brightness > 0 or self.contrast > 0 or self.saturation > 0):
            flat = self.jitter(flat, v)
        return flat.reshape(x.shape) if flat is not x else x.clone()


def affine_matrices(
    angle: torch.Tensor, tx: torch.Tensor, ty: torch.Tensor, log_scale: torch.Tensor,
    shear: torch.Tensor, *, aspect: float = 1.0,
) -> torch.Tensor:
    """Output-to-input maps ``[..., 2, 3]`` in ``affine_grid``'s normalised coordinates.

    In pixel units about the image centre (x right, y down), the forward map (image content
    -> output) shears along x by ``shear`` (radians), rotates by ``angle`` (radians,
    counter-clockwise as displayed), zooms by ``exp(log_scale)`` and then shifts by ``tx``
    of the width and ``ty`` of the height; ``affine_grid`` wants its inverse, expressed in
    coordinates normalised per axis (hence ``aspect`` = height / width).
    """
    s = torch.exp(-log_scale)
    # forward A = R(angle) @ Sh(shear) * scale (y axis points down, so screen-CCW is -angle)
    c, si, k = torch.cos(angle), torch.sin(angle), torch.tan(shear)
    # inverse of R(-angle): R(angle); inverse of Sh: [[1, -k], [0, 1]]; inverse zoom: 1/scale
    a00, a01 = c, -si
    a10, a11 = si, c
    inv00 = s * (a00 - k * a10)
    inv01 = s * (a01 - k * a11)
    inv10 = s * a10
    inv11 = s * a11
    # shift in normalised units is 2 * fraction; input = inv @ (output - shift)
    # pixel -> normalised coordinates: x / (W/2), y / (H/2)
    inv01, inv10 = inv01 * aspect, inv10 / aspect
    sx, sy = 2.0 * tx, 2.0 * ty
    b0 = -(inv00 * sx + inv01 * sy)
    b1 = -(inv10 * sx + inv11 * sy)
    row0 = torch.stack((inv00, inv01, b0), dim=-1)
    row1 = torch.stack((inv10, inv11, b1), dim=-1)
    return torch.stack((row0, row1), dim=-2)


def build_augment(options: Mapping[str, Any] | None) -> AffineAugment | None:
    """An :class:`AffineAugment` from a config mapping (``episodes.augment``), or None.

    Raises:
        ValueError: for an unknown key (listing the valid ones) or a bad value.
    """
    if not options:
        return None
    aug = AffineAugment(**augment_kwargs(options))
    return aug if aug.active else None
