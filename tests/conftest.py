"""Shared fixtures: a small synthetic dataset and the repository root."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest
import torch

from metamem.data import ImageDataset, load_dataset

ROOT = Path(__file__).resolve().parents[1]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session", autouse=True)
def _one_intra_op_thread() -> Iterator[None]:
    """Tests use tiny tensors: one intra-op thread avoids spin contention on a 2-core CI box."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def synth() -> ImageDataset:
    """40 classes x 20 images of 1x12x12, 4 groups."""
    return load_dataset("synthetic", num_classes=40, per_class=20, image_size=12, seed=0)
