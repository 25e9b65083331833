"""Small shared helpers for set learners (support/query episodes).

Used by Prototypical Networks, Matching Networks, MAML, the linear probe, and by Meta
Networks / Memory Matching Networks. Everything is batched over B episodes; a support mask
(bool ``[B, S]``, False = absent) is honoured everywhere, and a class with no present
support item ends with logit ``-inf`` (see :meth:`metamem.learners.base.Learner.predict`).

Shapes follow the legend of :mod:`metamem.types`; ``S`` here is the number of support items
(``N*K`` in a full episode) and ``Qn`` the number of query items.

Learners may set a class attribute ``batch_independent_train = True`` when, in train mode,
each episode's output does not depend on the other episodes of the batch (for instance no
BatchNorm statistics pooled across episodes); the contract test then also checks that
property in train mode. Without it, only eval mode is checked.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from metamem.types import EpisodeBatch, LearnerOutput

__all__ = [
    "embed_support_query",
    "support_onehot",
    "present_classes",
    "class_means",
    "mask_absent",
    "attention_class_logits",
    "query_cross_entropy",
    "set_output",
    "forward_via_predict",
]


def embed_support_query(
    backbone: Callable[[torch.Tensor], torch.Tensor], support_x: torch.Tensor, query_x: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Embed support and query images with one backbone call.

    Args:
        backbone: maps ``[*, C, H, W]`` to ``[*, D]`` (a module or a learner's ``embed``).
        support_x: ``[B, S, C, H, W]``.
        query_x: ``[B, Qn, C, H, W]``.

    Returns:
        ``(support [B, S, D], query [B, Qn, D])``.
    """
    s = support_x.shape[1]
    z = backbone(torch.cat([support_x, query_x], dim=1))
    return z[:, :s], z[:, s:]


def support_onehot(
    support_y: torch.Tensor, n_way: int, support_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """One-hot support labels with absent items zeroed.

    Args:
        support_y: int64 ``[B, S]`` labels in 0..N-1.
        n_way: N.
        support_mask: bool ``[B, S]`` or ``None`` (all present).

    Returns:
        float ``[B, S, N]``.
    """
    onehot = F.one_hot(support_y, n_way).float()
    if support_mask is not None:
        onehot = onehot * support_mask.unsqueeze(-1)
    return onehot


def present_classes(onehot: torch.Tensor) -> torch.Tensor:
    """bool ``[B, N]``: classes with at least one present support item (from :func:`support_onehot`)."""
    return onehot.sum(1) > 0


def class_means(features: torch.Tensor, onehot: torch.Tensor) -> torch.Tensor:
    """Per-class mean of present support features (zeros for an absent class).

    Args:
        features: ``[B, S, D]``.
        onehot: ``[B, S, N]`` from :func:`support_onehot`.

    Returns:
        ``[B, N, D]`` class means (prototypes).
    """
    counts = onehot.sum(1).clamp_min(1.0)  # [B, N]
    return onehot.transpose(1, 2).to(features.dtype) @ features / counts.unsqueeze(-1).to(features.dtype)


def mask_absent(logits: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
    """Set the logits of absent classes to ``-inf`` (gradient-safe).

    Args:
        logits: ``[B, Qn, N]``.
        present: bool ``[B, N]``.

    Returns:
        ``[B, Qn, N]``.
    """
    return logits.masked_fill(~present.unsqueeze(1), float("-inf"))


def attention_class_logits(scores: torch.Tensor, onehot: torch.Tensor) -> torch.Tensor:
    """Log class probabilities of an attention over the support set.

    ``logit[b, q, k] = log sum_{i: y_i = k} softmax_i(scores[b, q, i])``, the softmax taken
    over present items only (Matching Networks' ``P(y | x, S) = sum_i a(x, x_i) y_i``),
    computed with a shifted exponent and no ``[B, Qn, S, N]`` intermediate.

    Args:
        scores: ``[B, Qn, S]`` attention scores (e.g. cosine similarities).
        onehot: ``[B, S, N]`` from :func:`support_onehot` (zero rows = absent items).

    Returns:
        ``[B, Qn, N]`` log-probabilities; ``-inf`` for absent classes.
    """
    present_item = (onehot.sum(-1) > 0).unsqueeze(1)  # [B, 1, S]
    masked = scores.masked_fill(~present_item, float("-inf"))
    top = masked.amax(-1, keepdim=True)
    top = torch.where(torch.isfinite(top), top, torch.zeros_like(top)).detach()
    e = torch.exp(masked - top)  # absent items -> 0
    tiny = torch.finfo(e.dtype).tiny
    per_class = (e @ onehot.to(e.dtype)).clamp_min(tiny)  # [B, Qn, N]
    logits = per_class.log() - e.sum(-1, keepdim=True).clamp_min(tiny).log()
    return mask_absent(logits, present_classes(onehot))


def query_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over all queries of all episodes.

    Args:
        logits: ``[B, Qn, N]``.
        targets: int64 ``[B, Qn]``.

    Returns:
        Scalar loss (every episode has Qn queries, so this is also the mean over episodes).
    """
    return F.cross_entropy(logits.flatten(0, 1), targets.flatten())


def set_output(logits: torch.Tensor, batch: EpisodeBatch) -> LearnerOutput:
    """Wrap query logits ``[B, N*Q, N]`` of ``batch`` as a :class:`LearnerOutput` with the query loss."""
    return LearnerOutput(logits=logits, targets=batch.query_y, loss=query_cross_entropy(logits, batch.query_y))


def forward_via_predict(learner: Any, batch: EpisodeBatch) -> LearnerOutput:
    """``forward`` of a set learner whose training pass is its ``predict`` on the full episode.

    Args:
        learner: a set learner (anything with the ``predict`` of :class:`~metamem.learners.base.Learner`).
        batch: the episodes.

    Returns:
        Query logits ``[B, N*Q, N]``, targets ``query_y`` and the mean query cross-entropy.
    """
    logits = learner.predict(batch.support_x, batch.support_y, batch.query_x, n_way=batch.n_way)
    return set_output(logits, batch)
