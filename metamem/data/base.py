"""The dataset container every loader returns, and the dataset registry.

A dataset split is held as one uint8 tensor of images plus one label per image: small
enough for the device (Omniglot at 28×28 is 25 MB, mini-ImageNet at 84×84 is 1.3 GB), and
exactly what the GPU-batched :class:`~metamem.episodes.EpisodeSampler` gathers from.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from metamem.registry import Registry

__all__ = ["ImageDataset", "DATASETS", "load_dataset", "DatasetError", "SPLITS", "check_split", "check_image_size"]

#: the splits of the meta-learning benchmarks (class-disjoint)
SPLITS = ("train", "val", "test")


class DatasetError(ValueError):
    """Bad dataset input (missing files, bad archives, too-small classes...)."""


def check_split(dataset: str, split: str | None, splits: Sequence[str] = SPLITS) -> str:
    """``split`` (``train`` when None), checked to be one of ``splits``.

    Raises:
        DatasetError: ``<dataset>: unknown split ...``, listing the valid ones.
    """
    split = split or "train"
    if split not in splits:
        raise DatasetError(f"{dataset}: unknown split {split!r}; valid splits: {', '.join(splits)}")
    return split


def check_image_size(dataset: str, image_size: object) -> int:
    """``image_size`` checked to be an int >= 1 (not a bool).

    Raises:
        DatasetError: ``<dataset>: image_size must be a positive int, ...``.
    """
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
        raise DatasetError(f"{dataset}: image_size must be a positive int, got {image_size!r}")
    return image_size


#: Registered dataset builders: ``builder(split=..., **options) -> ImageDataset``.
DATASETS: Registry[Callable[..., ImageDataset]] = Registry("dataset")


@dataclass
class ImageDataset:
    """A labelled image split held as one uint8 tensor.

    Attributes:
        images: uint8 ``[M, C, H, W]`` (CPU tensor, possibly memory-mapped).
        labels: int64 ``[M]`` class ids in ``0..num_classes-1``.
        class_names: name of each class (for Omniglot ``"Alphabet/characterNN"``, with a
            ``"/rot90"`` suffix for rotated copies).
        groups: int64 ``[num_classes]`` group id of each class (the alphabet for Omniglot),
            or ``None`` where classes have no groups.
        group_names: name of each group id, or ``None``.
        name: dataset name (``"omniglot"``...).
        split: split name this object holds.
        info: provenance and preprocessing (source files, image size, cache key...).
    """

    images: torch.Tensor
    labels: torch.Tensor
    class_names: list[str]
    groups: torch.Tensor | None = None
    group_names: list[str] | None = None
    name: str = "dataset"
    split: str | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        where = f"dataset {self.name!r} split {self.split!r}"
        if not isinstance(self.images, torch.Tensor) or not isinstance(self.labels, torch.Tensor):
            raise DatasetError(f"{where}: images and labels must be torch tensors")
        if self.labels.is_floating_point() or self.labels.is_complex() or self.labels.dtype == torch.bool:
            raise DatasetError(
                f"{where}: labels must be an integer tensor, got {self.labels.dtype}; convert "
                "class ids with .long() (after checking they are whole numbers)"
            )
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise DatasetError(
                f"{where}: images must be uint8 [M, C, H, W], got {self.images.dtype} "
                f"{tuple(self.images.shape)}"
            )
        if self.labels.shape != (self.images.shape[0],):
            raise DatasetError(
                f"{where}: labels must be [M] with M={self.images.shape[0]}, got "
                f"{tuple(self.labels.shape)}"
            )
        self.labels = self.labels.to(torch.int64)
        if self.labels.numel() and (
            int(self.labels.min()) < 0 or int(self.labels.max()) >= len(self.class_names)
        ):
            raise DatasetError(
                f"{where}: labels must lie in 0..{len(self.class_names) - 1} "
                f"(one per class name), got {int(self.labels.min())}..{int(self.labels.max())}"
            )
        if self.groups is not None:
            self.groups = torch.as_tensor(self.groups, dtype=torch.int64)
            if self.groups.shape != (len(self.class_names),):
                raise DatasetError(
                    f"{where}: groups must give one group id per class "
                    f"({len(self.class_names)}), got {tuple(self.groups.shape)}"
                )

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)``."""
        c, h, w = self.images.shape[1:]
        return int(c), int(h), int(w)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def class_counts(self) -> torch.Tensor:
        """int64 ``[num_classes]``: images per class."""
        return torch.bincount(self.labels, minlength=self.num_classes)

    def subset(self, class_ids: Sequence[int], split: str | None = None) -> ImageDataset:
        """A new dataset holding only ``class_ids`` (relabelled 0.. in the given order)."""
        ids = torch.as_tensor(list(class_ids), dtype=torch.int64)
        remap = torch.full((self.num_classes,), -1, dtype=torch.int64)
        remap[ids] = torch.arange(len(ids))
        keep = remap[self.labels] >= 0
        sel = keep.nonzero().squeeze(1)
        groups = group_names = None
        if self.groups is not None:
            old = self.groups[ids]
            uniq = torch.unique(old)  # sorted
            groups = torch.searchsorted(uniq, old)
            if self.group_names is not None:
                group_names = [self.group_names[int(g)] for g in uniq]
        return ImageDataset(
            images=self.images[sel],
            labels=remap[self.labels[sel]],
            class_names=[self.class_names[int(i)] for i in ids],
            groups=groups,
            group_names=group_names,
            name=self.name,
            split=split if split is not None else self.split,
            info=dict(self.info),
        )

    def __repr__(self) -> str:
        g = f", groups={len(self.group_names or [])}" if self.groups is not None else ""
        return (
            f"ImageDataset(name={self.name!r}, split={self.split!r}, images={len(self)}, "
            f"classes={self.num_classes}, image_shape={self.image_shape}{g})"
        )


def load_dataset(name: str, split: str | None = None, **options: Any) -> ImageDataset:
    """Load a registered dataset split.

    Args:
        name: a registered dataset name (``metamem ls datasets``).
        split: the split to load; what is valid depends on the dataset.
        **options: dataset options (``image_size``, ``rotations``, ``root``...).

    Returns:
        The split as an :class:`ImageDataset`.

    Raises:
        UnknownNameError: for an unknown dataset name (the message lists the valid ones).
    """
    return DATASETS.get(name)(split=split, **options)
