"""The explicit state of a slot memory: a value passed into and returned by every step.

Nothing about an episode's memory lives on a module. A step takes a :class:`MemoryState`
and returns a new one, so a batch of episodes is just the leading dimension of every field,
wiping memory between episodes is a fresh :func:`init_state`, and one episode can be pulled
out of a batch with :meth:`MemoryState.select`.

Initial values follow the ntm-one-shot reference implementation of Santoro et al. (2016)
(papers.md §1.4): every slot holds the constant ``1e-6``, the read weights of every head and
the usage are one-hot on slot 0, and the last write weights are zero.
"""

from __future__ import annotations

from typing import Any, NamedTuple, TypedDict

import torch
from torch import nn

__all__ = ["MemoryState", "MemorySizes", "MemoryModule", "init_state", "check_positive", "check_controller_output"]

#: Constant initial value of every memory cell (ntm-one-shot).
MEMORY_INIT = 1e-6


class MemoryState(NamedTuple):
    """Memory contents and addressing history of B episodes.

    A ``NamedTuple`` of tensors (a pytree for ``torch.compile`` and ``torch.func``);
    use ``state._replace(field=...)`` to derive a new state.

    Attributes:
        memory: ``[B, S, D]`` slot contents.
        usage: ``[B, S]`` usage of each slot (meaning depends on the write policy: decayed
            sum of access weights for ``lru``, DNC usage in [0, 1] for ``usage``).
        read_weights: ``[B, R, S]`` read weights of the last step.
        write_weights: ``[B, Wh, S]`` write weights of the last step (all zero at steps
            that did not write); ``Wh`` is the policy's number of write heads.
        cache: ``[B, L, H]`` controller states kept by ``cached_uniform`` (``L = 0`` for
            every other policy).
    """

    memory: torch.Tensor
    usage: torch.Tensor
    read_weights: torch.Tensor
    write_weights: torch.Tensor
    cache: torch.Tensor

    @property
    def batch_size(self) -> int:
        return int(self.memory.shape[0])

    def select(self, index: torch.Tensor | slice | int) -> MemoryState:
        """The state of the episodes ``index`` (a slice, an int or an index tensor)."""
        if isinstance(index, int):
            index = slice(index, index + 1)
        return MemoryState(*(f[index] for f in self))

    def to(self, device: torch.device | str) -> MemoryState:
        return MemoryState(*(f.to(device) for f in self))

    def detach(self) -> MemoryState:
        """The same values cut from the autograd graph (truncated backprop between chunks)."""
        return MemoryState(*(f.detach() for f in self))


def check_positive(owner: str, **sizes: int) -> None:
    """Raise a one-line ``ValueError`` naming the first size that is not a positive int."""
    for name, value in sizes.items():
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(f"{owner}: {name} must be a positive int, got {value!r}")


def check_controller_output(owner: str, h: torch.Tensor, hidden_size: int, batch_size: int) -> None:
    """Raise a one-line ``ValueError`` unless ``h`` is ``[B, H]`` for this batch and memory."""
    if h.dim() != 2 or h.shape[1] != hidden_size or h.shape[0] != batch_size:
        raise ValueError(
            f"{owner}: controller output has shape {tuple(h.shape)}, expected [B={batch_size}, H={hidden_size}]"
        )


