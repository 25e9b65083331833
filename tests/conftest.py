"""Shared fixtures: a small synthetic dataset and the repository root."""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import pytest
import torch

from metamem.data import ImageDataset, load_dataset

ROOT = Path(__file__).resolve().parents[1]

# `episodes.fused: auto` (the training default) compiles the sampler's kernels on a run's first
# batch: seconds to a minute per process, more than a test's whole run. Tests take the eager
# path (the same episodes) unless METAMEM_FUSED is set; the tests of `auto` itself unset it.
os.environ.setdefault("METAMEM_FUSED", "0")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """``gpu`` tests run wherever CUDA exists (the default tier and ``pytest -m gpu``).

    Without CUDA they are deselected from the default tier (nothing to report), and skipped
    with a reason when asked for by a ``-m`` expression that names ``gpu``.
    """
    if torch.cuda.is_available():
        return
    # the marker itself, not item.keywords: those also hold the folder names (a checkout in
    # a folder named "gpu" would lose every test)
    gpu = [item for item in items if item.get_closest_marker("gpu") is not None]
    if not gpu:
        return
    if "gpu" in (config.option.markexpr or ""):
        skip = pytest.mark.skip(reason="needs a CUDA device (torch.cuda.is_available() is False)")
        for item in gpu:
            item.add_marker(skip)
        return
    config.hook.pytest_deselected(items=gpu)
    items[:] = [item for item in items if item.get_closest_marker("gpu") is None]


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


@pytest.fixture
def load_script() -> Callable[[str], ModuleType]:
    """``load_script("omniglot_paper")``: a module of ``scripts/`` (not a package), freshly loaded."""

    def load(name: str) -> ModuleType:
        path = ROOT / "scripts" / f"{name}.py"
        spec = importlib.util.spec_from_file_location(f"scripts_{name}", path)
        assert spec is not None and spec.loader is not None, path
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # dataclasses look their module up while the script runs
        spec.loader.exec_module(module)
        return module

    return load
