"""Episodes: the GPU-batched sampler and the counter-based RNG behind it."""

from metamem.episodes.augment import AffineAugment, build_augment
from metamem.episodes.sampler import (
    ClassTable,
    EpisodeSampler,
    EpisodeSpecError,
    draw_episode_indices,
)
from metamem.episodes.variable import VariableEpisodeBatch, VariableEpisodeSampler, VariableSpec

__all__ = [
    "AffineAugment", "build_augment", "ClassTable", "EpisodeSampler", "EpisodeSpecError", "draw_episode_indices",
    "VariableEpisodeBatch", "VariableEpisodeSampler", "VariableSpec",
]
