"""What a learner can do, declared by the learner: one small Protocol per capability.

A learner class inherits the capabilities it provides (``class ProtoNet(SetLearner,
FeaturePrediction, AnyWay)``); evaluation asks ``isinstance(learner, SetPrediction)`` and
never probes for attributes; the registry contract test (``tests/learners/test_contract.py``)
checks that every registered learner declares what it implements and implements what it
declares. The Protocols are ``runtime_checkable``, so an object written elsewhere that has
the method (a test double, a third-party learner) is recognised too.

==================  ==========================================================  ==========================
capability          what it provides                                            used by
==================  ==========================================================  ==========================
SetPrediction       ``predict(support_x, support_y, query_x, *, n_way,          set scoring; sequence
                    support_mask=None) -> [B, Qn, N]``                          scoring of set learners
SequencePrediction  ``forward_sequence(seq) -> [B, T, N]``                      sequence scoring
MemoryInspection    ``memory_trace(seq) -> MemoryTrace``                        ``evaluate(keep_trace=)``,
                                                                                plots, ``--inspect``
ProgramInspection   ``program_weights(seq) -> {name: [B, T, G, P]}``            ``--inspect``
DecoderInspection   ``decoder_reads(batch) -> {read_weights, write_weights,}``   ``--inspect`` (two-view
                                                                                learners)
StepwiseSequence    ``step_inputs(x, prev_y) -> [B, T, I]`` and                 ``--inspect`` (saliency)
                    ``run(inputs) -> ([B, T, N], state)``
FeaturePrediction   ``embed(x) -> [*, D]`` and ``predict_features(...)``         per-image feature reuse
RunningSetPrediction ``predict_sequence(x, y, *, n_way) -> [B, T, N]``           sequence scoring fast path
AnyWay              marker: ``predict`` serves any N (no per-way parameters)    ``eval.n_way`` sweeps
LimitedWays         ``max_way``: N label units, episodes of N <= ``max_way``    ``validate``, ``eval``
                    only (a one-hot label input or softmax rows sized by N)     sweep planning
==================  ==========================================================  ==========================

Shapes follow the legend of :mod:`metamem.types` (``S`` support items, ``Qn`` query items).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import torch
from torch import nn

from metamem.learners._common import embed_support_query, forward_via_predict
from metamem.types import EpisodeBatch, LearnerOutput, SequenceBatch

if TYPE_CHECKING:
    from metamem.memory.trace import MemoryTrace

__all__ = [
    "AnyWay",
    "DecoderInspection",
    "EmbeddingLearner",
    "FeaturePrediction",
    "MemoryInspection",
    "ProgramInspection",
    "RunningSetPrediction",
    "SequencePrediction",
    "SetLearner",
    "SetPrediction",
    "LimitedWays",
    "StepwiseSequence",
]


@runtime_checkable
class SetPrediction(Protocol):
    """Scores queries given a labelled support set (every learner of metamem has it)."""

    def predict(self, support_x: torch.Tensor, support_y: torch.Tensor, query_x: torch.Tensor, *,
                n_way: int, support_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Query logits given a labelled support set.

        Args:
            support_x: ``[B, S, C, H, W]`` (S support items, any order).
            support_y: int64 ``[B, S]`` labels in 0..N-1.
            query_x: ``[B, Qn, C, H, W]``.
            n_way: N.
            support_mask: bool ``[B, S]``; False items are absent (used to score a set
                learner on a sequence: the support is what has been labelled so far).
                A class with no present support item gets logit ``-inf``.

        Returns:
            float ``[B, Qn, N]`` logits.

        Raises:
            ValueError: for an ``n_way`` the learner cannot serve (see :class:`AnyWay`) or
                inputs of mismatched shapes.
        """
        ...


@runtime_checkable
class SequencePrediction(Protocol):
    """Reads an episode natively as a sequence whose labels arrive one step late (MANN, LSTM)."""

    def forward_sequence(self, seq: SequenceBatch) -> torch.Tensor:
        """Per-step logits ``[B, T, N]`` of ``seq`` (memory wiped at the start of each episode)."""
        ...


@runtime_checkable
class MemoryInspection(Protocol):
    """Shows what its memory did: read and write weights of every step."""

    def memory_trace(self, seq: SequenceBatch) -> MemoryTrace:
        """The memory trace of ``seq`` (read/write weights ``[B, T, R, S]``), no gradients needed."""
        ...


@runtime_checkable
class ProgramInspection(Protocol):
    """Shows which stored programs (Neural Stored-program Memory) its memory ran at each step."""

    def program_weights(self, seq: SequenceBatch) -> dict[str, torch.Tensor]:
        """Program weights of every step of ``seq``: ``{program memory name: [B, T, G, P]}``
        (G control heads, P programs); ``{}`` without programs."""
        ...


