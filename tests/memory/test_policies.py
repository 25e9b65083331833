"""Write rules against hand-computed values and naive per-episode loops (S=7, D=5, R=3)."""

from __future__ import annotations

import math

import pytest
import torch

from metamem.memory import (
    WRITE_POLICIES,
    MemoryCore,
    MemoryState,
    SlotMemory,
    allocation_weights,
    uniform_write_steps,
)

B, S, D, R, H = 2, 7, 5, 3, 6
F64 = torch.float64


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _state(batch: int = B, write_heads: int = R, seed: int = 0) -> MemoryState:
    g = _gen(seed)
    return MemoryState(
        memory=torch.randn(batch, S, D, generator=g, dtype=F64),
        usage=torch.rand(batch, S, generator=g, dtype=F64),  # distinct (no ties)
        read_weights=torch.softmax(torch.randn(batch, R, S, generator=g, dtype=F64), -1),
        write_weights=torch.zeros(batch, write_heads, S, dtype=F64),
        cache=torch.zeros(batch, 0, 0, dtype=F64),
    )


def _sig(x: float) -> float:
    return 1 / (1 + math.exp(-x))


# ---------------------------------------------------------------- lru


def _naive_lru(state: MemoryState, raw: torch.Tensor, zero: bool) -> tuple[torch.Tensor, torch.Tensor]:
    memory = state.memory.clone()
    ww = torch.zeros(B, R, S, dtype=F64)
    for b in range(B):
        order = sorted(range(S), key=lambda i: (float(state.usage[b, i]), i))
        if zero:
            memory[b, order[0]] = 0.0
        for r in range(R):
            gate = _sig(float(raw[b, r]))
            add = torch.tanh(raw[b, R + r * D : R + (r + 1) * D])
            for i in range(S):
                ww[b, r, i] = gate * state.read_weights[b, r, i] + (1 - gate) * (i == order[r])
                memory[b, i] += ww[b, r, i] * add
    return memory, ww


@pytest.mark.parametrize("zero", [True, False])
def test_lru_matches_naive_loop(zero: bool) -> None:
    policy = WRITE_POLICIES.build("lru", slots=S, width=D, read_heads=R, hidden_size=H, zero_before_write=zero)
    state = _state()
    raw = torch.randn(B, policy.interface_size, generator=_gen(1), dtype=F64)
    memory, usage, ww = policy.write(raw, state, torch.zeros(B, R, D, dtype=F64))
    ref_memory, ref_ww = _naive_lru(state, raw, zero)
    torch.testing.assert_close(memory, ref_memory)
    torch.testing.assert_close(ww, ref_ww)
    assert usage is state.usage


def test_lru_writes_on_least_used_slot_after_zeroing_it() -> None:
    policy = WRITE_POLICIES.build("lru", slots=S, width=D, read_heads=1, hidden_size=H)
    memory = torch.full((1, S, D), 7.0, dtype=F64)
    usage = torch.tensor([[0.9, 0.8, 0.7, 0.1, 0.6, 0.5, 0.4]], dtype=F64)  # slot 3 least used
    reads = torch.zeros(1, 1, S, dtype=F64)
    reads[0, 0, 5] = 1.0
    state = MemoryState(memory, usage, reads, torch.zeros(1, 1, S, dtype=F64), torch.zeros(1, 0, 0, dtype=F64))
    add = torch.tensor([0.1, -0.2, 0.3, -0.4, 0.5], dtype=F64)
    raw = torch.cat((torch.tensor([[-50.0]], dtype=F64), torch.atanh(add)[None]), 1)  # gate σ ≈ 0
    new_memory, _, ww = policy.write(raw, state, torch.zeros(1, 1, D, dtype=F64))
    torch.testing.assert_close(ww[0, 0], torch.eye(S, dtype=F64)[3], atol=1e-12, rtol=0)
    torch.testing.assert_close(new_memory[0, 3], add)  # old 7s were zeroed, then the add vector
    others = [i for i in range(S) if i != 3]
    torch.testing.assert_close(new_memory[0, others], memory[0, others], atol=1e-12, rtol=0)
    # gate σ ≈ 1: the write follows the previous read weights (slot 5), slot 3 still zeroed
    raw[0, 0] = 50.0
    new_memory, _, ww = policy.write(raw, state, torch.zeros(1, 1, D, dtype=F64))
    torch.testing.assert_close(new_memory[0, 5], 7.0 + add)
    torch.testing.assert_close(new_memory[0, 3], torch.zeros(D, dtype=F64))


