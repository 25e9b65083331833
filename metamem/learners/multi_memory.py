"""Two-view learners: DMNC (one memory per view) and DCMAN (one memory, encoder and decoder controllers).

Both wrap a core of :mod:`metamem.memory.multi`: encoder controllers write the input views
into memory, then a decoder controller reads the memories while they are **write-protected**
(it has no write path) and emits the outputs. They read two kinds of batch:

* a :class:`~metamem.memory.multi.TwoViewBatch` of a sequence task (``data.name:
  two_view_sum``): logits ``[B, Td, classes]`` for the decoder steps;
* few-shot episodes (:class:`~metamem.types.EpisodeBatch`, the set format), read as **two
  views of the support set**: view a is the top half of every support image (rows
  ``0..H/2-1``) with its label, in support order; view b is the bottom half with the label,
  in **reverse** support order, so the two views of an item sit at different steps (the
  views are asynchronous, as in the DMNC paper). Each query is decoded on its own from the
  encoders' final state: ``decode_steps`` steps that each take the whole query image and
  read the memories, then a linear head gives its ``[N]`` logits. Queries do not see each
  other, so predictions do not depend on query order.

DCMAN given two views reads them as one sequence (:func:`~metamem.memory.multi.concat_views`;
``view_concat: time``, the default: view a, a separator step, then view b, as the DMNC code's
single-view baseline; ``features``: side by side, step by step): one memory holding both, the
single-memory baseline of the DMNC paper.

Shapes: B episodes, N ways (L = ``max_way`` label units), S support items, Qn queries,
C/H/W image, Td decoder steps, M memories, R heads, S_m slots.

References: H. Le, T. Tran, S. Venkatesh, "Dual Control Memory Augmented Neural Networks for
Treatment Recommendations", PAKDD 2018 (arXiv:1802.03689); "Dual Memory Neural Computer for
Asynchronous Two-view Sequential Learning", KDD 2018 (arXiv:1802.00662).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from metamem.learners._common import mask_absent, present_classes, query_cross_entropy
from metamem.learners.base import LEARNERS
from metamem.learners.capabilities import DecoderInspection, LimitedWays, SetLearner
from metamem.learners.lstm import label_units
from metamem.memory.multi import DualControllerCore, DualMemoryCore, Encoded, TwoViewBatch, concat_views
from metamem.types import EpisodeBatch, LearnerOutput

__all__ = ["TwoViewLearner", "build_dmnc", "build_dcman", "episode_views"]


def episode_views(support_x: torch.Tensor, support_onehot: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The two views of a support set: ``a [B, S, C·⌊H/2⌋·W + L]`` (top halves, support
    order) and ``b [B, S, C·⌈H/2⌉·W + L]`` (bottom halves, reverse order), each with the label."""
    half = support_x.shape[-2] // 2
    top = support_x[..., :half, :].flatten(2)
    bottom = support_x[..., half:, :].flatten(2)
    return torch.cat((top, support_onehot), -1), torch.cat((bottom, support_onehot), -1).flip(1)


