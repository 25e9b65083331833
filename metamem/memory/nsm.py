"""Neural Stored-program Memory (Le, Tran, Venkatesh 2020, papers.md §5.2).

A key-value **program memory** whose values are the flattened weights of the controller's
interface network (the linear map from the controller output ``c_t [B, H]`` to the memory's
interface vector ``ξ_t``). At every step each control head queries its own program memory:

* query: ``k^p_t = P_I(c_t)`` (key of size K) and strength ``β^p_t = oneplus(·)``;
* attention: ``w^p_t(i) = softmax_i(β^p_t · cos(k^p_t, key_i))`` over the P programs;
* working weight: ``W_t = Σ_i w^p_t(i) value_i`` (value_i = program i's ``[W_i | b_i]``);
* interface: ``ξ_t = W_t [c_t ; 1]``, restricted to the head's own outputs.

Because the interface is linear, ``(Σ_i w(i) W_i) c = Σ_i w(i) (W_i c)``:
:class:`ProgramLinear` computes all P programs' outputs with one matrix product and mixes
them per output with its head's program weights, which is the paper's reshaped ``p_t``
applied to ``c_t`` at P× the cost of one linear layer instead of materialising
``W_t [B, out, H+1]`` (the tests compare it with that naive construction).

Anti-collapse regulariser: ``l_p = Σ_{i<j} cos(key_i, key_j)`` summed over heads
(:meth:`ProgramLinear.orthogonality`); the learner adds ``η_t l_p`` with η_t annealed
(:func:`annealed_weight`; the code's defaults: η_0 = 0.1 times 0.9 at each decay interval).

:func:`attach_programs` swaps the linear interface of any memory module that has one
(:class:`~metamem.memory.SlotMemory`, :class:`~metamem.memory.ntm.NTMMemory`,
:class:`~metamem.memory.dnc.DNCMemory`) for a :class:`ProgramLinear` with one program memory
per control head, so ``MANN(programs=P)`` is the Neural Universal Turing Machine (NUTM)
over LRUA, and an NTM or DNC core with programs is NUTM over those.

Reference: H. Le, T. Tran, S. Venkatesh, "Neural Stored-program Memory", ICLR 2020
(arXiv:1906.08862).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch
from torch import nn

from metamem.memory.addressing import NORM_EPS, oneplus
from metamem.memory.state import check_positive

__all__ = ["ProgramLinear", "attach_programs", "interface_groups", "record_programs", "annealed_weight",
           "program_regulariser"]


def _normalise(x: torch.Tensor) -> torch.Tensor:
    return x / torch.sqrt(x.pow(2).sum(-1, keepdim=True) + NORM_EPS)


class ProgramLinear(nn.Module):
    """A linear interface whose weights are read from per-head program memories (NSM).

    Args:
        in_features: H, width of the controller output ``c_t``.
        out_features: width of the interface vector ``ξ_t``.
        programs: P, programs per head.
        groups: head index (0..G-1) of every output (length ``out_features``); each head
            has its own P programs' keys and attention. None: one head.
        key_size: K, width of a program key (the NSM code uses 2).

    Attributes:
        values: ``Linear(H, P·out)``: rows ``i·out .. (i+1)·out`` (with their bias) are
            program i's interface weights, the value of program-memory slot i.
        keys: ``[G, P, K]`` program keys of each head.
        query: ``Linear(H, G·(K+1))``, the meta-network ``P_I`` (key and strength per head).
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        programs: int,
        groups: Sequence[int] | None = None,
        key_size: int = 2,
    ) -> None:
        super().__init__()
        check_positive("ProgramLinear", in_features=in_features, out_features=out_features,
                       programs=programs, key_size=key_size)
        group_list = [0] * out_features if groups is None else [int(g) for g in groups]
        if len(group_list) != out_features or min(group_list) < 0:
            raise ValueError(
                f"ProgramLinear: groups must give a head index >= 0 for each of the {out_features} outputs, "
                f"got {len(group_list)} entries"
            )
        self.heads = max(group_list) + 1
        if sorted(set(group_list)) != list(range(self.heads)):
            raise ValueError(f"ProgramLinear: head indices must be 0..G-1 with none missing, got {sorted(set(group_list))}")
        self.in_features, self.out_features, self.programs, self.key_size = in_features, out_features, programs, key_size
        self.register_buffer("group_of_output", torch.tensor(group_list, dtype=torch.long), persistent=False)
        self.values = nn.Linear(in_features, programs * out_features)
        self.keys = nn.Parameter(torch.randn(self.heads, programs, key_size))
        self.query = nn.Linear(in_features, self.heads * (key_size + 1))
        self.recorded: list[torch.Tensor] | None = None

    @property
    def weight(self) -> torch.Tensor:
        """The stacked programs' weights ``[P·out, H]`` (memories ask it for device and dtype)."""
        return self.values.weight

    def program_values(self) -> torch.Tensor:
        """``[P, out, H+1]``: program i's interface weights ``[W_i | b_i]`` (the stored values)."""
        w = self.values.weight.view(self.programs, self.out_features, self.in_features)
        b = self.values.bias.view(self.programs, self.out_features, 1)
        return torch.cat((w, b), dim=-1)

    def program_weights(self, h: torch.Tensor) -> torch.Tensor:
        """``w^p_t [B, G, P]``: each head's attention over its programs for controller output ``h [B, H]``."""
        q = self.query(h).view(h.shape[0], self.heads, self.key_size + 1)
        key, strength = q[..., : self.key_size], oneplus(q[..., self.key_size])
        cos = (_normalise(key).unsqueeze(2) * _normalise(self.keys).unsqueeze(0)).sum(-1)  # [B, G, P]
        return torch.softmax(strength.unsqueeze(-1) * cos, dim=-1)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """``ξ_t [B, out]`` from ``c_t = h [B, H]``; records ``w^p_t`` when recording is on."""
        weights = self.program_weights(h)  # [B, G, P]
        if self.recorded is not None:
            self.recorded.append(weights.detach())
        outputs = self.values(h).view(h.shape[0], self.programs, self.out_features)  # [B, P, out]
        per_output = weights.transpose(1, 2).index_select(2, self.group_of_output)  # [B, P, out]
        return (outputs * per_output).sum(1)

    def orthogonality(self) -> torch.Tensor:
        """``l_p = Σ_heads Σ_{i<j} cos(key_i, key_j)`` (a scalar)."""
        k = _normalise(self.keys)
        cos = k @ k.transpose(1, 2)  # [G, P, P]
        return torch.triu(cos, diagonal=1).sum()

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, programs={self.programs}, "
                f"heads={self.heads}, key_size={self.key_size}")


