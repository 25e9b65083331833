"""Fixtures of the training tests: one intra-op thread and tiny synthetic experiments."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from metamem.config import ExperimentCfg, load_config

SMOKE = Path(__file__).resolve().parents[2] / "experiments" / "smoke"


@pytest.fixture
def tiny_cfg() -> Callable[..., ExperimentCfg]:
    """``tiny_cfg("mann", "train.steps=4")``: a smoke experiment with overrides."""

    def make(learner: str = "lstm", *overrides: str) -> ExperimentCfg:
        return load_config(SMOKE / f"synthetic_{learner}.yaml", list(overrides))

    return make
