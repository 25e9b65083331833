"""The evaluation protocol: a fixed, reproducible set of episodes.

A :class:`Protocol` is ``(dataset, split, n_way, k_shot, n_query, episodes, seed,
within_group)``. Episode ``i`` has the key ``episode_keys_from_seed(seed, i)`` and is drawn
with :meth:`EpisodeSampler.sample_keys`, so it depends only on ``(seed, i)`` and the split:
every learner sees the same episodes, whatever the evaluation batch size and whatever the
device (the counter-based hash of :mod:`metamem.rng` is bit-identical on CPU and
GPU).

The :class:`Fingerprint` of a protocol is the SHA-256 of a text header (format version,
``episodes``, ``N*K``, ``N*Q``) followed by, for each episode in order, its support sample
indices, query sample indices and episode key as little-endian int64. Two evaluations with
the same fingerprint scored exactly the same images in the same roles and (through the key)
the same sequence order.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch

from metamem.config import DEFAULT_K_SHOT, DEFAULT_N_WAY
from metamem.config import EVAL_DEFAULTS as _EV
from metamem.data.base import ImageDataset
from metamem.episodes.sampler import EpisodeSampler, EpisodeSpecError
from metamem.rng import episode_keys_from_seed
from metamem.types import EpisodeBatch

__all__ = ["Protocol", "ProtocolError", "Fingerprint", "FINGERPRINT_VERSION"]

FINGERPRINT_VERSION = "metamem-episodes-v1"


class ProtocolError(EpisodeSpecError):
    """A protocol the dataset split cannot provide, or an invalid protocol value."""


@dataclass(frozen=True)
class Protocol:
    """A fixed set of N-way K-shot evaluation episodes.

    Attributes:
        dataset: dataset name (recorded; the split itself is passed to :meth:`batches`).
        split: split name (recorded).
        n_way: N.
        k_shot: K.
        n_query: Q, queries per class (the sequence view has ``T = N*(K+Q)`` steps).
        episodes: number of episodes E.
        seed: protocol seed; episode ``i`` has key ``episode_keys_from_seed(seed, i)``.
        within_group: all classes of an episode come from one group (one alphabet).
        variable_limits: for variable-way, variable-shot episodes (:mod:`metamem.evaluation.variable`)
            their limits as text (``"min_ways=5 max_ways=50 ..."``); ``n_way``, ``k_shot`` and
            ``n_query`` are then unused. ``None``: N-way K-shot episodes.
    """

    dataset: str | None
    split: str | None
    n_way: int = DEFAULT_N_WAY
    k_shot: int = DEFAULT_K_SHOT
    n_query: int = _EV.n_query
    episodes: int = _EV.episodes
    seed: int = _EV.seed
    within_group: bool = _EV.within_group
    variable_limits: str | None = None

    def __post_init__(self) -> None:
        for name in ("n_way", "k_shot", "episodes"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ProtocolError(f"protocol {name} must be an integer >= 1, got {v!r}")
        if isinstance(self.n_query, bool) or not isinstance(self.n_query, int) or self.n_query < 0:
            raise ProtocolError(f"protocol n_query must be an integer >= 0, got {self.n_query!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ProtocolError(f"protocol seed must be an integer, got {self.seed!r}")

    @classmethod
    def for_dataset(cls, dataset: ImageDataset, **kwargs: Any) -> Protocol:
        """A protocol on ``dataset`` (its name and split are recorded)."""
        return cls(dataset=dataset.name, split=dataset.split, **kwargs)

    @property
    def steps(self) -> int:
        """T, the length of the sequence view of an episode."""
        return self.n_way * (self.k_shot + self.n_query)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if d["variable_limits"] is None:  # N-way K-shot: the record written before variable episodes
            del d["variable_limits"]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Protocol:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def keys(self, start: int, stop: int, device: torch.device | str | None = None) -> torch.Tensor:
        """int64 ``[stop - start]`` keys of episodes ``start .. stop-1``."""
        ids = torch.arange(start, stop, dtype=torch.int64)
        return episode_keys_from_seed(self.seed, ids).to(device or "cpu")

    def sampler(
        self, dataset: ImageDataset, device: torch.device | str | None = None
    ) -> EpisodeSampler:
        """An :class:`EpisodeSampler` shaped like the protocol (used only via ``sample_keys``).

        Raises:
            ProtocolError: when the split cannot provide the protocol (too many ways, too
                few images per class for ``k_shot + n_query``, no group large enough); the
                message names the numbers.
        """
        try:
            return EpisodeSampler(
                dataset,
                n_way=self.n_way,
                k_shot=self.k_shot,
                n_query=self.n_query,
                batch_size=1,
                device=device,
                seed=0,
                within_group=self.within_group,
                reuse_buffers=True,  # a batch still held by the caller is never overwritten
            )
        except EpisodeSpecError as e:
            raise ProtocolError(f"evaluation protocol ({self.describe()}): {e}") from None

    def batches(
        self,
        dataset: ImageDataset,
        batch_size: int,
        device: torch.device | str | None = None,
        sampler: EpisodeSampler | None = None,
    ) -> Iterator[EpisodeBatch]:
        """The protocol's episodes in order, ``batch_size`` at a time (the last may be smaller)."""
        if batch_size < 1:
            raise ProtocolError(f"eval batch_size must be >= 1, got {batch_size}")
        sampler = sampler or self.sampler(dataset, device)
        for start in range(0, self.episodes, batch_size):
            stop = min(start + batch_size, self.episodes)
            yield sampler.sample_keys(self.keys(start, stop, sampler.device))

    def fingerprint(self, dataset: ImageDataset, batch_size: int = 64) -> str:
        """The fingerprint of the protocol's episodes on ``dataset``, without a learner."""
        sampler = self.sampler(dataset, "cpu")
        fp = Fingerprint(self)
        for start in range(0, self.episodes, batch_size):
            stop = min(start + batch_size, self.episodes)
            fp.update_batch(sampler.sample_keys(self.keys(start, stop)))
        return fp.hexdigest()

    def describe(self) -> str:
        g = ", within_group" if self.within_group else ""
        if self.variable_limits is not None:
            return (f"variable ways and shots ({self.variable_limits}), {self.episodes} episodes, "
                    f"seed {self.seed}{g}")
        return (
            f"{self.n_way}-way {self.k_shot}-shot, {self.n_query} queries/class, "
            f"{self.episodes} episodes, seed {self.seed}{g}"
        )


class Fingerprint:
    """Incremental SHA-256 over the episodes of a protocol (independent of the batch size)."""

    def __init__(self, protocol: Protocol) -> None:
        p = protocol
        header = (
            f"{FINGERPRINT_VERSION} episodes={p.episodes} support={p.n_way * p.k_shot} "
            f"query={p.n_way * p.n_query}\n"
        ) if p.variable_limits is None else f"{FINGERPRINT_VERSION} episodes={p.episodes} {p.variable_limits}\n"
        self._h = hashlib.sha256(header.encode())
        self.count = 0

    def update(
        self, support_index: torch.Tensor, query_index: torch.Tensor, keys: torch.Tensor
    ) -> None:
        """Add episodes: ``support_index [B, N*K]``, ``query_index [B, N*Q]``, ``keys [B]``."""
        rows = torch.cat([support_index, query_index, keys[:, None]], dim=1)
        self._h.update(rows.to(torch.int64).cpu().numpy().astype("<i8", copy=False).tobytes())
        self.count += int(rows.shape[0])

    def update_batch(self, batch: EpisodeBatch) -> None:
        self.update(batch.support_index, batch.query_index, batch.episode_keys)

    def hexdigest(self) -> str:
        return self._h.hexdigest()

