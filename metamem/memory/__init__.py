"""Slot memories with explicit state, pluggable write policies, traces and algorithmic tasks.

Public API (stable; the MANN learner builds on it):

* :class:`MemoryState` and :func:`init_state` — the explicit memory value (``memory [B, S, D]``,
  ``usage [B, S]``, ``read_weights [B, R, S]``, ``write_weights [B, Wh, S]``, ``cache``).
* :func:`cosine_similarity`, :func:`content_weights` (dense or top-k sparse reads),
  :func:`read_memory`, :func:`oneplus`.
* :data:`WRITE_POLICIES` — ``lru`` (Santoro et al. 2016), ``usage`` (DNC allocation),
  ``uniform`` and ``cached_uniform`` (Le et al. 2019).
* :class:`SlotMemory` — learned interface + write policy; ``init_state(B, device)`` and
  ``step(h [B, H], state, t, T) -> (reads [B, R, D], new_state)``.
* :class:`MemoryCore` — LSTM controller over ``[x_t ; r_{t-1}]`` + SlotMemory;
  ``core(x [B, T, in]) -> CoreOutput(features [B, T, H + R·D], state, trace)``.
* :class:`MemoryTrace` and :func:`plot_trace` — per-step weights and their heatmaps.
* :func:`copy_task`, :func:`associative_recall_task`, :func:`bit_accuracy`, :class:`TaskBatch`
  (every task takes the :class:`TaskRandomness` keywords ``generator``, ``seed``, ``device``);
  :func:`repeat_copy_task`, :func:`priority_sort_task`, :func:`ngram_task`, :func:`bit_errors`.
* NTM addressing (:mod:`metamem.memory.ntm`: :func:`interpolate`, :func:`circular_shift`,
  :func:`sharpen`, :func:`ntm_address`, :class:`NTMMemory`) and the DNC memory
  (:mod:`metamem.memory.dnc`: temporal links, :class:`DNCMemory`).
* Neural Stored-program Memory (:mod:`metamem.memory.nsm`): :class:`ProgramLinear`,
  :func:`attach_programs`, :func:`record_programs`.
* Multi-controller / multi-memory cores (:mod:`metamem.memory.multi`): :class:`DualControllerCore`
  (DCMAN), :class:`DualMemoryCore` (DMNC, late/early fusion), the :class:`TwoViewBatch` format.
* :data:`MEMORY_CORES` — ``lstm_slot``, ``ntm``, ``dnc`` (``metamem ls cores``).
"""

from metamem.memory.addressing import content_weights, cosine_similarity, oneplus, read_memory
from metamem.memory.algorithmic import bit_errors, ngram_task, priority_sort_task, repeat_copy_task
from metamem.memory.core import CoreOutput, CoreState, MemoryCore, SlotMemory
from metamem.memory.cores import MEMORY_CORES, build_core
from metamem.memory.dnc import DNCMemory, DNCState, directional_weights, update_link, update_precedence
from metamem.memory.multi import DualControllerCore, DualMemoryCore, ReadOnlyDecoder, TwoViewBatch, two_view_sum_task
from metamem.memory.nsm import ProgramLinear, attach_programs, program_regulariser, record_programs
from metamem.memory.ntm import NTMMemory, circular_shift, interpolate, ntm_address, sharpen
from metamem.memory.policies import (
    WRITE_POLICIES,
    CachedUniformWrite,
    LRUWrite,
    UniformWrite,
    UsageWrite,
    WritePolicy,
    allocation_weights,
    uniform_interval,
    uniform_write_steps,
)
from metamem.memory.state import MemorySizes, MemoryState, init_state
from metamem.memory.tasks import TaskBatch, TaskRandomness, associative_recall_task, bit_accuracy, copy_task
from metamem.memory.trace import MemoryTrace, plot_trace

__all__ = [
    "allocation_weights",
    "associative_recall_task",
    "attach_programs",
    "bit_accuracy",
    "bit_errors",
    "build_core",
    "CachedUniformWrite",
    "circular_shift",
    "content_weights",
    "copy_task",
    "CoreOutput",
    "CoreState",
    "cosine_similarity",
    "directional_weights",
    "DNCMemory",
    "DNCState",
    "DualControllerCore",
    "DualMemoryCore",
    "init_state",
    "interpolate",
    "LRUWrite",
    "MEMORY_CORES",
    "MemoryCore",
    "MemorySizes",
    "MemoryState",
    "MemoryTrace",
    "ngram_task",
    "ntm_address",
    "NTMMemory",
    "oneplus",
    "plot_trace",
    "priority_sort_task",
    "program_regulariser",
    "ProgramLinear",
    "read_memory",
    "ReadOnlyDecoder",
    "record_programs",
    "repeat_copy_task",
    "sharpen",
    "SlotMemory",
    "TaskBatch",
    "TaskRandomness",
    "two_view_sum_task",
    "TwoViewBatch",
    "uniform_interval",
    "uniform_write_steps",
    "UniformWrite",
    "update_link",
    "update_precedence",
    "UsageWrite",
    "WRITE_POLICIES",
    "WritePolicy",
]
