"""DCMAN / DMNC cores: the read-only decoder against a naive loop, write protection, late vs early fusion."""

from __future__ import annotations

import math

import pytest
import torch

from metamem.memory.multi import DualControllerCore, DualMemoryCore, ReadOnlyDecoder, TwoViewBatch, two_view_sum_task

B, S, D, R, H = 2, 7, 3, 2, 5


def _rand(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _batch(ta: int = 4, tb: int = 3, td: int = 5) -> TwoViewBatch:
    return TwoViewBatch((_rand(B, ta, 3, seed=1), _rand(B, tb, 2, seed=2)), _rand(B, td, 1, seed=3),
                        torch.zeros(B, td, dtype=torch.long))


def test_decoder_matches_naive_loop() -> None:
    torch.manual_seed(0)
    dec = ReadOnlyDecoder(2, hidden_size=H, width=D, memories=2, read_heads=R).double()
    x, mems = _rand(B, 4, 2, seed=1), [_rand(B, S, D, seed=2), _rand(B, S, D, seed=3)]
    h0, c0 = _rand(B, H, seed=4), _rand(B, H, seed=5)
    feats, weights = dec(x, mems, h0, c0)
    W, bias = dec.interface.weight.detach(), dec.interface.bias.detach()
    for b in range(B):
        h, c = h0[b : b + 1], c0[b : b + 1]
        reads = [0.0] * (2 * R * D)
        for t in range(4):
            h, c = dec.cell(torch.cat((x[b : b + 1, t], torch.tensor([reads], dtype=torch.float64)), 1), (h, c))
            raw = (W @ h[0] + bias).tolist()
            reads = []
            for m in range(2):
                for i in range(R):
                    chunk = raw[(m * R + i) * (D + 1) : (m * R + i + 1) * (D + 1)]
                    key = [math.tanh(v) for v in chunk[:D]]
                    beta = 1 + math.log1p(math.exp(chunk[D]))
                    cos = []
                    for s in range(S):
                        row = mems[m][b, s].tolist()
                        dot = sum(k * v for k, v in zip(key, row, strict=True))
                        cos.append(dot / (math.sqrt(sum(k * k for k in key) + 1e-8) * math.sqrt(sum(v * v for v in row) + 1e-8)))
                    e = [math.exp(beta * v) for v in cos]
                    w = [v / sum(e) for v in e]
                    torch.testing.assert_close(weights[b, t, m, i], torch.tensor(w, dtype=torch.float64))
                    reads += [sum(w[s] * float(mems[m][b, s, d]) for s in range(S)) for d in range(D)]
            torch.testing.assert_close(feats[b, t], torch.cat((h[0], torch.tensor(reads, dtype=torch.float64))).detach())


def test_decoder_gradcheck() -> None:
    torch.manual_seed(0)
    dec = ReadOnlyDecoder(2, hidden_size=3, width=D, memories=1, read_heads=1).double()
    args = (_rand(B, 3, 2, seed=1).requires_grad_(), _rand(B, 4, D, seed=2).requires_grad_())
    h0 = torch.zeros(B, 3, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda x, m: dec(x, [m], h0, h0)[0], args)


@pytest.mark.parametrize("core", ["lstm_slot", "ntm", "dnc"])
def test_dcman_memory_is_write_protected_while_decoding(core: str) -> None:
    torch.manual_seed(0)
    model = DualControllerCore(3, 1, hidden_size=H, slots=S, width=D, read_heads=R, core=core).double()
    batch = _batch()
    out = model(batch)
    encoded = model.encoder(batch.views[0]).state.memory.memory
    torch.testing.assert_close(out.memories[0], encoded)  # decoding left the memory as encoded
    longer = TwoViewBatch(batch.views, _rand(B, 9, 1, seed=7), batch.targets)
    torch.testing.assert_close(model(longer).memories[0], encoded)
    assert out.features.shape == (B, 5, H + R * D) and out.read_weights.shape == (B, 5, 1, R, S)
    out.features.square().mean().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


def test_dmnc_late_fusion_keeps_views_apart_early_fusion_shares() -> None:
    batch = _batch()
    other = TwoViewBatch((batch.views[0] + 1.0, batch.views[1]), batch.decoder_inputs, batch.targets)
    for fusion, shared in (("late", False), ("early", True)):
        torch.manual_seed(0)
        model = DualMemoryCore((3, 2), 1, hidden_size=H, slots=S, width=D, read_heads=R, core="ntm",
                               fusion=fusion).double()
        a, b = model(batch), model(other)
        assert len(a.memories) == (1 if shared else 2)
        same_b = torch.allclose(a.encoder_features[1], b.encoder_features[1])
        assert same_b is not shared, fusion  # view b's encoder sees view a's writes only when shared
        assert not torch.allclose(a.features, b.features)  # the decoder always sees both views
        a.features.sum().backward()
        for name, p in model.named_parameters():
            assert p.grad is not None, (fusion, name)
    with pytest.raises(ValueError, match="fusion"):
        DualMemoryCore((3, 2), 1, fusion="middle")  # type: ignore[arg-type]


def test_two_view_sum_task() -> None:
    t = two_view_sum_task(3, 4, 6, base=5, seed=0, pairing="aligned")
    a, b = t.views[0].argmax(-1), t.views[1].argmax(-1)
    for e in range(3):
        for s in range(6):
            assert int(t.targets[e, s]) == (int(a[e, s]) if s < 4 else 0) + int(b[e, s])
    assert t.decoder_inputs.shape == (3, 6, 1) and int(t.targets.max()) <= 8


@pytest.mark.parametrize("la,lb", [(4, 6), (5, 3), (3, 3)])
def test_two_view_sum_task_reversed_pairing(la: int, lb: int) -> None:
    """The DMNC code's pairing: view a from its start, view b from its end, a shorter view cycled."""
    t = two_view_sum_task(2, la, lb, base=7, seed=1)
    a, b = t.views[0].argmax(-1).tolist(), t.views[1].argmax(-1).tolist()
    for e in range(2):
        want = [a[e][s % la] + b[e][::-1][s % lb] for s in range(max(la, lb))]
        assert t.targets[e].tolist() == want
    with pytest.raises(ValueError, match="pairing must be 'reversed' or 'aligned'"):
        two_view_sum_task(1, 2, 2, seed=0, pairing="diagonal")  # type: ignore[arg-type]
