"""Fixtures of the evaluation tests."""

from __future__ import annotations

import pytest

from metamem.data import ImageDataset, load_dataset


@pytest.fixture(scope="session")
def noisy() -> ImageDataset:
    """10 hard synthetic classes x 12 images of 1x6x6 (nearest neighbour is far from perfect)."""
    return load_dataset("synthetic", split="test", num_classes=10, per_class=12, image_size=6,
                        noise=0.4, seed=1)
