"""The GPU-batched episode sampler: correctness, randomness ownership, errors."""

from __future__ import annotations

import pytest
import torch

from metamem import NO_LABEL, EpisodeSampler, EpisodeSpecError, ImageDataset
from metamem.rng import episode_keys_from_seed, hash31, random_keys


def _check_episode_batch(ds: ImageDataset, b, n: int, k: int, q: int, bsz: int) -> None:
    c, h, w = ds.image_shape
    assert b.support_x.shape == (bsz, n * k, c, h, w) and b.support_x.dtype == torch.float32
    assert b.query_x.shape == (bsz, n * q, c, h, w)
    assert b.support_y.shape == (bsz, n * k) and b.query_y.shape == (bsz, n * q)
    assert b.classes.shape == (bsz, n)
    # classes distinct within each episode
    assert (b.classes.sort(1).values.diff(dim=1) > 0).all()
    # support items class-major with labels 0..N-1
    assert torch.equal(b.support_y[0], torch.arange(n).repeat_interleave(k))
    assert torch.equal(b.query_y[0], torch.arange(n).repeat_interleave(q))
    # every item really belongs to the class its label stands for
    assert torch.equal(ds.labels[b.support_index], b.classes.gather(1, b.support_y))
    assert torch.equal(ds.labels[b.query_index], b.classes.gather(1, b.query_y))
    # support and query images distinct within an episode
    both = torch.cat([b.support_index, b.query_index], 1)
    assert (both.sort(1).values.diff(dim=1) > 0).all()
    # images are the dataset's images scaled to [0, 1]
    ref = ds.images[b.support_index].float() / 255
    assert torch.allclose(b.support_x, ref)
    assert torch.allclose(b.query_x, ds.images[b.query_index].float() / 255)


@pytest.mark.parametrize("n,k,q", [(5, 1, 15), (3, 2, 0), (7, 3, 4), (40, 1, 1)])
def test_batch_contents(synth: ImageDataset, n: int, k: int, q: int) -> None:
    s = EpisodeSampler(synth, n_way=n, k_shot=k, n_query=q, batch_size=6, seed=3)
    for _ in range(5):
        _check_episode_batch(synth, s.sample(), n, k, q, 6)


def test_labels_freshly_permuted_and_classes_uniform(synth: ImageDataset) -> None:
    s = EpisodeSampler(synth, n_way=5, k_shot=1, n_query=1, batch_size=400, seed=0)
    classes = torch.cat([s.sample().classes for _ in range(5)])  # 2000 episodes
    # label 0 stands for many different classes, and rows are not sorted by class id
    assert classes[:, 0].unique().numel() == synth.num_classes
    assert (classes.diff(dim=1) > 0).all(dim=1).float().mean() < 0.05  # sorted: 1/120
    # every class drawn about equally often: 2000*5/40 = 250 expected per class
    counts = torch.bincount(classes.flatten(), minlength=synth.num_classes).float()
    chi2 = ((counts - 250) ** 2 / 250).sum()
    assert chi2 < 80, f"class frequencies far from uniform: chi2={chi2:.1f} (39 dof)"
    # each label position is equally likely to hold any class
    per_pos = torch.stack([torch.bincount(classes[:, j], minlength=40) for j in range(5)])
    assert per_pos.min() > 15


def test_samples_within_class_uniform(synth: ImageDataset) -> None:
    s = EpisodeSampler(synth, n_way=40, k_shot=1, n_query=0, batch_size=500, seed=1)
    idx = s.sample().support_index.flatten()  # 500 draws per class
    pos_in_class = idx % 20  # synthetic: class c holds images c*20 .. c*20+19
    counts = torch.bincount(pos_in_class, minlength=20).float()
    expected = idx.numel() / 20
    chi2 = ((counts - expected) ** 2 / expected).sum()
    assert chi2 < 50, f"chi2={chi2:.1f} (19 dof)"


def test_same_seed_same_episodes_and_state_restore(synth: ImageDataset) -> None:
    a = EpisodeSampler(synth, n_way=5, k_shot=2, n_query=3, batch_size=4, seed=11)
    b = EpisodeSampler(synth, n_way=5, k_shot=2, n_query=3, batch_size=4, seed=11)
    c = EpisodeSampler(synth, n_way=5, k_shot=2, n_query=3, batch_size=4, seed=12)
    x, y, z = a.sample(), b.sample(), c.sample()
    assert torch.equal(x.support_index, y.support_index) and torch.equal(x.query_x, y.query_x)
    assert not torch.equal(x.support_index, z.support_index)
    state = a.state_dict()
    first = [a.sample().query_index for _ in range(3)]
    a.load_state_dict(state)
    again = [a.sample().query_index for _ in range(3)]
    assert all(torch.equal(u, v) for u, v in zip(first, again, strict=True))


