"""The GPU-batched episode sampler.

The split sits on the device as one uint8 tensor ``[M, C, H, W]``. A batch of B episodes is

1. B episode keys drawn from the sampler's own CPU ``torch.Generator`` (one tiny copy to
   the device);
2. one batched index draw on the device: random keys for every (episode, class) and every
   (episode, class, sample slot) from a counter-based hash (:mod:`metamem.rng`),
   then ``topk`` picks N distinct classes and K+Q distinct samples per class (on the CPU,
   short rows are ranked by numpy's sort instead, with the same result: :func:`topk_indices`);
3. one ``index_select`` of all B·N·(K+Q) images, converted to float on the device.

:meth:`EpisodeSampler.sample` does step 2 for the next few batches at once (the keys that
follow are read from a copy of the generator; see :class:`_DrawAhead`), which gives the same
batches as drawing each batch on its own.

An optional :class:`~metamem.episodes.augment.AffineAugment` then distorts every image in
one batched ``grid_sample`` (training only). There is no Python loop over episodes or samples, and every random choice of an episode is
a pure function of its key, so the same seed gives the same episodes on CPU and GPU.
"""

from __future__ import annotations

import functools
import math
import operator
import os
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch

from metamem.data.base import ImageDataset
from metamem.data.staged import StagedImages
from metamem.device import resolve_device
from metamem.episodes.augment import AffineAugment
from metamem.rng import KEY_BITS, M31, keys_from_mix, keys_from_mix_into, position_mix
from metamem.types import EpisodeBatch

__all__ = [
    "EpisodeSampler", "EpisodeSpecError", "ClassTable", "OutputBuffers", "draw_episode_indices", "check_count",
    "fused_gather", "fused_hash", "topk_indices", "FusedChoice",
]

#: ``fused=`` of :class:`EpisodeSampler`: on, off, or ``"auto"`` (on where torch.compile builds it).
FusedChoice = bool | Literal["auto"]
#: ``METAMEM_FUSED=0`` makes ``fused="auto"`` take the eager path (short runs, test suites).
FUSED_ENV = "METAMEM_FUSED"
_FUSED_BROKEN: set[str] = set()  # device types where torch.compile failed to build the fused sampler

_SAMPLER_STREAM = 1
_MAX_POSITIONS = 1 << 31  # classes and images per class must stay below 2**31
_AHEAD_BATCHES = 16  # batches drawn ahead at most
_AHEAD_VALUES = 1 << 21  # random values (int64) of one draw ahead at most
_SCRATCH_EPISODES = 1024  # draws of up to this many episodes reuse work arrays
_CHUNK_ABOVE_BYTES = 12 << 20  # CPU: outputs above this are converted piece by piece...
_CHUNK_BYTES = 1 << 20  # ...in pieces of about this size (measured: docs/benchmarks.md)
_SORT_ROWS_UP_TO = 160  # CPU: rows this short are ranked by numpy's sort, longer ones by topk


class EpisodeSpecError(ValueError):
    """An episode shape the dataset cannot provide (too many ways, too few images...)."""


def check_count(name: str, value: Any, low: int) -> int:
    """``value`` as an int ``>= low``; floats (even ``2.0``), bools and strings are refused.

    Raises:
        EpisodeSpecError: naming ``name`` and the value.
    """
    if isinstance(value, bool):
        raise EpisodeSpecError(f"{name} must be an integer >= {low}, got {value!r} (a bool)")
    try:
        n = operator.index(value)  # ints, numpy ints, 0-dim integer tensors
    except TypeError:
        raise EpisodeSpecError(
            f"{name} must be an integer >= {low}, got {value!r} ({type(value).__name__}); "
            f"pass a whole number such as {low if low > 0 else 1}"
        ) from None
    if n < low:
        raise EpisodeSpecError(f"{name} must be >= {low}, got {n}")
    return int(n)


