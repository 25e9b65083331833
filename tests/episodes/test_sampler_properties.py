"""Hypothesis properties of the episode sampler over dataset shapes, class sizes and argument
types: it returns well-formed episodes (distinct classes, distinct samples of the right
class, labels 0..N-1) or raises a one-line EpisodeSpecError; never a bare Python error."""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from metamem.data import ImageDataset
from metamem.episodes import EpisodeSampler
from metamem.episodes.sampler import EpisodeSpecError

counts = st.one_of(
    st.integers(-2, 7), st.floats(-1, 6, allow_nan=False), st.sampled_from([2.0, "3", None, True]),
    st.builds(np.int64, st.integers(0, 6)), st.builds(lambda v: torch.tensor(v), st.integers(0, 6)),
)


@st.composite
def datasets(draw: st.DrawFn) -> ImageDataset:
    sizes = draw(st.lists(st.integers(1, 6), min_size=1, max_size=7))
    c = draw(st.sampled_from([1, 3]))
    hw = draw(st.integers(1, 4))
    labels = torch.arange(len(sizes)).repeat_interleave(torch.tensor(sizes))
    # every image stores its own index in pixel 0, so a drawn image can be traced back
    idx = torch.arange(len(labels))
    images = torch.zeros(len(labels), c, hw, hw, dtype=torch.uint8)
    images.view(len(labels), -1)[:, 0] = (idx % 251).to(torch.uint8)
    groups = None
    if draw(st.booleans()):
        groups = torch.tensor(draw(st.lists(st.integers(0, 2), min_size=len(sizes), max_size=len(sizes))))
        groups = torch.unique(groups, return_inverse=True)[1]
    return ImageDataset(images=images, labels=labels, class_names=[f"c{i}" for i in range(len(sizes))],
                        groups=groups, name="prop", split="x")


@settings(max_examples=250, derandomize=True, deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(ds=datasets(), n_way=counts, k_shot=counts, n_query=counts, batch=st.integers(1, 4),
       within=st.booleans(), seed=st.integers(0, 2**40))
def test_episodes_are_well_formed_or_refused(ds: ImageDataset, n_way: object, k_shot: object,
                                             n_query: object, batch: int, within: bool, seed: int) -> None:
    try:
        s = EpisodeSampler(ds, n_way=n_way, k_shot=k_shot, n_query=n_query, batch_size=batch,
                           seed=seed, within_group=within)
    except EpisodeSpecError as e:
        assert "\n" not in str(e) and str(e)
        return
    # accepted: the arguments were whole numbers (no float, bool or string slipped through)
    for v in (n_way, k_shot, n_query):
        assert not isinstance(v, (float, bool, str)) and v is not None
    n, k, q = int(n_way), int(k_shot), int(n_query)
    b = s.sample()
    assert b.support_x.shape[:2] == (batch, n * k) and b.query_x.shape[:2] == (batch, n * q)
    for e in range(batch):
        classes = b.classes[e].tolist()
        assert len(set(classes)) == n
        if within:
            assert len({int(ds.groups[c]) for c in classes}) == 1
        for idx, y in ((b.support_index[e], b.support_y[e]), (b.query_index[e], b.query_y[e])):
            assert torch.equal(ds.labels[idx], torch.tensor(classes)[y])  # right class per label
        both = torch.cat([b.support_index[e], b.query_index[e]]).tolist()
        assert len(set(both)) == len(both)  # no image twice in an episode
        pix = torch.cat([b.support_x[e], b.query_x[e]]).flatten(1)[:, 0]
        assert torch.allclose(pix, (torch.tensor(both) % 251).float() / 255)
    # same seed, same episodes
    s2 = EpisodeSampler(ds, n_way=n_way, k_shot=k_shot, n_query=n_query, batch_size=batch,
                        seed=seed, within_group=within)
    assert torch.equal(s2.sample().support_index, b.support_index)