def test_sampler_uses_no_global_rng(synth: ImageDataset) -> None:
    before = torch.random.get_rng_state()
    s = EpisodeSampler(synth, n_way=5, k_shot=1, n_query=2, batch_size=3, seed=0)
    s.sample().as_sequence()
    assert torch.equal(before, torch.random.get_rng_state())


def test_episode_is_pure_function_of_its_key(synth: ImageDataset) -> None:
    s = EpisodeSampler(synth, n_way=4, k_shot=2, n_query=2, batch_size=5, seed=0)
    keys = episode_keys_from_seed(7, torch.arange(5))
    whole = s.sample_keys(keys)
    for i in range(5):
        alone = s.sample_keys(keys[i : i + 1])
        assert torch.equal(alone.support_index[0], whole.support_index[i])
        assert torch.equal(alone.query_index[0], whole.query_index[i])
        assert torch.equal(alone.as_sequence().index[0], whole.as_sequence().index[i])
    # a permuted batch gives the same episodes, permuted
    perm = torch.tensor([3, 0, 4, 1, 2])
    assert torch.equal(s.sample_keys(keys[perm]).classes, whole.classes[perm])


def test_within_group_and_unequal_class_sizes() -> None:
    # 12 classes in 3 groups, class c has 3 + c images
    counts = torch.arange(12) + 3
    labels = torch.arange(12).repeat_interleave(counts)
    images = torch.arange(len(labels), dtype=torch.int64).remainder(256).to(torch.uint8)
    ds = ImageDataset(
        images=images.view(-1, 1, 1, 1).expand(-1, 1, 2, 2).contiguous(),
        labels=labels,
        class_names=[f"c{i}" for i in range(12)],
        groups=torch.tensor([0, 1, 2] * 4),
        group_names=["g0", "g1", "g2"],
    )
    s = EpisodeSampler(ds, n_way=3, k_shot=1, n_query=2, batch_size=300, seed=5, within_group=True)
    b = s.sample()
    _check_episode_batch(ds, b, 3, 1, 2, 300)
    g = ds.groups[b.classes]
    assert (g == g[:, :1]).all()
    assert g[:, 0].unique().numel() == 3  # every group gets episodes
    # the largest class's last images are reachable, and nothing past a class's end is drawn
    mixed = EpisodeSampler(ds, n_way=12, k_shot=3, n_query=0, batch_size=200, seed=1)
    _check_episode_batch(ds, mixed.sample(), 12, 3, 0, 200)
    seen_last = torch.zeros(len(ds), dtype=torch.bool)
    for _ in range(5):
        seen_last[mixed.sample().support_index.flatten()] = True
    assert seen_last.all()  # every image of every class gets drawn


def test_as_sequence(synth: ImageDataset) -> None:
    s = EpisodeSampler(synth, n_way=5, k_shot=3, n_query=2, batch_size=4, seed=2)
    b = s.sample()
    seq = b.as_sequence()
    t = 5 * (3 + 2)
    assert seq.x.shape == (4, t, *synth.image_shape)
    assert seq.y.shape == seq.prev_y.shape == seq.presentation.shape == (4, t)
    # same items as the episode, in a new order
    both = torch.cat([b.support_index, b.query_index], 1)
    assert torch.equal(seq.index.sort(1).values, both.sort(1).values)
    assert not torch.equal(seq.index, both)
    # x and y follow the index
    assert torch.allclose(seq.x, synth.images[seq.index].float() / 255)
    assert torch.equal(b.classes.gather(1, seq.y), synth.labels[seq.index])
    # labels one step late
    assert (seq.prev_y[:, 0] == NO_LABEL).all()
    assert torch.equal(seq.prev_y[:, 1:], seq.y[:, :-1])
    # presentation: naive count
    for e in range(4):
        seen: dict[int, int] = {}
        for step in range(t):
            lab = int(seq.y[e, step])
            seen[lab] = seen.get(lab, 0) + 1
            assert int(seq.presentation[e, step]) == seen[lab]
    assert int(seq.presentation.max()) == 5
    # deterministic
    assert torch.equal(b.as_sequence().index, seq.index)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(n_way=41, k_shot=1), r"n_way=41 is larger than the 40 classes"),
        (dict(n_way=5, k_shot=0), r"k_shot must be >= 1, got 0"),
        (dict(n_way=5, k_shot=1, n_query=-1), r"n_query must be >= 0, got -1"),
        (dict(n_way=5, k_shot=15, n_query=6), r"class 'train_class000' .* has 20 images, fewer than k_shot \+ n_query = 21"),
    ],
)
def test_bad_episode_specs(synth: ImageDataset, kwargs: dict, match: str) -> None:
    with pytest.raises(EpisodeSpecError, match=match):
        EpisodeSampler(synth, **kwargs)


