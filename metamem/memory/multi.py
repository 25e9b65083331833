"""Multi-controller and multi-memory cores (Le's thesis, contribution ii; papers.md §5.3).

* :class:`DualControllerCore` (DCMAN): an **encoder** controller writes the input sequence into
  one memory, then a separate **decoder** controller emits the output sequence, reading that
  memory while it is **write-protected** (the decoder has no write path at all).
* :class:`DualMemoryCore` (DMNC): one encoder and one memory per **view**; the decoder reads
  both memories. ``fusion="late"`` keeps the memories separate (view-specific content);
  ``fusion="early"`` gives both encoders one shared memory (one address space: each view's
  encoder reads and overwrites what the other wrote; they step in turn, view a then view b).

Encoders are :class:`~metamem.memory.MemoryCore` objects from :data:`MEMORY_CORES`
(``lstm_slot``, ``ntm``, ``dnc``); the decoder is :class:`ReadOnlyDecoder`, an LSTM over
``[d_t ; r_{t-1}]`` with R content-read heads per memory, started from the mean of the
encoders' final controller states.

Two-view episode format (:class:`TwoViewBatch`): ``views = (a [B, Ta, Ca], b [B, Tb, Cb])``,
the two input sequences (each view has one length for the whole batch; pad shorter episodes
with zero steps), ``decoder_inputs [B, Td, Cd]`` (e.g. the previous output, or zeros), and
``targets`` scored on the decoder's ``Td`` steps. DCMAN uses ``views[0]`` only. The
:func:`two_view_sum_task` (DMNC's synthetic "sum of two sequences") builds one.

References: H. Le, T. Tran, S. Venkatesh, "Dual Control Memory Augmented Neural Networks for
Treatment Recommendations", PAKDD 2018 (arXiv:1802.03689); "Dual Memory Neural Computer for
Asynchronous Two-view Sequential Learning", KDD 2018 (arXiv:1802.00662).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, NamedTuple, Sequence

import torch
from torch import nn

from metamem.memory.addressing import content_weights, oneplus, read_memory
from metamem.memory.core import MemoryCore
from metamem.memory.cores import build_core
from metamem.memory.state import check_positive
from metamem.memory.tasks import _generator

__all__ = ["TwoViewBatch", "ReadOnlyDecoder", "DualControllerCore", "DualMemoryCore", "MultiOutput",
           "two_view_sum_task"]


@dataclass
class TwoViewBatch:
    """A batch in the two-view episode format (see the module docstring).

    Attributes:
        views: ``(a [B, Ta, Ca], b [B, Tb, Cb])``.
        decoder_inputs: ``[B, Td, Cd]``.
        targets: ``[B, Td]`` int64 classes (or ``[B, Td, K]`` float) for the decoder steps.
    """

    views: tuple[torch.Tensor, torch.Tensor]
    decoder_inputs: torch.Tensor
    targets: torch.Tensor


class MultiOutput(NamedTuple):
    """Output of a multi-controller core.

    Attributes:
        features: ``[B, Td, H + M·R·D]`` decoder features ``[h_t ; reads_t]`` (M memories).
        memories: the memory tensors ``[B, S, D]`` the decoder read (unchanged by decoding).
        encoder_features: the encoders' features, one ``[B, T_view, ·]`` per encoder.
        read_weights: ``[B, Td, M, R, S]`` the decoder's read weights.
    """

    features: torch.Tensor
    memories: list[torch.Tensor]
    encoder_features: list[torch.Tensor]
    read_weights: torch.Tensor


class ReadOnlyDecoder(nn.Module):
    """LSTM decoder with R content-read heads on each of M write-protected memories.

    Step t: ``h_t, c_t = LSTM([d_t ; r_{t-1}])``; for memory m and head i, key ``tanh(W h_t)``,
    strength ``oneplus(·)``, weights ``softmax(β cos(k, M_m))`` and read ``r = w M_m``. The
    memories are inputs only: nothing here can write them.

    Args:
        input_size: Cd.
        hidden_size: H.
        width: D of every memory.
        memories: M.
        read_heads: R per memory.
    """

    def __init__(self, input_size: int, *, hidden_size: int, width: int, memories: int, read_heads: int) -> None:
        super().__init__()
        check_positive("ReadOnlyDecoder", input_size=input_size, hidden_size=hidden_size, width=width,
                       memories=memories, read_heads=read_heads)
        self.input_size, self.hidden_size, self.width = input_size, hidden_size, width
        self.memories, self.read_heads = memories, read_heads
        self.read_size = memories * read_heads * width
        self.out_features = hidden_size + self.read_size
        self.cell = nn.LSTMCell(input_size + self.read_size, hidden_size)
        self.interface = nn.Linear(hidden_size, memories * read_heads * (width + 1))

    def forward(
        self, x: torch.Tensor, memories: Sequence[torch.Tensor], h: torch.Tensor, c: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Decode ``x [B, Td, Cd]`` reading ``memories`` (M tensors ``[B, S, D]``) from state ``(h, c)``.

        Returns:
            features ``[B, Td, H + M·R·D]`` and read weights ``[B, Td, M, R, S]``.
        """
        if len(memories) != self.memories or x.dim() != 3 or x.shape[-1] != self.input_size:
            raise ValueError(
                f"ReadOnlyDecoder: expected {self.memories} memories and input [B, Td, {self.input_size}], "
                f"got {len(memories)} memories and input {tuple(x.shape)}"
            )
        B, M, R, D = x.shape[0], self.memories, self.read_heads, self.width
        reads = x.new_zeros(B, self.read_size)
        feats, weights = [], []
        for x_t in x.unbind(1):
            h, c = self.cell(torch.cat((x_t, reads), 1), (h, c))
            raw = self.interface(h).view(B, M, R, D + 1)
            step_reads, step_w = [], []
            for m, memory in enumerate(memories):
                w = content_weights(memory, torch.tanh(raw[:, m, :, :D]), oneplus(raw[:, m, :, D]))
                step_reads.append(read_memory(memory, w).flatten(1))
                step_w.append(w)
            reads = torch.cat(step_reads, 1)
            feats.append(torch.cat((h, reads), 1))
            weights.append(torch.stack(step_w, 1))
        return torch.stack(feats, 1), torch.stack(weights, 1)


