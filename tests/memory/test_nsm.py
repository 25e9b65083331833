"""Neural Stored-program Memory against a naive construction of the working weight W_t."""

from __future__ import annotations

import math

import pytest
import torch

from metamem.data import load_dataset
from metamem.episodes.sampler import EpisodeSampler
from metamem.learners import build_learner
from metamem.memory import MemoryCore, NTMMemory, SlotMemory
from metamem.memory.nsm import (
    ProgramLinear,
    annealed_weight,
    attach_programs,
    interface_groups,
    program_regulariser,
    record_programs,
)

B, H, OUT, P, K = 3, 5, 7, 3, 2
GROUPS = [0, 0, 1, 1, 1, 2, 0]


def _rand(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _layer() -> ProgramLinear:
    torch.manual_seed(0)
    return ProgramLinear(H, OUT, programs=P, groups=GROUPS, key_size=K).double()


def _naive(layer: ProgramLinear, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per episode and head: cosine attention over the program keys, W_t = Σ w(i) value_i, ξ = W_t [h; 1]."""
    values = layer.program_values().detach()  # [P, OUT, H+1]
    qw, qb = layer.query.weight.detach(), layer.query.bias.detach()
    keys = layer.keys.detach()
    out = torch.zeros(h.shape[0], OUT, dtype=torch.float64)
    weights = torch.zeros(h.shape[0], layer.heads, P, dtype=torch.float64)
    for b in range(h.shape[0]):
        q = (qw @ h[b] + qb).tolist()
        for g in range(layer.heads):
            k = q[g * (K + 1) : g * (K + 1) + K]
            beta = 1 + math.log1p(math.exp(q[g * (K + 1) + K]))
            cos = []
            for i in range(P):
                key = keys[g, i].tolist()
                dot = sum(a * c for a, c in zip(k, key, strict=True))
                cos.append(dot / (math.sqrt(sum(a * a for a in k) + 1e-8) * math.sqrt(sum(c * c for c in key) + 1e-8)))
            e = [math.exp(beta * c) for c in cos]
            weights[b, g] = torch.tensor([v / sum(e) for v in e], dtype=torch.float64)
        x = torch.cat((h[b], torch.ones(1, dtype=torch.float64)))
        for o in range(OUT):
            g = GROUPS[o]
            working = sum(weights[b, g, i] * values[i] for i in range(P))  # [OUT, H+1]
            out[b, o] = working[o] @ x
    return out, weights


def test_program_linear_matches_naive_working_weight() -> None:
    layer, h = _layer(), _rand(B, H, seed=1)
    ref, ref_w = _naive(layer, h)
    torch.testing.assert_close(layer(h), ref)
    torch.testing.assert_close(layer.program_weights(h), ref_w)


def test_program_linear_gradcheck() -> None:
    layer = _layer()
    assert torch.autograd.gradcheck(layer, (_rand(B, H, seed=1).requires_grad_(),))
    layer(_rand(B, H, seed=1)).square().sum().backward()
    for name, p in layer.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_one_program_is_a_plain_linear_layer() -> None:
    torch.manual_seed(0)
    layer = ProgramLinear(H, OUT, programs=1).double()
    h = _rand(B, H, seed=2)
    torch.testing.assert_close(layer(h), h @ layer.values.weight.t() + layer.values.bias)


def test_orthogonality_regulariser_matches_loop() -> None:
    layer = _layer()
    ref = 0.0
    for g in range(layer.heads):
        for i in range(P):
            for j in range(i + 1, P):
                a, c = layer.keys[g, i].tolist(), layer.keys[g, j].tolist()
                ref += sum(x * y for x, y in zip(a, c, strict=True)) / (
                    math.sqrt(sum(x * x for x in a) + 1e-8) * math.sqrt(sum(y * y for y in c) + 1e-8))
    assert math.isclose(float(layer.orthogonality().detach()), ref, rel_tol=1e-10)
    assert math.isclose(float(program_regulariser(torch.nn.Sequential(layer)).detach()), ref, rel_tol=1e-10)


def test_annealed_weight() -> None:
    assert annealed_weight(0.1, 0.9, 100, 0) == 0.1
    assert annealed_weight(0.1, 0.9, 100, 99) == 0.1
    assert math.isclose(annealed_weight(0.1, 0.9, 100, 250), 0.1 * 0.81)
    for step in (0, 99, 100, 250, 12_345):  # a step counter tensor: the same value, as a tensor
        t = annealed_weight(0.1, 0.9, 100, torch.tensor(step))
        assert isinstance(t, torch.Tensor) and float(t) == annealed_weight(0.1, 0.9, 100, step)
        assert float(t.to(torch.float32)) == float(torch.tensor(annealed_weight(0.1, 0.9, 100, step), dtype=torch.float32))


def test_nutm_training_step_is_one_graph() -> None:
    """The annealed regulariser weight is computed from the step buffer without a host sync, so
    ``torch.compile`` captures a NUTM training forward as one graph (no ``Tensor.item()`` break)."""
    import torch._dynamo as dynamo

    from metamem.data import load_dataset
    from metamem.episodes import EpisodeSampler
    from metamem.learners import build_learner

    ds = load_dataset("synthetic", num_classes=12, per_class=4, image_size=6, seed=0)
    batch = EpisodeSampler(ds, n_way=3, k_shot=2, n_query=0, batch_size=2, seed=0).sample()
    torch.manual_seed(0)
    model = build_learner("mann", n_way=3, image_shape=(1, 6, 6), controller_size=8, slots=5, width=3,
                          read_heads=2, programs=3).train()
    explained = dynamo.explain(model)(batch)
    assert explained.graph_break_count == 0, [str(r.reason) for r in explained.break_reasons]
    assert int(model.program_step) == 1  # explain ran the step once: the counter still advances


def test_groups_are_validated() -> None:
    with pytest.raises(ValueError, match="7 outputs"):
        ProgramLinear(H, OUT, programs=2, groups=[0, 1])
    with pytest.raises(ValueError, match="none missing"):
        ProgramLinear(H, 3, programs=2, groups=[0, 2, 2])


@pytest.mark.parametrize("policy,write_key,expect_heads", [("lru", False, 3), ("lru", True, 3), ("usage", False, 4)])
def test_slot_memory_groups_one_nsm_per_head(policy: str, write_key: bool, expect_heads: int) -> None:
    opts = {"write_key": write_key} if policy == "lru" else {}
    mem = SlotMemory(H, slots=7, width=4, read_heads=3, policy=policy, policy_options=opts)
    groups = interface_groups(mem)
    assert len(groups) == mem.interface.out_features
    assert max(groups) + 1 == expect_heads
    # read head 1 owns its key (D entries) and its strength
    assert groups[4:8] == [1] * 4 and groups[3 * 4 + 1] == 1


def test_attach_to_core_and_record() -> None:
    torch.manual_seed(0)
    core = MemoryCore(4, hidden_size=H, slots=7, width=3, read_heads=2).double()
    attach_programs(core.memory, 3)
    x = _rand(2, 9, 4, seed=3)
    with record_programs(core) as rec:
        out = core(x)
    weights = torch.stack(rec["memory.interface"], 1)
    assert weights.shape == (2, 9, 2, 3)  # lru: control head r = read head r + its write head; 3 programs
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 9, 2, dtype=torch.float64))
    assert core.memory.interface.recorded is None
    # batch independence still holds
    torch.testing.assert_close(core(x[1:]).features[0], out.features[1])
    ntm = NTMMemory(H, slots=7, width=3, read_heads=2)
    assert attach_programs(ntm, 2).heads == 3
    with pytest.raises(ValueError, match="cached_uniform"):
        attach_programs(SlotMemory(H, slots=7, width=3, read_heads=1, policy="cached_uniform"), 2)


def test_nutm_learner_loss_includes_annealed_regulariser() -> None:
    ds = load_dataset("synthetic", num_classes=8, per_class=6, image_size=12, seed=3)
    batch = EpisodeSampler(ds, n_way=3, k_shot=2, n_query=1, batch_size=2, seed=1).sample()
    torch.manual_seed(0)
    model = build_learner("mann", n_way=3, image_shape=(1, 12, 12), controller_size=8, slots=6,
                          width=4, read_heads=2, programs=2,
                          program_options={"reg": 1.0, "decay": 0.5, "every": 1})
    model.train()
    out = model(batch)
    reg = float(program_regulariser(model).detach())
    base = float(out.loss.detach()) - reg  # η_0 = 1 at step 0
    out.loss.backward()
    assert model.core.memory.interface.keys.grad is not None
    assert int(model.program_step) == 1
    out2 = model(batch)  # η_1 = 0.5, same parameters -> same base loss
    assert math.isclose(float(out2.loss.detach()), base + 0.5 * reg, rel_tol=1e-5)
    with pytest.raises(ValueError, match="unknown program option 'rate'"):
        build_learner("mann", n_way=3, image_shape=(1, 12, 12), programs=2, program_options={"rate": 1})


@pytest.mark.parametrize("core", ["ntm", "dnc"])
def test_mann_core_switch(core: str) -> None:
    ds = load_dataset("synthetic", num_classes=8, per_class=6, image_size=12, seed=3)
    batch = EpisodeSampler(ds, n_way=3, k_shot=2, n_query=1, batch_size=2, seed=1).sample()
    model = build_learner("mann", n_way=3, image_shape=(1, 12, 12), controller_size=8, slots=6,
                          width=4, read_heads=1, core=core)
    assert type(model.core.memory).__name__ == {"ntm": "NTMMemory", "dnc": "DNCMemory"}[core]
    out = model(batch)
    assert torch.isfinite(out.loss)
    logits = model.predict(batch.support_x, batch.support_y, batch.query_x, n_way=3)
    assert logits.shape == (2, 3, 3)
    with pytest.raises(ValueError, match="lstm_slot"):
        build_learner("mann", n_way=3, image_shape=(1, 12, 12), core=core, policy="usage")


def test_nutm_eval_loss_is_the_plain_sequence_loss() -> None:
    ds = load_dataset("synthetic", num_classes=8, per_class=6, image_size=12, seed=3)
    batch = EpisodeSampler(ds, n_way=3, k_shot=2, n_query=1, batch_size=2, seed=1).sample()
    torch.manual_seed(0)
    model = build_learner("mann", n_way=3, image_shape=(1, 12, 12), controller_size=8, slots=6,
                          width=4, read_heads=2, programs=2).eval()
    out = model(batch)
    ce = torch.nn.functional.cross_entropy(out.logits.flatten(0, 1), out.targets.flatten())
    torch.testing.assert_close(out.loss, ce)
    assert int(model.program_step) == 0
