"""Variable-way, variable-shot episodes (Meta-Dataset's sampler): the batched draw against a
per-episode reference written with plain Python loops, padding and masks, and scoring."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from metamem.data import ImageDataset
from metamem.episodes.variable import SHOT_WEIGHTS, VariableEpisodeSampler, VariableSpec
from metamem.rng import random_keys


def _uneven(num_classes: int = 23, size: int = 4) -> ImageDataset:
    """Classes of 2..40 images; pixel (0, 0, 0) of an image holds its index (mod 256)."""
    rng = np.random.default_rng(3)
    counts = [2 + (c * 7) % 39 for c in range(num_classes)]
    labels = np.repeat(np.arange(num_classes), counts)
    perm = rng.permutation(len(labels))  # stored out of class order
    labels = labels[perm]
    images = rng.integers(0, 256, (len(labels), 1, size, size), dtype=np.uint8)
    images[:, 0, 0, 0] = np.arange(len(labels)) % 256
    return ImageDataset(torch.from_numpy(images), torch.from_numpy(labels), [f"c{i}" for i in range(num_classes)],
                        name="uneven", split="test")


def reference_episode(ds: ImageDataset, key: int, spec: VariableSpec) -> dict:
    """One episode by Meta-Dataset's steps, one class and one image at a time (the random
    values are the same hashes of the key; the arithmetic is the documented integer form)."""
    k = torch.tensor([key])
    counts = [int(c) for c in ds.class_counts()]
    members = [[i for i in range(len(ds)) if int(ds.labels[i]) == c] for c in range(ds.num_classes)]
    n_max = min(spec.max_ways, ds.num_classes)
    ways = spec.min_ways + int(random_keys(k, 21, (1,))[0, 0]) % (n_max - spec.min_ways + 1)
    ckeys = random_keys(k, 22, (ds.num_classes,))[0].tolist()
    classes = sorted(range(ds.num_classes), key=lambda c: -ckeys[c])[:ways]
    q = min(spec.max_query, min(counts[c] for c in classes) // 2)
    beta = int(random_keys(k, 23, (1,))[0, 0]) + 1
    total = 0
    for c in classes:
        m = min(spec.max_support_per_class, counts[c] - q)
        total += math.ceil(beta * m / 2**31)
    size = min(spec.max_support, total)
    alpha = random_keys(k, 24, (n_max,))[0].tolist()
    weights = [int(SHOT_WEIGHTS[alpha[i] >> 19]) * counts[c] for i, c in enumerate(classes)]
    shots = [min(w * max(size - ways, 0) // sum(weights) + 1, counts[c] - q) for w, c in zip(weights, classes, strict=True)]
    skeys = random_keys(k, 25, (n_max, max(counts)))[0]
    support, support_y, query, query_y = [], [], [], []
    for label, (c, kc) in enumerate(zip(classes, shots, strict=True)):
        row = skeys[label].tolist()
        order = sorted(range(counts[c]), key=lambda p: -row[p])  # a random order of the class
        support += [members[c][p] for p in order[:kc]]
        support_y += [label] * kc
        query += [members[c][p] for p in order[kc:kc + q]]
        query_y += [label] * q
    return {"ways": ways, "classes": classes, "queries": q, "shots": shots, "support": support,
            "support_y": support_y, "query": query, "query_y": query_y}


@pytest.mark.parametrize("spec", [VariableSpec(), VariableSpec(min_ways=2, max_ways=9, max_support=30,
                                                                max_support_per_class=6, max_query=3)])
def test_batched_draw_matches_the_per_episode_reference(spec) -> None:
    ds = _uneven()
    sampler = VariableEpisodeSampler(ds, spec, batch_size=7, seed=11)
    keys = torch.tensor([0, 1, 5, 123456789, 2**61 + 17, 42, 7], dtype=torch.int64)
    b = sampler.sample_keys(keys)
    for e, key in enumerate(keys.tolist()):
        ref = reference_episode(ds, key, spec)
        n, s, q = ref["ways"], len(ref["support"]), len(ref["query"])
        assert int(b.ways[e]) == n and int(b.queries[e]) == ref["queries"]
        assert b.classes[e, :n].tolist() == ref["classes"] and (b.classes[e, n:] == -1).all()
        assert b.shots[e, :n].tolist() == ref["shots"] and (b.shots[e, n:] == 0).all()
        assert b.support_index[e, :s].tolist() == ref["support"] and (b.support_index[e, s:] == -1).all()
        assert b.support_y[e, :s].tolist() == ref["support_y"]
        assert b.support_mask[e].tolist() == [True] * s + [False] * (b.support_mask.shape[1] - s)
        assert b.query_index[e, :q].tolist() == ref["query"] and b.query_mask[e].sum() == q
        assert b.query_y[e, :q].tolist() == ref["query_y"]
        # the images are the dataset's (one gather), padding is masked
        assert torch.equal(b.support_x[e, :s], ds.images[ref["support"]].float().mul(1.0 / 255.0))
        assert torch.equal(b.query_x[e, :q], ds.images[ref["query"]].float().mul(1.0 / 255.0))
        # Meta-Dataset's constraints
        assert spec.min_ways <= n <= spec.max_ways and s <= max(spec.max_support, n)
        assert all(k >= 1 for k in ref["shots"]) and 1 <= ref["queries"] <= spec.max_query
    assert b.n_way == int(b.ways.max()) and b.support_x.shape[1] == int(b.shots.sum(1).max())


def test_episodes_are_pure_functions_of_their_keys() -> None:
    ds = _uneven()
    sampler = VariableEpisodeSampler(ds, batch_size=5, seed=2)
    batch = sampler.sample()
    for e in range(5):
        one = sampler.sample_keys(batch.episode_keys[e:e + 1])
        s, q = int(one.support_mask.sum()), int(one.query_mask.sum())
        assert torch.equal(one.support_index[0, :s], batch.support_index[e, :s])
        assert torch.equal(one.query_index[0, :q], batch.query_index[e, :q])
    again = VariableEpisodeSampler(ds, batch_size=5, seed=2).sample()
    assert torch.equal(again.support_index, batch.support_index)


def test_shapes_vary_and_supports_are_imbalanced() -> None:
    ds = _uneven(num_classes=60, size=2)
    b = VariableEpisodeSampler(ds, batch_size=64, seed=0).sample()
    assert len(set(b.ways.tolist())) > 10 and int(b.ways.min()) >= 5 and int(b.ways.max()) <= 50
    sizes = b.shots.sum(1)
    assert len(set(sizes.tolist())) > 20 and int(sizes.max()) <= 500
    uneven = [(row[row > 0].max() > row[row > 0].min()) for row in b.shots]
    assert sum(uneven) > 32  # most episodes have unequal shots


def test_bad_splits_and_specs_are_named() -> None:
    ds = _uneven(num_classes=4)
    with pytest.raises(ValueError, match=r"has 4 classes, fewer than min_ways=5"):
        VariableEpisodeSampler(ds)
    one = ImageDataset(torch.zeros(6, 1, 2, 2, dtype=torch.uint8), torch.tensor([0, 0, 1, 1, 2, 3]),
                       ["a", "b", "c", "d"], name="x", split="y")
    with pytest.raises(ValueError, match=r"class 'c' of dataset 'x' split 'y' has 1 image\(s\)"):
        VariableEpisodeSampler(one, min_ways=2)
    with pytest.raises(ValueError, match=r"min_ways=9 is above max_ways=5"):
        VariableSpec(min_ways=9, max_ways=5)
