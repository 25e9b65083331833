"""The batches share one base (metamem.types.TensorBatch): batch_size, steps, to and select
mean the same on episodes, sequences, variable episodes and algorithmic task batches."""

from __future__ import annotations

import pytest
import torch

from metamem.data import ImageDataset
from metamem.episodes import EpisodeSampler, VariableEpisodeSampler, VariableSpec
from metamem.memory import copy_task
from metamem.types import StepBatch, TensorBatch


def _batches(synth: ImageDataset) -> dict[str, TensorBatch]:
    episodes = EpisodeSampler(synth, n_way=5, k_shot=2, n_query=1, batch_size=4, seed=1).sample()
    variable = VariableEpisodeSampler(synth, VariableSpec(min_ways=2, max_ways=5), batch_size=4, seed=1).sample()
    return {"episodes": episodes, "sequence": episodes.as_sequence(), "variable": variable,
            "copy_task": copy_task(4, 3, 5, seed=1)}


@pytest.mark.parametrize("kind", ["episodes", "sequence", "variable", "copy_task"])
def test_batch_size_select_and_to(synth: ImageDataset, kind: str) -> None:
    batch = _batches(synth)[kind]
    assert isinstance(batch, TensorBatch) and batch.batch_size == 4
    tensors = batch.tensors()
    assert tensors and all(v.shape[0] == 4 for v in tensors.values())
    picked = batch.select(torch.tensor([3, 1]))
    assert type(picked) is type(batch) and picked.batch_size == 2
    for name, v in picked.tensors().items():
        assert torch.equal(v, tensors[name][[3, 1]])
    first = batch.select(slice(0, 1))
    assert first.batch_size == 1 and all(torch.equal(v, tensors[k][:1]) for k, v in first.tensors().items())
    moved = batch.to("cpu")
    assert type(moved) is type(batch) and moved.tensors().keys() == tensors.keys()
    others = {k: v for k, v in vars(batch).items() if k not in tensors}
    assert {k: v for k, v in vars(picked).items() if k not in tensors} == others  # sizes (n_way...) kept


def test_steps_of_sequence_batches(synth: ImageDataset) -> None:
    batches = _batches(synth)
    seq, task = batches["sequence"], batches["copy_task"]
    assert isinstance(seq, StepBatch) and seq.steps == 5 * (2 + 1) == seq.y.shape[1]
    assert isinstance(task, StepBatch) and task.steps == 2 * 3 + 1 == task.mask.shape[1]
    assert not isinstance(batches["episodes"], StepBatch)