def test_small_class_is_named() -> None:
    labels = torch.tensor([0] * 5 + [1] * 2 + [2] * 5)
    ds = ImageDataset(
        images=torch.zeros(12, 1, 2, 2, dtype=torch.uint8),
        labels=labels,
        class_names=["a", "tiny", "c"],
        name="toy",
    )
    with pytest.raises(EpisodeSpecError, match=r"class 'tiny' of dataset 'toy' .* has 2 images"):
        EpisodeSampler(ds, n_way=2, k_shot=2, n_query=1)


def test_within_group_errors(synth: ImageDataset) -> None:
    no_groups = ImageDataset(images=synth.images, labels=synth.labels, class_names=synth.class_names)
    with pytest.raises(EpisodeSpecError, match="has no groups"):
        EpisodeSampler(no_groups, n_way=5, k_shot=1, within_group=True)
    with pytest.raises(EpisodeSpecError, match=r"n_way=11 classes, but the largest group .* has 10"):
        EpisodeSampler(synth, n_way=11, k_shot=1, within_group=True)


def _hash31_reference(v: int) -> int:
    m = 0x7FFFFFFF
    v &= m
    v ^= v >> 16
    v = (v * 0x45D9F3B) & m
    v ^= v >> 15
    v = (v * 0x2C1B3C6D) & m
    v ^= v >> 16
    return v


def test_hash_matches_python_reference_and_is_a_bijection() -> None:
    vals = torch.tensor([0, 1, 2, 12345, 2**31 - 1, 2**40 + 7, -5])
    got = hash31(vals)
    assert got.tolist() == [_hash31_reference(int(v)) for v in vals]
    r = torch.arange(200_000)
    assert hash31(r).unique().numel() == r.numel()
    keys = random_keys(torch.tensor([1, 2**61 + 3]), 3, (1000,))
    assert all(row.unique().numel() == 1000 for row in keys)


@pytest.mark.gpu
@pytest.mark.parametrize("fused", [False, True], ids=["eager", "fused"])
def test_same_episodes_on_cpu_and_gpu(synth: ImageDataset, fused: bool) -> None:
    kw = dict(n_way=5, k_shot=2, n_query=3, batch_size=64, seed=9, within_group=True)
    cpu = EpisodeSampler(synth, **kw)  # the CPU reference (numpy-sorted short rows)
    gpu = EpisodeSampler(synth, device="cuda", fused=fused, **kw)  # topk; compiled kernels
    for _ in range(3):
        a, b = cpu.sample(), gpu.sample()
        assert b.support_x.is_cuda
        assert torch.equal(a.support_index, b.support_index.cpu())
        assert torch.equal(a.query_index, b.query_index.cpu())
        assert torch.equal(a.as_sequence().index, b.as_sequence().index.cpu())
        assert torch.equal(a.query_x, b.query_x.cpu())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fused_gather_gives_the_same_batches(synth: ImageDataset, dtype: torch.dtype) -> None:
    """``fused=True`` (one compiled gather + convert + scale) is bit-identical to the default
    path, through draw-ahead batches, ``sample_keys``, odd batch sizes and reused buffers."""
    kw = dict(n_way=3, k_shot=2, n_query=3, batch_size=5, seed=7, dtype=dtype, within_group=True,
              reuse_buffers=True)
    plain, fused = EpisodeSampler(synth, **kw), EpisodeSampler(synth, fused=True, **kw)
    for b in (None, 3, None):
        x, y = plain.sample(b), fused.sample(b)
        assert y.support_x.dtype == dtype
        assert torch.equal(x.support_x, y.support_x) and torch.equal(x.query_x, y.query_x)
        assert torch.equal(x.support_index, y.support_index)
    keys = episode_keys_from_seed(11, torch.arange(4))
    assert torch.equal(plain.sample_keys(keys).query_x, fused.sample_keys(keys).query_x)


