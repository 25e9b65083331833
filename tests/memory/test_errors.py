"""Bad input gets a one-line error naming the value at fault."""

from __future__ import annotations

import pytest
import torch

from metamem.memory import WRITE_POLICIES, MemoryCore, SlotMemory, copy_task, init_state
from metamem.registry import UnknownNameError


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"slots": 0}, r"SlotMemory: slots must be a positive int, got 0"),
        ({"width": -3}, r"SlotMemory: width must be a positive int, got -3"),
        ({"read_heads": 0}, r"SlotMemory: read_heads must be a positive int, got 0"),
        ({"top_k": 9}, r"top_k must be None or an int in 1..slots=7, got 9"),
    ],
)
def test_slot_memory_sizes(kwargs: dict, match: str) -> None:
    base = {"slots": 7, "width": 5, "read_heads": 3}
    with pytest.raises(ValueError, match=match):
        SlotMemory(6, **{**base, **kwargs})


def test_hidden_and_input_sizes() -> None:
    with pytest.raises(ValueError, match=r"SlotMemory: hidden_size must be a positive int, got 0"):
        SlotMemory(0)
    with pytest.raises(ValueError, match=r"MemoryCore: input_size must be a positive int, got -1"):
        MemoryCore(-1)


def test_init_state_sizes() -> None:
    with pytest.raises(ValueError, match=r"init_state: batch_size must be a positive int, got 0"):
        init_state(0, slots=7, width=5, read_heads=3)
    mem = SlotMemory(6, slots=7, width=5, read_heads=3)
    with pytest.raises(ValueError, match=r"init_state: batch_size must be a positive int, got -2"):
        mem.init_state(-2)


def test_more_lru_heads_than_slots() -> None:
    with pytest.raises(ValueError, match=r"write policy 'lru': read_heads=8 exceeds slots=7"):
        SlotMemory(6, slots=7, width=5, read_heads=8, policy="lru")
    SlotMemory(6, slots=7, width=5, read_heads=8, policy="usage")  # fine for other rules


def test_bad_policy_options() -> None:
    with pytest.raises(ValueError, match=r"write policy 'lru': gamma must be in \(0, 1\], got 1.5"):
        SlotMemory(6, slots=7, width=5, read_heads=3, policy_options={"gamma": 1.5})
    with pytest.raises(ValueError, match=r"write policy 'cached_uniform': cache_size must be a positive int, got 0"):
        SlotMemory(6, slots=7, width=5, read_heads=3, policy="cached_uniform", policy_options={"cache_size": 0})
    with pytest.raises(ValueError, match=r"write policy 'uniform': base must be a dense write policy .* got 'uniform'"):
        SlotMemory(6, slots=7, width=5, read_heads=3, policy="uniform", policy_options={"base": "uniform"})
    with pytest.raises(TypeError, match=r"unexpected keyword argument 'gama'"):
        SlotMemory(6, slots=7, width=5, read_heads=3, policy_options={"gama": 0.9})


def test_unknown_policy_lists_valid_ones() -> None:
    with pytest.raises(UnknownNameError, match=r"unknown write policy 'lfu'.*valid write polic\w+: cached_uniform, lru, uniform, usage"):
        SlotMemory(6, policy="lfu")
    with pytest.raises(UnknownNameError, match=r"did you mean 'uniform'"):
        WRITE_POLICIES.get("unifrom")


def test_wrong_controller_width_and_input_shape() -> None:
    mem = SlotMemory(6, slots=7, width=5, read_heads=3)
    state = mem.init_state(2)
    with pytest.raises(ValueError, match=r"controller output has shape \(2, 4\), expected \[B=2, H=6\]"):
        mem.step(torch.zeros(2, 4), state, 0, 10)
    core = MemoryCore(4, hidden_size=6, slots=7, width=5, read_heads=3)
    with pytest.raises(ValueError, match=r"input has shape \(2, 9, 3\), expected \[B, T, input_size=4\]"):
        core(torch.zeros(2, 9, 3))


def test_task_errors() -> None:
    with pytest.raises(ValueError, match=r"copy_task: length must be a positive int, got 0"):
        copy_task(2, 0, 6, seed=0)
    with pytest.raises(ValueError, match=r"copy_task: pass a torch.Generator"):
        copy_task(2, 3, 6)