@dataclass
class ClassTable:
    """Per-class index tables of a split, on the sampler's device.

    Attributes:
        order: int64 ``[M]`` sample indices sorted by class.
        offsets: int64 ``[num_classes]`` start of each class in ``order``.
        counts: int64 ``[num_classes]`` images per class.
        max_count: largest class size.
        groups: int64 ``[num_classes]`` group ids, or ``None``.
        uneven: whether class sizes differ (then slots past a class's end are masked).
        sorted_by_class: whether ``order`` is the identity (the split is stored class by
            class, as every bundled loader does), which saves a gather per batch.
    """

    order: torch.Tensor
    offsets: torch.Tensor
    counts: torch.Tensor
    max_count: int
    groups: torch.Tensor | None
    uneven: bool
    sorted_by_class: bool = False
    _mixes: dict[tuple[int, int], torch.Tensor] = field(default_factory=dict, repr=False)

    def mix(self, n_way: int) -> torch.Tensor:
        """Position mix for one episode's keys: ``[C + 1 + N*max_count]`` (classes, group,
        sample slots), computed once per ``n_way``."""
        key = (n_way, self.max_count)
        if key not in self._mixes:
            n = self.counts.shape[0] + 1 + n_way * self.max_count
            self._mixes[key] = position_mix(_SAMPLER_STREAM, n, self.counts.device)
        return self._mixes[key]

    @classmethod
    def from_dataset(cls, dataset: ImageDataset, device: torch.device) -> ClassTable:
        labels = dataset.labels
        counts = torch.bincount(labels, minlength=dataset.num_classes)
        order = torch.argsort(labels, stable=True)
        offsets = torch.cumsum(counts, 0) - counts
        groups = dataset.groups.to(device) if dataset.groups is not None else None
        return cls(
            order=order.to(device),
            offsets=offsets.to(device),
            counts=counts.to(device),
            max_count=int(counts.max()) if counts.numel() else 0,
            groups=groups,
            uneven=bool(counts.numel()) and int(counts.min()) != int(counts.max()),
            sorted_by_class=bool(torch.equal(order, torch.arange(labels.numel()))),
        )


