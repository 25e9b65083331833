"""Neural Turing Machine addressing (Graves, Wayne, Danihelka 2014, papers.md §9.1).

Location-based addressing as small pure functions that compose with the content reads of
:mod:`metamem.memory.addressing`, and :class:`NTMMemory`, a memory whose heads use them.
One head's weighting over the S slots at step t (``w_{t-1}`` its previous weighting):

1. content ``w^c = softmax(β · cos(k, M))`` (:func:`~metamem.memory.content_weights`);
2. :func:`interpolate`: ``w^g = g · w^c + (1 − g) · w_{t-1}``, ``g ∈ (0, 1)``;
3. :func:`circular_shift`: ``w̃(i) = Σ_j w^g(j) s((i − j) mod S)`` with ``s`` a distribution
   over the integer shifts ``−n..n``;
4. :func:`sharpen`: ``w(i) = w̃(i)^γ / Σ_j w̃(j)^γ``, ``γ ≥ 1``.

:func:`ntm_address` chains the four. Writing is erase then add,
``M_t(i) = M_{t-1}(i) ∘ Π_h (1 − w_h(i) e_h) + Σ_h w_h(i) a_h``; reading is ``r = Σ_i w(i) M_t(i)``.

Reference: A. Graves, G. Wayne, I. Danihelka, "Neural Turing Machines", arXiv:1410.5401
(2014), §3.3 (addressing) and §3.2 (erase/add writes).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from typing_extensions import Unpack

from metamem.memory.addressing import content_weights, oneplus, read_memory
from metamem.memory.state import MemoryModule, MemorySizes, MemoryState, check_positive

__all__ = ["interpolate", "circular_shift", "sharpen", "ntm_address", "NTMMemory"]

#: added to the weights before the power in :func:`sharpen` (finite gradient at w = 0)
SHARPEN_EPS = 1e-12


def interpolate(content: torch.Tensor, previous: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
    """Interpolation gate ``g · w^c + (1 − g) · w_{t-1}``.

    Args:
        content: ``[B, R, S]`` content weights of this step.
        previous: ``[B, R, S]`` the heads' weights of the previous step.
        gate: ``[B, R]`` gates in [0, 1].

    Returns:
        ``[B, R, S]``.
    """
    g = gate.unsqueeze(-1)
    return g * content + (1.0 - g) * previous


def circular_shift(weights: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Circular convolution ``w̃(i) = Σ_j w(j) s((i − j) mod S)`` over the shifts ``−n..n``.

    Args:
        weights: ``[B, R, S]``.
        shift: ``[B, R, 2n+1]``, a distribution per head; entry k is the weight of the
            shift ``k − n`` (moving the focus ``k − n`` slots towards higher indices).

    Returns:
        ``[B, R, S]``.

    Raises:
        ValueError: if the shift width is even or exceeds S.
    """
    width, slots = shift.shape[-1], weights.shape[-1]
    if width % 2 == 0 or width > slots:
        raise ValueError(
            f"circular_shift: the shift distribution needs an odd width 2n+1 <= S={slots}, got {width}"
        )
    n = width // 2
    # torch.roll(w, o)[i] = w[(i - o) mod S]: the weights moved by o slots
    rolled = torch.stack([torch.roll(weights, k - n, dims=-1) for k in range(width)], dim=-1)
    return (rolled * shift.unsqueeze(-2)).sum(-1)


