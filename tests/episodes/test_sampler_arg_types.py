"""EpisodeSampler refuses counts that are not whole numbers (they used to be truncated)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from metamem.data import ImageDataset
from metamem.episodes import EpisodeSampler
from metamem.episodes.sampler import EpisodeSpecError


@pytest.mark.parametrize("kwargs, match", [
    ({"k_shot": 1.5}, r"k_shot must be an integer >= 1, got 1.5 \(float\)"),
    ({"n_way": 2.0}, r"n_way must be an integer >= 1, got 2.0 \(float\)"),
    ({"n_query": "3"}, r"n_query must be an integer >= 0, got '3' \(str\)"),
    ({"batch_size": True}, r"batch_size must be an integer >= 1, got True \(a bool\)"),
    ({"k_shot": 0}, r"k_shot must be >= 1, got 0"),
    ({"seed": 0.5}, r"seed must be an integer, got 0.5"),
    ({"dtype": torch.int64}, r"dtype must be a floating torch dtype"),
])
def test_bad_counts_are_refused(synth: ImageDataset, kwargs: dict, match: str) -> None:
    args = {"n_way": 5, "k_shot": 1, "n_query": 2, **kwargs}
    with pytest.raises(EpisodeSpecError, match=match):
        EpisodeSampler(synth, **args)


def test_integer_like_counts_are_accepted(synth: ImageDataset) -> None:
    s = EpisodeSampler(synth, n_way=np.int64(3), k_shot=torch.tensor(2), n_query=np.int32(1), seed=np.int64(4))
    b = s.sample(np.int16(2))
    assert (s.n_way, s.k_shot, s.n_query) == (3, 2, 1) and b.support_x.shape[:2] == (2, 6)
    with pytest.raises(EpisodeSpecError, match="batch_size must be an integer"):
        s.sample(2.5)


def test_not_a_dataset_is_refused() -> None:
    with pytest.raises(EpisodeSpecError, match="dataset must be an ImageDataset.*got list"):
        EpisodeSampler([1, 2], n_way=1, k_shot=1)  # type: ignore[arg-type]