def draw_episode_indices(
    keys: torch.Tensor,
    table: ClassTable,
    n_way: int,
    k_shot: int,
    n_query: int,
    group_ids: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Draw the classes and sample indices of B episodes from their keys.

    Args:
        keys: int64 ``[B]`` episode keys.
        table: the split's :class:`ClassTable` (same device as ``keys``).
        n_way: N, classes per episode.
        k_shot: K, support images per class.
        n_query: Q, query images per class.
        group_ids: int64 ``[G]`` groups eligible for within-group episodes, or ``None`` for
            episodes that mix groups.

    Returns:
        ``classes [B, N]``, ``support_index [B, N*K]``, ``query_index [B, N*Q]`` (int64).
    """
    b = keys.shape[0]
    n_cls = table.counts.shape[0]
    # one hash for every random choice of the batch: class keys, group pick, sample keys
    rk = keys_from_mix(keys, table.mix(n_way))  # [B, C + 1 + N*max_count]
    ckeys = rk[:, :n_cls]
    if group_ids is not None:
        assert table.groups is not None
        pick = rk[:, n_cls] % group_ids.shape[0]
        ckeys = ckeys.masked_fill(table.groups[None, :] != group_ids[pick][:, None], -1)
    # keys of one episode are distinct (see rng.keys_from_mix), so topk meets no ties
    classes = ckeys.topk(n_way, dim=1).indices  # [B, N], distinct, random order

    skeys = rk[:, n_cls + 1 :].view(b, n_way, table.max_count)
    if table.uneven:
        slot = torch.arange(table.max_count, device=keys.device, dtype=torch.int64)
        skeys = skeys.masked_fill(slot >= table.counts[classes][..., None], -1)
    pos = skeys.topk(k_shot + n_query, dim=2).indices  # [B, N, K+Q], distinct per class
    samples = table.order[table.offsets[classes][..., None] + pos]
    support = samples[:, :, :k_shot].reshape(b, n_way * k_shot)
    query = samples[:, :, k_shot:].reshape(b, n_way * n_query)
    return classes, support, query


def topk_indices(keys: torch.Tensor, k: int) -> torch.Tensor:
    """``keys.topk(k, dim=-1).indices``: the positions of the ``k`` largest keys of each row,
    largest first, computed faster for short rows on the CPU.

    ``keys`` are int64 values in ``[0, 2**31)`` (the counter-based hash of
    :mod:`metamem.rng`), distinct within a row, or ``-1`` (masked out) where at
    least ``k`` keys of the row are not. Then the result is unique and equals ``topk``'s.

    On the CPU, for rows of at most ``_SORT_ROWS_UP_TO`` keys (Omniglot's 20 samples per
    class, a split's classes when there are few), each key is packed with its position,
    ``(2**31 - 1 - key) << bits | position``, and numpy sorts the packed rows: numpy's
    vectorised integer sort does a row of 20 about 4x faster than torch's ``topk``
    (docs/benchmarks.md). Packed values are distinct (positions are), so the order is the
    keys' order, largest first, and masked keys (``-1``) sort last. Longer rows, and every
    other device, use ``topk``.

    Args:
        keys: int64 ``[..., L]``.
        k: how many positions per row (``1 <= k <= L``).

    Returns:
        int64 ``[..., k]`` positions in ``[0, L)``.
    """
    length = keys.shape[-1]
    if keys.device.type != "cpu" or length > _SORT_ROWS_UP_TO or keys.numel() == 0:
        return keys.topk(k, dim=-1).indices
    bits = max(1, (length - 1).bit_length())
    packed = np.subtract(M31, keys.numpy())  # a new array: keys are left alone
    packed <<= bits
    packed |= np.arange(length, dtype=np.int64)
    if 2 * k < length:  # partition out the k smallest packed values, then order them
        packed = np.partition(packed, k - 1, axis=-1)[..., :k]
    packed.sort(axis=-1)
    top = packed[..., :k]
    top &= (1 << bits) - 1
    return torch.from_numpy(np.ascontiguousarray(top))


def _gather_scale_into(images: torch.Tensor, index: torch.Tensor, out: torch.Tensor) -> None:
    """``out[i] = images[index[i]] / 255`` in ``out``'s dtype: what :func:`fused_gather` compiles."""
    out.copy_(images[index].to(out.dtype) * (1.0 / 255.0))


@functools.cache
def fused_gather() -> Callable[[torch.Tensor, torch.Tensor, torch.Tensor], None]:
    """``fn(images, index, out)``: the images ``index`` of the uint8 store ``images`` scaled to
    ``[0, 1]`` into ``out`` (float ``[len(index), C, H, W]``) in one compiled kernel.

    Built once per process with ``torch.compile`` (the same values as ``index_select``, then
    the conversion, then the scale by 1/255: each element is one float multiply either way).
    """
    return torch.compile(_gather_scale_into, dynamic=None)


@functools.cache
def fused_hash() -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """:func:`~metamem.rng.keys_from_mix` compiled by ``torch.compile`` into one
    loop over its ``[B, n]`` output (eager torch makes ten passes over it); the same integer
    values. Built once per process, used by ``EpisodeSampler(fused=True)``."""
    return torch.compile(keys_from_mix, dynamic=None)


class UnsoundKernelError(RuntimeError):
    """A compiled kernel that wrote outside its output or gave other values than eager torch."""


#: ``(image shape, image dtype, rows, output dtype, device type)`` whose compiled gather passed
#: :func:`check_fused_gather` in this process
_GATHER_SOUND: set[tuple[Any, ...]] = set()
#: spare elements after the output in the self-test: room for a kernel's stray vector stores
_GUARD_ELEMENTS = 4096


def check_fused_gather(images: torch.Tensor, index: torch.Tensor, dtype: torch.dtype) -> None:
    """Run the compiled gather once for this shape into an output followed by guard elements,
    and compare with eager torch.

    Some torch builds' compiled CPU kernels store past the end of their output for some row
    sizes (torch 2.13 with AVX-512 kernels on 20x20 uint8 images writes 8 floats past an
    800-image output, which corrupts the heap and aborts the process later). The guard
    elements catch those stores here, harmlessly. Passed shapes are remembered per process.

    Raises:
        UnsoundKernelError: when the kernel wrote into the guard or its values differ.
    """
    shape = (index.shape[0], *images.shape[1:])
    key = (tuple(images.shape[1:]), images.dtype, shape[0], dtype, images.device.type)
    if key in _GATHER_SOUND:
        return
    n = math.prod(shape)
    sentinel = -1.0  # the gather writes values in [0, 1]
    buf = torch.full((n + _GUARD_ELEMENTS,), sentinel, dtype=dtype, device=images.device)
    out = buf[:n].view(shape)
    fused_gather()(images, index, out)
    stray = int((buf[n:] != sentinel).sum())
    if stray:
        raise UnsoundKernelError(f"the compiled gather wrote {stray} elements past its {list(shape)} output "
                                 f"(a torch {torch.__version__} code generation bug on this CPU)")
    want = torch.empty(shape, dtype=dtype, device=images.device)
    _gather_scale_into(images, index, want)
    if not torch.equal(out, want):
        raise UnsoundKernelError(f"the compiled gather's {list(shape)} output differs from eager torch's")
    _GATHER_SOUND.add(key)


def _fused_fell_back(device: torch.device, err: BaseException) -> None:
    """Remember that the fused sampler does not compile on ``device``'s type; say so once."""
    if device.type in _FUSED_BROKEN:
        return
    _FUSED_BROKEN.add(device.type)
    first = (str(err).strip().splitlines() or [""])[0][:200]
    what = "builds an unsound fused sampler" if isinstance(err, UnsoundKernelError) else "cannot build the fused sampler"
    warnings.warn(
        f"episodes.fused: torch.compile {what} on {device.type} here "
        f"({type(err).__name__}: {first}); using the eager gather instead (the same episodes, slower). "
        f"Set episodes.fused: false (or {FUSED_ENV}=0) to skip the attempt",
        RuntimeWarning, stacklevel=4,
    )


def _auto_fused(device: torch.device) -> bool:
    """Whether ``fused="auto"`` tries the fused path on ``device``: unless it failed to compile
    there before in this process, or ``METAMEM_FUSED=0``."""
    return os.environ.get(FUSED_ENV, "").strip() not in ("0", "false", "off") and device.type not in _FUSED_BROKEN


def _storage_use_count(t: torch.Tensor) -> int | None:
    """References to ``t``'s storage (tensors, views, storage objects), or ``None`` if this
    torch build does not expose the count."""
    count = getattr(torch._C, "_storage_Use_Count", None)
    if count is None:
        return None
    return int(count(t.untyped_storage()._cdata))


class OutputBuffers:
    """Output tensors reused from call to call, but only when nothing else refers to them.

    A buffer handed out (through views: the batch's ``support_x``/``query_x``) is reused only
    once every tensor, view, numpy array or autograd node that refers to its storage is gone,
    checked by the storage's reference count. A loop that still holds batch t-1 while drawing
    batch t gets the buffer of batch t-2; a loop that lets go of its batch before drawing the
    next (metamem's training and evaluation loops) gets the same, cache-warm buffer every
    time. A batch a caller holds is never overwritten. Without the count (an unknown torch
    build) every call allocates.

    The buffer itself counts as unreferenced: hand out views of it (as the sampler does),
    never the tensor :meth:`get` returns.

    Args:
        capacity: buffers kept at most; when all are in use a fresh, unkept tensor is returned.
    """

    def __init__(self, capacity: int = 3) -> None:
        self.capacity = capacity
        self._bufs: list[tuple[torch.Tensor, int]] = []  # (buffer, use count when unreferenced)
        self.reused = 0  # calls served by a kept buffer (for tests and figures)

    def get(self, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """A tensor of ``shape``/``dtype`` on ``device`` (contents undefined)."""
        shape = tuple(shape)
        for i in range(len(self._bufs) - 1, -1, -1):  # most recently used first: still in cache
            buf, alone = self._bufs[i]
            if buf.shape == shape and buf.dtype == dtype and buf.device == device:
                if _storage_use_count(buf) == alone:
                    self.reused += 1
                    self._bufs.append(self._bufs.pop(i))
                    return buf
        buf = torch.empty(shape, dtype=dtype, device=device)
        count = _storage_use_count(buf)
        if count is None:
            return buf
        if len(self._bufs) >= self.capacity:  # make room: forget a free buffer of another shape
            free = [i for i, (b, a) in enumerate(self._bufs) if _storage_use_count(b) == a]
            if not free:
                return buf
            self._bufs.pop(free[0])
        self._bufs.append((buf, count))
        return buf


class _DrawAhead:
    """The index draw of the next few batches, done at once (a cache keyed by episode keys).

    :meth:`EpisodeSampler.sample` draws its keys from the sampler's generator as always, then
    looks them up here. On a miss (first call, stream used up, generator reseeded, shared or
    restored) :meth:`refill` draws the classes and samples for these keys and for the keys of
    up to 15 further batches, read from a *copy* of the generator, so the generator itself
    advances exactly as without this cache. A hit is checked key by key: a batch is always
    the draw of its own keys (episodes are pure functions of their keys). Draws ahead that
    go unused halve the lookahead (down to none); fully used ones double it again. One draw
    ahead holds at most ``_AHEAD_VALUES`` random values.
    """

    def __init__(self) -> None:
        self.keys: torch.Tensor | None = None  # int64 [L] (CPU)
        self.classes: torch.Tensor | None = None  # [L, N] on the sampler's device
        self.samples: torch.Tensor | None = None  # [L, N, K+Q] on the sampler's device
        self.flat: torch.Tensor | None = None  # [L / b, b*N*(K+Q)]: each batch's flat indices
        self.cursor = 0  # episodes used
        self.batch = 0  # B of the refill
        self.batches = _AHEAD_BATCHES

    def clear(self) -> None:
        self.keys = self.classes = self.samples = self.flat = None
        self.cursor = 0

    def take(self, keys: torch.Tensor, sampler: EpisodeSampler) -> tuple[torch.Tensor, torch.Tensor] | None:
        """``(classes [B, N], flat indices)`` of ``keys`` if they are the next keys drawn ahead,
        else None (see :meth:`EpisodeSampler._assemble` for the flat layout)."""
        if self.keys is None:
            return None
        b, c, n = keys.shape[0], self.cursor, self.keys.shape[0]
        if c + b > n or not torch.equal(self.keys[c : c + b], keys):
            if c < n:  # draws ahead went unused: look less far ahead
                self.batches = max(1, self.batches // 2)
            elif self.batches < _AHEAD_BATCHES:  # all used: look further ahead again
                self.batches = min(_AHEAD_BATCHES, self.batches * 2)
            self.clear()
            return None
        self.cursor = c + b
        assert self.classes is not None and self.samples is not None and self.flat is not None
        if b == self.batch and c % b == 0:  # laid out at the refill
            return self.classes[c : c + b], self.flat[c // b]
        return self.classes[c : c + b], sampler._layout(self.samples[c : c + b], 1)[0]

    def refill(self, keys: torch.Tensor, sampler: EpisodeSampler) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw ``keys`` (just taken from the generator) and the keys of the batches after them."""
        b = keys.shape[0]
        row = sampler.table.mix(sampler.n_way).shape[0]
        m = max(1, min(self.batches, _AHEAD_VALUES // max(1, b * row)))
        if m > 1:
            g = torch.Generator(device=sampler.generator.device)
            g.set_state(sampler.generator.get_state())
            keys = torch.cat([keys, torch.randint(0, 1 << KEY_BITS, ((m - 1) * b,), generator=g)])
        classes, samples = sampler._draw_samples(keys.to(sampler.device, non_blocking=True))
        # the flat layout of each batch, for all m batches at once
        flat = sampler._layout(samples, m)
        self.keys, self.classes, self.samples, self.flat = keys, classes, samples, flat
        self.cursor, self.batch = b, b
        return classes[:b], flat[0]


class EpisodeSampler:
    """Draws batches of N-way K-shot episodes on a device with one gather per batch.

    Args:
        dataset: the split to sample from (uint8 images, moved to ``device`` once).
        n_way: N, classes per episode.
        k_shot: K, support examples per class (>= 1).
        n_query: Q, query examples per class (>= 0).
        batch_size: B, episodes per call of :meth:`sample`.
        device: where images live and batches are produced: ``"auto"`` (CUDA when
            available, else CPU), ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or a device; default CPU,
            where a freshly built learner lives. A CUDA device on a machine without CUDA is a
            one-line error.
        seed: seed of the sampler's own ``torch.Generator`` (or pass ``generator``).
        within_group: draw all classes of an episode from one group (one alphabet).
        generator: a CPU ``torch.Generator`` to own instead of seeding a new one.
        dtype: floating dtype of the returned images (values in ``[0, 1]``).
        augment: distort every image by its own random affine map drawn from the episode
            key (:class:`~metamem.episodes.augment.AffineAugment`); None: no augmentation.
        reuse_buffers: write the images of a batch into an output buffer of an earlier
            batch when nothing refers to that batch's images any more (see
            :class:`OutputBuffers`); saves the allocation and page faults of a fresh
            ``[B, N*(K+Q), C, H, W]`` float tensor per call. The training and evaluation loops
            turn it on. Batches are the same either way.
        fused: gather, convert and scale the images in one kernel built by ``torch.compile``
            (:func:`fused_gather`) instead of ``index_select`` then a conversion and a scale,
            and hash the draw's keys in one compiled loop (:func:`fused_hash`) instead of
            ten passes. One pass over the output instead of three: with it the whole
            ``sample()`` reaches a median 80% (5-way 1-shot) and 98% (20-way 5-shot) of the bare
            ``index_select`` + conversion on one CPU thread (docs/benchmarks.md). The first
            batch of each shape compiles (about 3-20 s; inductor caches it on disk for later
            processes). Needs torch's compiler (a C++ compiler on the CPU). Off by default;
            ``episodes.fused: true`` in YAML. Batches are the same, bit for bit.
            ``"auto"``: the fused path where torch.compile builds it; where it does not (no
            C++ compiler, an unsupported platform), the eager path, with one warning per
            process and device type. The training loop's default (``episodes.fused: auto``);
            ``METAMEM_FUSED=0`` makes ``auto`` eager. The default here is ``False``: a
            sampler built by hand for a few batches would spend more on the compilation than
            it saves.
        store_budget: bytes (or ``"8G"``...) of uint8 images the split may occupy on
            ``device``; a larger split is not moved there but stays in its decode-cache file
            (a read-only memmap) and is staged per batch (:class:`~metamem.data.staged.StagedImages`:
            the batch's images read into a pinned buffer, one copy to the device). Default
            ``$METAMEM_STORE_BUDGET``, else half the device's memory. Batches are the same.

    Raises:
        EpisodeSpecError: for ``k_shot < 1``, ``n_query < 0``, ``n_way`` larger than the
            classes available, or a class with fewer than ``k_shot + n_query`` images.

    Example::

        sampler = EpisodeSampler(ds, n_way=5, k_shot=1, n_query=15, batch_size=32, seed=0)
        batch = sampler.sample()        # batch.support_x: [32, 5, 1, 28, 28]
        seq = batch.as_sequence()       # seq.x: [32, 80, 1, 28, 28]
    """

    def __init__(
        self,
        dataset: ImageDataset,
        *,
        n_way: int,
        k_shot: int,
        n_query: int = 0,
        batch_size: int = 1,
        device: torch.device | str | None = None,
        seed: int = 0,
        within_group: bool = False,
        generator: torch.Generator | None = None,
        dtype: torch.dtype = torch.float32,
        augment: AffineAugment | None = None,
        reuse_buffers: bool = False,
        fused: FusedChoice = False,
        store_budget: int | str | None = None,
    ) -> None:
        if not isinstance(dataset, ImageDataset):
            raise EpisodeSpecError(
                f"dataset must be an ImageDataset (see metamem.data.load_dataset / from_pairs), "
                f"got {type(dataset).__name__}"
            )
        if not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
            raise EpisodeSpecError(f"dtype must be a floating torch dtype, got {dtype!r}")
        self.dataset = dataset
        self.augment = augment if augment is not None and augment.active else None
        self.n_way = check_count("n_way", n_way, 1)
        self.k_shot = check_count("k_shot", k_shot, 1)
        self.n_query = check_count("n_query", n_query, 0)
        self.batch_size = check_count("batch_size", batch_size, 1)
        if not isinstance(seed, int) or isinstance(seed, bool):
            try:
                seed = operator.index(seed)
            except TypeError:
                raise EpisodeSpecError(f"seed must be an integer, got {seed!r}") from None
        self.device = resolve_device(device) if device is not None else torch.device("cpu")
        self.within_group = bool(within_group)
        self.dtype = dtype
        self._check_spec()
        self.generator = generator if generator is not None else torch.Generator()
        if generator is None:
            self.generator.manual_seed(int(seed))
        self.table = ClassTable.from_dataset(dataset, self.device)
        self._group_ids = self._eligible_groups() if self.within_group else None
        # a split above the memory budget stays in a host memmap, staged per batch
        self.staged = StagedImages.for_split(dataset, self.device, store_budget)
        self.images = dataset.images.to(self.device) if self.staged is None else self.staged.store
        nk, nq = self.n_way * self.k_shot, self.n_way * self.n_query
        self._support_y = torch.arange(self.n_way, device=self.device).repeat_interleave(
            self.k_shot
        )
        self._query_y = torch.arange(self.n_way, device=self.device).repeat_interleave(
            self.n_query
        )
        assert self._support_y.numel() == nk and self._query_y.numel() == nq
        self.reuse_buffers = bool(reuse_buffers)
        if fused == "auto":
            self.fused = _auto_fused(self.device)
            self._fused_auto = self.fused  # a failure to compile falls back instead of raising
        elif isinstance(fused, bool):
            self.fused, self._fused_auto = fused, False
        else:
            raise EpisodeSpecError(f"fused must be true, false or 'auto', got {fused!r}")
        self._outputs = OutputBuffers()
        self._scratch: dict[tuple[str, int], torch.Tensor] = {}  # internal work arrays per B
        self._ahead = _DrawAhead()

    # ------------------------------------------------------------------ validation
    def _where(self) -> str:
        return f"dataset {self.dataset.name!r} split {self.dataset.split!r}"

    def _check_spec(self) -> None:
        ds = self.dataset
        if self.n_way > ds.num_classes:
            raise EpisodeSpecError(
                f"n_way={self.n_way} is larger than the {ds.num_classes} classes of "
                f"{self._where()}; use n_way <= {ds.num_classes}"
            )
        need = self.k_shot + self.n_query
        counts = ds.class_counts()
        small = (counts < need).nonzero().flatten()
        if small.numel():
            c = int(small[0])
            raise EpisodeSpecError(
                f"class {ds.class_names[c]!r} of {self._where()} has {int(counts[c])} images, "
                f"fewer than k_shot + n_query = {need} ({small.numel()} such classes); "
                "lower k_shot/n_query or drop small classes"
            )
        if max(ds.num_classes, int(counts.max())) >= _MAX_POSITIONS:
            raise EpisodeSpecError(
                f"{self._where()} has more than 2**31 classes or images per class"
            )

    def _eligible_groups(self) -> torch.Tensor:
        ds = self.dataset
        if ds.groups is None:
            raise EpisodeSpecError(
                f"within_group=True but {self._where()} has no groups; use within_group=False"
            )
        per_group = torch.bincount(ds.groups)
        ok = (per_group >= self.n_way).nonzero().flatten()
        if ok.numel() == 0:
            raise EpisodeSpecError(
                f"within_group=True needs a group with at least n_way={self.n_way} classes, "
                f"but the largest group of {self._where()} has {int(per_group.max())}"
            )
        return ok.to(self.device)

    # ------------------------------------------------------------------ sampling
    def _keys_cpu(self, b: int) -> torch.Tensor:
        """The next ``b`` episode keys of the generator's stream, on the CPU (advances it)."""
        return torch.randint(0, 1 << KEY_BITS, (b,), generator=self.generator)

    def draw_keys(self, batch_size: int | None = None) -> torch.Tensor:
        """Draw ``[B]`` episode keys from the sampler's generator (advances its state)."""
        b = self.batch_size if batch_size is None else check_count("batch_size", batch_size, 1)
        return self._keys_cpu(b).to(self.device, non_blocking=True)

    def sample(self, batch_size: int | None = None) -> EpisodeBatch:
        """Draw the next batch of episodes (``batch_size`` overrides B for this call).

        The same batch as ``sample_keys(draw_keys(batch_size))``, and the generator advances
        the same. The index draw is done for the next few batches at once (see
        :class:`_DrawAhead`): one set of tensor ops for up to 16 batches instead of one set
        per batch.
        """
        b = self.batch_size if batch_size is None else check_count("batch_size", batch_size, 1)
        keys = self._keys_cpu(b)
        drawn = self._ahead.take(keys, self)
        if drawn is None:
            drawn = self._ahead.refill(keys, self)
        classes, flat = drawn
        return self._assemble(keys.to(self.device, non_blocking=True), classes, flat)

    def sample_keys(self, keys: torch.Tensor) -> EpisodeBatch:
        """The episodes given by ``keys`` (int64 ``[B]``); a pure function of the keys.

        This is how fixed evaluation episodes are built (keys derived from a protocol seed).
        """
        keys = keys.to(self.device)
        classes, samples = self._draw_samples(keys)
        return self._assemble(keys, classes, self._layout(samples, 1)[0])

    def _assemble(self, keys: torch.Tensor, classes: torch.Tensor, flat: torch.Tensor) -> EpisodeBatch:
        """The batch of episodes ``keys`` (``[B]`` on the device) with ``classes [B, N]`` and
        the dataset indices ``flat [B*N*K + B*N*Q]`` drawn for them (support items class-major,
        episode by episode, then query items): one gather of the images."""
        b = keys.shape[0]
        nk, nq = self.n_way * self.k_shot, self.n_way * self.n_query
        s_idx, q_idx = flat[: b * nk].view(b, nk), flat[b * nk :].view(b, nq)
        x = self._gather_images(flat, b)
        shape = x.shape[1:]
        support_x = x[: b * nk].view(b, nk, *shape)
        query_x = x[b * nk :].view(b, nq, *shape)
        if self.augment is not None:
            support_x = self.augment(support_x, keys)
            query_x = self.augment(query_x, keys, offset=nk)
        return EpisodeBatch(
            support_x=support_x,
            support_y=self._support_y.expand(b, -1),
            query_x=query_x,
            query_y=self._query_y.expand(b, -1),
            classes=classes,
            support_index=s_idx,
            query_index=q_idx,
            episode_keys=keys,
            n_way=self.n_way,
            k_shot=self.k_shot,
            n_query=self.n_query,
        )

    def _gather_images(self, flat: torch.Tensor, b: int) -> torch.Tensor:
        """float ``[len(flat), C, H, W]``: the images ``flat`` scaled to ``[0, 1]``.

        One ``index_select`` into a uint8 work array, then the conversion and the scale by
        1/255. On the CPU a large output is converted and scaled piece by piece (about 1 MiB
        of output at a time), so that the scale reads what the conversion has just written
        from the cache instead of making a second pass over the whole output in memory (a
        single ``torch.mul`` from uint8 is twice as slow there: it takes torch's unvectorized
        mixed-dtype path). On a GPU the conversion and scale are one ``torch.mul`` kernel
        (one launch and one pass instead of two). The values are the same every way.
        """
        shape = tuple(self.images.shape[1:])
        total = flat.shape[0]
        if self.reuse_buffers:
            x = self._outputs.get((total, *shape), self.dtype, self.device)
        else:
            x = torch.empty((total, *shape), dtype=self.dtype, device=self.device)
        if self.staged is not None:
            u8 = self.staged.gather(flat)
        elif self.fused and self._compiled(lambda: self._fused_gather(flat, x))[0]:
            return x
        else:
            u8 = torch.index_select(
                self.images, 0, flat, out=self._work("images", b, (total, *shape), self.images.dtype)
            )
        row_bytes = x[0].numel() * x.element_size() if total else 1
        if self.device.type == "cpu" and total * row_bytes > _CHUNK_ABOVE_BYTES:
            rows = max(1, _CHUNK_BYTES // row_bytes)
            for u, o in zip(u8.split(rows), x.split(rows), strict=True):
                o.copy_(u).mul_(1.0 / 255.0)
        elif self.device.type == "cpu":
            x.copy_(u8).mul_(1.0 / 255.0)
        else:  # one kernel on a GPU: read uint8, write the scaled float (the same values)
            torch.mul(u8, 1.0 / 255.0, out=x)
        return x

    def _fused_gather(self, flat: torch.Tensor, x: torch.Tensor) -> None:
        """The compiled gather into ``x``, after its self-test for this shape
        (:func:`check_fused_gather`)."""
        check_fused_gather(self.images, flat, x.dtype)
        fused_gather()(self.images, flat, x)

    def _compiled(self, call: Callable[[], Any]) -> tuple[bool, Any]:
        """``(True, call())`` for a call of a compiled function. With ``fused="auto"`` a failure
        to compile switches this sampler to the eager path (warning once): ``(False, None)``.
        A kernel that fails its self-test (:class:`UnsoundKernelError`) does so with
        ``fused=True`` too: the eager path gives the same episodes."""
        try:
            return True, call()
        except UnsoundKernelError as err:
            _fused_fell_back(self.device, err)
            self.fused = self._fused_auto = False
            return False, None
        except Exception as err:  # BackendCompilerFailed, a missing C++ compiler, ...
            if not self._fused_auto:
                raise
            _fused_fell_back(self.device, err)
            self.fused = self._fused_auto = False
            return False, None

    def _work(self, name: str, b: int, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        """An internal work array (never handed out), kept per batch size."""
        t = self._scratch.get((name, b))
        if t is None or t.shape != shape:
            t = self._scratch[(name, b)] = torch.empty(shape, dtype=dtype, device=self.device)
        return t

    def _layout(self, samples: torch.Tensor, m: int) -> torch.Tensor:
        """int64 ``[m, B*N*(K+Q)]``: the dataset indices ``samples [m*B, N, K+Q]`` of m batches
        of B episodes, each batch laid out as its support items (class-major, episode by
        episode), then its query items -- the order of the images in a batch. Two strided
        copies (a quarter of the time of an ``index_select`` with a position list)."""
        n, k, q = self.n_way, self.k_shot, self.n_query
        b = samples.shape[0] // m
        by_batch = samples.view(m, b, n, k + q)
        out = torch.empty((m, b * n * (k + q)), dtype=samples.dtype, device=samples.device)
        out[:, : b * n * k].view(m, b, n, k).copy_(by_batch[..., :k])
        out[:, b * n * k :].view(m, b, n, q).copy_(by_batch[..., k:])
        return out

    def _draw_samples(self, keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """:func:`draw_episode_indices` as a few ops: ``classes [B, N]`` and the dataset indices
        ``[B, N, K+Q]`` of each class's K support then Q query items."""
        b, t = keys.shape[0], self.table
        n_cls, n, kq = t.counts.shape[0], self.n_way, self.k_shot + self.n_query
        mix = t.mix(n)
        # with fused: the hash's ten passes in one compiled loop (the same values)
        done, rk = self._compiled(lambda: fused_hash()(keys, mix)) if self.fused else (False, None)
        if done:
            pass
        elif b <= _SCRATCH_EPISODES:  # small batches (sample_keys): reuse work arrays
            rk = keys_from_mix_into(keys, mix, self._work("keys", b, (b, mix.shape[0]), torch.int64),
                                    self._work("tmp", b, (b, mix.shape[0]), torch.int64))
        else:  # a draw ahead: temporaries, freed with it
            rk = keys_from_mix_into(keys, mix, torch.empty((b, mix.shape[0]), dtype=torch.int64, device=keys.device),
                                    torch.empty((b, mix.shape[0]), dtype=torch.int64, device=keys.device))
        assert rk is not None  # one of the three paths above drew the keys
        ckeys = rk[:, :n_cls]
        if self._group_ids is not None:
            assert t.groups is not None
            pick = rk[:, n_cls] % self._group_ids.shape[0]
            ckeys = ckeys.masked_fill(t.groups[None, :] != self._group_ids[pick][:, None], -1)
        classes = topk_indices(ckeys, n)  # [B, N]; keys are distinct: no ties
        skeys = rk[:, n_cls + 1 :].view(b, n, t.max_count)
        if t.uneven:
            slot = torch.arange(t.max_count, device=keys.device, dtype=torch.int64)
            skeys = skeys.masked_fill(slot >= t.counts[classes][..., None], -1)
        pos = topk_indices(skeys, kq)  # [B, N, K+Q]
        pos += t.offsets[classes].unsqueeze(-1)
        if not t.sorted_by_class:
            pos = t.order[pos]
        return classes, pos

    def __iter__(self) -> Iterator[EpisodeBatch]:
        while True:
            yield self.sample()

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """The generator state; restoring it replays the same episode stream."""
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])
        self._ahead.clear()

    def __repr__(self) -> str:
        return (
            f"EpisodeSampler({self.dataset!r}, n_way={self.n_way}, k_shot={self.k_shot}, "
            f"n_query={self.n_query}, batch_size={self.batch_size}, device={self.device}, "
            f"within_group={self.within_group}, augment={self.augment})"
        )