class TwoViewLearner(SetLearner, DecoderInspection, LimitedWays):
    """A DMNC or DCMAN core with a linear head (see the module docstring).

    Args:
        core: a :class:`DualMemoryCore` or :class:`DualControllerCore`.
        classes: outputs of the head (L label units on episodes, the task's classes otherwise).
        concat: feed both views to a single encoder as one sequence (DCMAN given two views):
            ``"time"`` or ``"features"`` (see :func:`concat_views`), or None (one encoder per view).
        decode_steps: decoder steps per query (few-shot episodes).
    """

    batch_independent_train = True

    def __init__(self, core: DualMemoryCore | DualControllerCore, classes: int, *,
                 concat: Literal["time", "features"] | None, decode_steps: int) -> None:
        super().__init__()
        self.core, self.concat, self.decode_steps, self.classes = core, concat, decode_steps, classes
        self.head = nn.Linear(core.out_features, classes)

    @property
    def max_way(self) -> int:
        return self.classes

    def _encode(self, views: Sequence[torch.Tensor], trace: bool = False) -> Encoded:
        return self.core.encode([concat_views(views, self.concat)] if self.concat else views, trace=trace)

    def decode(self, enc: Encoded, decoder_inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits ``[B, Td, classes]`` and read weights ``[B, Td, M, R, S_m]`` of decoding
        ``decoder_inputs [B, Td, Cd]`` against the encoded (write-protected) memories."""
        feats, weights = self.core.decoder(decoder_inputs, enc.memories, enc.h, enc.c)
        return self.head(feats), weights

    def forward(self, batch: EpisodeBatch | TwoViewBatch) -> LearnerOutput:  # type: ignore[override]
        """Logits of a sequence-task batch (``[B, Td, classes]``) or of an episode's queries
        (``[B, N·Q, N]``, the set format), with the mean cross-entropy."""
        if isinstance(batch, TwoViewBatch):
            logits, _ = self.decode(self._encode(batch.views), batch.decoder_inputs)
            loss = query_cross_entropy(logits, batch.targets)
            return LearnerOutput(logits=logits, targets=batch.targets, loss=loss)
        return super().forward(batch)

    def _episode_queries(self, support_x: torch.Tensor, support_y: torch.Tensor, query_x: torch.Tensor, n_way: int,
                         support_mask: torch.Tensor | None, trace: bool = False
                         ) -> tuple[Encoded, torch.Tensor, torch.Tensor]:
        if n_way > self.classes:
            raise ValueError(f"{type(self).__name__}: {n_way}-way episodes need max_way >= {n_way}, "
                             f"this learner has {self.classes} label units")
        if support_x.shape[-3:] != query_x.shape[-3:]:
            raise ValueError(f"support images {tuple(support_x.shape[-3:])} and query images "
                             f"{tuple(query_x.shape[-3:])} differ in shape")
        onehot = F.one_hot(support_y, self.classes).to(support_x.dtype)
        if support_mask is not None:  # absent items: no image, no label
            keep = support_mask.to(support_x.dtype)
            onehot = onehot * keep[..., None]
            support_x = support_x * keep[..., None, None, None]
        enc = self._encode(episode_views(support_x, onehot), trace=trace)
        B, Qn = query_x.shape[:2]
        # every query decoded on its own: B·Qn sequences of decode_steps steps
        rep = lambda t: t.repeat_interleave(Qn, 0)  # noqa: E731
        enc_q = Encoded([rep(m) for m in enc.memories], rep(enc.h), rep(enc.c), enc.encoder_features, None)
        q = query_x.flatten(2).flatten(0, 1)[:, None].expand(-1, self.decode_steps, -1)
        logits, weights = self.decode(enc_q, q)
        logits = logits[:, -1].view(B, Qn, -1)[..., :n_way]
        return enc, mask_absent(logits, present_classes(onehot[..., :n_way])), weights.view(B, Qn, *weights.shape[1:])

    def predict(self, support_x: torch.Tensor, support_y: torch.Tensor, query_x: torch.Tensor, *,
                n_way: int, support_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Query logits ``[B, Qn, N]`` (see :class:`~metamem.learners.capabilities.SetPrediction`)."""
        return self._episode_queries(support_x, support_y, query_x, n_way, support_mask)[1]

    def decoder_reads(self, batch: EpisodeBatch | TwoViewBatch) -> dict[str, Any]:
        """What the decoder read, for plots (no gradients).

        Returns:
            ``read_weights``: ``[B, Td, M, R, S_m]`` (sequence task) or ``[B, Qn, Td, M, R, S_m]``
            (episodes); ``write_weights``: the encoders' write weights, one ``[B, T_m, Wh, S_m]``
            per memory (None for early fusion); ``memory_names``: one label per memory.
        """
        with torch.no_grad():
            if isinstance(batch, TwoViewBatch):
                enc = self._encode(batch.views, trace=True)
                _, weights = self.decode(enc, batch.decoder_inputs)
            else:
                enc, _, weights = self._episode_queries(batch.support_x, batch.support_y, batch.query_x,
                                                        batch.n_way, None, trace=True)
        if isinstance(self.core, DualMemoryCore) and self.core.fusion == "late":
            names = ["memory a (view a)", "memory b (view b)"]
        elif isinstance(self.core, DualMemoryCore):
            names = ["shared memory (views a, b)"]
        else:
            names = [f"memory (views a, b by {self.concat})" if self.concat else "memory (view a)"]
        return {"read_weights": weights, "write_weights": enc.write_weights, "memory_names": names}


def _layout(n_way: int, image_shape: tuple[int, int, int], max_way: int | None, owner: str,
            view_sizes: list[int] | None, decoder_size: int | None, classes: int | None
            ) -> tuple[list[int], int, int]:
    """View sizes, decoder input size and classes: given (a sequence task's layout), or those of
    the two-view episodes of ``image_shape`` with ``max_way`` label units."""
    given = (view_sizes, decoder_size, classes)
    if any(v is not None for v in given):
        if any(v is None for v in given) or len(view_sizes or []) != 2:
            raise ValueError(f"{owner}: give view_sizes (two sizes), decoder_size and classes together, or none "
                             f"of them (episodes); got {view_sizes!r}, {decoder_size!r}, {classes!r}")
        return [int(v) for v in view_sizes or []], int(decoder_size or 0), int(classes or 0)
    units = label_units(owner, n_way, max_way)
    C, H, W = image_shape
    if H < 2:
        raise ValueError(f"{owner}: two views of each image need at least 2 rows, got image_shape {tuple(image_shape)}")
    return [C * (H // 2) * W + units, C * (H - H // 2) * W + units], C * H * W, units


def _check_steps(owner: str, decode_steps: int) -> None:
    if isinstance(decode_steps, bool) or not isinstance(decode_steps, int) or decode_steps < 1:
        raise ValueError(f"{owner}: decode_steps must be an integer >= 1, got {decode_steps!r}")


@LEARNERS.register("dmnc")
def build_dmnc(
    *, n_way: int, image_shape: tuple[int, int, int], hidden_size: int = 64, slots: int = 32, width: int = 16,
    read_heads: int = 1, core: str = "dnc", core_options: dict[str, Any] | None = None,
    fusion: Literal["late", "early"] = "late", decode_steps: int = 2, max_way: int | None = None,
    view_sizes: list[int] | None = None, decoder_size: int | None = None, classes: int | None = None,
) -> TwoViewLearner:
    """DMNC: one encoder and memory per view, a decoder reading both write-protected (Le et al. KDD 2018).

    ``fusion: late`` keeps two memories; ``early`` gives both encoders one shared memory.
    ``core`` is the encoders' memory core (``metamem ls cores``; the paper: ``dnc``).
    ``view_sizes``/``decoder_size``/``classes`` are set by a sequence task (``two_view_sum``);
    on image episodes they follow from the images and ``max_way``.
    """
    _check_steps("dmnc", decode_steps)
    views, dec, out = _layout(n_way, image_shape, max_way, "dmnc", view_sizes, decoder_size, classes)
    mc = DualMemoryCore((views[0], views[1]), dec, hidden_size=hidden_size, slots=slots, width=width,
                        read_heads=read_heads, core=core, core_options=core_options, fusion=fusion)
    return TwoViewLearner(mc, out, concat=None, decode_steps=decode_steps)


@LEARNERS.register("dcman")
def build_dcman(
    *, n_way: int, image_shape: tuple[int, int, int], hidden_size: int = 64, slots: int = 32, width: int = 16,
    read_heads: int = 1, core: str = "dnc", core_options: dict[str, Any] | None = None,
    decode_steps: int = 2, max_way: int | None = None, view_concat: Literal["time", "features"] = "time",
    view_sizes: list[int] | None = None, decoder_size: int | None = None, classes: int | None = None,
) -> TwoViewLearner:
    """DCMAN: an encoder writes one memory, a decoder reads it write-protected (Le et al. PAKDD 2018).

    Given two views it reads them as one sequence, one memory for both (the DMNC paper's
    single-memory baseline): ``view_concat: time`` (view a, a separator step, view b) or
    ``features`` (side by side). Other keys as ``dmnc``.
    """
    _check_steps("dcman", decode_steps)
    if view_concat not in ("time", "features"):
        raise ValueError(f"dcman: view_concat must be 'time' or 'features', got {view_concat!r}")
    views, dec, out = _layout(n_way, image_shape, max_way, "dcman", view_sizes, decoder_size, classes)
    width_in = max(views) + 1 if view_concat == "time" else sum(views)
    cc = DualControllerCore(width_in, dec, hidden_size=hidden_size, slots=slots, width=width,
                            read_heads=read_heads, core=core, core_options=core_options)
    return TwoViewLearner(cc, out, concat=view_concat, decode_steps=decode_steps)