def init_state(
    batch_size: int,
    *,
    slots: int,
    width: int,
    read_heads: int,
    write_heads: int = 1,
    cache_size: int = 0,
    hidden_size: int = 0,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> MemoryState:
    """A fresh (wiped) memory for ``batch_size`` episodes.

    Args:
        batch_size: B.
        slots: S.
        width: D.
        read_heads: R.
        write_heads: number of write heads of the policy (``Wh``).
        cache_size: L, controller states cached by ``cached_uniform`` (0 otherwise).
        hidden_size: H, width of a cached controller state (only used when ``cache_size > 0``).
        device: where the tensors live.
        dtype: floating dtype of every field.

    Returns:
        memory ``1e-6`` everywhere, usage and read weights one-hot on slot 0, write weights
        and cache zero.

    Raises:
        ValueError: if a size is not a positive int.
    """
    check_positive(
        "init_state",
        batch_size=batch_size,
        slots=slots,
        width=width,
        read_heads=read_heads,
        write_heads=write_heads,
    )
    if cache_size < 0 or hidden_size < 0:
        raise ValueError(
            f"init_state: cache_size and hidden_size must be >= 0, got {cache_size}, {hidden_size}"
        )
    kw: dict[str, Any] = {"device": device, "dtype": dtype}
    memory = torch.full((batch_size, slots, width), MEMORY_INIT, **kw)
    usage = torch.zeros(batch_size, slots, **kw)
    usage[:, 0] = 1.0
    read_weights = torch.zeros(batch_size, read_heads, slots, **kw)
    read_weights[:, :, 0] = 1.0
    write_weights = torch.zeros(batch_size, write_heads, slots, **kw)
    cache = torch.zeros(batch_size, cache_size, hidden_size if cache_size else 0, **kw)
    return MemoryState(memory, usage, read_weights, write_weights, cache)


class MemorySizes(TypedDict, total=False):
    """The sizes every memory takes as keywords beside H (``**sizes: Unpack[MemorySizes]``
    on a memory passes them to :class:`MemoryModule`, which holds their defaults).

    Attributes:
        slots: S (default 128).
        width: D (default 20).
        read_heads: R (default 1).
    """

    slots: int
    width: int
    read_heads: int


class MemoryModule(nn.Module):
    """What every memory a :class:`~metamem.memory.MemoryCore` drives shares (:class:`SlotMemory
    <metamem.memory.SlotMemory>`, :class:`~metamem.memory.ntm.NTMMemory`,
    :class:`~metamem.memory.dnc.DNCMemory`): the sizes H, S, D, R (checked, kept as attributes),
    a learned ``interface`` (an ``nn.Linear`` from the controller output ``h [B, H]``, made by
    the subclass), a fresh state on the interface's device, and the checked split of the
    interface output. Subclasses implement ``init_state`` and ``step(h, state, t, T)``.

    Args:
        hidden_size: H.
        slots, width, read_heads: S, D and R (:class:`MemorySizes`); the defaults are the
            NTM's and the DNC's (:class:`~metamem.memory.SlotMemory` declares its own).

    Raises:
        ValueError: on a size that is not a positive int, naming the subclass.
    """

    interface: nn.Linear

    def __init__(self, hidden_size: int, *, slots: int = 128, width: int = 20, read_heads: int = 1) -> None:
        super().__init__()
        check_positive(type(self).__name__, hidden_size=hidden_size, slots=slots, width=width, read_heads=read_heads)
        self.hidden_size, self.slots, self.width, self.read_heads = hidden_size, slots, width, read_heads

    def init_state(
        self, batch_size: int, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> Any:
        """A wiped memory for ``batch_size`` episodes (:func:`init_state` with this memory's
        sizes and :meth:`state_options`); ``device``/``dtype`` default to the module's."""
        return self.fresh_state(batch_size, device, dtype, **self.state_options())

    def state_options(self) -> dict[str, int]:
        """Further keyword arguments of :func:`init_state` (write heads, cache...); none here."""
        return {}

    def step(self, h: torch.Tensor, state: Any, t: int, T: int) -> tuple[torch.Tensor, Any]:
        """One memory step: write, then read.

        Args:
            h: ``[B, H]`` controller output at step t.
            state: the memory before step t (the subclass's state type).
            t: 0-based step index.
            T: the write horizon (leading steps whose data the memory should store); only
                scheduled writers (``uniform``, ``cached_uniform``) use ``t`` and ``T``.

        Returns:
            ``(reads [B, R, D], new_state)``.

        Raises:
            ValueError: if ``h`` is not ``[B, H]`` for this memory's H and the state's B.
        """
        raise NotImplementedError

    def fresh_state(
        self, batch_size: int, device: torch.device | str | None, dtype: torch.dtype | None, **options: Any
    ) -> MemoryState:
        """:func:`init_state` at this memory's sizes; ``device``/``dtype`` None: the interface's."""
        weight = self.interface.weight
        return init_state(
            batch_size, slots=self.slots, width=self.width, read_heads=self.read_heads,
            device=weight.device if device is None else device,
            dtype=weight.dtype if dtype is None else dtype, **options,
        )

    def controls(self, h: torch.Tensor, state: Any, sizes: list[int]) -> tuple[torch.Tensor, ...]:
        """The interface output of ``h [B, H]`` split into parts of ``sizes`` (``[B, size]`` each).

        Raises:
            ValueError: if ``h`` is not ``[B, H]`` for this memory's H and the state's B.
        """
        check_controller_output(f"{type(self).__name__}.step", h, self.hidden_size, state.memory.shape[0])
        return self.interface(h).split(sizes, dim=1)

    @staticmethod
    def head_groups(sizes: list[int]) -> list[int]:
        """Head index of every interface output, for heads whose blocks have ``sizes`` outputs
        in order (what :func:`metamem.memory.nsm.attach_programs` splits into programs)."""
        return [head for head, size in enumerate(sizes) for _ in range(size)]
