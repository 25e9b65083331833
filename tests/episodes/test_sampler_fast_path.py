"""The sampler's fused draw against the reference ``draw_episode_indices``, and output buffers
that are reused only when nothing holds the batch."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from metamem import EpisodeSampler, ImageDataset
from metamem.episodes.sampler import (
    _AHEAD_VALUES,
    _SORT_ROWS_UP_TO,
    OutputBuffers,
    draw_episode_indices,
    fused_hash,
    topk_indices,
)
from metamem.rng import keys_from_mix, keys_from_mix_into, position_mix, random_keys


def _uneven_grouped(shuffle: bool) -> ImageDataset:
    counts = torch.arange(12) + 5  # class c has 5 + c images
    labels = torch.arange(12).repeat_interleave(counts)
    images = torch.randint(0, 256, (len(labels), 1, 3, 3), generator=torch.Generator().manual_seed(0),
                           dtype=torch.uint8)
    if shuffle:  # a split not stored class by class
        perm = torch.randperm(len(labels), generator=torch.Generator().manual_seed(1))
        labels, images = labels[perm], images[perm]
    return ImageDataset(images=images, labels=labels, class_names=[f"c{i}" for i in range(12)],
                        groups=torch.tensor([0, 1, 2] * 4), group_names=["g0", "g1", "g2"])


def _reference_batch(s: EpisodeSampler, keys: torch.Tensor):
    """What the sampler returned before the fused draw: reference indices + to(dtype) * 1/255."""
    classes, sup, qry = draw_episode_indices(keys, s.table, s.n_way, s.k_shot, s.n_query, s._group_ids)
    x = s.images.index_select(0, torch.cat([sup.reshape(-1), qry.reshape(-1)])).to(s.dtype).mul_(1.0 / 255.0)
    return classes, sup, qry, x


@pytest.mark.parametrize("fused", [False, True], ids=["eager", "fused"])
@pytest.mark.parametrize("case", ["synth", "uneven_grouped", "shuffled", "no_query", "float64"])
def test_fused_draw_equals_reference(synth: ImageDataset, case: str, fused: bool) -> None:
    ds = synth if case in ("synth", "no_query", "float64") else _uneven_grouped(case == "shuffled")
    kw = dict(n_way=3, k_shot=2, n_query=0 if case == "no_query" else 3, batch_size=37, seed=4,
              within_group=case != "synth", dtype=torch.float64 if case == "float64" else torch.float32)
    s = EpisodeSampler(ds, reuse_buffers=True, fused=fused, **kw)
    assert s.table.sorted_by_class is (case != "shuffled")
    for b in (37, 1, 37, 5):
        keys = s.draw_keys(b)
        got = s.sample_keys(keys)
        classes, sup, qry, x = _reference_batch(s, keys)
        assert torch.equal(got.classes, classes)
        assert torch.equal(got.support_index, sup) and torch.equal(got.query_index, qry)
        assert torch.equal(got.support_x.reshape(-1), x[: sup.numel()].reshape(-1))
        assert torch.equal(got.query_x.reshape(-1), x[sup.numel():].reshape(-1))
        assert got.support_x.dtype == kw["dtype"]


@settings(max_examples=60, deadline=None)
@given(rows=st.integers(1, 7), length=st.sampled_from([1, 2, 3, 5, 19, 20, 33, _SORT_ROWS_UP_TO,
                                                        _SORT_ROWS_UP_TO + 1, 257]),
       k_frac=st.floats(0.0, 1.0), masked_frac=st.floats(0.0, 1.0), seed=st.integers(0, 2**31 - 1),
       sliced=st.booleans())
def test_topk_indices_equals_topk(rows: int, length: int, k_frac: float, masked_frac: float,
                                  seed: int, sliced: bool) -> None:
    """The numpy sort of packed keys (rows of up to ``_SORT_ROWS_UP_TO``) and ``topk`` (longer
    rows) give ``topk``'s positions, largest key first, for hash keys in [0, 2**31) with
    some masked to -1 past the k largest, on 2-d and 3-d inputs and on strided views."""
    g = torch.Generator().manual_seed(seed)
    k = 1 + int(k_frac * (length - 1))
    # distinct 31-bit keys within a row, as the sampler's (rng.random_keys)
    keys = random_keys(torch.randint(0, 2**62, (rows,), generator=g), 3, (length,))
    # mask up to length - k keys of each row (never one of the k largest kept)
    n_mask = int(masked_frac * (length - k))
    if n_mask:
        order = keys.argsort(dim=1)[:, :n_mask]  # the smallest keys
        keys.scatter_(1, order, -1)
    if sliced:  # a strided view, as the sampler's class keys are
        wide = torch.full((rows, length + 3), 7, dtype=torch.int64)
        wide[:, 1 : length + 1] = keys
        keys = wide[:, 1 : length + 1]
    before = keys.clone()
    want = keys.topk(k, dim=-1).indices
    got = topk_indices(keys, k)
    assert got.dtype == torch.int64 and got.is_contiguous()
    assert torch.equal(got, want)
    # a 3-d batch [rows, 2, L] row by row, as the sample-slot keys
    stacked = torch.stack([keys, keys.flip(0)], dim=1)
    assert torch.equal(topk_indices(stacked, k), stacked.topk(k, dim=-1).indices)
    # the keys are left as they were
    assert torch.equal(keys, before)


def test_topk_indices_sorts_short_cpu_rows_with_numpy(monkeypatch) -> None:
    """Rows of up to ``_SORT_ROWS_UP_TO`` keys on the CPU never call ``topk`` (so the test
    above checks the numpy path there); longer rows do."""
    calls = []
    real = torch.Tensor.topk

    def counting(self, *args, **kwargs):
        calls.append(self.shape[-1])
        return real(self, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, "topk", counting)
    short = torch.randperm(1000)[:40].view(2, 20)
    long = torch.randperm(1000)[: 2 * (_SORT_ROWS_UP_TO + 1)].view(2, -1)
    topk_indices(short, 16)
    assert calls == []
    topk_indices(long, 5)
    assert calls == [_SORT_ROWS_UP_TO + 1]


def test_fused_hash_equals_keys_from_mix() -> None:
    keys = torch.tensor([0, 1, 2**61 + 12345, 2**62 - 1, 987654321987])
    mix = position_mix(1, 333)
    assert torch.equal(fused_hash()(keys, mix), keys_from_mix(keys, mix))


def test_keys_from_mix_into_equals_keys_from_mix() -> None:
    keys = torch.tensor([0, 1, 2**61 + 12345, 2**62 - 1, 987654321987])
    mix = position_mix(1, 333)
    out, tmp = torch.empty(5, 333, dtype=torch.int64), torch.empty(5, 333, dtype=torch.int64)
    assert torch.equal(keys_from_mix_into(keys, mix, out, tmp), keys_from_mix(keys, mix))


def test_a_held_batch_is_never_overwritten(synth: ImageDataset) -> None:
    s = EpisodeSampler(synth, n_way=5, k_shot=1, n_query=2, batch_size=8, seed=0, reuse_buffers=True)
    ref = EpisodeSampler(synth, n_way=5, k_shot=1, n_query=2, batch_size=8, seed=0)
    first = s.sample()
    keep = first.support_x.clone()
    for _ in range(6):  # a loop that holds the previous batch while drawing the next
        prev, batch = first, s.sample()
        assert torch.equal(prev.support_x, keep)
        first, keep = batch, batch.support_x.clone()
    assert s._outputs.reused >= 3  # buffers of released batches were reused
    # anything derived from a batch's storage pins it: a view, a numpy array, an autograd node
    b = s.sample()
    view = b.query_x[0, 1]
    arr = b.support_x.numpy()
    saved = b.support_x.clone()
    w = torch.ones((), requires_grad=True)
    graph = (b.query_x * w).sum()
    ptr = b.support_x.data_ptr()
    view_val, arr_val = view.clone(), arr.copy()
    del b
    for _ in range(5):
        nb = s.sample()
        assert nb.support_x.data_ptr() != ptr
        del nb
    assert torch.equal(view, view_val) and np.array_equal(arr, arr_val)
    assert torch.equal(torch.from_numpy(arr), saved)
    graph.backward()
    # and the stream of batches is the same as without reuse
    s2 = EpisodeSampler(synth, n_way=5, k_shot=1, n_query=2, batch_size=8, seed=0, reuse_buffers=True)
    for _ in range(5):
        a, r = s2.sample(), ref.sample()
        assert torch.equal(a.support_x, r.support_x) and torch.equal(a.query_x, r.query_x)


def test_output_buffers_capacity_and_shapes() -> None:
    pool = OutputBuffers(capacity=2)
    a = pool.get((4, 3), torch.float32, torch.device("cpu"))
    va = a[1:]
    b = pool.get((4, 3), torch.float32, torch.device("cpu"))
    assert b.data_ptr() != a.data_ptr()  # a is in use through the view va
    del va
    c = pool.get((2, 2), torch.float32, torch.device("cpu"))  # pool full of (4, 3): one is dropped
    assert c.shape == (2, 2)
    held = [pool.get((5,), torch.float64, torch.device("cpu"))[:1] for _ in range(4)]
    assert len({h.data_ptr() for h in held}) == 4  # all in use: fresh tensors


@pytest.mark.parametrize("case", ["synth", "uneven_grouped", "shuffled"])
def test_draw_ahead_gives_the_batches_of_the_keys_and_leaves_the_generator_alone(
    synth: ImageDataset, case: str
) -> None:
    """``sample`` draws the next batches' indices ahead from a copy of the generator; every
    batch must still be the draw of its own keys, and the generator must advance exactly as
    ``draw_keys`` alone would make it, whatever happens to it between calls."""
    ds = synth if case == "synth" else _uneven_grouped(case == "shuffled")
    kw = dict(n_way=3, k_shot=2, n_query=2, batch_size=6, seed=9, within_group=case != "synth")
    s = EpisodeSampler(ds, reuse_buffers=True, **kw)
    ref = EpisodeSampler(ds, **kw)  # the plain path: keys, then sample_keys
    assert s._ahead.batches > 1  # the draw ahead is on

    def check(b: int | None = None) -> None:
        got = s.sample(b)
        keys = ref.draw_keys(b)
        want = ref.sample_keys(keys)
        assert torch.equal(got.episode_keys, keys)
        for f in ("classes", "support_index", "query_index", "support_x", "query_x"):
            assert torch.equal(getattr(got, f), getattr(want, f)), f
        assert torch.equal(s.generator.get_state(), ref.generator.get_state())

    for _ in range(20):  # more than one draw ahead
        check()
    for b in (5, 6, 1, 6, 6):  # another batch size mid-stream
        check(b)
    state = s.state_dict()
    for _ in range(3):
        check()
    s.load_state_dict(state)  # back in the stream: the drawn-ahead batches are not reused
    ref.load_state_dict(state)
    for _ in range(3):
        check()
    s.generator.manual_seed(123)  # the generator reseeded behind the sampler's back
    ref.generator.manual_seed(123)
    check()
    torch.randint(0, 10, (7,), generator=s.generator)  # ... or shared with someone else
    torch.randint(0, 10, (7,), generator=ref.generator)
    check()
    assert s._ahead.batches < 16  # the unused draws ahead shortened the lookahead
    for _ in range(40):
        check()
    assert s._ahead.batches == 16  # and used ones lengthened it again


def test_draw_ahead_is_bounded_and_one_batch_when_a_batch_is_large(synth: ImageDataset) -> None:
    row = 40 + 1 + 5 * 20  # random values per episode: classes, group, sample slots
    for b, batches in ((4096, 3), (16384, 1)):  # 2**21 values at most, one batch at least
        s = EpisodeSampler(synth, n_way=5, k_shot=1, n_query=1, batch_size=b, seed=0)
        assert s.table.mix(5).shape[0] == row
        got = s.sample()
        assert s._ahead.keys is not None and s._ahead.keys.shape[0] == b * batches
        assert s._ahead.keys.shape[0] * row <= max(_AHEAD_VALUES, b * row)
        assert torch.equal(got.classes, s.sample_keys(got.episode_keys).classes)
    small = EpisodeSampler(synth, n_way=5, k_shot=1, n_query=1, batch_size=2, seed=0)
    small.sample()
    assert small._ahead.keys is not None and small._ahead.keys.shape[0] == 2 * 16
