"""The typed hand-off objects of metamem and the one tensor-shape legend used everywhere.

Notation used for tensor shapes (in every docstring of the package):

====  ==========================================================
B     episodes in a batch
N     ways (classes per episode)
K     shots (labelled support examples per class)
Q     queries per class
T     steps of a sequence episode, ``T = N * (K + Q)``
S     memory slots
D     slot width
R     read heads
C     image channels
H, W  image height and width
M     images in a dataset split
====  ==========================================================

"Meta-train / meta-val / meta-test" name class splits only; "support / query" name the two
sets inside an episode only.
"""

from __future__ import annotations

from dataclasses import Field, dataclass, field, fields, replace
from typing import Any, ClassVar, TypeVar

import torch

__all__ = ["NO_LABEL", "TensorBatch", "StepBatch", "EpisodeBatch", "SequenceBatch", "LearnerOutput", "TwoViewBatch"]

#: The ``prev_y`` value at the first step of a sequence episode ("no label yet").
NO_LABEL = -1

_ORDER_STREAM = 3

_TB = TypeVar("_TB", bound="TensorBatch")


class TensorBatch:
    """Base of the dataclass batches: every tensor field is indexed by episode first
    (``[B, ...]``); the other fields (sizes such as ``n_way``) hold for the whole batch."""

    __dataclass_fields__: ClassVar[dict[str, Field[Any]]]  # each subclass is a dataclass

    def tensors(self) -> dict[str, torch.Tensor]:
        """The tensor fields by name, in field order."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        return {k: v for k, v in values.items() if isinstance(v, torch.Tensor)}

    @property
    def batch_size(self) -> int:
        """B, the leading size of the tensor fields."""
        return int(next(iter(self.tensors().values())).shape[0])

    def to(self: _TB, device: torch.device | str) -> _TB:
        """The same batch with every tensor on ``device``."""
        return replace(self, **{k: v.to(device) for k, v in self.tensors().items()})

    def select(self: _TB, episodes: torch.Tensor | slice) -> _TB:
        """The sub-batch of the given episodes (index tensor or slice along B)."""
        return replace(self, **{k: v[episodes] for k, v in self.tensors().items()})


class StepBatch(TensorBatch):
    """A :class:`TensorBatch` of sequences: its first field is ``[B, T, ...]``."""

    @property
    def steps(self) -> int:
        """T, the steps of every sequence (the second size of the first field)."""
        return int(next(iter(self.tensors().values())).shape[1])


@dataclass
class SequenceBatch(StepBatch):
    """B episodes as MANN-style sequences whose labels arrive one step late.

    Attributes:
        x: float ``[B, T, C, H, W]`` inputs in presentation order.
        y: int64 ``[B, T]`` the label to predict at each step (0..N-1).
        prev_y: int64 ``[B, T]`` the label of step t-1, :data:`NO_LABEL` at t=0.
        presentation: int64 ``[B, T]`` 1 for the first time a step's class is shown, 2 for
            the second, and so on.
        index: int64 ``[B, T]`` dataset sample index of each step.
        classes: int64 ``[B, N]`` dataset class id of each label.
        n_way: N.
    """

    x: torch.Tensor
    y: torch.Tensor
    prev_y: torch.Tensor
    presentation: torch.Tensor
    index: torch.Tensor
    classes: torch.Tensor
    n_way: int


@dataclass
class EpisodeBatch(TensorBatch):
    """B N-way K-shot episodes with Q queries per class, all on one device.

    Support and query items are class-major: support items ``[k*K:(k+1)*K]`` and query items
    ``[k*Q:(k+1)*Q]`` of an episode carry label k. The
    class → label mapping is a fresh random permutation in every episode (``classes[b, k]``
    is the dataset class that label k stands for).

    Attributes:
        support_x: float ``[B, N*K, C, H, W]``.
        support_y: int64 ``[B, N*K]`` labels in 0..N-1.
        query_x: float ``[B, N*Q, C, H, W]``.
        query_y: int64 ``[B, N*Q]``.
        classes: int64 ``[B, N]`` dataset class ids.
        support_index: int64 ``[B, N*K]`` dataset sample indices of the support items.
        query_index: int64 ``[B, N*Q]`` dataset sample indices of the query items.
        episode_keys: int64 ``[B]`` the key every random choice of an episode derives from
            (see :mod:`metamem.rng`); it also fixes the order of :meth:`as_sequence`.
        n_way, k_shot, n_query: N, K, Q.
    """

    support_x: torch.Tensor
    support_y: torch.Tensor
    query_x: torch.Tensor
    query_y: torch.Tensor
    classes: torch.Tensor
    support_index: torch.Tensor
    query_index: torch.Tensor
    episode_keys: torch.Tensor
    n_way: int
    k_shot: int
    n_query: int

    @property
    def device(self) -> torch.device:
        return self.support_x.device

    @property
    def image_shape(self) -> tuple[int, int, int]:
        c, h, w = self.support_x.shape[-3:]
        return int(c), int(h), int(w)

    def as_sequence(self) -> SequenceBatch:
        """The same episodes as sequences of ``T = N*(K+Q)`` steps in a random order.

        The order is a pure function of each episode's key, so calling this twice gives the
        same sequence, on any device.

        Returns:
            A :class:`SequenceBatch` with ``x [B, T, C, H, W]``, ``y``, ``prev_y``,
            ``presentation`` and ``index``, each ``[B, T]``.
        """
        from metamem.rng import random_keys

        x = torch.cat([self.support_x, self.query_x], dim=1)
        y = torch.cat([self.support_y, self.query_y], dim=1)
        idx = torch.cat([self.support_index, self.query_index], dim=1)
        b, t = y.shape
        # the keys of one episode are distinct, so the order has no ties on any device
        order = torch.argsort(random_keys(self.episode_keys, _ORDER_STREAM, (t,)), dim=1)
        x = torch.gather(x, 1, order.view(b, t, 1, 1, 1).expand(-1, -1, *x.shape[2:]))
        y = torch.gather(y, 1, order)
        idx = torch.gather(idx, 1, order)
        prev_y = torch.full_like(y, NO_LABEL)
        prev_y[:, 1:] = y[:, :-1]
        onehot = torch.nn.functional.one_hot(y, self.n_way)  # [B, T, N]
        presentation = (onehot.cumsum(dim=1) * onehot).sum(-1)
        return SequenceBatch(
            x=x, y=y, prev_y=prev_y, presentation=presentation, index=idx,
            classes=self.classes, n_way=self.n_way,
        )


@dataclass
class LearnerOutput:
    """What a learner returns for a batch of episodes.

    Attributes:
        logits: float ``[B, N*Q, N]`` (set learners: one row per query) or ``[B, T, N]``
            (sequence learners: one row per step).
        targets: int64 ``[B, N*Q]`` or ``[B, T]`` the labels the logits are scored against.
        loss: scalar training loss (mean over episodes).
        extras: optional diagnostics (for instance ``"trace"``: a memory trace).
    """

    logits: torch.Tensor
    targets: torch.Tensor
    loss: torch.Tensor
    extras: dict[str, Any] = field(default_factory=dict)

    def accuracy(self) -> torch.Tensor:
        """Per-episode accuracy, float ``[B]`` (no host sync)."""
        return (self.logits.argmax(-1) == self.targets).float().mean(-1)


@dataclass
class TwoViewBatch:
    """B episodes of a two-view sequence task (the two-view learners DMNC and DCMAN read them).

    Attributes:
        views: ``(a [B, Ta, Ca], b [B, Tb, Cb])``, the two input sequences (each view has one
            length for the whole batch; pad shorter episodes with zero steps).
        decoder_inputs: ``[B, Td, Cd]`` (e.g. the previous output, or zeros).
        targets: ``[B, Td]`` int64 classes (or ``[B, Td, K]`` float) for the decoder steps.
    """

    views: tuple[torch.Tensor, torch.Tensor]
    decoder_inputs: torch.Tensor
    targets: torch.Tensor

    def to(self, device: torch.device | str) -> TwoViewBatch:
        return TwoViewBatch((self.views[0].to(device), self.views[1].to(device)), self.decoder_inputs.to(device),
                            self.targets.to(device))
