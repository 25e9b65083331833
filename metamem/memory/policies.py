"""Write policies: where and what a slot memory writes at each step.

Each policy is an ``nn.Module`` registered by name in :data:`WRITE_POLICIES` (``metamem ls
write-policies``) and built by :class:`~metamem.memory.core.SlotMemory` as
``WRITE_POLICIES.build(name, slots=S, width=D, read_heads=R, hidden_size=H, **options)``.

The contract between :class:`SlotMemory` and a policy (all methods are pure functions of
their arguments; a policy holds learned parameters at most):

* ``write_heads`` (Wh) and ``interface_size``: the policy's number of write heads and the
  number of raw controller outputs it needs per step (they come out of SlotMemory's one
  fused interface projection).
* ``is_write_step(t, T) -> bool``: whether step ``t`` (0-based) of a sequence whose first
  ``T`` steps are written writes at all (Python ints, so schedules cost no device sync).
* ``write_input(h, state, t, T) -> (x, cache)``: the tensor the write parameters are
  projected from (``h`` itself for every policy except ``cached_uniform``) and the new cache.
* ``write(raw, state, read_keys) -> (memory, usage, write_weights)`` at a write step.
* ``after_read(usage, write_weights, read_weights) -> usage`` after the step's reads.

At a step that does not write, memory and usage carry over, the write weights are zero and
``after_read`` still runs (the ``lru`` usage decays and counts the reads).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from metamem.memory.addressing import content_weights, oneplus
from metamem.memory.state import MemoryState, check_positive
from metamem.registry import Registry

__all__ = [
    "WRITE_POLICIES",
    "WritePolicy",
    "LRUWrite",
    "UsageWrite",
    "UniformWrite",
    "CachedUniformWrite",
    "allocation_weights",
    "uniform_interval",
    "uniform_write_steps",
]

#: Write rules by name: ``builder(*, slots, width, read_heads, hidden_size, **options)``.
WRITE_POLICIES: Registry[Callable[..., WritePolicy]] = Registry("write policy")


class WritePolicy(nn.Module):
    """Base class of the write rules (dense: writes at every step; see the module docstring).

    Every rule is built with the memory's sizes (``slots`` S, ``width`` D, ``read_heads`` R,
    ``hidden_size`` H, checked here) plus its own options; subclasses take their options as
    keywords and hand the sizes on (``def __init__(self, *, gamma=0.95, **sizes)``).
    """

    #: policy name in :data:`WRITE_POLICIES` (used in error messages)
    name = "?"

    def __init__(self, *, slots: int, width: int, read_heads: int, hidden_size: int) -> None:
        super().__init__()
        check_positive(
            f"write policy {self.name!r}",
            slots=slots,
            width=width,
            read_heads=read_heads,
            hidden_size=hidden_size,
        )
        self.slots, self.width, self.read_heads, self.hidden_size = slots, width, read_heads, hidden_size
        self.write_heads = 1
        self.interface_size = 0
        self.cache_size = 0

    def is_write_step(self, t: int, T: int) -> bool:
        return True

    def write_input(
        self, h: torch.Tensor, state: MemoryState, t: int, T: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return h, state.cache

    def write(
        self, raw: torch.Tensor, state: MemoryState, read_keys: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def after_read(
        self, usage: torch.Tensor, write_weights: torch.Tensor, read_weights: torch.Tensor
    ) -> torch.Tensor:
        return usage

    def _error(self, msg: str) -> ValueError:
        return ValueError(f"write policy {self.name!r}: {msg}")


@WRITE_POLICIES.register("lru")
class LRUWrite(WritePolicy):
    """Least Recently Used Access (Santoro et al. 2016): gate between last-read and least-used slots.

    One write head per read head. With usage ``u``, previous read weights ``w^r_{t-1}`` and a
    per-head gate ``σ(α_t)`` from the controller (papers.md §1.2):

    1. ``w^lu_{t-1}``: the R least-used slots of ``u_{t-1}``; head i takes the i-th smallest
       (ties go to the lower slot index), so the heads' one-hots together are the paper's
       indicator ``1[u(i) ≤ m(u, R)]``.
    2. ``w^w_t = σ(α_t) w^r_{t-1} + (1 − σ(α_t)) w^lu_{t-1}``.
    3. The single least-used slot of ``u_{t-1}`` is set to zero (option ``zero_before_write``).
    4. ``M_t(i) = M_{t-1}(i) + Σ_heads w^w_t(i) a_t`` with ``a_t`` a tanh add vector per head,
       or the head's read key ``k_t`` (the paper's rule) when ``write_key=True``.
    5. After the reads: ``u_t = γ u_{t-1} + Σ_heads w^r_t + Σ_heads w^w_t``.

    Reference: A. Santoro et al., "Meta-Learning with Memory-Augmented Neural Networks",
    ICML 2016 (arXiv:1605.06065); settings of tristandeleu/ntm-one-shot (γ = 0.95, a separate
    add vector, zero-before-write).

    Args:
        gamma: usage decay γ in (0, 1].
        write_key: write the read key instead of a separate add vector.
        zero_before_write: zero the least-used slot before the additive write.
    """

    name = "lru"

    def __init__(
        self, *, gamma: float = 0.95, write_key: bool = False, zero_before_write: bool = True, **sizes: int
    ) -> None:
        super().__init__(**sizes)
        slots, width, read_heads = self.slots, self.width, self.read_heads
        if read_heads > slots:
            raise self._error(
                f"read_heads={read_heads} exceeds slots={slots}; the least-used indicator needs "
                f"at most one head per slot (use read_heads <= slots)"
            )
        if not 0.0 < float(gamma) <= 1.0:
            raise self._error(f"gamma must be in (0, 1], got {gamma!r}")
        self.gamma = float(gamma)
        self.write_key = bool(write_key)
        self.zero_before_write = bool(zero_before_write)
        self.write_heads = read_heads
        self.interface_size = read_heads + (0 if self.write_key else read_heads * width)

    def write(
        self, raw: torch.Tensor, state: MemoryState, read_keys: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        R = self.read_heads
        gate_raw, add_raw = raw.split([R, self.interface_size - R], dim=1)
        gate = torch.sigmoid(gate_raw).unsqueeze(-1)  # [B, R, 1]
        if self.write_key:
            add = read_keys
        else:
            add = torch.tanh(add_raw).view(raw.shape[0], R, self.width)  # [B, R, D]
        order = torch.sort(state.usage, dim=-1, stable=True).indices[:, :R]  # [B, R]
        least_used = torch.zeros_like(state.read_weights).scatter_(-1, order.unsqueeze(-1), 1.0)  # [B, R, S]
        write_weights = gate * state.read_weights + (1.0 - gate) * least_used
        memory = state.memory
        if self.zero_before_write:
            memory = memory * (1.0 - least_used[:, 0]).unsqueeze(-1)
        memory = torch.baddbmm(memory, write_weights.transpose(1, 2), add)
        return memory, state.usage, write_weights

    def after_read(
        self, usage: torch.Tensor, write_weights: torch.Tensor, read_weights: torch.Tensor
    ) -> torch.Tensor:
        return self.gamma * usage + read_weights.sum(1) + write_weights.sum(1)


def allocation_weights(usage: torch.Tensor) -> torch.Tensor:
    """DNC allocation weighting ``a[φ_j] = (1 − u[φ_j]) Π_{i<j} u[φ_i]`` (φ: slots by usage).

    Args:
        usage: ``[B, S]`` usages in [0, 1].

    Returns:
        ``[B, S]`` allocation weights (sum ≤ 1); ties are sorted by slot index.
    """
    sorted_usage, order = torch.sort(usage, dim=-1, stable=True)
    ones = torch.ones_like(sorted_usage[:, :1])
    exclusive = torch.cumprod(torch.cat((ones, sorted_usage[:, :-1]), dim=-1), dim=-1)
    return torch.zeros_like(usage).scatter(-1, order, (1.0 - sorted_usage) * exclusive)


@WRITE_POLICIES.register("usage")
class UsageWrite(WritePolicy):
    """DNC dynamic allocation (Graves et al. 2016): free gates, retention and usage-sorted allocation.

    One write head. From the controller: write key ``k^w`` and strength ``β^w``, erase vector
    ``e``, add vector ``v``, free gates ``f^i`` (one per read head), allocation gate ``g^a``
    and write gate ``g^w``.

    1. Retention ``ψ = Π_i (1 − f^i w^r_{t-1,i})``; usage ``u = u_{t-1} ∘ ψ``, where the stored
       ``u_{t-1}`` already includes the last write (``u + w^w − u ∘ w^w``).
    2. Allocation ``a`` from sorted usage (:func:`allocation_weights`).
    3. ``w^w = g^w (g^a a + (1 − g^a) c^w)`` with content weights ``c^w`` of ``k^w`` on ``M_{t-1}``.
    4. ``M_t = M_{t-1} ∘ (1 − w^w eᵀ) + w^w vᵀ``.

    Reference: A. Graves et al., "Hybrid computing using a neural network with dynamic external
    memory", Nature 538 (2016); it is the dense writer of Le et al. 2019 (papers.md §5.1).
    """

    name = "usage"

    def __init__(self, **sizes: int) -> None:
        super().__init__(**sizes)
        self.interface_size = 3 * self.width + self.read_heads + 3

    def write(
        self, raw: torch.Tensor, state: MemoryState, read_keys: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        D, R = self.width, self.read_heads
        key, strength, erase, add, free, gates = raw.split([D, 1, D, D, R, 2], dim=-1)
        free = torch.sigmoid(free).unsqueeze(-1)  # [B, R, 1]
        alloc_gate, write_gate = torch.sigmoid(gates).unbind(-1)  # [B] each
        retention = torch.prod(1.0 - free * state.read_weights, dim=1)  # [B, S]
        usage = state.usage * retention
        content = content_weights(state.memory, torch.tanh(key).unsqueeze(1), oneplus(strength))
        mix = alloc_gate.unsqueeze(-1) * allocation_weights(usage)
        mix = mix + (1.0 - alloc_gate).unsqueeze(-1) * content[:, 0]
        weights = write_gate.unsqueeze(-1) * mix  # [B, S]
        w = weights.unsqueeze(-1)  # [B, S, 1]
        memory = state.memory * (1.0 - w * torch.sigmoid(erase).unsqueeze(1))
        memory = memory + w * torch.tanh(add).unsqueeze(1)
        usage = usage + weights - usage * weights
        return memory, usage, weights.unsqueeze(1)


def uniform_interval(T: int, slots: int) -> int:
    """Le et al.'s optimal interval ``⌊T / (S + 1)⌋`` (at least 1)."""
    return max(1, T // (slots + 1))


def uniform_write_steps(T: int, slots: int) -> list[int]:
    """0-based steps at which Uniform Writing writes: ``t + 1 = k ⌊T/(S+1)⌋`` for k = 1..S, ``t < T``."""
    interval = uniform_interval(T, slots)
    return [k * interval - 1 for k in range(1, slots + 1) if k * interval <= T]


class _Scheduled(WritePolicy):
    """Shared part of the sparse writers: a dense ``base`` rule applied at scheduled steps."""

    def __init__(self, *, base: str = "usage", base_options: Mapping[str, Any] | None = None, **sizes: int) -> None:
        super().__init__(**sizes)
        if base in ("uniform", "cached_uniform"):
            raise self._error(f"base must be a dense write policy such as 'usage' or 'lru', got {base!r}")
        self.base = WRITE_POLICIES.build(base, **sizes, **dict(base_options or {}))
        self.write_heads = self.base.write_heads
        self.interface_size = self.base.interface_size

    def write(
        self, raw: torch.Tensor, state: MemoryState, read_keys: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.base.write(raw, state, read_keys)

    def after_read(
        self, usage: torch.Tensor, write_weights: torch.Tensor, read_weights: torch.Tensor
    ) -> torch.Tensor:
        return self.base.after_read(usage, write_weights, read_weights)


@WRITE_POLICIES.register("uniform")
class UniformWrite(_Scheduled):
    """Uniform Writing (Le et al. 2019): write only every ⌊T/(S+1)⌋ steps, S times per sequence.

    For a sequence whose first ``T`` steps are to be stored and S slots, the memory is written
    at the 1-based steps ``k ⌊T/(S+1)⌋``, k = 1..S (:func:`uniform_write_steps`); at every
    other step it is left unchanged (Theorem 3 of the paper: equal intervals maximise the
    lower bound on the average contribution of the inputs). When ``T < S + 1`` this is dense
    writing of the first T steps. The write itself is the ``base`` rule. Unlike the paper's
    implementation, reads still happen at every step.

    Reference: H. Le, T. Tran, S. Venkatesh, "Learning to Remember More with Less
    Memorization", ICLR 2019 (arXiv:1901.01347), papers.md §5.1.

    Args:
        base: dense rule used at the write steps (``usage`` = DNC+UW as in the paper, or ``lru``).
        base_options: keyword options of the base rule.
    """

    name = "uniform"

    def is_write_step(self, t: int, T: int) -> bool:
        step, interval = t + 1, uniform_interval(T, self.slots)
        return step <= T and step % interval == 0 and step // interval <= self.slots


@WRITE_POLICIES.register("cached_uniform")
class CachedUniformWrite(_Scheduled):
    """Cached Uniform Writing (Le et al. 2019): every L steps write an attention summary of the last L states.

    The policy keeps the last L controller states ``d_1..d_L`` in ``state.cache``. Every
    ``L' = min(L, ⌊T/(S+1)⌋)`` steps (L' ≥ 1) it attends over the L' newest of them:
    ``α_j = softmax_j(vᵀ tanh(W h_t + U d_j + V r_{t-1}))``, ``s_t = Σ_j α_j d_j``, projects the
    write parameters of the ``base`` rule from ``s_t`` instead of ``h_t``, writes, and clears
    the cache. Unlike the paper, the summary feeds the write only and does not replace the
    controller's recurrent state (which SlotMemory does not own), and the cache includes the
    current state ``h_t``. Overwriting is allowed (more than S writes per sequence).

    Reference: H. Le, T. Tran, S. Venkatesh, "Learning to Remember More with Less
    Memorization", ICLR 2019 (arXiv:1901.01347), papers.md §5.1 (cache L = 5 in the copy
    experiments).

    Args:
        cache_size: L, the number of cached controller states (and the write interval).
        attention_size: width of the cache attention's hidden layer.
        base: dense rule used at the write steps (``usage`` or ``lru``).
        base_options: keyword options of the base rule.
    """

    name = "cached_uniform"

    def __init__(
        self, *, cache_size: int = 5, attention_size: int = 16, base: str = "usage",
        base_options: Mapping[str, Any] | None = None, **sizes: int,
    ) -> None:
        super().__init__(base=base, base_options=base_options, **sizes)
        check_positive(
            f"write policy {self.name!r}", cache_size=cache_size, attention_size=attention_size
        )
        self.cache_size = cache_size
        self.query = nn.Linear(self.hidden_size, attention_size)  # W
        self.item = nn.Linear(self.hidden_size, attention_size, bias=False)  # U
        self.context = nn.Linear(self.read_heads * self.width, attention_size, bias=False)  # V
        self.score = nn.Linear(attention_size, 1, bias=False)  # v

    def interval(self, T: int) -> int:
        return min(self.cache_size, uniform_interval(T, self.slots))

    def is_write_step(self, t: int, T: int) -> bool:
        step = t + 1
        return step <= T and step % self.interval(T) == 0

    def write_input(
        self, h: torch.Tensor, state: MemoryState, t: int, T: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if state.cache.shape[1:] != (self.cache_size, self.hidden_size):
            raise self._error(
                f"state.cache has shape {tuple(state.cache.shape)}, expected [B, {self.cache_size}, "
                f"{self.hidden_size}]; build the state with SlotMemory.init_state"
            )
        cache = torch.cat((state.cache[:, 1:], h.unsqueeze(1)), dim=1)  # newest last
        if not self.is_write_step(t, T):
            return h, cache
        items = cache[:, self.cache_size - self.interval(T):]  # [B, L', H]
        prev_reads = torch.bmm(state.read_weights, state.memory).flatten(1)  # r_{t-1}
        hidden = (self.query(h) + self.context(prev_reads)).unsqueeze(1) + self.item(items)
        alpha = torch.softmax(self.score(torch.tanh(hidden)), dim=1)  # [B, L', 1]
        summary = (alpha * items).sum(1)
        return summary, torch.zeros_like(cache)

