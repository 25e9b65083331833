"""Splits larger than the memory budget: kept in a host memmap of the decode cache and staged
per batch (metamem.data.staged), with the same episodes as the in-memory path."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from metamem.data.cache import Decoded, cached_decode, images_buffer, to_dataset
from metamem.data.staged import StagedImages, parse_bytes, store_budget
from metamem.episodes import EpisodeSampler


@pytest.fixture(scope="module")
def cached_split(tmp_path_factory: pytest.TempPathFactory):
    """An uneven split (13 classes, 9-16 images each, 3x11x7) stored in a decode-cache entry,
    so its images are a memmap of ``images.npy``; built through :func:`images_buffer`."""
    cache = tmp_path_factory.mktemp("cache")
    counts = [9 + (c * 5) % 8 for c in range(13)]
    labels = np.repeat(np.arange(13), counts)

    def build() -> Decoded:
        out = images_buffer("staged_test", (len(labels), 3, 11, 7), cache_dir=cache)
        out[:] = np.random.default_rng(0).integers(0, 256, out.shape, dtype=np.uint8)
        return Decoded(out, labels, [f"c{i}" for i in range(13)], [i % 3 for i in range(13)], ["a", "b", "c"])

    d, info = cached_decode("staged_test", {"v": 1}, build, cache_dir=cache)
    assert isinstance(d.images, np.memmap)
    return to_dataset(d, name="staged_test", split="train", info=info)


def _same(a, b) -> None:
    for f in ("support_x", "query_x", "support_y", "query_y", "classes", "support_index", "query_index"):
        assert torch.equal(getattr(a, f), getattr(b, f)), f


@pytest.mark.parametrize("within_group", [False, True])
def test_staged_sampler_gives_the_in_memory_episodes(cached_split, within_group) -> None:
    kw = dict(n_way=3, k_shot=2, n_query=3, batch_size=5, seed=17, within_group=within_group)
    mem = EpisodeSampler(cached_split, **kw)
    staged = EpisodeSampler(cached_split, **kw, store_budget=0)
    assert mem.staged is None and staged.staged is not None
    assert staged.staged.from_file  # read from the cache file itself
    row = 3 * 11 * 7
    for b in (5, 5, 2, 7, 5):
        before = staged.staged.bytes_read
        _same(mem.sample(b), staged.sample(b))
        assert staged.staged.bytes_read - before == b * 3 * (2 + 3) * row  # this batch's images only
    keys = torch.tensor([3, 99, 12345, 7], dtype=torch.int64)
    _same(mem.sample_keys(keys), staged.sample_keys(keys))


def test_staged_gather_matches_index_select(cached_split) -> None:
    st = StagedImages.for_split(cached_split, torch.device("cpu"), 0)
    assert st is not None and st.nbytes == cached_split.images.numel()
    idx = torch.tensor([5, 0, 5, 120, 33], dtype=torch.int64)
    first = st.gather(idx).clone()
    assert torch.equal(first, cached_split.images[idx])
    second = st.gather(idx[:2])  # the other buffer: the first result is not overwritten yet
    assert torch.equal(second, cached_split.images[idx[:2]]) and torch.equal(first, cached_split.images[idx])
    m = len(cached_split)
    with pytest.raises(IndexError, match=rf"image index out of range 0\.\.{m - 1}"):
        st.gather(torch.tensor([m]))
    assert StagedImages.for_split(cached_split, torch.device("cpu"), "1G") is None
    # a split without a cache file is staged from memory
    plain = type(cached_split)(cached_split.images.clone(), cached_split.labels, cached_split.class_names)
    st2 = StagedImages.for_split(plain, torch.device("cpu"), 0)
    assert st2 is not None and not st2.from_file and torch.equal(st2.gather(idx), cached_split.images[idx])


def test_budget_parsing_and_default(monkeypatch) -> None:
    assert parse_bytes("8G") == 8 << 30 and parse_bytes("512 MiB") == 512 << 20 and parse_bytes(4096) == 4096
    assert parse_bytes("1.5k") == 1536
    with pytest.raises(ValueError, match=r"cannot read 'lots' as a size"):
        parse_bytes("lots")
    monkeypatch.setenv("METAMEM_STORE_BUDGET", "3M")
    assert store_budget(torch.device("cpu")) == 3 << 20
    monkeypatch.setenv("METAMEM_STORE_BUDGET", "-1")
    with pytest.raises(ValueError, match=r"\$METAMEM_STORE_BUDGET: cannot read '-1'"):
        store_budget(torch.device("cpu"))
    monkeypatch.delenv("METAMEM_STORE_BUDGET")
    assert store_budget(torch.device("cpu")) > 1 << 20  # half the host's memory


@pytest.mark.gpu
def test_staged_to_cuda_matches_the_device_store(cached_split) -> None:
    kw = dict(n_way=4, k_shot=1, n_query=2, batch_size=6, seed=5, device="cuda")
    mem = EpisodeSampler(cached_split, **kw)
    staged = EpisodeSampler(cached_split, **kw, store_budget=0)
    for _ in range(4):
        a, b = mem.sample(), staged.sample()
        assert b.support_x.device.type == "cuda"
        _same(a, b)
    assert staged.staged._bufs[0].is_pinned()
