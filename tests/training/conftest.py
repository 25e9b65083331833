"""Fixtures of the training tests: one intra-op thread and tiny synthetic experiments."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import pytest
import torch

from metamem.config import ExperimentCfg, load_config

SMOKE = Path(__file__).resolve().parents[2] / "experiments" / "smoke"


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny tensors: one intra-op thread avoids spin contention on the shared 2-core machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def tiny_cfg() -> Callable[..., ExperimentCfg]:
    """``tiny_cfg("mann", "train.steps=4")``: a smoke experiment with overrides."""

    def make(learner: str = "lstm", *overrides: str) -> ExperimentCfg:
        return load_config(SMOKE / f"synthetic_{learner}.yaml", list(overrides))

    return make
