"""Differentiable Neural Computer memory (Graves et al. 2016, papers.md §9.2).

Temporal memory linkage as pure functions, and :class:`DNCMemory`, which adds them to the
usage-based allocation write already in :class:`~metamem.memory.UsageWrite` (free gates,
retention, allocation from sorted usage, allocation/write gates, erase + add).

With ``w^w_t [S]`` the write weights of step t:

* :func:`update_precedence`: ``p_t = (1 − Σ_i w^w_t(i)) p_{t-1} + w^w_t``, ``p_0 = 0``;
* :func:`update_link`: ``L_t[i, j] = (1 − w^w_t(i) − w^w_t(j)) L_{t-1}[i, j] + w^w_t(i) p_{t-1}(j)``,
  ``L_t[i, i] = 0``, ``L_0 = 0`` (``L[i, j]``: how much slot i was written right after slot j);
* :func:`directional_weights`: forward ``f = L_t w^r_{t-1}`` and backward ``b = L_tᵀ w^r_{t-1}``;
* read weights ``w^r_t = π_1 b + π_2 c + π_3 f`` with content weights ``c`` and a softmax
  ``π`` over the three read modes.

Size limit: the link matrix is dense, ``B · S²`` numbers per episode batch and O(S²) work
per step, so :class:`DNCMemory` refuses ``slots > max_link_slots`` (default 1024, i.e. 4 MiB
per episode in float32). The DNC paper's sparse link matrix (top-K entries of ``w^w`` and
``p``, O(S log S)) is not implemented.

Reference: A. Graves, G. Wayne, M. Reynolds, T. Harley, I. Danihelka et al., "Hybrid
computing using a neural network with dynamic external memory", Nature 538:471–476 (2016),
Methods ("Temporal memory linkage", "Read weighting").
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn
from typing_extensions import Unpack

from metamem.memory.addressing import content_weights, oneplus, read_memory
from metamem.memory.policies import UsageWrite
from metamem.memory.state import MemoryModule, MemorySizes, MemoryState

__all__ = ["DNCState", "update_precedence", "update_link", "directional_weights", "DNCMemory"]

#: default largest S for the dense O(S²) link matrix
MAX_LINK_SLOTS = 1024


class DNCState(NamedTuple):
    """State of a :class:`DNCMemory` (a pytree of tensors, like :class:`~metamem.memory.MemoryState`).

    Attributes:
        memory: ``[B, S, D]``.
        usage: ``[B, S]`` DNC usage, including the last write.
        read_weights: ``[B, R, S]``.
        write_weights: ``[B, 1, S]``.
        link: ``[B, S, S]`` temporal link matrix.
        precedence: ``[B, S]`` precedence weights.
    """

    memory: torch.Tensor
    usage: torch.Tensor
    read_weights: torch.Tensor
    write_weights: torch.Tensor
    link: torch.Tensor
    precedence: torch.Tensor

    def select(self, index: torch.Tensor | slice | int) -> DNCState:
        if isinstance(index, int):
            index = slice(index, index + 1)
        return DNCState(*(f[index] for f in self))

    def detach(self) -> DNCState:
        return DNCState(*(f.detach() for f in self))


def update_precedence(precedence: torch.Tensor, write_weights: torch.Tensor) -> torch.Tensor:
    """``p_t = (1 − Σ_i w^w_t(i)) p_{t-1} + w^w_t``.

    Args:
        precedence: ``[B, S]`` (``p_{t-1}``).
        write_weights: ``[B, S]`` (``w^w_t``).

    Returns:
        ``[B, S]``.
    """
    return (1.0 - write_weights.sum(-1, keepdim=True)) * precedence + write_weights


def update_link(link: torch.Tensor, write_weights: torch.Tensor, precedence: torch.Tensor) -> torch.Tensor:
    """``L_t[i, j] = (1 − w(i) − w(j)) L_{t-1}[i, j] + w(i) p_{t-1}(j)`` with a zero diagonal.

    Args:
        link: ``[B, S, S]`` (``L_{t-1}``).
        write_weights: ``[B, S]`` (``w^w_t``).
        precedence: ``[B, S]`` the PREVIOUS precedence ``p_{t-1}``.

    Returns:
        ``[B, S, S]``.
    """
    w_i, w_j = write_weights.unsqueeze(-1), write_weights.unsqueeze(-2)
    new = (1.0 - w_i - w_j) * link + w_i * precedence.unsqueeze(-2)
    eye = torch.eye(link.shape[-1], dtype=torch.bool, device=link.device)
    return new.masked_fill(eye, 0.0)


def directional_weights(link: torch.Tensor, read_weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward ``f = L w`` and backward ``b = Lᵀ w`` weights of every read head.

    Args:
        link: ``[B, S, S]``.
        read_weights: ``[B, R, S]`` previous read weights.

    Returns:
        ``(forward [B, R, S], backward [B, R, S])``.
    """
    forward = torch.bmm(read_weights, link.transpose(1, 2))  # f[r, i] = Σ_j L[i, j] w[r, j]
    backward = torch.bmm(read_weights, link)  # b[r, i] = Σ_j L[j, i] w[r, j]
    return forward, backward


