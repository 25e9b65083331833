"""Slot memory modules: :class:`SlotMemory` (the memory's learned parts) and :class:`MemoryCore`.

:class:`SlotMemory` holds the learned parts of a memory: one fused linear interface that maps a
controller output ``h [B, H]`` to the R read keys ``[B, R, D]``, their strengths ``[B, R]`` and
every parameter of the write policy, plus the write policy itself. Its :meth:`SlotMemory.step`
is a pure function of ``(h, state, t, T)``; the episode's memory lives in the
:class:`~metamem.memory.state.MemoryState` that goes in and comes out.

Order inside a step (as in Santoro et al. 2016 and ntm-one-shot): write (from the previous read
weights and usage), then read from the new memory with this step's keys, then the policy's
usage update.

:class:`MemoryCore` is an LSTM controller around a SlotMemory (Santoro et al. 2016, papers.md
§1.2): the input at step t is ``[x_t ; r_{t-1}]`` (``r_{-1} = 0``), and the per-step feature is
``[h_t ; r_t]`` of width ``H + R·D``, on which a model puts its own output layer
(``output = W_o [h_t ; r_t]``). Typical use::

    core = MemoryCore(input_size=in_dim, hidden_size=200, slots=128, width=40, read_heads=4,
                      policy="lru", policy_options={"gamma": 0.95})
    head = nn.Linear(core.out_features, n_way)
    out = core(x)                      # x [B, T, in_dim]; memory wiped (fresh state)
    logits = head(out.features)        # [B, T, n_way]
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from metamem.memory.addressing import content_weights, oneplus, read_memory
from metamem.memory.policies import WRITE_POLICIES, WritePolicy
from metamem.memory.state import MemoryModule, MemoryState, check_positive
from metamem.memory.trace import MemoryTrace

__all__ = ["SlotMemory", "MemoryCore", "CoreState", "CoreOutput"]


class SlotMemory(MemoryModule):
    """A content-addressed slot memory with R read heads and a named write policy.

    Args:
        hidden_size: H, width of the controller output that drives the memory.
        slots: S.
        width: D.
        read_heads: R.
        policy: a name in :data:`~metamem.memory.WRITE_POLICIES` (``lru``, ``usage``,
            ``uniform``, ``cached_uniform``).
        policy_options: keyword options of the policy (e.g. ``{"gamma": 0.95}`` for ``lru``).
        top_k: sparse reads keeping the k largest weights per head (1 = hard attention);
            None reads densely.
        key_strength: learn a key strength β ≥ 1 per head and step (False: β = 1, the paper's
            plain softmax over cosine similarities).

    Raises:
        ValueError: on a size ≤ 0, bad policy options or ``top_k`` outside ``1..S``.
        UnknownNameError: on an unknown policy name (the message lists the valid ones).
    """

    def __init__(
        self,
        hidden_size: int,
        *,
        slots: int = 128,
        width: int = 40,
        read_heads: int = 4,
        policy: str = "lru",
        policy_options: Mapping[str, Any] | None = None,
        top_k: int | None = None,
        key_strength: bool = True,
    ) -> None:
        super().__init__(hidden_size, slots=slots, width=width, read_heads=read_heads)
        if top_k is not None and (
            isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= slots
        ):
            raise ValueError(f"SlotMemory: top_k must be None or an int in 1..slots={slots}, got {top_k!r}")
        self.top_k = top_k
        self.key_strength = bool(key_strength)
        self.policy_name = policy
        self.policy: WritePolicy = WRITE_POLICIES.build(
            policy, slots=slots, width=width, read_heads=read_heads, hidden_size=hidden_size,
            **dict(policy_options or {}),
        )
        self.read_size = read_heads * width + (read_heads if self.key_strength else 0)
        self.interface = nn.Linear(hidden_size, self.read_size + self.policy.interface_size)
        # one split (one backward op) instead of slices that each fill a full-size gradient
        self._split = [read_heads * width, self.read_size - read_heads * width, self.policy.interface_size]

    @property
    def write_heads(self) -> int:
        return self.policy.write_heads

    def state_options(self) -> dict[str, int]:
        """The policy's write heads and cache (see :meth:`MemoryModule.init_state`)."""
        return {"write_heads": self.policy.write_heads, "cache_size": self.policy.cache_size,
                "hidden_size": self.hidden_size}

    def step(
        self, h: torch.Tensor, state: MemoryState, t: int, T: int
    ) -> tuple[torch.Tensor, MemoryState]:
        """One memory step: write (if the policy writes at ``t``), read, update usage.

        Args:
            h: ``[B, H]`` controller output at step t.
            state: the memory before step t.
            t: 0-based step index.
            T: number of leading steps of the sequence that the memory should store (the
                write horizon used by ``uniform``/``cached_uniform``, which never write at
                ``t >= T``; the dense rules ``lru`` and ``usage`` ignore it).

        Returns:
            ``(reads [B, R, D], new_state)``.

        Raises:
            ValueError: if ``h`` is not ``[B, H]`` for this memory's H and the state's B.
        """
        key_raw, strength_raw, write_raw = self.controls(h, state, self._split)
        B, R, D = h.shape[0], self.read_heads, self.width
        keys = torch.tanh(key_raw).view(B, R, D)
        strength = oneplus(strength_raw) if self.key_strength else None
        policy = self.policy
        if policy.is_write_step(t, T):
            source, cache = policy.write_input(h, state, t, T)
            if source is h:
                raw = write_raw
            else:
                raw = F.linear(
                    source, self.interface.weight[self.read_size :], self.interface.bias[self.read_size :]
                )
            memory, usage, write_weights = policy.write(raw, state, keys)
        else:
            _, cache = policy.write_input(h, state, t, T)
            memory, usage = state.memory, state.usage
            write_weights = torch.zeros_like(state.write_weights)
        read_weights = content_weights(memory, keys, strength, top_k=self.top_k)
        reads = read_memory(memory, read_weights)
        usage = policy.after_read(usage, write_weights, read_weights)
        return reads, MemoryState(memory, usage, read_weights, write_weights, cache)

    def extra_repr(self) -> str:
        return (
            f"hidden_size={self.hidden_size}, slots={self.slots}, width={self.width}, "
            f"read_heads={self.read_heads}, policy={self.policy_name!r}, top_k={self.top_k}"
        )


