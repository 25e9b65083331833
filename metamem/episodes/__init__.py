"""Episodes: the GPU-batched sampler and the counter-based RNG behind it."""

from metamem.episodes.sampler import (
    ClassTable,
    EpisodeSampler,
    EpisodeSpecError,
    draw_episode_indices,
)

__all__ = ["ClassTable", "EpisodeSampler", "EpisodeSpecError", "draw_episode_indices"]
