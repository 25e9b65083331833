"""An in-memory synthetic dataset with easy, well-separated classes, for tests and smoke runs."""

from __future__ import annotations

import torch

from metamem.data.base import DATASETS, SPLITS, DatasetError, ImageDataset, check_split

__all__ = ["make_synthetic"]


@DATASETS.register("synthetic")
def make_synthetic(
    split: str | None = "train",
    *,
    num_classes: int = 40,
    per_class: int = 20,
    image_size: int = 28,
    channels: int = 1,
    num_groups: int = 4,
    noise: float = 0.15,
    seed: int = 0,
) -> ImageDataset:
    """Synthetic classes: each a fixed random binary prototype plus pixel noise (no files).

    Splits ``train``/``val``/``test`` draw disjoint prototypes (the split name is part of
    the seed), so classes never repeat across splits. Classes are assigned round-robin to
    ``num_groups`` groups.
    """
    if min(num_classes, per_class, image_size, channels, num_groups) < 1:
        raise DatasetError(
            "synthetic: num_classes, per_class, image_size, channels and num_groups must be "
            f">= 1, got {num_classes}, {per_class}, {image_size}, {channels}, {num_groups}"
        )
    split = check_split("synthetic", split)
    salt = SPLITS.index(split)
    g = torch.Generator().manual_seed(seed * 7 + salt)
    protos = torch.rand(num_classes, channels, image_size, image_size, generator=g) < 0.5
    flips = torch.rand(num_classes, per_class, channels, image_size, image_size, generator=g)
    imgs = protos[:, None] ^ (flips < noise)
    images = (imgs.reshape(-1, channels, image_size, image_size).to(torch.uint8) * 255)
    labels = torch.arange(num_classes).repeat_interleave(per_class)
    return ImageDataset(
        images=images,
        labels=labels,
        class_names=[f"{split}_class{i:03d}" for i in range(num_classes)],
        groups=torch.arange(num_classes) % num_groups,
        group_names=[f"group{i}" for i in range(num_groups)],
        name="synthetic",
        split=split,
        info={"seed": seed, "noise": noise},
    )
