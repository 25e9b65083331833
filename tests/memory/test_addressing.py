"""Content addressing and reads against naive loops (S=7, D=5, R=3)."""

from __future__ import annotations

import math

import pytest
import torch

from metamem.memory import content_weights, cosine_similarity, read_memory

B, S, D, R = 2, 7, 5, 3


def _naive_cosine(keys: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
    out = torch.empty(keys.shape[0], keys.shape[1], memory.shape[1], dtype=keys.dtype)
    for b in range(keys.shape[0]):
        for r in range(keys.shape[1]):
            for i in range(memory.shape[1]):
                k, m = keys[b, r], memory[b, i]
                out[b, r, i] = float(k @ m) / (math.sqrt(float(k @ k)) * math.sqrt(float(m @ m)))
    return out


def _rand(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_cosine_matches_naive_loop() -> None:
    keys, memory = _rand(B, R, D, seed=1), _rand(B, S, D, seed=2)
    torch.testing.assert_close(cosine_similarity(keys, memory), _naive_cosine(keys, memory), atol=1e-7, rtol=1e-7)


def test_content_weights_is_sharpened_softmax() -> None:
    keys, memory = _rand(B, R, D, seed=1), _rand(B, S, D, seed=2)
    strength = 1 + _rand(B, R, seed=3).abs()
    w = content_weights(memory, keys, strength)
    cos = _naive_cosine(keys, memory)
    for b in range(B):
        for r in range(R):
            e = [math.exp(float(strength[b, r] * cos[b, r, i])) for i in range(S)]
            ref = torch.tensor([x / sum(e) for x in e], dtype=torch.float64)
            torch.testing.assert_close(w[b, r], ref, atol=1e-7, rtol=1e-7)
    torch.testing.assert_close(content_weights(memory, keys), torch.softmax(cos, -1), atol=1e-7, rtol=1e-7)


def test_read_matches_naive_sum() -> None:
    memory, w = _rand(B, S, D, seed=4), torch.softmax(_rand(B, R, S, seed=5), -1)
    reads = read_memory(memory, w)
    ref = torch.zeros(B, R, D, dtype=torch.float64)
    for b in range(B):
        for r in range(R):
            for i in range(S):
                ref[b, r] += w[b, r, i] * memory[b, i]
    torch.testing.assert_close(reads, ref)


@pytest.mark.parametrize("k", [1, 2, 6])
def test_top_k_keeps_exactly_k_renormalised(k: int) -> None:
    keys, memory = _rand(B, R, D, seed=1), _rand(B, S, D, seed=2)
    strength = 1 + _rand(B, R, seed=3).abs()
    dense = content_weights(memory, keys, strength)
    sparse = content_weights(memory, keys, strength, top_k=k)
    assert ((sparse != 0).sum(-1) == k).all()
    torch.testing.assert_close(sparse.sum(-1), torch.ones(B, R, dtype=torch.float64))
    kept, idx = dense.topk(k, dim=-1)
    torch.testing.assert_close(sparse.gather(-1, idx), kept / kept.sum(-1, keepdim=True))
    if k == 1:
        assert set(sparse.unique().tolist()) == {0.0, 1.0}


def test_zero_memory_is_finite_with_finite_gradient() -> None:
    memory = torch.zeros(B, S, D, dtype=torch.float64, requires_grad=True)
    keys = torch.zeros(B, R, D, dtype=torch.float64, requires_grad=True)
    cos = cosine_similarity(keys, memory)
    assert torch.isfinite(cos).all() and (cos == 0).all()
    w = content_weights(memory, keys, torch.ones(B, R, dtype=torch.float64))
    torch.testing.assert_close(w, torch.full_like(w, 1 / S))
    read_memory(memory, w).sum().backward()
    assert torch.isfinite(memory.grad).all() and torch.isfinite(keys.grad).all()
    keys2 = _rand(B, R, D, seed=9).requires_grad_()
    memory2 = torch.zeros(B, S, D, dtype=torch.float64, requires_grad=True)
    (content_weights(memory2, keys2) * _rand(B, R, S, seed=8)).sum().backward()
    assert torch.isfinite(memory2.grad).all() and torch.isfinite(keys2.grad).all()


@pytest.mark.parametrize("top_k", [None, 2, 1])
def test_read_gradcheck(top_k: int | None) -> None:
    memory = _rand(B, S, D, seed=1).requires_grad_()
    keys = _rand(B, R, D, seed=2).requires_grad_()
    strength = (1 + _rand(B, R, seed=3).abs()).requires_grad_()

    def f(m: torch.Tensor, k: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        return read_memory(m, content_weights(m, k, s, top_k=top_k))

    assert torch.autograd.gradcheck(f, (memory, keys, strength), fast_mode=True)


def test_wrong_key_width_names_the_widths() -> None:
    with pytest.raises(ValueError, match=r"key width 6 does not match the slot width D=5"):
        content_weights(torch.zeros(1, S, D), torch.zeros(1, R, 6))


@pytest.mark.parametrize("k", [0, 8, True])
def test_bad_top_k(k: object) -> None:
    with pytest.raises(ValueError, match=rf"top_k must be an int in 1..S=7, got {k!r}"):
        content_weights(torch.ones(1, S, D), torch.ones(1, R, D), top_k=k)  # type: ignore[arg-type]
