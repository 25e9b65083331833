"""The learner interface and the learner/backbone registries.

A learner is an ``nn.Module`` that takes an :class:`~metamem.types.EpisodeBatch` and returns
a :class:`~metamem.types.LearnerOutput` (logits, targets, loss). Everything specific to a
method (inner loops, fast weights, memory resets, the sequence view) happens inside the
learner; the training loop and the evaluator only see this interface.

Builders are registered with ``@LEARNERS.register(name)`` and take flat keyword arguments.
The framework always passes ``n_way: int`` and ``image_shape: tuple[int, int, int]``
(C, H, W) of the data; the remaining keywords come from the ``learner:`` section of an
experiment config (``metamem validate`` checks them against the builder's signature).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any, Protocol, runtime_checkable

from torch import nn

from metamem.learners.capabilities import SetPrediction
from metamem.registry import Registry, renames_of
from metamem.types import EpisodeBatch, LearnerOutput

__all__ = ["Learner", "LEARNERS", "BACKBONES", "build_learner", "resolved_options", "execution_options",
           "same_results"]

#: Learner builders: ``builder(*, n_way, image_shape, **kwargs) -> nn.Module``.
LEARNERS: Registry[Callable[..., nn.Module]] = Registry("learner")
#: Embedding backbones: ``builder(*, image_shape, **kwargs) -> nn.Module`` mapping
#: ``[B*, C, H, W]`` to ``[B*, out_dim]``; the module exposes ``out_dim``.
BACKBONES: Registry[Callable[..., nn.Module]] = Registry("backbone")


@runtime_checkable
class Learner(SetPrediction, Protocol):
    """What every learner provides: a training/eval ``forward`` and, as every learner of
    metamem can score a support/query episode, :class:`SetPrediction`. Further capabilities
    are declared by inheriting them (:mod:`metamem.learners.capabilities`); a *sequence
    learner* is one that declares
    :class:`~metamem.learners.capabilities.SequencePrediction` (it reads the episode as a
    sequence with labels one step late, like MANN; metamem's own share the base
    :class:`~metamem.learners.lstm.SequenceLearner`).
    """

    def forward(self, batch: EpisodeBatch) -> LearnerOutput:
        """Training/eval forward pass.

        Set learners return query logits ``[B, N*Q, N]``; sequence learners return
        per-step logits ``[B, T, N]`` of ``batch.as_sequence()``.
        """
        ...


def build_learner(name: str, *, n_way: int, image_shape: tuple[int, int, int], **kwargs: Any) -> nn.Module:
    """Build a registered learner (``metamem ls learners``)."""
    return LEARNERS.get(name)(n_way=n_way, image_shape=tuple(image_shape), **kwargs)


#: the keywords the framework passes itself (never part of a config's learner section)
FRAMEWORK_KEYWORDS = frozenset({"n_way", "image_shape"})
#: the default types a config records (YAML scalars; a str or int subclass such as an enum is not one)
_RECORDED_TYPES = (type(None), bool, int, float, str)


def resolved_options(name: str, options: Mapping[str, Any]) -> dict[str, Any]:
    """A learner section's options with every scalar option it leaves out set to the
    builder's default: what the learner is built with, written down.

    Training records this in a new run's ``config.yaml`` and checkpoints, so a later change
    of a default never changes what an existing run means. The given options come first,
    in their order (an old spelling of a renamed key counts as given); then the defaults
    in the builder's order. Defaults that are not YAML scalars (``None``, bool, int, float,
    str) are left out, and so is everything for a builder whose signature cannot be read.

    Raises:
        UnknownNameError: ``name`` is not a registered learner.
    """
    builder = LEARNERS.get(name)
    try:
        params = inspect.signature(builder).parameters.values()
    except (TypeError, ValueError):
        return dict(options)
    given = set(options) | {new for old, new in renames_of(builder).items() if old in options}
    keyword = (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    defaults = {p.name: p.default for p in params
                if p.kind in keyword and p.name not in given and p.name not in FRAMEWORK_KEYWORDS
                and p.default is not inspect.Parameter.empty and type(p.default) in _RECORDED_TYPES}
    return {**options, **defaults}


_EXECUTION = "__metamem_execution_options__"


def same_results(*names: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator for a learner builder: its options ``names`` change how the learner
    computes, not what (chunk sizes, batching strategy): any value gives the same results up
    to float rounding. A resumed run may change them (``metamem train --resume RUN
    learner.train_chunk_images=80``); every other learner option must stay as trained."""

    def deco(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        setattr(builder, _EXECUTION, tuple(names))
        return builder

    return deco


def execution_options(name: str) -> tuple[str, ...]:
    """The options of learner ``name`` declared with :func:`same_results` (none for an
    unknown name)."""
    if name not in LEARNERS:  # an unknown learner is reported where it is built
        return ()
    return tuple(getattr(LEARNERS.get(name), _EXECUTION, ()))