def test_fused_is_an_episodes_key(tmp_path) -> None:
    from metamem.config import load_config

    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("data: {name: synthetic}\nepisodes: {fused: true}\n")
    assert load_config(cfg_file).episodes.fused is True
    assert load_config(cfg_file, overrides=["episodes.fused=false"]).episodes.fused is False
    assert load_config(cfg_file, overrides=["episodes.fused=auto"]).episodes.fused == "auto"
    cfg_file.write_text("data: {name: synthetic}\n")
    assert load_config(cfg_file).episodes.fused == "auto"  # the training loop's default
    with pytest.raises(Exception, match=r"episodes\.fused: expected .*'auto'.*got 'maybe'"):
        load_config(cfg_file, overrides=["episodes.fused=maybe"])


def _batches(sampler: EpisodeSampler) -> list[torch.Tensor]:
    out = []
    for b in (None, 3, None):
        x = sampler.sample(b)
        out += [x.support_x.clone(), x.query_x.clone(), x.query_index.clone()]
    out.append(sampler.sample_keys(episode_keys_from_seed(11, torch.arange(4))).query_x.clone())
    return out


_AUTO_KW = {"n_way": 3, "k_shot": 2, "n_query": 3, "batch_size": 5, "seed": 7, "reuse_buffers": True}


def test_auto_takes_the_fused_path_where_it_compiles(synth: ImageDataset, monkeypatch) -> None:
    """``fused="auto"`` uses the compiled gather and hash where torch.compile builds them,
    on the same episodes as ``fused=False``; ``METAMEM_FUSED=0`` keeps it eager."""
    import metamem.episodes.sampler as sm

    monkeypatch.delenv(sm.FUSED_ENV, raising=False)
    monkeypatch.setattr(sm, "_FUSED_BROKEN", set())
    calls = {"gather": 0, "hash": 0}
    real_gather, real_hash = sm.fused_gather, sm.fused_hash

    def gather():
        calls["gather"] += 1
        return real_gather()

    def hash_():
        calls["hash"] += 1
        return real_hash()

    monkeypatch.setattr(sm, "fused_gather", gather)
    monkeypatch.setattr(sm, "fused_hash", hash_)
    auto = EpisodeSampler(synth, fused="auto", **_AUTO_KW)
    assert auto.fused
    got = _batches(auto)
    assert auto.fused and calls["gather"] >= 4 and calls["hash"] >= 2
    want = _batches(EpisodeSampler(synth, fused=False, **_AUTO_KW))
    assert all(torch.equal(a, b) for a, b in zip(got, want, strict=True))
    monkeypatch.setenv(sm.FUSED_ENV, "0")
    assert not EpisodeSampler(synth, fused="auto", **_AUTO_KW).fused
    with pytest.raises(EpisodeSpecError, match=r"fused must be true, false or 'auto', got 'yes'"):
        EpisodeSampler(synth, fused="yes", **_AUTO_KW)  # type: ignore[arg-type]


def test_auto_falls_back_to_the_same_episodes_and_says_so_once(synth: ImageDataset, monkeypatch) -> None:
    """Where torch.compile cannot build the kernels, ``auto`` takes the eager path: the same
    episodes, one warning per process, and later samplers do not try again."""
    import metamem.episodes.sampler as sm

    monkeypatch.delenv(sm.FUSED_ENV, raising=False)
    monkeypatch.setattr(sm, "_FUSED_BROKEN", set())
    tries = []

    def broken():
        def fn(*args):
            tries.append(1)
            raise RuntimeError("no C++ compiler found\nsecond line")
        return fn

    monkeypatch.setattr(sm, "fused_gather", broken)
    monkeypatch.setattr(sm, "fused_hash", broken)
    with pytest.warns(RuntimeWarning, match=r"episodes.fused: torch.compile cannot build the fused sampler on cpu "
                                            r"here \(RuntimeError: no C\+\+ compiler found\); using the eager"):
        got = _batches(EpisodeSampler(synth, fused="auto", **_AUTO_KW))
    assert len(tries) == 1  # the first failure settles it
    want = _batches(EpisodeSampler(synth, fused=False, **_AUTO_KW))
    assert all(torch.equal(a, b) for a, b in zip(got, want, strict=True))
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # said once: a second sampler neither tries nor warns
        later = EpisodeSampler(synth, fused="auto", **_AUTO_KW)
        assert not later.fused and all(torch.equal(a, b) for a, b in zip(_batches(later), want, strict=True))
    assert len(tries) == 1
    with pytest.raises(RuntimeError, match="no C\\+\\+ compiler"):  # an explicit fused=True does raise
        EpisodeSampler(synth, fused=True, **_AUTO_KW).sample()