class CoreState(NamedTuple):
    """Recurrent state of a :class:`MemoryCore`.

    Attributes:
        h: ``[B, H]`` LSTM output.
        c: ``[B, H]`` LSTM cell.
        reads: ``[B, R*D]`` last read vectors (fed back as input).
        memory: the :class:`MemoryState`.
    """

    h: torch.Tensor
    c: torch.Tensor
    reads: torch.Tensor
    memory: MemoryState


class CoreOutput(NamedTuple):
    """What :meth:`MemoryCore.forward` returns.

    Attributes:
        features: ``[B, T, H + R*D]`` per-step ``[h_t ; r_t]``.
        state: the final :class:`CoreState` (pass it back in to continue the sequence).
        trace: per-step read/write weights when ``trace=True`` was asked, else None.
    """

    features: torch.Tensor
    state: CoreState
    trace: MemoryTrace | None


class MemoryCore(nn.Module):
    """LSTM controller + :class:`SlotMemory`, run over whole sequences (Santoro et al. 2016).

    The controller input at step t is ``[x_t ; r_{t-1}]``; the input part of the LSTM gates is
    computed for all steps in one matrix product, the recurrent part is one product per step.

    Args:
        input_size: width of ``x_t``.
        hidden_size: H, LSTM units.
        memory: a ready memory module with SlotMemory's contract (``hidden_size``,
            ``read_heads``, ``width``, ``init_state``, ``step``), e.g.
            :class:`~metamem.memory.ntm.NTMMemory` or :class:`~metamem.memory.dnc.DNCMemory`;
            None: a :class:`SlotMemory` driven by the H units.
        **slot_options: keyword arguments of that :class:`SlotMemory` (``slots``, ``width``,
            ``read_heads``, ``policy``, ``policy_options``, ``top_k``, ``key_strength``; its
            defaults otherwise); refused together with ``memory``.

    Attributes:
        memory: the :class:`SlotMemory`.
        out_features: ``H + R*D``, the width of a feature.
    """

    def __init__(
        self,
        input_size: int,
        *,
        hidden_size: int = 200,
        memory: nn.Module | None = None,
        **slot_options: Any,
    ) -> None:
        super().__init__()
        check_positive("MemoryCore", input_size=input_size, hidden_size=hidden_size)
        if memory is None:
            memory = SlotMemory(hidden_size, **slot_options)
        elif slot_options:
            raise ValueError(
                f"MemoryCore: {', '.join(sorted(slot_options))} configure the slot memory; a given "
                "memory= module is built with its own options"
            )
        elif memory.hidden_size != hidden_size:
            raise ValueError(
                f"MemoryCore: the memory is driven by {memory.hidden_size} units but hidden_size={hidden_size}"
            )
        self.memory = memory
        self.input_size, self.hidden_size = input_size, hidden_size
        self.read_size = memory.read_heads * memory.width
        self.out_features = hidden_size + self.read_size
        self.input_gates = nn.Linear(input_size, 4 * hidden_size)
        self.recurrent_gates = nn.Linear(self.read_size + hidden_size, 4 * hidden_size, bias=False)

    def init_state(
        self,
        batch_size: int,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> CoreState:
        """Zero controller state and reads, and a wiped memory."""
        memory = self.memory.init_state(batch_size, device, dtype)
        zeros = memory.memory.new_zeros
        return CoreState(
            zeros(batch_size, self.hidden_size),
            zeros(batch_size, self.hidden_size),
            zeros(batch_size, self.read_size),
            memory,
        )

    def forward(
        self,
        x: torch.Tensor,
        state: CoreState | None = None,
        *,
        write_steps: int | None = None,
        start: int = 0,
        trace: bool = False,
    ) -> CoreOutput:
        """Run the controller and memory over a sequence.

        Args:
            x: ``[B, T, input_size]``.
            state: where to continue from (None: a fresh state, i.e. memory wiped).
            write_steps: the write horizon passed to :meth:`SlotMemory.step` as ``T``
                (default: the sequence length; for a copy task, the length of the input phase).
            start: global index of the first step (when continuing a sequence in chunks).
            trace: also record the read and write weights of every step.

        Returns:
            :class:`CoreOutput` with features ``[B, T, H + R*D]``.

        Raises:
            ValueError: if ``x`` is not ``[B, T, input_size]``.
        """
        if x.dim() != 3 or x.shape[-1] != self.input_size:
            raise ValueError(
                f"MemoryCore: input has shape {tuple(x.shape)}, expected [B, T, input_size={self.input_size}]"
            )
        B, T = x.shape[0], x.shape[1]
        horizon = T if write_steps is None else write_steps
        if state is None:
            state = self.init_state(B, x.device, x.dtype)
        h, c, reads, mem = state
        gates_x = self.input_gates(x)  # [B, T, 4H]
        w_rec = self.recurrent_gates.weight.t()
        outputs = []
        read_trace: list[torch.Tensor] = []
        write_trace: list[torch.Tensor] = []
        # unbind (one backward op) rather than indexing gates_x per step (a full-size fill each)
        for i, gates_in in enumerate(gates_x.unbind(1)):
            gates = torch.addmm(gates_in, torch.cat((reads, h), dim=1), w_rec)
            in_gate, forget_gate, cell_gate, out_gate = gates.chunk(4, dim=1)
            c = torch.sigmoid(forget_gate) * c + torch.sigmoid(in_gate) * torch.tanh(cell_gate)
            h = torch.sigmoid(out_gate) * torch.tanh(c)
            r, mem = self.memory.step(h, mem, start + i, horizon)
            reads = r.flatten(1)
            outputs.append(torch.cat((h, reads), dim=1))
            if trace:
                read_trace.append(mem.read_weights)
                write_trace.append(mem.write_weights)
        features = torch.stack(outputs, dim=1)
        recorded = (
            MemoryTrace(torch.stack(read_trace, dim=1), torch.stack(write_trace, dim=1)) if trace else None
        )
        return CoreOutput(features, CoreState(h, c, reads, mem), recorded)
