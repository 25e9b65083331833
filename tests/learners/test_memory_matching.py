"""Memory Matching Networks: key-value memory writes, matching, masking, write policies, learning."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import metamem.learners  # noqa: F401  (registers the learners and backbones)
from metamem.data import load_dataset
from metamem.episodes.sampler import EpisodeSampler
from metamem.learners.base import build_learner
from metamem.learners.memory_matching import memory_class_logits, write_key_value_memory
from metamem.memory import WRITE_POLICIES, CachedUniformWrite, SlotMemory

POLICIES = ["lru", "usage", "uniform", "cached_uniform"]
SMALL = dict(backbone_channels=8, key_dim=16, context_hidden=16, slots=8)
STEPS = 60


def test_every_registered_policy_is_covered() -> None:
    assert set(POLICIES) == set(WRITE_POLICIES.names())


def _naive_write(memory: SlotMemory, keys, values, mask):
    """One episode at a time, absent items skipped outright, slot updates written out per slot."""
    b_size, steps, d = keys.shape
    out_k = torch.zeros(b_size, memory.slots, d, dtype=keys.dtype)
    out_v = torch.zeros(b_size, memory.slots, values.shape[-1], dtype=keys.dtype)
    cached = isinstance(memory.policy, CachedUniformWrite)
    for b in range(b_size):
        state = memory.init_state(1, dtype=keys.dtype)
        pending: list[int] = []
        for t in range(steps):
            if not mask[b, t]:
                continue
            _, state = memory.step(keys[b : b + 1, t], state, t, steps)
            w = state.write_weights[0].sum(0).clamp(max=1.0)
            if cached:
                pending.append(t)
                if not memory.policy.is_write_step(t, steps):
                    continue
                k, v = keys[b, pending].mean(0), values[b, pending].mean(0)
                pending = []
            else:
                k, v = keys[b, t], values[b, t]
            for i in range(memory.slots):
                out_k[b, i] = out_k[b, i] * (1 - w[i]) + w[i] * k
                out_v[b, i] = out_v[b, i] * (1 - w[i]) + w[i] * v
    return out_k, out_v


@pytest.mark.parametrize("policy", POLICIES)
def test_key_value_write_equals_naive_reference(policy: str) -> None:
    torch.manual_seed(0)
    d, slots = 5, 3
    options = {"cache_size": 2} if policy == "cached_uniform" else None
    memory = SlotMemory(d, slots=slots, width=d, read_heads=1, policy=policy, policy_options=options).double()
    gen = torch.Generator().manual_seed(1)
    keys = torch.randn(3, 7, d, generator=gen, dtype=torch.float64)
    values = F.one_hot(torch.randint(0, 4, (3, 7), generator=gen), 4).double()
    mask = torch.ones(3, 7, dtype=torch.bool)
    mask[0, [1, 4]] = False
    mask[2, 0] = False
    big_k, big_v, _ = write_key_value_memory(memory, keys, values, mask)
    ref_k, ref_v = _naive_write(memory, keys, values, mask)
    torch.testing.assert_close(big_k, ref_k)
    torch.testing.assert_close(big_v, ref_v)
    assert (big_v.sum(-1) <= 1 + 1e-12).all() and big_v.sum(-1).amax() > 0.1


def test_cached_uniform_writes_the_mean_label_of_its_cache() -> None:
    """7 items, 2 slots, cache 5: a write every min(5, 7 // 3) = 2 steps, each storing 2 items."""
    torch.manual_seed(0)
    memory = SlotMemory(4, slots=2, width=4, read_heads=1, policy="cached_uniform").double()
    keys = torch.randn(1, 7, 4, dtype=torch.float64)
    values = F.one_hot(torch.tensor([[0, 1, 2, 2, 0, 1, 2]]), 3).double()
    assert [t for t in range(7) if memory.policy.is_write_step(t, 7)] == [1, 3, 5]
    _, big_v, _ = write_key_value_memory(memory, keys, values)
    # every write stores a mixture of two labels, so no slot holds more than half of one label
    # unless the two items share it (items 2, 3 have label 2)
    assert big_v.amax() <= 1.0 and big_v[..., 1].amax() <= 0.5 + 1e-9
    # ...and it did write: every slot holds label mass and every label reached the memory
    # (a policy that never writes leaves zeros and fails here)
    assert (big_v.sum(-1) > 0.1).all() and (big_v.sum(1) > 0.1).all()


def test_memory_class_logits_equal_naive_reference_and_gradcheck() -> None:
    gen = torch.Generator().manual_seed(3)
    q = torch.randn(2, 3, 4, generator=gen, dtype=torch.float64)
    keys = torch.randn(2, 5, 4, generator=gen, dtype=torch.float64)
    values = torch.rand(2, 5, 3, generator=gen, dtype=torch.float64)
    values[0, 2] = 0.0  # an empty slot
    values[1, :, 1] = 0.0  # a class with no mass
    out = memory_class_logits(q, keys, values, 2.5)
    for b in range(2):
        for i in range(3):
            num = torch.zeros(3, dtype=torch.float64)
            den = torch.zeros((), dtype=torch.float64)
            for s in range(5):
                e = torch.exp(2.5 * F.cosine_similarity(q[b, i], keys[b, s], dim=0))
                num = num + e * values[b, s]
                den = den + e * values[b, s].sum()
            ref = (num / den).clamp_min(torch.finfo(torch.float64).tiny).log()
            torch.testing.assert_close(out[b, i], ref)
    assert torch.isfinite(out).all()
    q.requires_grad_(True)
    keys.requires_grad_(True)
    torch.autograd.gradcheck(lambda a, c: memory_class_logits(a, c, values, 2.5)[..., [0, 2]], (q, keys))


def _tiny(policy: str = "lru", **kw: object) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_learner("memory_matching", n_way=5, image_shape=(1, 16, 16), policy=policy, **{**SMALL, **kw})


@pytest.mark.parametrize("policy", POLICIES)
def test_masked_predict_ignores_masked_items(policy: str) -> None:
    model = _tiny(policy, slots=4).eval()
    with torch.no_grad():  # FiLM starts near the identity: make the contextual learner matter
        model.film.weight.normal_(0, 0.3)
    gen = torch.Generator().manual_seed(2)
    sx = torch.rand(2, 7, 1, 16, 16, generator=gen)
    sy = torch.tensor([[0, 1, 2, 3, 4, 0, 1], [4, 3, 2, 1, 0, 4, 3]])
    qx = torch.rand(2, 4, 1, 16, 16, generator=gen)
    mask = torch.ones(2, 7, dtype=torch.bool)
    mask[0, 2] = False  # class 2 of episode 0 has no present item
    mask[1, [0, 1, 5]] = False  # t = 1 and 5 are write steps of cached_uniform
    with torch.no_grad():
        a = model.predict(sx, sy, qx, n_way=5, support_mask=mask)
        sx2 = sx.clone()
        sx2[~mask] = torch.rand(4, 1, 16, 16, generator=gen)
        b = model.predict(sx2, sy, qx, n_way=5, support_mask=mask)
        full = model.predict(sx2, sy, qx, n_way=5)
    torch.testing.assert_close(a, b)
    assert torch.isneginf(a[0, :, 2]).all() and torch.isfinite(a[0, :, [0, 1, 3, 4]]).all()
    assert torch.isneginf(a[1, :, 4]).all()  # both items of label 4 are masked in episode 1
    assert not torch.allclose(full[1], b[1])


def test_more_items_than_slots_stays_finite() -> None:
    model = _tiny("lru", slots=2).train()
    ds = load_dataset("synthetic", num_classes=10, per_class=6, image_size=16, seed=1)
    batch = EpisodeSampler(ds, n_way=5, k_shot=2, n_query=2, batch_size=3, seed=0).sample()
    out = model(batch)
    assert torch.isfinite(out.logits).all() and torch.isfinite(out.loss)
    out.loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters()}
    assert all(g is not None and torch.isfinite(g).all() for g in grads.values()), [
        n for n, g in grads.items() if g is None or not torch.isfinite(g).all()]
    assert all(float(g.abs().sum()) > 0 for n, g in grads.items() if n.startswith(("key.", "film."))), (
        "no gradient reaches the key projection / FiLM through the overfull memory")


