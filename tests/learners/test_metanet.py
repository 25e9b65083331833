"""Meta Networks: meta-information gradients, fast-weight memory, masking, learning."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import metamem.learners.backbones  # noqa: F401  (registers conv4)
from metamem.data import load_dataset
from metamem.episodes.sampler import EpisodeSampler
from metamem.learners.base import build_learner
from metamem.learners.metanet import (
    apply_read_fast_linear,
    build_metanet,
    preprocess_gradients,
    read_attention,
    two_layer_example_grads,
)

SMALL = dict(backbone_channels=8, hidden=16, repr_dim=12)
STEPS = 60


def test_preprocess_gradients_matches_rule_and_is_differentiable() -> None:
    g = torch.tensor([3.0, -0.5, 1e-2, -1e-4, 0.0, 5e-4, -2e-3], dtype=torch.float64)
    out = preprocess_gradients(g, p=7.0)
    for v, (a, b) in zip(g.tolist(), out.tolist(), strict=True):
        if abs(v) >= math.exp(-7):
            ref = (math.log(abs(v)) / 7, math.copysign(1.0, v))
        else:
            ref = (-1.0, math.exp(7) * v)
        assert a == pytest.approx(ref[0]) and b == pytest.approx(ref[1])
    x = torch.tensor([0.3, -2.0, 1e-4, 0.0], dtype=torch.float64, requires_grad=True)
    torch.autograd.gradcheck(lambda t: preprocess_gradients(t), (x,))
    assert torch.isfinite(torch.autograd.grad(preprocess_gradients(x).sum(), x)[0]).all()


def test_example_grads_equal_naive_autograd_loop() -> None:
    gen = torch.Generator().manual_seed(0)
    b, s, f, h, n = 2, 3, 5, 7, 4
    dt = torch.float64
    feats = torch.randn(b, s, f, generator=gen, dtype=dt)
    w1 = torch.randn(h, f, generator=gen, dtype=dt, requires_grad=True)
    b1 = torch.randn(h, generator=gen, dtype=dt, requires_grad=True)
    w2 = torch.randn(n, h, generator=gen, dtype=dt, requires_grad=True)
    b2 = torch.randn(n, generator=gen, dtype=dt, requires_grad=True)
    y = torch.randint(0, n, (b, s), generator=gen)
    g1, g2 = two_layer_example_grads(feats, w1, b1, w2, b2, y)
    assert g1.shape == (b, s, h, f) and g2.shape == (b, s, n, h)
    for i in range(b):
        for j in range(s):
            logits = torch.relu(feats[i, j] @ w1.t() + b1) @ w2.t() + b2
            loss = F.cross_entropy(logits[None], y[i, j][None])
            r1, r2 = torch.autograd.grad(loss, (w1, w2), create_graph=True)
            torch.testing.assert_close(g1[i, j], r1)
            torch.testing.assert_close(g2[i, j], r2)
    # second order: the meta information is differentiable w.r.t. the slow weights
    torch.autograd.gradcheck(
        lambda a, c: sum(t.sin().sum() for t in two_layer_example_grads(feats, a, b1, c, b2, y)), (w1, w2)
    )


def test_model_feeds_the_gradients_of_its_own_task_loss(monkeypatch: pytest.MonkeyPatch) -> None:
    """Inside predict, the meta information of support item i is ∇_{W1, W2} CE(b(W, x_i), y_i)."""
    import metamem.learners.metanet as mod

    seen: list[tuple[torch.Tensor, ...]] = []

    def spy(*args: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = two_layer_example_grads(*args)
        seen.append(out)
        return out

    monkeypatch.setattr(mod, "two_layer_example_grads", spy)
    model = _tiny(shared_trunk=False).double().eval()
    gen = torch.Generator().manual_seed(5)
    sx = torch.rand(2, 3, 1, 16, 16, generator=gen, dtype=torch.float64)
    sy = torch.tensor([[2, 0, 1], [1, 1, 0]])
    model.predict(sx, sy, torch.rand(2, 2, 1, 16, 16, generator=gen, dtype=torch.float64), n_way=3)
    g1, g2 = seen[-1]  # the base learner's call (the first one is u's representation loss)
    w1, w2 = model.w1.weight, model.w2.weight
    for b in range(2):
        for i in range(3):
            logits = model.w2(torch.relu(model.w1(model.base_trunk(sx[b, i : i + 1]))))[:, :3]
            r1, r2 = torch.autograd.grad(F.cross_entropy(logits, sy[b, i : i + 1]), (w1, w2))
            torch.testing.assert_close(g1[b, i], r1)
            torch.testing.assert_close(g2[b, i], r2[:3])
    torch.testing.assert_close(r2[3:], torch.zeros_like(r2[3:]))


def test_fast_weight_memory_read_equals_naive_reference() -> None:
    gen = torch.Generator().manual_seed(1)
    b, q, s, p, o, i = 2, 3, 5, 4, 3, 6
    dt = torch.float64
    r = torch.randn(b, q, p, generator=gen, dtype=dt)
    keys = torch.randn(b, s, p, generator=gen, dtype=dt)
    mem = torch.randn(b, s, o, i, generator=gen, dtype=dt)
    x = torch.randn(b, q, i, generator=gen, dtype=dt)
    mask = torch.tensor([[True, False, True, True, False], [True] * 5])
    attn = read_attention(r, keys, mask, 3.0)
    out = apply_read_fast_linear(attn, mem, x)
    for bb in range(b):
        for qq in range(q):
            rows = [k for k in range(s) if mask[bb, k]]
            cos = torch.stack([F.cosine_similarity(r[bb, qq], keys[bb, k], dim=0) for k in rows])
            a = torch.softmax(3.0 * cos, 0)
            w_star = sum(a[t] * mem[bb, k] for t, k in enumerate(rows))  # softmax(a)^T M
            torch.testing.assert_close(out[bb, qq], w_star @ x[bb, qq])
            torch.testing.assert_close(attn[bb, qq, rows], a)
    assert (attn[0, :, [1, 4]] == 0).all()
    assert (read_attention(r, keys, torch.zeros(b, s, dtype=torch.bool), 3.0) == 0).all()


def _tiny(**kw: object) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_metanet(n_way=5, image_shape=(1, 16, 16), **{**SMALL, **kw})


@pytest.mark.parametrize("task_fast_weights", [True, False])
def test_masked_predict_ignores_masked_items(task_fast_weights: bool) -> None:
    model = _tiny(task_fast_weights=task_fast_weights).eval()
    with torch.no_grad():  # the generators' read-outs start at zero: make the fast paths active
        for prm in model.parameters():
            prm.add_(0.2 * torch.randn_like(prm))
    gen = torch.Generator().manual_seed(2)
    sx = torch.rand(2, 7, 1, 16, 16, generator=gen)
    sy = torch.tensor([[0, 1, 2, 3, 4, 0, 1], [4, 3, 2, 1, 0, 4, 3]])
    qx = torch.rand(2, 4, 1, 16, 16, generator=gen)
    mask = torch.ones(2, 7, dtype=torch.bool)
    mask[0, 2] = False  # class 2 of episode 0 has no present item
    mask[1, 5] = False
    with torch.no_grad():
        a = model.predict(sx, sy, qx, n_way=5, support_mask=mask)
        sx2 = sx.clone()
        sx2[0, 2] = torch.rand(1, 16, 16, generator=gen)
        sx2[1, 5] = 1.0 - sx2[1, 5]
        b = model.predict(sx2, sy, qx, n_way=5, support_mask=mask)
        full = model.predict(sx2, sy, qx, n_way=5)
    torch.testing.assert_close(a, b)
    assert torch.isneginf(a[0, :, 2]).all() and torch.isfinite(a[0, :, [0, 1, 3, 4]]).all()
    assert torch.isfinite(a[1]).all()
    assert not torch.allclose(full[1], b[1])  # the mask really removes the item
    assert hasattr(model, "d") == task_fast_weights


def test_fewer_ways_and_bad_input() -> None:
    model = _tiny(fast_layers=1).eval()
    sx, qx = torch.rand(1, 3, 1, 16, 16), torch.rand(1, 2, 1, 16, 16)
    assert model.predict(sx, torch.tensor([[0, 1, 2]]), qx, n_way=3).shape == (1, 2, 3)
    with pytest.raises(ValueError, match="n_way=6 is outside 1..5"):
        model.predict(sx, torch.tensor([[0, 1, 2]]), qx, n_way=6)
    with pytest.raises(ValueError, match=r"MetaNet: support_x \(1, 3, 1, 16, 16\), support_y \(1, 2\)"):
        model.predict(sx, torch.tensor([[0, 1]]), qx, n_way=3)
    with pytest.raises(ValueError, match="fast_layers must be 1 or 2, got 3"):
        _tiny(fast_layers=3)
    with pytest.raises(ValueError, match="backbone_channels=8 applies to backbones 'conv4' and 'conv4_stride' only"):
        _tiny(backbone="resnet12")
    with pytest.raises(ValueError, match="metanet: hidden must be a positive int, got 0"):
        _tiny(hidden=0)
    with pytest.raises(KeyError, match="unknown backbone 'conv5'"):
        _tiny(backbone="conv5")


def _train_and_score(model: torch.nn.Module, train, test, *, steps: int, image_lr: float = 2e-3) -> float:
    sampler = EpisodeSampler(train, n_way=5, k_shot=1, n_query=5, batch_size=8, seed=0)
    opt = torch.optim.Adam(model.parameters(), lr=image_lr)
    model.train()
    for _ in range(steps):
        out = model(sampler.sample())
        opt.zero_grad()
        out.loss.backward()
        opt.step()
    model.eval()
    evaluator = EpisodeSampler(test, n_way=5, k_shot=1, n_query=5, batch_size=40, seed=1)
    with torch.no_grad():
        out = model(evaluator.sample())
    assert torch.isfinite(out.logits).all()
    return float(out.accuracy().mean())


def test_metanet_learns_on_synthetic() -> None:
    """Fresh 5-way 1-shot episodes of the training classes (labels permuted per episode, so the
    support set must be used); synthetic random patterns do not transfer to unseen classes
    through a pooled conv net, so generalisation is left to the Omniglot test."""
    easy = load_dataset("synthetic", "train", num_classes=20, per_class=10, image_size=16, seed=0)
    torch.manual_seed(0)
    model = build_learner("metanet", n_way=5, image_shape=(1, 16, 16), shared_trunk=True, **SMALL)
    acc = _train_and_score(model, easy, easy, steps=STEPS)
    print(f"metanet synthetic 5w1s accuracy after {STEPS} steps: {acc:.3f}")
    assert acc > 0.8  # chance is 0.2


@pytest.mark.slow
def test_metanet_trains_on_bundled_omniglot() -> None:
    try:
        train = load_dataset("omniglot", split="minimal/train", image_size=28)
        test = load_dataset("omniglot", split="minimal/test", image_size=28)
    except (KeyError, ValueError, FileNotFoundError) as exc:
        pytest.skip(f"bundled Omniglot not available: {exc}")
    torch.manual_seed(0)
    model = build_learner("metanet", n_way=5, image_shape=(1, 28, 28), backbone_channels=32)
    acc = _train_and_score(model, train, test, steps=300, image_lr=1e-3)
    print(f"metanet omniglot minimal 5w1s accuracy after 300 steps: {acc:.3f}")
    assert acc > 0.5
