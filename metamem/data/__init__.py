"""Datasets: the :class:`ImageDataset` container, the registry and the built-in loaders."""

from metamem.data.base import DATASETS, DatasetError, ImageDataset, load_dataset
from metamem.data import synthetic  # noqa: F401  (registers "synthetic")

__all__ = ["DATASETS", "DatasetError", "ImageDataset", "load_dataset"]