def test_lru_heads_take_the_r_least_used_slots_and_write_key() -> None:
    policy = WRITE_POLICIES.build("lru", slots=S, width=D, read_heads=R, hidden_size=H, write_key=True)
    assert policy.interface_size == R
    state = _state(batch=1)
    keys = torch.randn(1, R, D, generator=_gen(3), dtype=F64)
    _, _, ww = policy.write(torch.full((1, R), -60.0, dtype=F64), state, keys)
    order = torch.argsort(state.usage[0])[:R]
    assert ww[0].argmax(-1).tolist() == order.tolist()
    m0 = state.memory.clone()
    m0[0, order[0]] = 0
    torch.testing.assert_close(policy.write(torch.full((1, R), -60.0, dtype=F64), state, keys)[0],
                               m0 + torch.einsum("brs,brd->bsd", ww, keys))


def test_lru_usage_decays_by_gamma() -> None:
    policy = WRITE_POLICIES.build("lru", slots=S, width=D, read_heads=R, hidden_size=H, gamma=0.9)
    usage = torch.rand(B, S, generator=_gen(0), dtype=F64)
    zeros = torch.zeros(B, R, S, dtype=F64)
    torch.testing.assert_close(policy.after_read(usage, zeros, zeros), 0.9 * usage)
    rw, ww = torch.rand(B, R, S, dtype=F64), torch.rand(B, R, S, dtype=F64)
    torch.testing.assert_close(policy.after_read(usage, ww, rw), 0.9 * usage + rw.sum(1) + ww.sum(1))


def test_lru_step_usage_update_end_to_end() -> None:
    torch.manual_seed(0)
    mem = SlotMemory(H, slots=S, width=D, read_heads=R, policy="lru", policy_options={"gamma": 0.8}).double()
    state = _state()
    _, new = mem.step(torch.randn(B, H, dtype=F64), state, 0, 10)
    torch.testing.assert_close(new.usage, 0.8 * state.usage + new.read_weights.sum(1) + new.write_weights.sum(1))


# ---------------------------------------------------------------- usage (DNC)


def _naive_alloc(u: list[float]) -> list[float]:
    order = sorted(range(len(u)), key=lambda i: (u[i], i))
    out, prod = [0.0] * len(u), 1.0
    for j in order:
        out[j] = (1 - u[j]) * prod
        prod *= u[j]
    return out


def test_allocation_matches_naive_loop() -> None:
    usage = torch.rand(3, S, generator=_gen(5), dtype=F64)
    usage[0, 2] = usage[0, 4]  # a tie
    usage[1] = 1.0
    ref = torch.tensor([_naive_alloc(row.tolist()) for row in usage], dtype=F64)
    torch.testing.assert_close(allocation_weights(usage), ref)
    torch.testing.assert_close(allocation_weights(torch.zeros(1, S, dtype=F64))[0], torch.eye(S, dtype=F64)[0])


def test_usage_write_matches_naive_loop() -> None:
    policy = WRITE_POLICIES.build("usage", slots=S, width=D, read_heads=R, hidden_size=H)
    state = _state(write_heads=1)
    raw = torch.randn(B, policy.interface_size, generator=_gen(2), dtype=F64)
    memory, usage, ww = policy.write(raw, state, torch.zeros(B, R, D, dtype=F64))
    for b in range(B):
        key, beta = torch.tanh(raw[b, :D]), 1 + math.log1p(math.exp(float(raw[b, D])))
        erase, add = torch.sigmoid(raw[b, D + 1 : 2 * D + 1]), torch.tanh(raw[b, 2 * D + 1 : 3 * D + 1])
        free = torch.sigmoid(raw[b, 3 * D + 1 : 3 * D + 1 + R])
        ga, gw = _sig(float(raw[b, -2])), _sig(float(raw[b, -1]))
        u = [float(state.usage[b, i]) for i in range(S)]
        for i in range(S):
            for r in range(R):
                u[i] *= 1 - float(free[r] * state.read_weights[b, r, i])
        alloc = _naive_alloc(u)
        sims = []
        for i in range(S):
            m = state.memory[b, i]
            sims.append(beta * float(key @ m) / (math.sqrt(float(key @ key)) * math.sqrt(float(m @ m))))
        z = sum(math.exp(x) for x in sims)
        for i in range(S):
            w = gw * (ga * alloc[i] + (1 - ga) * math.exp(sims[i]) / z)
            assert float(ww[b, 0, i]) == pytest.approx(w, rel=1e-7, abs=1e-12)
            ref_row = state.memory[b, i] * (1 - w * erase) + w * add
            torch.testing.assert_close(memory[b, i], ref_row)
            assert float(usage[b, i]) == pytest.approx(u[i] + w - u[i] * w, rel=1e-7, abs=1e-12)


# ---------------------------------------------------------------- uniform / cached uniform


def test_uniform_schedule_values() -> None:
    assert uniform_write_steps(17, 4) == [2, 5, 8, 11]  # interval ⌊17/5⌋ = 3
    assert uniform_write_steps(50, 4) == [9, 19, 29, 39]  # the paper's L=50, 4 slots
    assert uniform_write_steps(5, 7) == [0, 1, 2, 3, 4]  # T < S+1: dense over T
    assert uniform_write_steps(24, 7) == [2, 5, 8, 11, 14, 17, 20]


