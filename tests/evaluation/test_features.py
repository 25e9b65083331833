"""Reused per-image features in evaluation: same episodes and scores, each image embedded once."""

from __future__ import annotations

import pytest
import torch

import metamem
from metamem.evaluation import evaluate
from metamem.evaluation.features import FeatureMemo, feature_memo_for, supports_feature_reuse
from metamem.learners import build_learner


@pytest.fixture(scope="module")
def ds16():
    return metamem.load_dataset("synthetic", num_classes=12, per_class=10, image_size=16, seed=3)


@pytest.mark.parametrize("name,kw", [("protonet", {}), ("linear_probe", {"num_train_classes": 12}),
                                     ("linear_probe", {"num_train_classes": 12, "probe": "centroid"}),
                                     ("matching", {}), ("matching", {"fce": True}), ("memory_matching", {}),
                                     ("metanet", {}), ("metanet", {"shared_trunk": True})])
def test_reused_features_give_the_same_scores(ds16, name: str, kw: dict) -> None:
    torch.manual_seed(0)
    learner = build_learner(name, n_way=5, image_shape=ds16.image_shape, **kw)
    assert supports_feature_reuse(learner)
    opts = dict(n_way=5, k_shot=2, n_query=3, episodes=24, seed=7, protocol="set", batch_size=8)
    slow = evaluate(learner, ds16, reuse_features=False, **opts)
    fast = evaluate(learner, ds16, **opts)
    assert fast.fingerprint == slow.fingerprint
    torch.testing.assert_close(fast.per_episode, slow.per_episode)
    if name in ("protonet", "linear_probe") or (name == "matching" and not kw):
        assert fast.mean > 0.3  # the synthetic classes are separable even by a random Conv-4


def test_memo_embeds_each_image_once_and_is_dropped_when_weights_change(ds16) -> None:
    torch.manual_seed(0)
    learner = build_learner("protonet", n_way=5, image_shape=ds16.image_shape).eval()
    calls = []
    embed = learner.embed
    learner.embed = lambda x: (calls.append(x.shape[0]), embed(x))[1]  # type: ignore[method-assign]
    evaluate(learner, ds16, n_way=5, k_shot=1, n_query=4, episodes=40, protocol="set")
    first = sum(calls)
    assert 0 < first <= len(ds16)  # each drawn image once, not 40 * 25 times
    evaluate(learner, ds16, n_way=3, k_shot=5, n_query=2, episodes=40, protocol="set")
    assert sum(calls) - first <= len(ds16) - first  # only images not drawn before
    memo = feature_memo_for(learner, ds16.images, ds16.images)
    assert memo.done.all() or memo.embedded == sum(calls)
    with torch.no_grad():
        next(learner.parameters()).add_(0.1)  # an in-place update bumps the version
    assert feature_memo_for(learner, ds16.images, ds16.images) is not memo


def test_memo_matches_direct_embedding(ds16) -> None:
    torch.manual_seed(1)
    learner = build_learner("protonet", n_way=5, image_shape=ds16.image_shape).eval()
    memo = FeatureMemo(learner.embed, ds16.images)
    idx = torch.tensor([[3, 7, 3], [0, 119, 7]])
    with torch.no_grad():
        got = memo.features(idx)
        want = learner.embed(ds16.images[idx].float() / 255)
    torch.testing.assert_close(got, want)
    assert memo.embedded == 4


def test_batch_statistics_backbone_is_not_reused(ds16) -> None:
    learner = build_learner("protonet", n_way=5, image_shape=ds16.image_shape)
    learner.backbone = metamem.learners.BACKBONES.build("conv4", image_shape=ds16.image_shape,
                                                        track_running_stats=False)
    assert not supports_feature_reuse(learner)
    assert not supports_feature_reuse(build_learner("maml", n_way=5, image_shape=ds16.image_shape))
