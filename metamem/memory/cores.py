"""Named memory cores: an LSTM controller around a choice of memory (``metamem ls cores``).

Every core is a :class:`~metamem.memory.MemoryCore` (LSTM over ``[x_t ; r_{t-1}]``, feature
``[h_t ; r_t]``) built by ``MEMORY_CORES.build(name, input_size=..., hidden_size=H, slots=S,
width=D, read_heads=R, **options)``:

* ``lstm_slot`` — :class:`~metamem.memory.SlotMemory`: content reads + a write policy
  (Santoro et al. 2016; options ``policy``, ``policy_options``, ``top_k``, ``key_strength``);
* ``ntm`` — :class:`~metamem.memory.ntm.NTMMemory`: content + location addressing, erase/add
  writes (Graves et al. 2014; options ``write_heads``, ``shifts``);
* ``dnc`` — :class:`~metamem.memory.dnc.DNCMemory`: allocation writes, temporal links,
  forward/backward/content reads (Graves et al. 2016; option ``max_link_slots``).

Learners choose one with a YAML key (``learner.core: ntm`` on MANN).
"""

from __future__ import annotations

import inspect
from typing import Any, Callable

from metamem.memory.core import MemoryCore
from metamem.memory.dnc import MAX_LINK_SLOTS, DNCMemory
from metamem.memory.ntm import NTMMemory
from metamem.registry import Registry

__all__ = ["MEMORY_CORES", "build_core"]

#: Memory cores by name: ``builder(*, input_size, hidden_size, slots, width, read_heads, **options)``.
MEMORY_CORES: Registry[Callable[..., MemoryCore]] = Registry("memory core")


@MEMORY_CORES.register("lstm_slot")
def build_lstm_slot(
    *, input_size: int, hidden_size: int, slots: int, width: int, read_heads: int,
    policy: str = "lru", policy_options: dict[str, Any] | None = None, top_k: int | None = None,
    key_strength: bool = True,
) -> MemoryCore:
    """LSTM + slot memory with content reads and a named write policy (Santoro et al. 2016)."""
    return MemoryCore(
        input_size, hidden_size=hidden_size, slots=slots, width=width, read_heads=read_heads,
        policy=policy, policy_options=policy_options, top_k=top_k, key_strength=key_strength,
    )


@MEMORY_CORES.register("ntm")
def build_ntm(
    *, input_size: int, hidden_size: int, slots: int, width: int, read_heads: int,
    write_heads: int = 1, shifts: int = 1,
) -> MemoryCore:
    """LSTM + NTM heads: content, interpolation, circular shift, sharpening (Graves et al. 2014)."""
    memory = NTMMemory(
        hidden_size, slots=slots, width=width, read_heads=read_heads, write_heads=write_heads, shifts=shifts
    )
    return MemoryCore(input_size, hidden_size=hidden_size, memory=memory)


@MEMORY_CORES.register("dnc")
def build_dnc(
    *, input_size: int, hidden_size: int, slots: int, width: int, read_heads: int,
    max_link_slots: int = MAX_LINK_SLOTS,
) -> MemoryCore:
    """LSTM + DNC memory: usage allocation, temporal links, three read modes (Graves et al. 2016)."""
    memory = DNCMemory(hidden_size, slots=slots, width=width, read_heads=read_heads, max_link_slots=max_link_slots)
    return MemoryCore(input_size, hidden_size=hidden_size, memory=memory)


def build_core(name: str, **kwargs: Any) -> MemoryCore:
    """``MEMORY_CORES.build(name, **kwargs)`` with a one-line error naming an unknown option.

    Raises:
        UnknownNameError: on an unknown core name (the message lists the valid ones).
        ValueError: on an option the core does not take (the message lists those it takes).
    """
    builder = MEMORY_CORES.get(name)
    accepted = set(inspect.signature(builder).parameters)
    unknown = sorted(set(kwargs) - accepted)
    if unknown:
        raise ValueError(
            f"memory core {name!r} has no option {unknown[0]!r}; its options: {', '.join(sorted(accepted))}"
        )
    return builder(**kwargs)