def interface_groups(memory: nn.Module) -> list[int]:
    """Head index of every output of ``memory.interface`` (one NSM per control head).

    Memories that define ``interface_groups()`` (NTM, DNC) are asked; for a
    :class:`~metamem.memory.SlotMemory` control head r owns read head r's key and strength;
    with ``lru``, whose write head r is tied to read head r, it also owns that write head's
    gate and add vector (R heads in all); with the other policies the write parameters form
    one more head (index R).

    Raises:
        ValueError: for a memory without a linear interface or with ``cached_uniform`` (its
            writes are projected from a cache summary through the interface's fixed weights).
    """
    if hasattr(memory, "interface_groups"):
        return list(memory.interface_groups())
    from metamem.memory.core import SlotMemory
    from metamem.memory.policies import LRUWrite, _Scheduled

    if not isinstance(memory, SlotMemory):
        raise ValueError(f"attach_programs: {type(memory).__name__} has no linear interface to store as programs")
    if memory.policy_name == "cached_uniform":
        raise ValueError("attach_programs: write policy 'cached_uniform' projects its writes through fixed "
                         "interface weights; use lru, usage or uniform with programs")
    R, D = memory.read_heads, memory.width
    groups = [r for r in range(R) for _ in range(D)]
    if memory.key_strength:
        groups += list(range(R))
    policy = memory.policy.base if isinstance(memory.policy, _Scheduled) else memory.policy
    if isinstance(policy, LRUWrite):
        groups += list(range(R))  # gates
        if not policy.write_key:
            groups += [r for r in range(R) for _ in range(D)]  # add vectors
    else:
        groups += [R] * policy.interface_size
    return groups


def attach_programs(memory: nn.Module, programs: int, *, key_size: int = 2) -> ProgramLinear:
    """Replace ``memory.interface`` (an ``nn.Linear``) with a :class:`ProgramLinear` (NSM).

    Args:
        memory: a memory module with a linear ``interface`` (SlotMemory, NTMMemory, DNCMemory).
        programs: P programs per control head.
        key_size: K.

    Returns:
        The new interface (already installed on ``memory``).
    """
    old = getattr(memory, "interface", None)
    if not isinstance(old, nn.Linear):
        raise ValueError(f"attach_programs: {type(memory).__name__}.interface is not an nn.Linear")
    new = ProgramLinear(old.in_features, old.out_features, programs=programs,
                        groups=interface_groups(memory), key_size=key_size)
    memory.interface = new.to(device=old.weight.device, dtype=old.weight.dtype)
    return new


def program_regulariser(module: nn.Module) -> torch.Tensor | None:
    """Sum of :meth:`ProgramLinear.orthogonality` over the submodules (None when there are none)."""
    terms = [m.orthogonality() for m in module.modules() if isinstance(m, ProgramLinear)]
    return torch.stack(terms).sum() if terms else None


def annealed_weight(initial: float, decay: float, every: int, step: int | torch.Tensor) -> float | torch.Tensor:
    """``η_t = initial · decay^⌊step / every⌋`` (the NSM code's ``pl1`` decayed by ``decay_pl1``).

    ``step`` a Python int gives a float; a 0-d integer tensor (a step counter buffer) gives a
    float64 tensor of the same value, computed on its device with no host sync, so a
    ``torch.compile``d training step stays one graph (no ``Tensor.item()`` break).
    """
    if isinstance(step, torch.Tensor):
        exponent = torch.div(step, max(1, int(every)), rounding_mode="floor")
        return float(initial) * torch.pow(torch.tensor(float(decay), dtype=torch.float64, device=step.device), exponent)
    return float(initial) * float(decay) ** (int(step) // max(1, int(every)))


@contextlib.contextmanager
def record_programs(module: nn.Module) -> Iterator[dict[str, list[torch.Tensor]]]:
    """Record the program weights ``[B, G, P]`` of every :class:`ProgramLinear` in ``module``.

    Yields a dict ``{submodule name: [w^p at each call]}`` filled while the block runs::

        with record_programs(core) as rec:
            core(x)
        weights = torch.stack(rec["memory.interface"], 1)   # [B, T, G, P]
    """
    found = {name: m for name, m in module.named_modules() if isinstance(m, ProgramLinear)}
    out: dict[str, list[torch.Tensor]] = {name: [] for name in found}
    for name, m in found.items():
        m.recorded = out[name]
    try:
        yield out
    finally:
        for m in found.values():
            m.recorded = None

