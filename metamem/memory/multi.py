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

from collections.abc import Sequence
from typing import Any, Literal, NamedTuple

import torch
from torch import nn
from torch.nn import functional as F
from typing_extensions import Unpack

from metamem.data.two_view_sum import sum_targets
from metamem.memory.addressing import content_weights, oneplus, read_memory
from metamem.memory.core import MemoryCore
from metamem.memory.cores import build_core
from metamem.memory.state import check_positive
from metamem.memory.tasks import TaskRandomness, task_generator
from metamem.types import TwoViewBatch

__all__ = ["TwoViewBatch", "ReadOnlyDecoder", "DualControllerCore", "DualMemoryCore", "MultiOutput",
           "Encoded", "concat_views", "sum_targets", "two_view_sum_task"]


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


class Encoded(NamedTuple):
    """What the encoders leave for the decoder.

    Attributes:
        memories: M write-protected memory tensors ``[B, S, D]``.
        h, c: ``[B, H]`` the decoder's start state (mean of the encoders' final states).
        encoder_features: one ``[B, T_view, ·]`` per encoder.
        write_weights: one ``[B, T_view, Wh, S]`` per memory when asked for (late fusion and
            DCMAN), else None.
    """

    memories: list[torch.Tensor]
    h: torch.Tensor
    c: torch.Tensor
    encoder_features: list[torch.Tensor]
    write_weights: list[torch.Tensor] | None


def concat_views(views: Sequence[torch.Tensor], mode: Literal["time", "features"] = "time") -> torch.Tensor:
    """Both views as one input sequence (the DMNC paper's single-memory baseline reads this).

    ``"time"``: view a, one separator step, then view b: ``[B, Ta + 1 + Tb, max C_i + 1]``
    (narrower views padded with zero channels; the last channel marks the separator).
    ``"features"``: side by side, step by step: ``[B, max T_i, ΣC_i]`` (a shorter view padded
    with zero steps).
    """
    if mode == "features":
        steps = max(v.shape[1] for v in views)
        return torch.cat([F.pad(v, (0, 0, 0, steps - v.shape[1])) for v in views], -1)
    if mode != "time":
        raise ValueError(f"concat_views: mode must be 'time' or 'features', got {mode!r}")
    width = max(v.shape[-1] for v in views)
    sep = views[0].new_zeros(views[0].shape[0], 1, width + 1)
    sep[..., -1] = 1
    parts: list[torch.Tensor] = []
    for i, v in enumerate(views):
        if i:
            parts.append(sep)
        parts.append(F.pad(v, (0, width + 1 - v.shape[-1])))
    return torch.cat(parts, 1)


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

    def encode(self, views: Sequence[torch.Tensor], *, trace: bool = False) -> Encoded:
        """Run the encoder over ``views[0]``; its final memory is what the decoder reads."""
        enc = self.encoder(views[0], trace=trace)
        writes = [enc.trace.write_weights] if enc.trace is not None else None
        return Encoded([enc.state.memory.memory], enc.state.h, enc.state.c, [enc.features], writes)

    def forward(self, batch: TwoViewBatch) -> MultiOutput:
        enc = self.encode(batch.views)
        feats, weights = self.decoder(batch.decoder_inputs, enc.memories, enc.h, enc.c)
        return MultiOutput(feats, enc.memories, enc.encoder_features, weights)


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
            for i, (enc, view) in enumerate(zip(self.encoders, views, strict=True)):
                if t < view.shape[1]:
                    out = enc(view[:, t : t + 1], states[i]._replace(memory=shared), start=t)
                    states[i], shared = out.state, out.state.memory
                    feats[i].append(out.features)
        return shared, states, [torch.cat(f, 1) for f in feats]

    def encode(self, views: Sequence[torch.Tensor], *, trace: bool = False) -> Encoded:
        """Run the encoders (late: each over its view into its memory; early: in turn on one
        memory). ``trace`` records the write weights (late fusion only)."""
        writes: list[torch.Tensor] | None = None
        if self.fusion == "late":
            outs = [enc(view, trace=trace) for enc, view in zip(self.encoders, views, strict=True)]
            memories = [o.state.memory.memory for o in outs]
            states, enc_feats = [o.state for o in outs], [o.features for o in outs]
            if trace:
                writes = [o.trace.write_weights for o in outs if o.trace is not None]
        else:
            shared, states, enc_feats = self._early((views[0], views[1]))
            memories = [shared.memory]
        h = torch.stack([s.h for s in states]).mean(0)
        c = torch.stack([s.c for s in states]).mean(0)
        return Encoded(memories, h, c, enc_feats, writes)

    def forward(self, batch: TwoViewBatch) -> MultiOutput:
        enc = self.encode(batch.views)
        feats, weights = self.decoder(batch.decoder_inputs, enc.memories, enc.h, enc.c)
        return MultiOutput(feats, enc.memories, enc.encoder_features, weights)


def two_view_sum_task(
    batch_size: int,
    length_a: int,
    length_b: int,
    *,
    base: int = 10,
    pairing: Literal["reversed", "aligned"] = "reversed",
    **rng: Unpack[TaskRandomness],
) -> TwoViewBatch:
    """DMNC's synthetic two-view task: view a and view b are digit sequences; output their sums.

    Digits are one-hot over ``base`` classes; the decoder runs ``max(Ta, Tb)`` steps (zero
    inputs) and must output the sum of each pair (:func:`~metamem.data.two_view_sum.sum_targets`:
    by default the DMNC code's pairing, view a from its start with view b from its end) as one
    of ``2·base − 1`` classes. ``data.name: two_view_sum`` trains on batches of it.

    Returns:
        :class:`TwoViewBatch` with ``views`` ``[B, Ta, base]``, ``[B, Tb, base]``, zero
        ``decoder_inputs [B, Td, 1]`` and int64 ``targets [B, Td]``.
    """
    check_positive("two_view_sum_task", batch_size=batch_size, length_a=length_a, length_b=length_b, base=base)
    gen = task_generator("two_view_sum_task", rng)
    a = torch.randint(0, base, (batch_size, length_a), generator=gen, device=gen.device)
    b = torch.randint(0, base, (batch_size, length_b), generator=gen, device=gen.device)
    sums = sum_targets(a, b, pairing)
    eye = torch.eye(base, device=gen.device)
    return TwoViewBatch((eye[a], eye[b]), torch.zeros(batch_size, sums.shape[1], 1, device=gen.device), sums)
