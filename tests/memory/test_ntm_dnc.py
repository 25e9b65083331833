"""NTM addressing and the DNC memory against naive per-element loops (S=7, D=5, R=3, B=2)."""

from __future__ import annotations

import math

import pytest
import torch

from metamem.memory import (
    MEMORY_CORES,
    DNCMemory,
    DNCState,
    NTMMemory,
    build_core,
    circular_shift,
    directional_weights,
    interpolate,
    ntm_address,
    sharpen,
    update_link,
    update_precedence,
)

B, S, D, R, H = 2, 7, 5, 3, 6


def _rand(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _dist(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.softmax(_rand(*shape, seed=seed), -1)


# ---------------------------------------------------------------------------- naive references
def _cos(k: torch.Tensor, m: torch.Tensor) -> float:
    return float(k @ m) / (math.sqrt(float(k @ k) + 1e-8) * math.sqrt(float(m @ m) + 1e-8))


def _naive_content(memory: torch.Tensor, key: torch.Tensor, beta: float) -> list[float]:
    e = [math.exp(beta * _cos(key, memory[i])) for i in range(memory.shape[0])]
    return [x / sum(e) for x in e]


def _naive_shift(w: list[float], s: list[float]) -> list[float]:
    n, size = len(s) // 2, len(w)
    out = [0.0] * size
    for i in range(size):
        for j in range(size):
            for k in range(len(s)):
                if (i - j) % size == (k - n) % size:
                    out[i] += w[j] * s[k]
    return out


def _naive_sharpen(w: list[float], gamma: float) -> list[float]:
    p = [(x + 1e-12) ** gamma for x in w]
    return [x / sum(p) for x in p]


def _naive_address(memory, prev, key, beta, g, s, gamma) -> list[float]:  # type: ignore[no-untyped-def]
    c = _naive_content(memory, key, beta)
    wg = [g * c[i] + (1 - g) * float(prev[i]) for i in range(len(c))]
    return _naive_sharpen(_naive_shift(wg, [float(x) for x in s]), gamma)


def _softplus(x: float) -> float:
    return math.log1p(math.exp(x))


def _sig(x: float) -> float:
    return 1 / (1 + math.exp(-x))


# ---------------------------------------------------------------------------- NTM components
def test_interpolate_matches_loop() -> None:
    c, p, g = _dist(B, R, S, seed=1), _dist(B, R, S, seed=2), torch.sigmoid(_rand(B, R, seed=3))
    out = interpolate(c, p, g)
    for b in range(B):
        for r in range(R):
            for i in range(S):
                assert math.isclose(float(out[b, r, i]), float(g[b, r] * c[b, r, i] + (1 - g[b, r]) * p[b, r, i]))


@pytest.mark.parametrize("width", [1, 3, 5, 7])
def test_circular_shift_matches_loop(width: int) -> None:
    w, s = _dist(B, R, S, seed=1), _dist(B, R, width, seed=2)
    out = circular_shift(w, s)
    for b in range(B):
        for r in range(R):
            ref = _naive_shift(w[b, r].tolist(), s[b, r].tolist())
            torch.testing.assert_close(out[b, r], torch.tensor(ref, dtype=torch.float64))


def test_circular_shift_moves_focus() -> None:
    w = torch.zeros(1, 1, S, dtype=torch.float64)
    w[0, 0, S - 1] = 1.0
    plus_one = torch.tensor([[[0.0, 0.0, 1.0]]], dtype=torch.float64)
    assert int(circular_shift(w, plus_one).argmax()) == 0  # wraps around
    minus_one = torch.tensor([[[1.0, 0.0, 0.0]]], dtype=torch.float64)
    assert int(circular_shift(w, minus_one).argmax()) == S - 2


def test_circular_shift_rejects_bad_width() -> None:
    with pytest.raises(ValueError, match="odd width"):
        circular_shift(_dist(B, R, S), _dist(B, R, 2))
    with pytest.raises(ValueError, match="S=7"):
        circular_shift(_dist(B, R, S), _dist(B, R, 9))


def test_sharpen_matches_loop_and_sharpens() -> None:
    w, gamma = _dist(B, R, S, seed=1), 1 + _rand(B, R, seed=2).abs() * 3
    out = sharpen(w, gamma)
    for b in range(B):
        for r in range(R):
            ref = _naive_sharpen(w[b, r].tolist(), float(gamma[b, r]))
            torch.testing.assert_close(out[b, r], torch.tensor(ref, dtype=torch.float64))
    assert (out.max(-1).values >= w.max(-1).values - 1e-12).all()


def test_ntm_address_matches_loop() -> None:
    memory, prev = _rand(B, S, D, seed=1), _dist(B, R, S, seed=2)
    keys, beta = _rand(B, R, D, seed=3), _rand(B, R, seed=4).abs() * 2
    g, s, gamma = torch.sigmoid(_rand(B, R, seed=5)), _dist(B, R, 3, seed=6), 1 + _rand(B, R, seed=7).abs()
    out = ntm_address(memory, prev, keys, beta, g, s, gamma)
    for b in range(B):
        for r in range(R):
            ref = _naive_address(memory[b], prev[b, r], keys[b, r], float(beta[b, r]), float(g[b, r]),
                                 s[b, r], float(gamma[b, r]))
            torch.testing.assert_close(out[b, r], torch.tensor(ref, dtype=torch.float64))


def test_ntm_address_gradcheck() -> None:
    args = (
        _rand(B, S, D, seed=1), _dist(B, R, S, seed=2), _rand(B, R, D, seed=3), _rand(B, R, seed=4).abs(),
        torch.sigmoid(_rand(B, R, seed=5)), _dist(B, R, 3, seed=6), 1 + _rand(B, R, seed=7).abs(),
    )
    args = tuple(a.clone().requires_grad_() for a in args)
    assert torch.autograd.gradcheck(ntm_address, args)


def _naive_ntm_step(mem: NTMMemory, h: torch.Tensor, memory: torch.Tensor, rw: torch.Tensor, ww: torch.Tensor):  # type: ignore[no-untyped-def]
    """One NTM step for one episode, head by head, from the module's interface weights."""
    raw = (mem.interface.weight.detach() @ h + mem.interface.bias.detach()).tolist()
    n = 2 * mem.shifts + 1

    def params(chunk: list[float]):  # type: ignore[no-untyped-def]
        key = torch.tensor([math.tanh(v) for v in chunk[:D]], dtype=torch.float64)
        beta, g = _softplus(chunk[D]), _sig(chunk[D + 1])
        e = [math.exp(v) for v in chunk[D + 2 : D + 2 + n]]
        s = torch.tensor([v / sum(e) for v in e], dtype=torch.float64)
        gamma = 1 + _softplus(chunk[D + 2 + n])
        return key, beta, g, s, gamma, chunk[D + 3 + n :]

    a = mem.address_size
    reads_raw = [raw[r * a : (r + 1) * a] for r in range(mem.read_heads)]
    off = mem.read_heads * a
    writes_raw = [raw[off + w * mem.write_size : off + (w + 1) * mem.write_size] for w in range(mem.write_heads)]
    new_memory = memory.clone()
    new_ww = []
    erases, adds = [], []
    for w, chunk in enumerate(writes_raw):
        key, beta, g, s, gamma, rest = params(chunk)
        weights = _naive_address(memory, ww[w], key, beta, g, s, gamma)
        new_ww.append(weights)
        erases.append([_sig(v) for v in rest[:D]])
        adds.append([math.tanh(v) for v in rest[D:]])
    for i in range(S):
        for d in range(D):
            value = float(memory[i, d])
            for w in range(len(writes_raw)):
                value *= 1 - new_ww[w][i] * erases[w][d]
            for w in range(len(writes_raw)):
                value += new_ww[w][i] * adds[w][d]
            new_memory[i, d] = value
    new_rw, reads = [], []
    for r, chunk in enumerate(reads_raw):
        key, beta, g, s, gamma, _ = params(chunk)
        weights = _naive_address(new_memory, rw[r], key, beta, g, s, gamma)
        new_rw.append(weights)
        reads.append([sum(weights[i] * float(new_memory[i, d]) for i in range(S)) for d in range(D)])
    f64 = torch.float64
    return torch.tensor(reads, dtype=f64), new_memory, torch.tensor(new_rw, dtype=f64), torch.tensor(new_ww, dtype=f64)


@pytest.mark.parametrize("write_heads,shifts", [(1, 1), (2, 2)])
def test_ntm_memory_two_steps_match_loop(write_heads: int, shifts: int) -> None:
    torch.manual_seed(0)
    mem = NTMMemory(H, slots=S, width=D, read_heads=R, write_heads=write_heads, shifts=shifts).double()
    state = mem.init_state(B)
    hs = [_rand(B, H, seed=10 + t) for t in range(2)]
    refs = []
    for b in range(B):
        memory, rw, ww = state.memory[b], state.read_weights[b], state.write_weights[b]
        out = []
        for h in hs:
            reads, memory, rw, ww = _naive_ntm_step(mem, h[b], memory, rw, ww)
            out.append((reads, memory, rw, ww))
        refs.append(out)
    for t, h in enumerate(hs):
        reads, state = mem.step(h, state, t, 2)
        for b in range(B):
            ref_reads, ref_memory, ref_rw, ref_ww = refs[b][t]
            torch.testing.assert_close(reads[b], ref_reads)
            torch.testing.assert_close(state.memory[b], ref_memory)
            torch.testing.assert_close(state.read_weights[b], ref_rw)
            torch.testing.assert_close(state.write_weights[b], ref_ww)


def test_ntm_memory_gradcheck_two_steps() -> None:
    torch.manual_seed(0)
    mem = NTMMemory(H, slots=S, width=D, read_heads=2, write_heads=1).double()

    def run(h0: torch.Tensor, h1: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        state = mem.init_state(B)._replace(memory=memory)
        r0, state = mem.step(h0, state, 0, 2)
        r1, state = mem.step(h1, state, 1, 2)
        return torch.cat((r0.flatten(), r1.flatten(), state.memory.flatten()))

    args = (_rand(B, H, seed=1).requires_grad_(), _rand(B, H, seed=2).requires_grad_(),
            _rand(B, S, D, seed=3).requires_grad_())
    assert torch.autograd.gradcheck(run, args)


# ---------------------------------------------------------------------------- DNC
def test_precedence_and_link_match_loop() -> None:
    link, p = _rand(B, S, S, seed=1).abs() * 0.1, _dist(B, S, seed=2) * 0.5
    w = _dist(B, S, seed=3) * 0.9
    new_link, new_p = update_link(link, w, p), update_precedence(p, w)
    for b in range(B):
        total = float(w[b].sum())
        for i in range(S):
            assert math.isclose(float(new_p[b, i]), (1 - total) * float(p[b, i]) + float(w[b, i]), rel_tol=1e-12)
            for j in range(S):
                ref = 0.0 if i == j else (1 - float(w[b, i]) - float(w[b, j])) * float(link[b, i, j]) + float(
                    w[b, i]) * float(p[b, j])
                assert math.isclose(float(new_link[b, i, j]), ref, rel_tol=1e-12, abs_tol=1e-15)


def test_directional_weights_match_loop() -> None:
    link, rw = _rand(B, S, S, seed=1), _dist(B, R, S, seed=2)
    fwd, bwd = directional_weights(link, rw)
    for b in range(B):
        for r in range(R):
            for i in range(S):
                f = sum(float(link[b, i, j]) * float(rw[b, r, j]) for j in range(S))
                bb = sum(float(link[b, j, i]) * float(rw[b, r, j]) for j in range(S))
                assert math.isclose(float(fwd[b, r, i]), f, rel_tol=1e-10, abs_tol=1e-12)
                assert math.isclose(float(bwd[b, r, i]), bb, rel_tol=1e-10, abs_tol=1e-12)


def test_link_replays_write_order() -> None:
    """Writing slots 4, 1, 6 in turn with one-hot weights: forward from 4 reaches 1, then 6."""
    link, p = torch.zeros(1, S, S, dtype=torch.float64), torch.zeros(1, S, dtype=torch.float64)
    for slot in (4, 1, 6):
        w = torch.zeros(1, S, dtype=torch.float64)
        w[0, slot] = 1.0
        link, p = update_link(link, w, p), update_precedence(p, w)
    at = torch.zeros(1, 1, S, dtype=torch.float64)
    at[0, 0, 4] = 1.0
    fwd, bwd = directional_weights(link, at)
    assert int(fwd.argmax()) == 1 and float(fwd.max()) == 1.0 and float(bwd.sum()) == 0.0
    fwd2, _ = directional_weights(link, fwd)
    assert int(fwd2.argmax()) == 6
    _, back = directional_weights(link, fwd2)
    assert int(back.argmax()) == 1


def _naive_dnc_step(mem: DNCMemory, h: torch.Tensor, st: DNCState, b: int):  # type: ignore[no-untyped-def]
    """One DNC step for episode b with Python loops over slots and heads."""
    raw = (mem.interface.weight.detach() @ h + mem.interface.bias.detach()).tolist()
    hs = mem.head_size
    memory = st.memory[b].detach()
    usage_prev, rw_prev = st.usage[b].tolist(), st.read_weights[b].tolist()
    link_prev, p_prev = st.link[b].tolist(), st.precedence[b].tolist()
    wr = raw[R * hs :]
    wkey = torch.tensor([math.tanh(v) for v in wr[:D]], dtype=torch.float64)
    wbeta = 1 + _softplus(wr[D])
    erase = [_sig(v) for v in wr[D + 1 : 2 * D + 1]]
    add = [math.tanh(v) for v in wr[2 * D + 1 : 3 * D + 1]]
    free = [_sig(v) for v in wr[3 * D + 1 : 3 * D + 1 + R]]
    ga, gw = _sig(wr[3 * D + 1 + R]), _sig(wr[3 * D + 2 + R])
    usage = []
    for i in range(S):
        psi = 1.0
        for r in range(R):
            psi *= 1 - free[r] * rw_prev[r][i]
        usage.append(usage_prev[i] * psi)
    order = sorted(range(S), key=lambda i: (usage[i], i))
    alloc, prod = [0.0] * S, 1.0
    for i in order:
        alloc[i] = (1 - usage[i]) * prod
        prod *= usage[i]
    cw = _naive_content(memory, wkey, wbeta)
    ww = [gw * (ga * alloc[i] + (1 - ga) * cw[i]) for i in range(S)]
    new_memory = memory.clone()
    for i in range(S):
        for d in range(D):
            new_memory[i, d] = float(memory[i, d]) * (1 - ww[i] * erase[d]) + ww[i] * add[d]
    new_usage = [usage[i] + ww[i] - usage[i] * ww[i] for i in range(S)]
    link = [[0.0 if i == j else (1 - ww[i] - ww[j]) * link_prev[i][j] + ww[i] * p_prev[j] for j in range(S)]
            for i in range(S)]
    prec = [(1 - sum(ww)) * p_prev[i] + ww[i] for i in range(S)]
    rw, reads = [], []
    for r in range(R):
        chunk = raw[r * hs : (r + 1) * hs]
        key = torch.tensor([math.tanh(v) for v in chunk[:D]], dtype=torch.float64)
        c = _naive_content(new_memory, key, 1 + _softplus(chunk[D]))
        e = [math.exp(v) for v in chunk[D + 1 :]]
        pi = [v / sum(e) for v in e]
        f = [sum(link[i][j] * rw_prev[r][j] for j in range(S)) for i in range(S)]
        bk = [sum(link[j][i] * rw_prev[r][j] for j in range(S)) for i in range(S)]
        w = [pi[0] * bk[i] + pi[1] * c[i] + pi[2] * f[i] for i in range(S)]
        rw.append(w)
        reads.append([sum(w[i] * float(new_memory[i, d]) for i in range(S)) for d in range(D)])
    t = lambda v: torch.tensor(v, dtype=torch.float64)  # noqa: E731
    return t(reads), new_memory, t(new_usage), t(rw), t(ww), t(link), t(prec)


def test_dnc_memory_three_steps_match_loop() -> None:
    torch.manual_seed(0)
    mem = DNCMemory(H, slots=S, width=D, read_heads=R).double()
    state = mem.init_state(B)
    for t in range(3):
        h = _rand(B, H, seed=20 + t)
        refs = [_naive_dnc_step(mem, h[b], state, b) for b in range(B)]
        reads, state = mem.step(h, state, t, 3)
        for b, (r_, m_, u_, rw_, ww_, l_, p_) in enumerate(refs):
            torch.testing.assert_close(reads[b], r_)
            torch.testing.assert_close(state.memory[b], m_)
            torch.testing.assert_close(state.usage[b], u_)
            torch.testing.assert_close(state.read_weights[b], rw_)
            torch.testing.assert_close(state.write_weights[b, 0], ww_)
            torch.testing.assert_close(state.link[b], l_)
            torch.testing.assert_close(state.precedence[b], p_)


def test_dnc_memory_gradcheck_two_steps() -> None:
    torch.manual_seed(0)
    mem = DNCMemory(H, slots=5, width=3, read_heads=2).double()

    def run(h0: torch.Tensor, h1: torch.Tensor, h2: torch.Tensor) -> torch.Tensor:
        state = mem.init_state(B)
        outs = []
        for t, h in enumerate((h0, h1, h2)):
            r, state = mem.step(h, state, t, 3)
            outs.append(r.flatten())
        return torch.cat(outs + [state.link.flatten()])

    args = tuple(_rand(B, H, seed=s).requires_grad_() for s in (1, 2, 3))
    assert torch.autograd.gradcheck(run, args)


def test_dnc_size_limit_is_stated() -> None:
    with pytest.raises(ValueError, match="max_link_slots=16"):
        DNCMemory(H, slots=17, width=D, max_link_slots=16)


# ---------------------------------------------------------------------------- cores
@pytest.mark.parametrize("name", ["ntm", "dnc"])
def test_core_contract(name: str) -> None:
    torch.manual_seed(0)
    core = build_core(name, input_size=4, hidden_size=H, slots=S, width=D, read_heads=2).double()
    x = _rand(3, 11, 4, seed=1)
    out = core(x, trace=True)
    assert out.features.shape == (3, 11, H + 2 * D) and torch.isfinite(out.features).all()
    assert out.trace is not None and out.trace.read_weights.shape == (3, 11, 2, S)
    for b in range(3):  # batch independence
        torch.testing.assert_close(core(x[b : b + 1]).features[0], out.features[b], atol=1e-10, rtol=1e-10)
    first = core(x[:, :5])
    second = core(x[:, 5:], first.state, start=5)
    torch.testing.assert_close(torch.cat((first.features, second.features), 1), out.features)
    out.features.square().mean().backward()
    for pname, p in core.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname


def test_core_registry_and_errors() -> None:
    assert {"lstm_slot", "ntm", "dnc"} <= set(MEMORY_CORES.names())
    with pytest.raises(ValueError, match="'ntm' has no option 'policy'"):
        build_core("ntm", input_size=4, hidden_size=H, slots=S, width=D, read_heads=1, policy="lru")
    with pytest.raises(KeyError, match="valid memory cores"):
        build_core("ntn", input_size=4, hidden_size=H, slots=S, width=D, read_heads=1)
    with pytest.raises(ValueError, match="shifts"):
        NTMMemory(H, slots=3, width=D, shifts=2)


@pytest.mark.parametrize("cls, own", [(NTMMemory, ["write_heads", "shifts"]), (DNCMemory, ["max_link_slots"])])
def test_memory_sizes_come_from_the_base(cls: type, own: list[str]) -> None:
    # S, D, R and their defaults are MemoryModule's (MemorySizes); each memory adds its own options
    import inspect

    from metamem.memory.state import MemoryModule, MemorySizes
    from metamem.registry import builder_hints

    params = inspect.signature(cls).parameters
    assert list(params) == ["hidden_size", *own, "sizes"] and params["sizes"].kind is inspect.Parameter.VAR_KEYWORD
    base = inspect.signature(MemoryModule).parameters
    assert {k: base[k].default for k in MemorySizes.__annotations__} == {"slots": 128, "width": 20, "read_heads": 1}
    default, sized = cls(H), cls(H, slots=S, width=D, read_heads=R)
    assert (default.slots, default.width, default.read_heads) == (128, 20, 1)
    assert (sized.slots, sized.width, sized.read_heads) == (S, D, R)
    assert builder_hints(cls)["sizes"] is not None  # the annotation resolves (forwards_to reads it)
    with pytest.raises(TypeError, match="unexpected keyword argument 'slot'"):
        cls(H, slot=S)
    with pytest.raises(ValueError, match=f"{cls.__name__}: width must be a positive int, got 0"):
        cls(H, width=0)
    core = build_core(cls.__name__[:3].lower(), input_size=4, hidden_size=H, slots=S, width=D, read_heads=R)
    assert isinstance(core.memory, cls) and (core.memory.slots, core.memory.width, core.memory.read_heads) == (S, D, R)
    builder = inspect.signature(MEMORY_CORES.get(cls.__name__[:3].lower())).parameters
    assert list(builder) == ["input_size", "hidden_size", "slots", "width", "read_heads", *own]


def test_ntm_write_heads_must_be_positive() -> None:
    with pytest.raises(ValueError, match="NTMMemory: write_heads must be a positive int, got 0"):
        NTMMemory(H, slots=S, width=D, write_heads=0)


def test_cli_lists_cores(capsys: pytest.CaptureFixture[str]) -> None:
    from metamem.cli.main import main as cli_main

    assert cli_main(["ls", "cores"]) == 0
    names = [line.split()[0] for line in capsys.readouterr().out.splitlines()]
    assert names == ["dnc", "lstm_slot", "ntm"]
