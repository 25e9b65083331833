"""metamem: few-shot meta-learning built around memory-augmented learners.

Public API (shapes follow the legend in :mod:`metamem.types`)::

    import metamem
    ds = metamem.load_dataset("omniglot", split="background_small1", image_size=28)
    sampler = metamem.EpisodeSampler(ds, n_way=5, k_shot=1, n_query=15, batch_size=32, seed=0)
    batch = sampler.sample()
"""

from metamem._version import __version__
from metamem.data import DATASETS, DatasetError, ImageDataset, from_pairs, load_dataset
from metamem.episodes import EpisodeSampler, EpisodeSpecError
from metamem.evaluation import evaluate
from metamem.registry import Registry, UnknownNameError
from metamem.types import NO_LABEL, EpisodeBatch, LearnerOutput, SequenceBatch


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
    "SequenceBatch",
    "UnknownNameError",
    "__version__",
    "evaluate",
    "from_pairs",
    "load_dataset",
]
