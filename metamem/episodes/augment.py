"""Seeded, batched affine augmentation of episode images, on the sampler's device.

:class:`AffineAugment` distorts every image of a batch of episodes by its own small random
affine map (rotation, translation, scale, shear), all in one ``affine_grid`` +
``grid_sample``: no Python loop over episodes or images. The parameters of an image are a
pure function of its episode key and its position in the episode (the counter-based hash of
:mod:`metamem.episodes.rng`), so augmented episodes are as reproducible as the episodes
themselves, whatever else is in the batch, and the sampler needs no extra generator state.

Santoro et al. (2016) and the public MANN reimplementations that reach the paper's curve
(papers.md §12: snowkylin/ntm, ntm-one-shot) distort each image by a small random rotation
and translation (about ±11° and ±10 of 105 pixels); ``AffineAugment(rotate=11.25,
translate=0.1)`` is that setting. Koch et al. (2015) use small affine distortions on
Omniglot too. The maps are applied to the stored (inverted) images, so the zero padding is
background.

Shapes follow :mod:`metamem.types` (B episodes, C/H/W image).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any, Mapping

import torch
import torch.nn.functional as F

from metamem.rng import M31, random_keys

__all__ = ["AffineAugment", "build_augment", "affine_matrices"]

_AUGMENT_STREAM = 11  # rng stream of the augmentation parameters (distinct from the sampler's)
_PARAMS = 5  # rotation, translation x, translation y, log-scale, shear


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

    Raises:
        ValueError: for a negative or non-finite value, ``rotate``/``shear`` above 180/60
            degrees, or ``translate`` above 1.
    """

    rotate: float = 0.0
    translate: float = 0.0
    scale: float = 0.0
    shear: float = 0.0

    def __post_init__(self) -> None:
        limits = {"rotate": 180.0, "translate": 1.0, "scale": 1.0, "shear": 60.0}
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ValueError(f"augment.{f.name} must be a number, got {v!r}")
            if not 0.0 <= float(v) <= limits[f.name]:
                raise ValueError(
                    f"augment.{f.name} must be in [0, {limits[f.name]:g}], got {v!r}"
                )

    @property
    def active(self) -> bool:
        """Whether any distortion is on (an inactive augment returns its input)."""
        return any(float(getattr(self, f.name)) > 0 for f in fields(self))

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

    def __call__(self, x: torch.Tensor, keys: torch.Tensor, offset: int = 0) -> torch.Tensor:
        """Distort ``x [B, n, C, H, W]`` (floats) image by image.

        Args:
            x: B episodes of n images each.
            keys: int64 ``[B]`` episode keys.
            offset: position of ``x[:, 0]`` within the episode (so that the support and the
                query images of an episode, distorted in two calls, draw different maps).

        Returns:
            A new tensor like ``x``.
        """
        if not self.active or x.numel() == 0:
            return x
        b, n = x.shape[:2]
        u = self.params(keys, offset + n)[:, offset:]
        theta = self.matrices(u, x.shape[-2] / x.shape[-1]).to(x.dtype).reshape(b * n, 2, 3)
        flat = x.reshape(b * n, *x.shape[2:])
        grid = F.affine_grid(theta, list(flat.shape), align_corners=False)
        out = F.grid_sample(flat, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        return out.view_as(x)


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
    valid = [f.name for f in fields(AffineAugment)]
    bad = [k for k in options if k not in valid]
    if bad:
        raise ValueError(f"augment: unknown key {bad[0]!r}; valid keys: {', '.join(valid)}")
    aug = AffineAugment(**{k: float(v) if isinstance(v, int) and not isinstance(v, bool) else v
                           for k, v in options.items()})
    return aug if aug.active else None