def test_new_slot_bias_gives_each_support_item_its_own_slot() -> None:
    """With the LRU gate's bias at -4, 7 items written to 8 fresh slots land one to a slot (the
    paper's write of an unseen class); at the default bias 0 they blend into shared slots."""
    torch.manual_seed(0)
    keys, onehot = torch.randn(3, 7, 16), torch.eye(7).expand(3, -1, -1)
    purity = {}
    for bias in (0.0, -4.0):
        net = build_learner("memory_matching", n_way=7, image_shape=(1, 16, 16), **SMALL, new_slot_bias=bias)
        if bias:
            assert float(net.memory.interface.bias[net.memory.read_size].detach()) == bias
        with torch.no_grad():
            _, values, _ = write_key_value_memory(net.memory, keys, onehot)
        purity[bias] = values.max(-1).values.sort(-1, descending=True).values[..., :7]  # [B, 7]
    assert (purity[-4.0] > 0.9).all()
    assert purity[0.0].mean() < 0.7
    with pytest.raises(ValueError, match="new_slot_bias applies to policy 'lru' only"):
        build_learner("memory_matching", n_way=5, image_shape=(1, 16, 16), **{**SMALL, "policy": "usage"},
                      new_slot_bias=-4.0)


def test_bad_input_errors() -> None:
    valid = "cached_uniform, lru, uniform, usage"
    with pytest.raises(ValueError, match=f"memory_matching: unknown write policy 'fifo'.*{valid}"):
        _tiny("fifo")
    with pytest.raises(ValueError, match="memory_matching: slots must be a positive int, got 0"):
        _tiny(slots=0)
    with pytest.raises(ValueError, match="read_sharpness must be > 0"):
        _tiny(read_sharpness=0.0)
    with pytest.raises(ValueError, match="backbone_channels=8 applies to backbones 'conv4' and 'conv4_stride' only"):
        _tiny(backbone="resnet12")
    model = _tiny()
    sx, sy, qx = torch.rand(1, 3, 1, 16, 16), torch.zeros(1, 2, dtype=torch.long), torch.rand(1, 2, 1, 16, 16)
    with pytest.raises(ValueError, match=r"MemoryMatchingNet: support_x \(1, 3, 1, 16, 16\), support_y \(1, 2\)"):
        model.predict(sx, sy, qx, n_way=2)


