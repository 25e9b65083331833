"""Variable-way, variable-shot episodes: the sampler of Meta-Dataset (Triantafillou et al., 2020).

Triantafillou et al., "Meta-Dataset: A Dataset of Datasets for Learning to Learn from Few
Examples" (ICLR 2020), draw every episode's shape at random. For an episode on a split whose
class c has ``|D_c|`` images:

1. ways: ``N ~ U{min_ways, ..., min(max_ways, classes)}``, then N distinct classes at random;
2. queries per class: ``q = min(max_query, floor(min_c |D_c| / 2))``, the same for every class;
3. support size: ``beta ~ U(0, 1]``,
   ``|S| = min(max_support, sum_c ceil(beta * min(max_support_per_class, |D_c| - q)))``;
4. shots (class-imbalanced): ``alpha_c ~ U[log 0.5, log 2]``,
   ``R_c = exp(alpha_c) |D_c| / sum_c' exp(alpha_c') |D_c'|``,
   ``K_c = min(floor(R_c (|S| - N)) + 1, |D_c| - q)``: at least one shot per class;
5. a class's ``K_c`` support and ``q`` query images: the first ``K_c + q`` of a random order
   of its images.

Every random value is a counter-based hash of the episode key (:mod:`metamem.rng`), and the
arithmetic is integer: ``beta = u / 2**31`` for a 31-bit hash ``u`` (so step 3 is
``ceil(u * m / 2**31)``), and ``exp(alpha_c)`` is one of 4,096 evenly spaced levels of
``exp(U[log 0.5, log 2])`` stored as integers (``round(2**20 * exp(alpha))``), so step 4 is an
integer floor division. An episode is therefore a pure function of its key, identical on CPU
and GPU and whatever else is in the batch.

A batch of B episodes is built like the fixed ones: one index draw for the whole batch (a
few tensor ops, no loop over episodes or classes) and one gather of all its images. Episodes
of different sizes are padded to the batch's largest support and query set, with masks:

* ``support_x [B, S, C, H, W]``, ``support_y [B, S]``, ``support_mask [B, S]`` (class-major:
  class 0's ``K_0`` items, then class 1's...), S the batch's largest ``sum_c K_c``;
* ``query_x [B, Q, C, H, W]``, ``query_y [B, Q]``, ``query_mask [B, Q]``, Q the largest
  ``N * q``;
* labels are ``0..N_b - 1`` in episode b; ``n_way`` is the batch's largest N, so a set
  learner called with ``n_way`` and ``support_mask`` gives logit ``-inf`` to the labels an
  episode does not have.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch

from metamem.data.base import ImageDataset
from metamem.data.staged import StagedImages
from metamem.device import resolve_device
from metamem.rng import KEY_BITS, random_keys
from metamem.types import TensorBatch

__all__ = ["VariableEpisodeBatch", "VariableEpisodeSampler", "VariableSpec", "SHOT_WEIGHTS"]

# hash streams of the variable-episode draws (distinct from the fixed sampler's)
_S_WAYS, _S_CLASSES, _S_BETA, _S_ALPHA, _S_SAMPLES = 21, 22, 23, 24, 25
_M31 = (1 << 31) - 1
_LEVELS_BITS = 12


def _shot_weights() -> torch.Tensor:
    """int64 ``[4096]``: ``round(2**20 * exp(alpha))`` at the midpoints of 4,096 equal bins of
    ``alpha in [log 0.5, log 2]``."""
    n = 1 << _LEVELS_BITS
    lo, hi = math.log(0.5), math.log(2.0)
    return torch.tensor([round((1 << 20) * math.exp(lo + (i + 0.5) / n * (hi - lo))) for i in range(n)],
                        dtype=torch.int64)


#: the integer levels of ``exp(alpha_c)`` (see the module docstring)
SHOT_WEIGHTS = _shot_weights()


@dataclass(frozen=True)
class VariableSpec:
    """The episode distribution (Meta-Dataset's defaults)."""

    min_ways: int = 5
    max_ways: int = 50
    max_support: int = 500
    max_support_per_class: int = 100
    max_query: int = 10

    def __post_init__(self) -> None:
        for name in ("min_ways", "max_ways", "max_support", "max_support_per_class", "max_query"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"variable episodes: {name} must be an integer >= 1, got {v!r}")
        if self.min_ways > self.max_ways:
            raise ValueError(f"variable episodes: min_ways={self.min_ways} is above max_ways={self.max_ways}")


@dataclass
class VariableEpisodeBatch(TensorBatch):
    """A batch of B variable-way, variable-shot episodes, padded (see the module docstring);
    ``batch_size``, ``to`` and ``select`` from :class:`~metamem.types.TensorBatch`.

    Attributes:
        support_x: float ``[B, S, C, H, W]``; padding items are image 0 of the split, masked.
        support_y: int64 ``[B, S]`` labels (0 at padding).
        support_mask: bool ``[B, S]``.
        query_x: float ``[B, Q, C, H, W]``.
        query_y: int64 ``[B, Q]``.
        query_mask: bool ``[B, Q]``.
        ways: int64 ``[B]`` N of each episode.
        shots: int64 ``[B, N]`` support items of each label (0 past the episode's ways).
        queries: int64 ``[B]`` queries per class of each episode.
        classes: int64 ``[B, N]`` dataset class of each label (-1 past the episode's ways).
        support_index, query_index: int64 dataset indices (-1 at padding).
        episode_keys: int64 ``[B]``.
        n_way: N, the batch's largest number of ways.
    """

    support_x: torch.Tensor
    support_y: torch.Tensor
    support_mask: torch.Tensor
    query_x: torch.Tensor
    query_y: torch.Tensor
    query_mask: torch.Tensor
    ways: torch.Tensor
    shots: torch.Tensor
    queries: torch.Tensor
    classes: torch.Tensor
    support_index: torch.Tensor
    query_index: torch.Tensor
    episode_keys: torch.Tensor
    n_way: int


class VariableEpisodeSampler:
    """Draws batches of Meta-Dataset variable-way, variable-shot episodes (see the module
    docstring) with one index draw and one gather per batch.

    Args:
        dataset: the split (every class needs at least 2 images: one query, one shot).
        spec: the episode distribution (default :class:`VariableSpec`, Meta-Dataset's values);
            or give its fields as keywords.
        batch_size: B, episodes per :meth:`sample`.
        device: where batches are produced (``"auto"``, ``"cpu"``, ``"cuda"``...).
        seed: seed of the sampler's own CPU ``torch.Generator`` (episode keys).
        dtype: floating dtype of the images (values in ``[0, 1]``).
        store_budget: as :class:`~metamem.episodes.EpisodeSampler`'s: a split larger than this
            is staged from a host memmap per batch.

    Example::

        sampler = VariableEpisodeSampler(ds, batch_size=8, seed=0, max_ways=20)
        b = sampler.sample()        # b.support_x: [8, S, 3, 84, 84], b.support_mask: [8, S]
    """

    def __init__(self, dataset: ImageDataset, spec: VariableSpec | None = None, *, batch_size: int = 1,
                 device: torch.device | str | None = None, seed: int = 0, dtype: torch.dtype = torch.float32,
                 store_budget: int | str | None = None, **spec_fields: Any) -> None:
        if spec is not None and spec_fields:
            raise ValueError("give either spec or its fields as keywords, not both")
        self.spec = spec if spec is not None else VariableSpec(**spec_fields)
        self.dataset = dataset
        self.batch_size = operator.index(batch_size)
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.device = resolve_device(device) if device is not None else torch.device("cpu")
        self.dtype = dtype
        counts = dataset.class_counts()
        n_cls = dataset.num_classes
        where = f"dataset {dataset.name!r} split {dataset.split!r}"
        if n_cls < self.spec.min_ways:
            raise ValueError(f"{where} has {n_cls} classes, fewer than min_ways={self.spec.min_ways}")
        small = (counts < 2).nonzero().flatten()
        if small.numel():
            c = int(small[0])
            raise ValueError(f"class {dataset.class_names[c]!r} of {where} has {int(counts[c])} image(s); "
                             "variable episodes need 2 per class (one shot, one query)")
        self.max_ways = min(self.spec.max_ways, n_cls)
        order = torch.argsort(dataset.labels, stable=True)
        self._counts = counts.to(self.device)
        self._offsets = (torch.cumsum(counts, 0) - counts).to(self.device)
        self._order = order.to(self.device)
        self._max_count = int(counts.max())
        self._slots = min(self._max_count, self.spec.max_support + self.spec.max_query)
        self._weights = SHOT_WEIGHTS.to(self.device)
        self.staged = StagedImages.for_split(dataset, self.device, store_budget)
        self.images = dataset.images.to(self.device) if self.staged is None else self.staged.store
        self.generator = torch.Generator()
        self.generator.manual_seed(int(seed))

    # ------------------------------------------------------------------ the draw
    def draw(self, keys: torch.Tensor) -> dict[str, torch.Tensor]:
        """The shape and dataset indices of the episodes ``keys`` (int64 ``[B]``), batched.

        Returns:
            ``ways [B]``, ``queries [B]``, ``shots [B, N]``, ``classes [B, N]`` (-1 past the
            ways), ``support_index [B, S]``, ``query_index [B, Q]`` (-1 at padding),
            ``support_y [B, S]``, ``query_y [B, Q]`` with N, S, Q the batch's largest.
        """
        sp, dev = self.spec, keys.device
        b, n_cls, n = keys.shape[0], self._counts.shape[0], self.max_ways
        span = n - sp.min_ways + 1
        ways = sp.min_ways + random_keys(keys, _S_WAYS, (1,))[:, 0] % span  # [B]
        ranked = random_keys(keys, _S_CLASSES, (n_cls,)).topk(n, dim=1).indices  # [B, n] classes
        live = torch.arange(n, device=dev) < ways[:, None]  # [B, n]
        cnt = self._counts[ranked]  # [B, n]
        big = torch.iinfo(torch.int64).max
        queries = (cnt.masked_fill(~live, big).min(1).values // 2).clamp(max=sp.max_query)  # [B]
        avail = cnt - queries[:, None]  # images left for the support
        cap = avail.clamp(max=sp.max_support_per_class)
        beta = random_keys(keys, _S_BETA, (1,))[:, 0] + 1  # 1..2**31: beta = u / 2**31 in (0, 1]
        per_class = (beta[:, None] * cap + _M31) >> 31  # ceil(beta * cap)
        size = (per_class * live).sum(1).clamp(max=sp.max_support)
        spare = (size - ways).clamp(min=0)  # |S| - N
        w = self._weights[random_keys(keys, _S_ALPHA, (n,)) >> (31 - _LEVELS_BITS)] * cnt * live
        shots = torch.minimum(w * spare[:, None] // w.sum(1, keepdim=True) + 1, avail) * live  # [B, n]
        # a random order of each class's images: the first K_c are support, the next q query
        skeys = random_keys(keys, _S_SAMPLES, (n, self._max_count))
        slot = torch.arange(self._max_count, device=dev)
        skeys = skeys.masked_fill(slot >= cnt[..., None], -1)
        pos = skeys.topk(self._slots, dim=2).indices  # [B, n, L]
        idx = self._order[(self._offsets[ranked][..., None] + pos).clamp(max=self._order.shape[0] - 1)]
        # support: class-major, padded to the batch's largest support
        ends = shots.cumsum(1)  # [B, n]
        total = ends[:, -1]
        s_max, q_max = int(total.max()), int((ways * queries).max())  # one host sync per batch
        s = torch.arange(s_max, device=dev).expand(b, s_max).contiguous()
        s_cls = torch.searchsorted(ends, s, right=True).clamp(max=n - 1)  # [B, S]
        s_pos = s - (ends - shots).gather(1, s_cls)
        s_ok = s < total[:, None]
        s_idx = idx.gather(1, s_cls[..., None].expand(b, s_max, idx.shape[2])).gather(
            2, s_pos.clamp(min=0, max=idx.shape[2] - 1)[..., None])[..., 0]
        # query: class-major, q per class, after the class's support items in its order
        t = torch.arange(q_max, device=dev).expand(b, q_max)
        qd = queries.clamp(min=1)[:, None]
        t_cls = (t // qd).clamp(max=n - 1)
        t_pos = (shots.gather(1, t_cls) + t % qd).clamp(max=idx.shape[2] - 1)
        t_ok = t < (ways * queries)[:, None]
        t_idx = idx.gather(1, t_cls[..., None].expand(b, q_max, idx.shape[2])).gather(2, t_pos[..., None])[..., 0]
        return {
            "ways": ways, "queries": queries, "shots": shots, "classes": ranked.masked_fill(~live, -1),
            "support_index": s_idx.masked_fill(~s_ok, -1), "query_index": t_idx.masked_fill(~t_ok, -1),
            "support_y": s_cls.masked_fill(~s_ok, 0), "query_y": t_cls.masked_fill(~t_ok, 0),
        }

    # ------------------------------------------------------------------ batches
    def sample_keys(self, keys: torch.Tensor) -> VariableEpisodeBatch:
        """The episodes ``keys`` (int64 ``[B]``): a pure function of the keys."""
        keys = keys.to(self.device)
        d = self.draw(keys)
        s_idx, q_idx = d["support_index"], d["query_index"]
        b, s, q = keys.shape[0], s_idx.shape[1], q_idx.shape[1]
        flat = torch.cat([s_idx.reshape(-1), q_idx.reshape(-1)]).clamp(min=0)  # padding -> image 0
        if self.staged is not None:
            u8 = self.staged.gather(flat)
        else:
            u8 = self.images.index_select(0, flat)
        x = u8.to(self.dtype).mul_(1.0 / 255.0)
        shape = x.shape[1:]
        ways = d["ways"]
        n_way = int(ways.max())
        return VariableEpisodeBatch(
            support_x=x[: b * s].view(b, s, *shape), support_y=d["support_y"], support_mask=s_idx >= 0,
            query_x=x[b * s:].view(b, q, *shape), query_y=d["query_y"], query_mask=q_idx >= 0,
            ways=ways, shots=d["shots"][:, :n_way], queries=d["queries"], classes=d["classes"][:, :n_way],
            support_index=s_idx, query_index=q_idx, episode_keys=keys, n_way=n_way,
        )

    def sample(self, batch_size: int | None = None) -> VariableEpisodeBatch:
        """The next batch (keys from the sampler's generator)."""
        b = self.batch_size if batch_size is None else operator.index(batch_size)
        return self.sample_keys(torch.randint(0, 1 << KEY_BITS, (b,), generator=self.generator))

    def __iter__(self) -> Iterator[VariableEpisodeBatch]:
        while True:
            yield self.sample()

    def __repr__(self) -> str:
        return f"VariableEpisodeSampler({self.dataset!r}, {self.spec}, batch_size={self.batch_size})"
