"""Registry-driven contract: every write policy, through MemoryCore, on small odd shapes."""

from __future__ import annotations

import pytest
import torch

from metamem.memory import WRITE_POLICIES, MemoryCore, MemoryState

S, D, R, H, IN, T = 7, 5, 3, 6, 4, 13


def _core(name: str, device: str = "cpu", **kw: object) -> MemoryCore:
    torch.manual_seed(0)
    options = {"cache_size": 2} if name == "cached_uniform" else {}
    core = MemoryCore(IN, hidden_size=H, slots=S, width=D, read_heads=R, policy=name,
                      policy_options=options, **kw)  # type: ignore[arg-type]
    return core.double().to(device)


def _x(batch: int, device: str) -> torch.Tensor:
    return torch.randn(batch, T, IN, generator=torch.Generator().manual_seed(1), dtype=torch.float64).to(device)


def _check(name: str, device: str) -> None:
    core = _core(name, device)
    x = _x(4, device)
    out = core(x, write_steps=T - 3, trace=True)
    assert out.features.shape == (4, T, H + R * D)
    assert torch.isfinite(out.features).all()
    mem = out.state.memory
    assert isinstance(mem, MemoryState)
    assert mem.memory.shape == (4, S, D) and mem.usage.shape == (4, S)
    assert mem.read_weights.shape == (4, R, S)
    assert mem.write_weights.shape == (4, core.memory.write_heads, S)
    assert out.trace is not None and out.trace.read_weights.shape == (4, T, R, S)
    assert len(out.trace.write_steps(0)) > 0
    # each episode's result does not depend on what else is in the batch (B=1 vs B=4)
    for b in range(4):
        single = core(x[b : b + 1], write_steps=T - 3)
        torch.testing.assert_close(single.features[0], out.features[b], atol=1e-10, rtol=1e-10)
        torch.testing.assert_close(single.state.memory.memory[0], mem.memory[b], atol=1e-10, rtol=1e-10)
    # same input, same result; reversing the batch reverses the outputs
    torch.testing.assert_close(core(x.flip(0), write_steps=T - 3).features.flip(0), out.features,
                               atol=1e-10, rtol=1e-10)
    # a backward pass reaches every parameter with finite gradients
    out.features.square().mean().backward()
    for pname, p in core.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname


@pytest.mark.parametrize("name", WRITE_POLICIES.names())
def test_policy_contract_cpu(name: str) -> None:
    _check(name, "cpu")


@pytest.mark.gpu
@pytest.mark.parametrize("name", WRITE_POLICIES.names())
def test_policy_contract_gpu(name: str) -> None:
    _check(name, "cuda")


@pytest.mark.parametrize("name", WRITE_POLICIES.names())
def test_continuing_in_chunks_equals_one_pass(name: str) -> None:
    core = _core(name)
    x = _x(2, "cpu")
    whole = core(x, write_steps=T)
    first = core(x[:, :6], write_steps=T)
    second = core(x[:, 6:], first.state, write_steps=T, start=6)
    torch.testing.assert_close(torch.cat((first.features, second.features), 1), whole.features)


@pytest.mark.parametrize("top_k", [1, 2])
def test_sparse_reads_in_core(top_k: int) -> None:
    core = _core("lru", top_k=top_k)
    out = core(_x(2, "cpu"), trace=True)
    assert out.trace is not None
    assert ((out.trace.read_weights != 0).sum(-1) == top_k).all()


def test_memory_is_wiped_per_call() -> None:
    core = _core("lru")
    x = _x(2, "cpu")
    torch.testing.assert_close(core(x).features, core(x).features)
    fresh = core.init_state(2, dtype=torch.float64)
    assert (fresh.memory.memory == 1e-6).all()
    assert (fresh.memory.usage[:, 0] == 1).all() and fresh.memory.usage[:, 1:].eq(0).all()
    assert (fresh.memory.read_weights[..., 0] == 1).all()
    assert fresh.h.eq(0).all() and fresh.reads.eq(0).all()
    sub = fresh.memory.select(1)
    assert sub.memory.shape == (1, S, D) and sub.detach().usage.shape == (1, S)
