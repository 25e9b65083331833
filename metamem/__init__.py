"""metamem: few-shot meta-learning built around memory-augmented learners.

Public API (shapes follow the legend in :mod:`metamem.types`)::

    import metamem
    ds = metamem.load_dataset("omniglot", split="background_small1", image_size=28)
    sampler = metamem.EpisodeSampler(ds, n_way=5, k_shot=1, n_query=15, batch_size=32, seed=0)
    batch = sampler.sample()
    run = metamem.load_run("runs/mann_quick")   # a trained run: learner, preprocessing, protocol
    res = run.evaluate(run.dataset("folder", root="runs/shapes"))

The names below are imported on first use (PEP 562), so ``import metamem`` and the
``metamem`` command start without importing torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from metamem._version import __version__

#: public name -> module that defines it (imported lazily on first attribute access)
_LAZY: dict[str, str] = {
    "DATASETS": "metamem.data",
    "DatasetError": "metamem.data",
    "ImageDataset": "metamem.data",
    "from_pairs": "metamem.data",
    "load_dataset": "metamem.data",
    "EpisodeSampler": "metamem.episodes",
    "EpisodeSpecError": "metamem.episodes",
    "evaluate": "metamem.evaluation",
    "load_run": "metamem.evaluation.trained_run",
    "Run": "metamem.evaluation.trained_run",
    "Registry": "metamem.registry",
    "UnknownNameError": "metamem.registry",
    "NO_LABEL": "metamem.types",
    "EpisodeBatch": "metamem.types",
    "LearnerOutput": "metamem.types",
    "SequenceBatch": "metamem.types",
}

__all__ = [
    "DATASETS",
    "DatasetError",
    "EpisodeBatch",
    "EpisodeSampler",
    "EpisodeSpecError",
    "ImageDataset",
    "LearnerOutput",
    "NO_LABEL",
    "Registry",
    "Run",
    "SequenceBatch",
    "UnknownNameError",
    "__version__",
    "evaluate",
    "from_pairs",
    "load_dataset",
    "load_run",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'metamem' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


if TYPE_CHECKING:  # static type checkers and IDEs see the real imports
    from metamem.data import DATASETS, DatasetError, ImageDataset, from_pairs, load_dataset
    from metamem.episodes import EpisodeSampler, EpisodeSpecError
    from metamem.evaluation import evaluate
    from metamem.evaluation.trained_run import Run, load_run
    from metamem.registry import Registry, UnknownNameError
    from metamem.types import NO_LABEL, EpisodeBatch, LearnerOutput, SequenceBatch
