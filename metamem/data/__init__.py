"""Datasets: the :class:`ImageDataset` container, the registry and the built-in loaders."""

from metamem.data import (  # noqa: F401  (register loaders)
    cifar,
    cub,
    folder,
    mini_imagenet,
    omniglot,
    synthetic,  # noqa: F401  (registers "synthetic")
    tiered_imagenet,
    two_view_sum,  # noqa: F401  (registers the "two_view_sum" sequence task)
)
from metamem.data.base import DATASETS, DatasetError, ImageDataset, load_dataset
from metamem.data.pairs import from_pairs  # noqa: F401  (registers "pairs")

__all__ = ["DATASETS", "DatasetError", "ImageDataset", "from_pairs", "load_dataset"]
