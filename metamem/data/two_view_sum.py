"""DMNC's synthetic "sum of two sequences" as a data source: ``data.name: two_view_sum``.

Not an image dataset: a *sequence task* (``sequence_task = True``). ``metamem train`` draws
its training batches with :meth:`TwoViewSumTask.sampler` instead of the episode sampler, and
:func:`metamem.evaluate` scores a learner on its fixed sequences with
:meth:`TwoViewSumTask.per_episode_accuracy`. Only the two-view learners (``dmnc``, ``dcman``;
``metamem ls learners``) read its batches (:class:`~metamem.types.TwoViewBatch`).

A batch: view a is ``Ta`` one-hot digits, view b ``Tb`` digits, ``Ta`` and ``Tb`` drawn
independently from ``min_length..max_length`` for each training batch, and the decoder must
emit, for ``t < max(Ta, Tb)``, the sum of a pair of digits, one of ``2·base − 1`` classes.
``pairing: reversed`` (the default, the DMNC code's task) sums ``a[t mod Ta]`` with
``b[Tb − 1 − (t mod Tb)]``: view b is read from its end, so the two digits of a pair sit at
different steps of their views (asynchronous views); ``pairing: aligned`` sums ``a_t + b_t``
(a missing digit counts 0). An "episode" of the evaluation protocol is one sequence pair; its
accuracy is the fraction of its decoder steps that are right.

Splits ``train``/``val``/``test`` are the same distribution; the split name and the protocol
seed choose the sequences (so validation and test never replay the training stream).

Reference: H. Le, T. Tran, S. Venkatesh, "Dual Memory Neural Computer for Asynchronous
Two-view Sequential Learning", KDD 2018 (arXiv:1802.00662), the synthetic sum task.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Literal

import torch

from metamem.data.base import DATASETS, DatasetError, check_split
from metamem.types import TwoViewBatch

__all__ = ["TwoViewSumTask", "TwoViewSampler", "load_two_view_sum", "is_sequence_task", "sum_targets", "SEQUENCE_TASKS"]

#: the registered dataset names that are sequence tasks, not image datasets
SEQUENCE_TASKS = ("two_view_sum",)
PAIRINGS = ("reversed", "aligned")


def is_sequence_task(data: Any) -> bool:
    """Whether ``data`` (a loaded split) is a sequence task rather than an image dataset."""
    return bool(getattr(data, "sequence_task", False))


def sum_targets(a: torch.Tensor, b: torch.Tensor, pairing: Literal["reversed", "aligned"] = "reversed") -> torch.Tensor:
    """Targets of the two-view sum for digit rows ``a [B, Ta]`` and ``b [B, Tb]``: ``[B, max(Ta, Tb)]``.

    ``"reversed"`` (the DMNC code's task): step t sums ``a[t mod Ta]`` and ``b[Tb − 1 − (t mod Tb)]``,
    view b read from its end, so the digits that go together sit at different steps of the two
    views. ``"aligned"``: ``a_t + b_t``, a missing digit counts 0.
    """
    if pairing not in PAIRINGS:
        raise ValueError(f"two_view_sum_task: pairing must be 'reversed' or 'aligned', got {pairing!r}")
    la, lb = a.shape[1], b.shape[1]
    steps = max(la, lb)
    t = torch.arange(steps, device=a.device)
    if pairing == "reversed":
        return a[:, t % la] + b[:, lb - 1 - t % lb]
    sums = torch.zeros(a.shape[0], steps, dtype=torch.long, device=a.device)
    sums[:, :la] += a
    sums[:, :lb] += b
    return sums


def _split_seed(split: str, seed: int) -> int:
    digest = hashlib.sha256(f"two_view_sum/{split}/{int(seed)}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


@dataclass(frozen=True)
class TwoViewSumTask:
    """One split of the two-view sum task (see the module docstring).

    Attributes:
        split: ``train``, ``val`` or ``test``.
        min_length, max_length: the range of each view's length (inclusive).
        base: digits are ``0..base-1``; the sums have ``2·base − 1`` classes.
        pairing: ``reversed`` or ``aligned`` (see the module docstring).
    """

    split: str
    min_length: int = 1
    max_length: int = 10
    base: int = 10
    pairing: Literal["reversed", "aligned"] = "reversed"
    sequence_task = True
    name = "two_view_sum"

    @property
    def classes(self) -> int:
        """Output classes, ``2·base − 1``."""
        return 2 * self.base - 1

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """The shape of one item, ``(1, 1, base)`` (a one-hot digit), recorded in checkpoints."""
        return (1, 1, self.base)

    def learner_kwargs(self) -> dict[str, Any]:
        """The layout a two-view learner needs: ``view_sizes``, ``decoder_size``, ``classes``."""
        return {"view_sizes": [self.base, self.base], "decoder_size": 1, "classes": self.classes}

    def pair_batch(self, a: torch.Tensor, b: torch.Tensor) -> TwoViewBatch:
        """The batch of digit rows ``a [B, Ta]`` and ``b [B, Tb]`` (int64 in ``0..base-1``)."""
        eye = torch.eye(self.base, device=a.device)
        sums = sum_targets(a, b, self.pairing)
        return TwoViewBatch((eye[a], eye[b]), torch.zeros(a.shape[0], sums.shape[1], 1, device=a.device), sums)

    def sample(self, batch_size: int, generator: torch.Generator, device: torch.device | str = "cpu") -> TwoViewBatch:
        """A training batch: view lengths drawn from ``min_length..max_length``, then the digits."""
        la, lb = (int(v) for v in torch.randint(self.min_length, self.max_length + 1, (2,), generator=generator))
        a = torch.randint(0, self.base, (batch_size, la), generator=generator)
        b = torch.randint(0, self.base, (batch_size, lb), generator=generator)
        return self.pair_batch(a, b).to(device)

    def sampler(self, *, batch_size: int, seed: int, device: torch.device | str = "cpu") -> TwoViewSampler:
        """A training sampler (what ``metamem train`` uses in place of the episode sampler)."""
        return TwoViewSampler(self, batch_size, seed, device)

    def protocol_sequences(self, episodes: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The fixed evaluation sequences: lengths ``[E, 2]``, digits a and b ``[E, max_length]``
        (only the first ``Ta``/``Tb`` of each row are used). They depend only on the split,
        ``seed`` and ``E``."""
        gen = torch.Generator().manual_seed(_split_seed(self.split, seed))
        lengths = torch.randint(self.min_length, self.max_length + 1, (episodes, 2), generator=gen)
        digits = torch.randint(0, self.base, (2, episodes, self.max_length), generator=gen)
        return lengths, digits[0], digits[1]

    def fingerprint(self, episodes: int, seed: int) -> str:
        """SHA-256 (hex) of the evaluation sequences and the pairing."""
        lengths, a, b = self.protocol_sequences(episodes, seed)
        h = hashlib.sha256(f"two_view_sum-v1 base={self.base} E={episodes} pairing={self.pairing}".encode())
        for t in (lengths, a, b):
            h.update(t.to(torch.int64).contiguous().numpy().tobytes())
        return h.hexdigest()

    def per_episode_accuracy(self, learner: Any, *, episodes: int, seed: int, batch_size: int = 64,
                             device: torch.device | str = "cpu") -> torch.Tensor:
        """float64 ``[E]``: the fraction of each fixed sequence pair's decoder steps ``learner``
        gets right (in eval mode, no gradients). Pairs of the same lengths run together,
        ``batch_size`` at a time, so the scores do not depend on ``batch_size``."""
        lengths, a, b = self.protocol_sequences(episodes, seed)
        per_episode = torch.zeros(episodes, dtype=torch.float64)
        was_training = learner.training
        learner.eval()
        try:
            with torch.no_grad():
                for la, lb in sorted({(int(x), int(y)) for x, y in lengths.tolist()}):
                    idx = torch.nonzero((lengths[:, 0] == la) & (lengths[:, 1] == lb)).flatten()
                    for chunk in idx.split(batch_size):
                        out = learner(self.pair_batch(a[chunk, :la], b[chunk, :lb]).to(device))
                        per_episode[chunk] = out.accuracy().double().cpu()
        finally:
            learner.train(was_training)
        return per_episode


class TwoViewSampler:
    """Training batches of a :class:`TwoViewSumTask` from an owned generator (exact resume:
    :meth:`state_dict` holds the generator state)."""

    def __init__(self, task: TwoViewSumTask, batch_size: int, seed: int, device: torch.device | str) -> None:
        self.task, self.batch_size, self.device = task, batch_size, device
        self.generator = torch.Generator().manual_seed(_split_seed(task.split, seed))

    def sample(self) -> TwoViewBatch:
        return self.task.sample(self.batch_size, self.generator, self.device)

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])


@DATASETS.register("two_view_sum")
def load_two_view_sum(split: str | None = "train", *, min_length: int = 1, max_length: int = 10,
                      base: int = 10, pairing: Literal["reversed", "aligned"] = "reversed") -> TwoViewSumTask:
    """DMNC's two-view sum task (a sequence task for ``dmnc``/``dcman``; Le et al. KDD 2018)."""
    split = check_split("two_view_sum", split)
    for key, v in (("min_length", min_length), ("max_length", max_length), ("base", base)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise DatasetError(f"two_view_sum: data.options.{key} must be an integer >= 1, got {v!r}")
    if min_length > max_length:
        raise DatasetError(f"two_view_sum: data.options.min_length={min_length} exceeds max_length={max_length}; "
                           "swap them")
    if pairing not in PAIRINGS:
        raise DatasetError(f"two_view_sum: data.options.pairing must be 'reversed' or 'aligned', got {pairing!r}")
    return TwoViewSumTask(split, min_length, max_length, base, pairing)