def _train(model: torch.nn.Module, ds, *, steps: int, lr: float = 2e-3) -> None:
    sampler = EpisodeSampler(ds, n_way=5, k_shot=1, n_query=5, batch_size=8, seed=0)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(steps):
        out = model(sampler.sample())
        opt.zero_grad()
        out.loss.backward()
        opt.step()
    model.eval()


def _score(model: torch.nn.Module, ds, *, n_way: int, k_shot: int, episodes: int = 40) -> float:
    sampler = EpisodeSampler(ds, n_way=n_way, k_shot=k_shot, n_query=3, batch_size=episodes, seed=1)
    with torch.no_grad():
        out = model(sampler.sample())
    assert out.logits.shape == (episodes, n_way * 3, n_way) and torch.isfinite(out.logits).all()
    return float(out.accuracy().mean())


@pytest.mark.parametrize("policy", POLICIES)
def test_learns_on_synthetic_with_each_policy(policy: str) -> None:
    """60 steps; fresh episodes of the training classes (labels permuted per episode); one model then
    also serves other ways and shots. (Random synthetic patterns do not transfer to unseen
    classes through a pooled conv net; the Omniglot test checks generalisation.)"""
    easy = load_dataset("synthetic", "train", num_classes=20, per_class=10, image_size=16, seed=0)
    model = _tiny(policy)
    _train(model, easy, steps=STEPS)
    acc = _score(model, easy, n_way=5, k_shot=1)
    acc_10w2s = _score(model, easy, n_way=10, k_shot=2)
    print(f"memory_matching[{policy}] synthetic 5w1s {acc:.3f}, same model 10w2s {acc_10w2s:.3f}")
    assert acc > 0.8  # chance 0.2
    assert acc_10w2s > 0.25  # chance 0.1; 20 support items > 8 slots: the memory must forget


@pytest.mark.slow
def test_trains_on_bundled_omniglot() -> None:
    try:
        train = load_dataset("omniglot", split="minimal/train", image_size=28)
        test = load_dataset("omniglot", split="minimal/test", image_size=28)
    except (KeyError, ValueError, FileNotFoundError) as exc:
        pytest.skip(f"bundled Omniglot not available: {exc}")
    torch.manual_seed(0)
    model = build_learner("memory_matching", n_way=5, image_shape=(1, 28, 28), backbone_channels=32, slots=32)
    _train(model, train, steps=300, lr=1e-3)
    acc = _score(model, test, n_way=5, k_shot=1, episodes=100)
    acc_20w = _score(model, test, n_way=20, k_shot=1, episodes=50)
    print(f"memory_matching omniglot minimal/test after 300 steps: 5w1s {acc:.3f}, 20w1s {acc_20w:.3f}")
    assert acc > 0.5 and acc_20w > 0.2