def sharpen(weights: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
    """Sharpening ``w^γ / Σ_j w(j)^γ`` per head.

    Args:
        weights: ``[B, R, S]`` non-negative weights.
        gamma: ``[B, R]`` exponents γ ≥ 1.

    Returns:
        ``[B, R, S]`` summing to 1 per head (``SHARPEN_EPS`` is added to the weights so that
        zero weights keep a finite gradient with respect to γ).
    """
    powered = (weights + SHARPEN_EPS).pow(gamma.unsqueeze(-1))
    return powered / powered.sum(-1, keepdim=True)


def ntm_address(
    memory: torch.Tensor,
    previous: torch.Tensor,
    keys: torch.Tensor,
    strength: torch.Tensor,
    gate: torch.Tensor,
    shift: torch.Tensor,
    gamma: torch.Tensor,
) -> torch.Tensor:
    """The full NTM addressing: content → interpolation → circular shift → sharpening.

    Args:
        memory: ``[B, S, D]``.
        previous: ``[B, R, S]`` previous weights of the R heads.
        keys: ``[B, R, D]``; strength: ``[B, R]`` (β ≥ 0); gate: ``[B, R]`` in [0, 1];
        shift: ``[B, R, 2n+1]`` distributions; gamma: ``[B, R]`` (γ ≥ 1).

    Returns:
        ``[B, R, S]`` weights.
    """
    content = content_weights(memory, keys, strength)
    return sharpen(circular_shift(interpolate(content, previous, gate), shift), gamma)


class NTMMemory(MemoryModule):
    """A slot memory with NTM heads: R read heads and Wh write heads (Graves et al. 2014).

    Drop-in for :class:`~metamem.memory.SlotMemory` inside
    :class:`~metamem.memory.MemoryCore` (``MemoryCore(..., memory=NTMMemory(H, ...))``): the
    same ``init_state`` / ``step(h, state, t, T) -> (reads [B, R, D], state)`` contract and a
    :class:`~metamem.memory.MemoryState` as state (``usage`` unused, zero; ``cache`` empty).

    One linear interface maps ``h [B, H]`` to, per head and in this order: key ``[D]``
    (tanh), strength (softplus, β ≥ 0), gate (sigmoid), shift logits ``[2n+1]`` (softmax),
    sharpening (oneplus, γ ≥ 1); write heads add an erase ``[D]`` (sigmoid) and an add
    vector ``[D]`` (tanh). Read heads come first, then write heads (see
    :meth:`interface_groups`). Order inside a step: the write heads address ``M_{t-1}`` and
    write (erase, then add), then the read heads address and read ``M_t``. Initial weights
    of every head are one-hot on slot 0, memory ``1e-6`` (as :func:`~metamem.memory.init_state`).

    Args:
        hidden_size: H.
        write_heads: Wh.
        shifts: n, the largest shift (shifts ``−n..n``; the paper uses n = 1). Needs ``2n+1 <= S``.
        **sizes: ``slots`` (S, default 128), ``width`` (D, 20) and ``read_heads`` (R, 1):
            :class:`~metamem.memory.state.MemorySizes`.
    """

    def __init__(
        self, hidden_size: int, *, write_heads: int = 1, shifts: int = 1, **sizes: Unpack[MemorySizes]
    ) -> None:
        super().__init__(hidden_size, **sizes)
        check_positive("NTMMemory", write_heads=write_heads)
        slots, width = self.slots, self.width
        if isinstance(shifts, bool) or not isinstance(shifts, int) or shifts < 0 or 2 * shifts + 1 > slots:
            raise ValueError(f"NTMMemory: shifts must be an int n >= 0 with 2n+1 <= slots={slots}, got {shifts!r}")
        self.n_write_heads, self.shifts = write_heads, shifts
        self.address_size = width + 3 + (2 * shifts + 1)
        self.write_size = self.address_size + 2 * width
        self.interface = nn.Linear(hidden_size, self.read_heads * self.address_size + write_heads * self.write_size)

    @property
    def write_heads(self) -> int:
        return self.n_write_heads

    def interface_groups(self) -> list[int]:
        """Head index (0..R+Wh-1) of every interface output: read heads, then write heads."""
        return self.head_groups([self.address_size] * self.read_heads + [self.write_size] * self.n_write_heads)

    def init_state(
        self, batch_size: int, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> MemoryState:
        """Memory ``1e-6``, every head's weights one-hot on slot 0."""
        state = self.fresh_state(batch_size, device, dtype, write_heads=self.n_write_heads)
        write_weights = torch.zeros_like(state.write_weights)
        write_weights[..., 0] = 1.0
        return state._replace(usage=torch.zeros_like(state.usage), write_weights=write_weights)

    def _address(self, raw: torch.Tensor, memory: torch.Tensor, previous: torch.Tensor) -> torch.Tensor:
        D, n = self.width, 2 * self.shifts + 1
        key, strength, gate, shift, gamma = raw.split([D, 1, 1, n, 1], dim=-1)
        return ntm_address(
            memory, previous, torch.tanh(key), F.softplus(strength).squeeze(-1),
            torch.sigmoid(gate).squeeze(-1), torch.softmax(shift, dim=-1), oneplus(gamma).squeeze(-1),
        )

    def step(self, h: torch.Tensor, state: MemoryState, t: int, T: int) -> tuple[torch.Tensor, MemoryState]:
        """Write with the write heads, then read (:meth:`MemoryModule.step`; ``t`` and ``T`` are
        unused: NTM writes every step)."""
        B, R, Wh, D = h.shape[0], self.read_heads, self.n_write_heads, self.width
        read_raw, write_raw = self.controls(h, state, [R * self.address_size, Wh * self.write_size])
        write_raw = write_raw.view(B, Wh, self.write_size)
        address, erase, add = write_raw.split([self.address_size, D, D], dim=-1)
        write_weights = self._address(address, state.memory, state.write_weights)  # [B, Wh, S]
        w = write_weights.unsqueeze(-1)  # [B, Wh, S, 1]
        keep = torch.prod(1.0 - w * torch.sigmoid(erase).unsqueeze(2), dim=1)  # [B, S, D]
        memory = state.memory * keep + torch.einsum("bhs,bhd->bsd", write_weights, torch.tanh(add))
        read_weights = self._address(read_raw.view(B, R, self.address_size), memory, state.read_weights)
        reads = read_memory(memory, read_weights)
        return reads, state._replace(memory=memory, read_weights=read_weights, write_weights=write_weights)

    def extra_repr(self) -> str:
        return (
            f"hidden_size={self.hidden_size}, slots={self.slots}, width={self.width}, "
            f"read_heads={self.read_heads}, write_heads={self.n_write_heads}, shifts={self.shifts}"
        )