@pytest.mark.parametrize("fault", ["past_the_end", "wrong_values"])
@pytest.mark.parametrize("fused", [True, "auto"])
def test_an_unsound_compiled_gather_is_caught_by_its_self_test(synth: ImageDataset, monkeypatch, fault: str,
                                                               fused: bool | str) -> None:
    """A compiled gather that stores past its output (torch 2.13's AVX-512 kernels do, for
    800 images of 20x20) or gives other values fails the self-test on a guarded buffer: the
    sampler says so once and takes the eager path, with the same episodes, even with
    ``fused=True``; nothing is written outside the batch."""
    import metamem.episodes.sampler as sm

    monkeypatch.delenv(sm.FUSED_ENV, raising=False)
    monkeypatch.setattr(sm, "_FUSED_BROKEN", set())
    monkeypatch.setattr(sm, "_GATHER_SOUND", set())

    def unsound():
        def fn(images, index, out):
            sm._gather_scale_into(images, index, out)
            if fault == "past_the_end":  # 8 stray stores after the output, in its storage
                torch.as_strided(out, (8,), (1,), out.storage_offset() + out.numel()).fill_(0.5)
            else:
                out.view(-1)[0] += 1
        return fn

    monkeypatch.setattr(sm, "fused_gather", unsound)
    with pytest.warns(RuntimeWarning, match=r"builds an unsound fused sampler on cpu here \(UnsoundKernelError: the "
                                            r"compiled gather( wrote 8 elements past its|'s .* output differs)"):
        sampler = EpisodeSampler(synth, fused=fused, **_AUTO_KW)
        got = _batches(sampler)
    assert not sampler.fused
    want = _batches(EpisodeSampler(synth, fused=False, **_AUTO_KW))
    assert all(torch.equal(a, b) for a, b in zip(got, want, strict=True))


def test_the_gather_self_test_passes_a_sound_kernel_once_per_shape(synth: ImageDataset, monkeypatch) -> None:
    import metamem.episodes.sampler as sm

    monkeypatch.setattr(sm, "_GATHER_SOUND", set())
    calls = []

    def eager():
        def fn(images, index, out):
            calls.append(index.shape[0])
            sm._gather_scale_into(images, index, out)
        return fn

    monkeypatch.setattr(sm, "fused_gather", eager)
    index = torch.arange(7)
    sm.check_fused_gather(synth.images, index, torch.float32)
    sm.check_fused_gather(synth.images, index, torch.float32)
    sm.check_fused_gather(synth.images, torch.arange(5), torch.float32)
    assert calls == [7, 5]  # checked once per shape


def test_fused_sampler_on_20x20_images_leaves_the_heap_intact(tmp_path) -> None:
    """The real compiled gather at the shape that corrupted the heap with torch 2.13's
    AVX-512 kernels (800 images of 20x20, the README's MANN batch): the process ends
    normally, and its batches equal the eager ones."""
    import subprocess
    import sys

    code = """
import torch, warnings
from metamem import EpisodeSampler
from metamem.data import load_dataset
torch.set_num_threads(1)
ds = load_dataset("synthetic", num_classes=624, per_class=20, image_size=20, seed=0)  # 12,480 images
kw = dict(n_way=5, k_shot=10, n_query=0, batch_size=16, seed=3)  # 800 images a batch
fused, eager = EpisodeSampler(ds, fused=True, **kw), EpisodeSampler(ds, fused=False, **kw)
for _ in range(20):
    a, b = fused.sample(), eager.sample()
    assert torch.equal(a.support_x, b.support_x) and torch.equal(a.query_x, b.query_x)
print("ok")
"""
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stderr[-2000:]