@pytest.mark.parametrize("T", [24, 41, 5])
def test_uniform_writes_exactly_at_scheduled_steps(T: int) -> None:
    torch.manual_seed(0)
    core = MemoryCore(4, hidden_size=H, slots=S, width=D, read_heads=R, policy="uniform").double()
    x = torch.randn(B, T + 6, 4, dtype=F64)
    out = core(x, write_steps=T, trace=True)
    expected = uniform_write_steps(T, S)
    for b in range(B):
        assert out.trace.write_steps(b) == expected
    # memory only changes at the write steps
    state = core.init_state(B)
    mem = core.memory
    prev = state.memory.memory
    h = torch.randn(B, H, dtype=F64)
    new = state.memory
    for t in range(T + 3):
        _, new = mem.step(h, new, t, T)
        assert (not torch.equal(new.memory, prev)) == (t in expected)
        prev = new.memory


def test_uniform_with_lru_base_decays_usage_at_hold_steps() -> None:
    torch.manual_seed(0)
    mem = SlotMemory(H, slots=S, width=D, read_heads=R, policy="uniform",
                     policy_options={"base": "lru", "base_options": {"gamma": 0.5}}).double()
    state = _state()
    _, new = mem.step(torch.randn(B, H, dtype=F64), state, 0, 24)  # not a write step
    assert torch.equal(new.memory, state.memory) and not new.write_weights.any()
    torch.testing.assert_close(new.usage, 0.5 * state.usage + new.read_weights.sum(1))


def test_cached_uniform_summarises_cache_and_clears_it() -> None:
    torch.manual_seed(0)
    L, T = 3, 30  # interval min(3, ⌊30/8⌋ = 3) = 3
    mem = SlotMemory(H, slots=S, width=D, read_heads=R, policy="cached_uniform",
                     policy_options={"cache_size": L}).double()
    policy = mem.policy
    state = mem.init_state(B)
    assert state.cache.shape == (B, L, H)
    hs = [torch.randn(B, H, generator=_gen(10 + t), dtype=F64) for t in range(2 * L)]
    writes = []
    for t, h in enumerate(hs):
        before = state
        _, state = mem.step(h, state, t, T)
        writes.append(bool(state.write_weights.any()))
        if t % L == L - 1:
            assert not state.cache.any()  # cleared after the write
            # the write equals the base rule fed with the attention summary of the last L states
            items = torch.stack(hs[t - L + 1 : t + 1], 1)
            prev_reads = torch.bmm(before.read_weights, before.memory).flatten(1)
            scores = torch.stack(
                [policy.score(torch.tanh(policy.query(h) + policy.context(prev_reads) + policy.item(items[:, j])))[:, 0]
                 for j in range(L)], 1)
            summary = (torch.softmax(scores, 1)[:, :, None] * items).sum(1)
            raw = torch.nn.functional.linear(summary, mem.interface.weight[mem.read_size:], mem.interface.bias[mem.read_size:])
            ref_memory, _, _ = policy.base.write(raw, before, None)  # type: ignore[arg-type]
            torch.testing.assert_close(state.memory, ref_memory)
        else:
            torch.testing.assert_close(state.cache[:, -1], h)
            torch.testing.assert_close(state.memory, before.memory)
    assert writes == [t % L == L - 1 for t in range(2 * L)]


# ---------------------------------------------------------------- gradients


@pytest.mark.parametrize("name", WRITE_POLICIES.names())
def test_step_gradcheck(name: str) -> None:
    """Two steps of SlotMemory (the second writes for every rule) in float64."""
    torch.manual_seed(0)
    options = {"cache_size": 2} if name == "cached_uniform" else {}
    mem = SlotMemory(H, slots=S, width=D, read_heads=R, policy=name, policy_options=options).double()
    base = mem.init_state(B)
    g = _gen(4)
    h0 = torch.randn(B, H, generator=g, dtype=F64, requires_grad=True)
    h1 = torch.randn(B, H, generator=g, dtype=F64, requires_grad=True)
    memory = torch.randn(B, S, D, generator=g, dtype=F64, requires_grad=True)
    usage = torch.rand(B, S, generator=g, dtype=F64).requires_grad_()
    T = 2 * (S + 1)  # uniform interval 2: step 1 writes; cached interval min(2, 2) = 2

    def f(h0: torch.Tensor, h1: torch.Tensor, memory: torch.Tensor, usage: torch.Tensor) -> tuple[torch.Tensor, ...]:
        state = base._replace(memory=memory, usage=usage)
        r0, state = mem.step(h0, state, 0, T)
        r1, state = mem.step(h1, state, 1, T)
        return r0, r1, state.memory, state.usage

    assert mem.policy.is_write_step(1, T)
    assert torch.autograd.gradcheck(f, (h0, h1, memory, usage), fast_mode=True)