def _encoder(core: str, input_size: int, sizes: dict[str, int], options: dict[str, Any] | None) -> MemoryCore:
    return build_core(core, input_size=input_size, **sizes, **dict(options or {}))


class DualControllerCore(nn.Module):
    """DCMAN: encoder controller writes, decoder controller reads a write-protected memory.

    Args:
        input_size: Ca, width of the encoded sequence (``views[0]``).
        decoder_input_size: Cd.
        hidden_size: H of both controllers.
        slots: S, memory slots.
        width: D, slot width.
        read_heads: R, read heads of each controller.
        core: the encoder's :data:`~metamem.memory.MEMORY_CORES` name (the paper: ``dnc``).
        core_options: extra options of that core.
    """

    def __init__(
        self, input_size: int, decoder_input_size: int, *, hidden_size: int = 64, slots: int = 32,
        width: int = 16, read_heads: int = 1, core: str = "dnc", core_options: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        sizes = dict(hidden_size=hidden_size, slots=slots, width=width, read_heads=read_heads)
        self.encoder = _encoder(core, input_size, sizes, core_options)
        self.decoder = ReadOnlyDecoder(decoder_input_size, hidden_size=hidden_size, width=width, memories=1,
                                       read_heads=read_heads)
        self.out_features = self.decoder.out_features

    def forward(self, batch: TwoViewBatch) -> MultiOutput:
        enc = self.encoder(batch.views[0])
        memory = enc.state.memory.memory
        feats, weights = self.decoder(batch.decoder_inputs, [memory], enc.state.h, enc.state.c)
        return MultiOutput(feats, [memory], [enc.features], weights)


class DualMemoryCore(nn.Module):
    """DMNC: one encoder per view, late (two memories) or early (one shared memory) fusion.

    Args:
        input_sizes: ``(Ca, Cb)``.
        decoder_input_size: Cd.
        hidden_size: as :class:`DualControllerCore` (both encoders alike), as are
            ``slots``, ``width``, ``read_heads``, ``core`` and ``core_options``.
        fusion: ``"late"`` (separate memories, the decoder reads both) or ``"early"`` (one
            memory shared by both encoders).
    """

    def __init__(
        self, input_sizes: tuple[int, int], decoder_input_size: int, *, hidden_size: int = 64, slots: int = 32,
        width: int = 16, read_heads: int = 1, core: str = "dnc", core_options: dict[str, Any] | None = None,
        fusion: Literal["late", "early"] = "late",
    ) -> None:
        super().__init__()
        if fusion not in ("late", "early"):
            raise ValueError(f"DualMemoryCore: fusion must be 'late' or 'early', got {fusion!r}")
        sizes = dict(hidden_size=hidden_size, slots=slots, width=width, read_heads=read_heads)
        self.fusion = fusion
        self.encoders = nn.ModuleList(_encoder(core, c, sizes, core_options) for c in input_sizes)
        self.decoder = ReadOnlyDecoder(decoder_input_size, hidden_size=hidden_size, width=width,
                                       memories=2 if fusion == "late" else 1, read_heads=read_heads)
        self.out_features = self.decoder.out_features

    def _early(self, views: tuple[torch.Tensor, torch.Tensor]) -> tuple[Any, list[Any], list[torch.Tensor]]:
        """Both encoders step in turn (view a, then view b) on one shared memory state."""
        B = views[0].shape[0]
        states = [enc.init_state(B, views[0].device, views[0].dtype) for enc in self.encoders]
        shared = states[0].memory
        feats: list[list[torch.Tensor]] = [[], []]
        for t in range(max(v.shape[1] for v in views)):
            for i, (enc, view) in enumerate(zip(self.encoders, views)):
                if t < view.shape[1]:
                    out = enc(view[:, t : t + 1], states[i]._replace(memory=shared), start=t)
                    states[i], shared = out.state, out.state.memory
                    feats[i].append(out.features)
        return shared, states, [torch.cat(f, 1) for f in feats]

    def forward(self, batch: TwoViewBatch) -> MultiOutput:
        if self.fusion == "late":
            outs = [enc(view) for enc, view in zip(self.encoders, batch.views)]
            memories = [o.state.memory.memory for o in outs]
            states, enc_feats = [o.state for o in outs], [o.features for o in outs]
        else:
            shared, states, enc_feats = self._early(batch.views)
            memories = [shared.memory]
        h = torch.stack([s.h for s in states]).mean(0)
        c = torch.stack([s.c for s in states]).mean(0)
        feats, weights = self.decoder(batch.decoder_inputs, memories, h, c)
        return MultiOutput(feats, memories, enc_feats, weights)


def two_view_sum_task(
    batch_size: int,
    length_a: int,
    length_b: int,
    *,
    base: int = 10,
    generator: torch.Generator | None = None,
    seed: int | None = None,
    device: torch.device | str | None = None,
) -> TwoViewBatch:
    """DMNC's synthetic two-view task: view a and view b are digit sequences; output their element-wise sums.

    Digits are one-hot over ``base`` classes; the decoder runs ``max(Ta, Tb)`` steps (zero
    inputs) and must output ``(a_t + b_t)`` (a missing digit counts 0) as one of ``2·base − 1``
    classes.

    Returns:
        :class:`TwoViewBatch` with ``views`` ``[B, Ta, base]``, ``[B, Tb, base]``, zero
        ``decoder_inputs [B, Td, 1]`` and int64 ``targets [B, Td]``.
    """
    check_positive("two_view_sum_task", batch_size=batch_size, length_a=length_a, length_b=length_b, base=base)
    gen = _generator("two_view_sum_task", generator, seed, device)
    a = torch.randint(0, base, (batch_size, length_a), generator=gen, device=gen.device)
    b = torch.randint(0, base, (batch_size, length_b), generator=gen, device=gen.device)
    steps = max(length_a, length_b)
    sums = torch.zeros(batch_size, steps, dtype=torch.long, device=gen.device)
    sums[:, :length_a] += a
    sums[:, :length_b] += b
    eye = torch.eye(base, device=gen.device)
    return TwoViewBatch((eye[a], eye[b]), torch.zeros(batch_size, steps, 1, device=gen.device), sums)