@runtime_checkable
class DecoderInspection(Protocol):
    """Shows what a write-protected decoder read (the two-view learners, DMNC and DCMAN)."""

    def decoder_reads(self, batch: Any) -> dict[str, Any]:
        """``{"read_weights": [B, Td, M, R, S] (sequence task) or [B, Qn, Td, M, R, S]
        (episodes), "write_weights": one [B, T_m, Wh, S] per memory or None,
        "memory_names": [M names]}`` for ``batch``, no gradients."""
        ...


@runtime_checkable
class StepwiseSequence(Protocol):
    """Exposes its recurrence: the per-step inputs and the run over them, so a tool can
    differentiate the outputs with respect to each step's input (the sequential Jacobian)."""

    def step_inputs(self, x: torch.Tensor, prev_y: torch.Tensor) -> torch.Tensor:
        """Step inputs ``[B, T, I]`` of images ``x [B, T, C, H, W]`` and the labels shown
        one step late ``prev_y [B, T]``."""
        ...

    def run(self, inputs: torch.Tensor, state: Any = None, lengths: torch.Tensor | None = None,
            total_steps: int | None = None) -> tuple[torch.Tensor, Any]:
        """Logits ``[B, T, N]`` of step inputs ``[B, T, I]`` from ``state`` (None: a fresh
        episode), and the state after them."""
        ...


@runtime_checkable
class FeaturePrediction(Protocol):
    """``predict`` is ``predict_features(embed(support_x), support_y, embed(query_x))`` with a
    per-image ``embed``, so evaluation may embed each image of a split once."""

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Per-image features ``[*, D]`` of images ``[*, C, H, W]``."""
        ...

    def predict_features(self, support: torch.Tensor, support_y: torch.Tensor, query: torch.Tensor, *,
                         n_way: int, support_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Query logits ``[B, Qn, N]`` from support features ``[B, S, D]`` and query features
        ``[B, Qn, D]`` (arguments otherwise as in :meth:`SetPrediction.predict`)."""
        ...


@runtime_checkable
class RunningSetPrediction(Protocol):
    """A set learner's fast path for the sequence scoring: one pass over a sequence instead
    of ~T/2 masked ``predict`` calls."""

    def predict_sequence(self, x: torch.Tensor, y: torch.Tensor, *, n_way: int) -> torch.Tensor:
        """Logits ``[B, T, N]`` for ``x [B, T, C, H, W]`` with labels ``y [B, T]``; row t uses
        steps ``0..t-1`` as the support (``-inf`` for labels not seen before t)."""
        ...


class AnyWay:
    """Marker: the learner has no parameter sized by the number of ways, so ``predict``
    serves episodes of any N, whatever ``n_way`` it was trained with."""


class LimitedWays:
    """Declared by a learner with a fixed number of label units (:attr:`max_way`): a one-hot
    label input or softmax rows sized by N. It scores episodes of ``N <= max_way`` ways only
    (MANN, LSTM, Meta Networks); ``metamem validate`` and ``metamem eval`` check sweeps
    against it before scoring."""

    @property
    def max_way(self) -> int:
        """The most ways an episode may have."""
        raise NotImplementedError


class SetLearner(nn.Module, SetPrediction):
    """Base of support/query learners whose training pass is their ``predict`` on the full
    episode: subclasses implement :meth:`~SetPrediction.predict` only."""

    def forward(self, batch: EpisodeBatch) -> LearnerOutput:
        """Query logits ``[B, N*Q, N]`` of ``predict`` on the episode, and the mean query
        cross-entropy."""
        return forward_via_predict(self, batch)


class EmbeddingLearner(SetLearner, FeaturePrediction):
    """Base of learners that score from per-image embeddings of ``self.backbone`` (ProtoNet,
    the linear probe): subclasses implement :meth:`~FeaturePrediction.predict_features` only.

    In eval mode an image's feature does not depend on the other images, so evaluation may
    embed each image of a split once (:mod:`metamem.evaluation.features`).
    """

    backbone: nn.Module

    def predict(self, support_x: torch.Tensor, support_y: torch.Tensor, query_x: torch.Tensor, *,
                n_way: int, support_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Query logits ``[B, Qn, N]``: the backbone embeds support and query in one call (under
        autocast when the caller uses AMP), then :meth:`predict_features` scores in float32
        with autocast off. A head's distances, ``||q||^2 - 2 q.c + ||c||^2`` for ProtoNet,
        are differences of large terms: in bfloat16 (8-bit mantissa) they lose the few units
        that separate the classes, and a ProtoNet trained that way stays near chance."""
        support, query = embed_support_query(self.embed, support_x, query_x)
        full = torch.promote_types(support.dtype, torch.float32)  # float64 stays float64
        with torch.autocast(support.device.type, enabled=False):
            return self.predict_features(support.to(full), support_y, query.to(full), n_way=n_way,
                                         support_mask=support_mask)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)
