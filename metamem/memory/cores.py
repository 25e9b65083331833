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
from collections.abc import Callable
from typing import Any

from torch import nn

from metamem.memory.core import MemoryCore, SlotMemory
from metamem.memory.dnc import DNCMemory
from metamem.memory.ntm import NTMMemory
from metamem.registry import Registry, forwards_to

#: the sizes every core builder takes and passes to its memory
_SIZES = ("hidden_size", "slots", "width", "read_heads")

__all__ = ["MEMORY_CORES", "build_core"]

#: Memory cores by name: ``builder(*, input_size, hidden_size, slots, width, read_heads, **options)``.
MEMORY_CORES: Registry[Callable[..., MemoryCore]] = Registry("memory core")


def _core_of(memory: type[nn.Module], name: str, doc: str) -> Callable[..., MemoryCore]:
    """The builder of an LSTM core around ``memory``: the sizes go to both, the other keyword
    options to ``memory`` (its signature, defaults and annotations: :func:`forwards_to`)."""

    def build(*, input_size: int, hidden_size: int, slots: int, width: int, read_heads: int,
              **options: Any) -> MemoryCore:
        mem = memory(hidden_size, slots=slots, width=width, read_heads=read_heads, **options)
        return MemoryCore(input_size, hidden_size=hidden_size, memory=mem)

    build.__name__ = build.__qualname__ = f"build_{name}"
    build.__doc__ = doc
    return forwards_to(memory, drop=_SIZES)(build)


MEMORY_CORES.register("lstm_slot")(_core_of(SlotMemory, "lstm_slot", (
    "LSTM + slot memory with content reads and a named write policy (Santoro et al. 2016); "
    "the options are :class:`~metamem.memory.SlotMemory`'s.")))
MEMORY_CORES.register("ntm")(_core_of(NTMMemory, "ntm", (
    "LSTM + NTM heads: content, interpolation, circular shift, sharpening (Graves et al. 2014); "
    "the options are :class:`~metamem.memory.ntm.NTMMemory`'s.")))
MEMORY_CORES.register("dnc")(_core_of(DNCMemory, "dnc", (
    "LSTM + DNC memory: usage allocation, temporal links, three read modes (Graves et al. 2016); "
    "the options are :class:`~metamem.memory.dnc.DNCMemory`'s.")))


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