class DNCMemory(MemoryModule):
    """DNC memory: usage-based allocation writes, temporal links, three read modes.

    Same contract as :class:`~metamem.memory.SlotMemory` (``init_state``,
    ``step(h, state, t, T) -> (reads [B, R, D], state)``), with a :class:`DNCState`.
    Interface layout from ``h [B, H]``: per read head a key ``[D]`` (tanh), strength
    (oneplus) and 3 read-mode logits (softmax: backward, content, forward); then the write
    block of :class:`~metamem.memory.UsageWrite` (write key, strength, erase, add, R free
    gates, allocation and write gates). Order inside a step: write (free gates act on the
    previous read weights), update link and precedence, then read ``M_t``.
    Unlike the official code, gradients flow through the write weights into the usage.

    Args:
        hidden_size: H.
        max_link_slots: the size limit of the dense link matrix (see the module docstring).
        **sizes: ``slots`` (S, default 128, at most ``max_link_slots``), ``width`` (D, 20) and
            ``read_heads`` (R, 1): :class:`~metamem.memory.state.MemorySizes`.
    """

    def __init__(self, hidden_size: int, *, max_link_slots: int = MAX_LINK_SLOTS, **sizes: Unpack[MemorySizes]) -> None:
        super().__init__(hidden_size, **sizes)
        slots, width, read_heads = self.slots, self.width, self.read_heads
        if slots > max_link_slots:
            raise ValueError(
                f"DNCMemory: slots={slots} exceeds max_link_slots={max_link_slots}; the dense temporal "
                f"link matrix costs B*S^2 numbers and O(S^2) per step (use fewer slots or raise max_link_slots)"
            )
        self.writer = UsageWrite(slots=slots, width=width, read_heads=read_heads, hidden_size=hidden_size)
        self.head_size = width + 1 + 3
        self.interface = nn.Linear(hidden_size, read_heads * self.head_size + self.writer.interface_size)

    @property
    def write_heads(self) -> int:
        return 1

    def interface_groups(self) -> list[int]:
        """Head index of every interface output: R read heads, then the write head (index R)."""
        return self.head_groups([self.head_size] * self.read_heads + [self.writer.interface_size])

    def init_state(
        self, batch_size: int, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> DNCState:
        """Memory ``1e-6``, usage/link/precedence/write weights zero, read weights one-hot on slot 0."""
        base = self.fresh_state(batch_size, device, dtype)
        zeros = base.usage.new_zeros
        return DNCState(
            base.memory, zeros(batch_size, self.slots), base.read_weights, base.write_weights,
            zeros(batch_size, self.slots, self.slots), zeros(batch_size, self.slots),
        )

    def step(self, h: torch.Tensor, state: DNCState, t: int, T: int) -> tuple[torch.Tensor, DNCState]:
        """Write, update the links, read (:meth:`MemoryModule.step`; ``t``/``T`` unused: the DNC
        writes every step)."""
        B, R, D = h.shape[0], self.read_heads, self.width
        read_raw, write_raw = self.controls(h, state, [R * self.head_size, self.writer.interface_size])
        view = MemoryState(state.memory, state.usage, state.read_weights, state.write_weights, state.usage[:, :0])
        memory, usage, write_weights = self.writer.write(write_raw, view, state.read_weights)
        ww = write_weights[:, 0]
        link = update_link(state.link, ww, state.precedence)
        precedence = update_precedence(state.precedence, ww)
        key, strength, modes = read_raw.view(B, R, self.head_size).split([D, 1, 3], dim=-1)
        content = content_weights(memory, torch.tanh(key), oneplus(strength).squeeze(-1))
        forward, backward = directional_weights(link, state.read_weights)
        pi = torch.softmax(modes, dim=-1)
        read_weights = pi[..., 0:1] * backward + pi[..., 1:2] * content + pi[..., 2:3] * forward
        reads = read_memory(memory, read_weights)
        return reads, DNCState(memory, usage, read_weights, write_weights, link, precedence)

    def extra_repr(self) -> str:
        return f"hidden_size={self.hidden_size}, slots={self.slots}, width={self.width}, read_heads={self.read_heads}"
