"""Datasets: the :class:`ImageDataset` container, the registry and the built-in loaders."""

from metamem.data.base import DATASETS, DatasetError, ImageDataset, load_dataset
from metamem.data import synthetic  # noqa: F401  (registers "synthetic")
from metamem.data import cifar, cub, folder, mini_imagenet, omniglot, tiered_imagenet  # noqa: F401  (register loaders)
from metamem.data.pairs import from_pairs  # noqa: F401  (registers "pairs")
from metamem.data import two_view_sum  # noqa: F401  (registers the "two_view_sum" sequence task)

__all__ = ["DATASETS", "DatasetError", "ImageDataset", "from_pairs", "load_dataset"]
