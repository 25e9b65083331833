"""MANN and the LSTM baseline: the sequence forward, the set-protocol predict against a
naive step-by-step reference, gradients (gradcheck in float64), memory wiped per episode."""

from __future__ import annotations

import pytest
import torch

from metamem.data import load_dataset
from metamem.episodes import EpisodeSampler
from metamem.learners import SequenceLearner, build_learner
from metamem.learners.capabilities import SequencePrediction
from metamem.learners.lstm import support_order
from metamem.types import NO_LABEL

N, K, Q, B = 3, 2, 2, 3
SHAPE = (1, 5, 5)
TINY = {
    "lstm": {"controller_size": 7},
    "mann": {"controller_size": 7, "slots": 5, "width": 3, "read_heads": 2},
}


def build(name: str, **kw: object) -> torch.nn.Module:
    torch.manual_seed(0)  # tests may seed; library code never does
    return build_learner(name, n_way=N, image_shape=SHAPE, **{**TINY[name], **kw}).double().eval()


@pytest.fixture(scope="module")
def batch():
    ds = load_dataset("synthetic", num_classes=8, per_class=6, image_size=5, seed=1)
    b = EpisodeSampler(ds, n_way=N, k_shot=K, n_query=Q, batch_size=B, seed=4).sample()
    b.support_x, b.query_x = b.support_x.double(), b.query_x.double()
    return b


def reference_predict(model, sx, sy, qx, mask):
    """Each query separately: support (present items, predict's order) + the query as one
    sequence through forward_sequence-style stepping; the last step's logits."""
    out = torch.empty(sx.shape[0], qx.shape[1], N, dtype=torch.float64)
    order = support_order(sx.shape[1], sx.device)
    for b in range(sx.shape[0]):
        keep = [int(i) for i in order if mask[b, i]]
        for j in range(qx.shape[1]):
            x = torch.cat([sx[b, keep], qx[b, j : j + 1]])[None]
            y = sy[b, keep]
            prev = torch.cat([torch.tensor([NO_LABEL]), y])[None]
            logits, _ = model.run(model.step_inputs(x, prev), total_steps=sx.shape[1] + 1)
            out[b, j] = logits[0, -1]
        absent = set(range(N)) - set(sy[b, keep].tolist())
        for c in absent:
            out[b, :, c] = float("-inf")
    return out


@pytest.mark.parametrize("name", ["lstm", "mann"])
def test_forward_is_a_sequence_learner(name: str, batch) -> None:
    model = build(name)
    assert isinstance(model, SequenceLearner) and isinstance(model, SequencePrediction)
    out = model(batch)
    seq = batch.as_sequence()
    assert out.logits.shape == (B, N * (K + Q), N)
    assert torch.equal(out.targets, seq.y)
    ref = torch.nn.functional.cross_entropy(out.logits.flatten(0, 1), seq.y.flatten())
    torch.testing.assert_close(out.loss, ref)
    torch.testing.assert_close(model.forward_sequence(seq), out.logits)


@pytest.mark.parametrize("name", ["lstm", "mann"])
@pytest.mark.parametrize("masked", [False, True])
def test_predict_matches_step_by_step_reference(name: str, masked: bool, batch) -> None:
    model = build(name)
    sx, sy, qx = batch.support_x, batch.support_y, batch.query_x
    mask = torch.ones_like(sy, dtype=torch.bool)
    if masked:  # ragged supports; episode 2 keeps a single item (classes 1, 2 absent)
        mask[0, 1] = mask[1, 0] = mask[1, 3] = False
        mask[2] = False
        mask[2, 0] = True
    with torch.no_grad():
        got = model.predict(sx, sy, qx, n_way=N, support_mask=mask if masked else None)
        want = reference_predict(model, sx, sy, qx, mask)
    assert got.shape == (B, N * Q, N)
    torch.testing.assert_close(got, want)
    if masked:
        assert torch.isneginf(got[2, :, 1:]).all() and torch.isfinite(got[2, :, 0]).all()


def test_predict_with_no_support_at_all(batch) -> None:
    model = build("mann")
    mask = torch.zeros_like(batch.support_y, dtype=torch.bool)
    got = model.predict(batch.support_x, batch.support_y, batch.query_x, n_way=N, support_mask=mask)
    assert torch.isneginf(got).all()


def test_predict_rejects_more_ways_than_label_units(batch) -> None:
    with pytest.raises(ValueError, match=r"MANN has 3 label units \(max_way\), got an episode with n_way=5"):
        build("mann").predict(batch.support_x, batch.support_y, batch.query_x, n_way=5)


@pytest.mark.parametrize("name", ["lstm", "mann"])
def test_memory_is_wiped_per_episode(name: str, batch) -> None:
    """Episode 0's logits do not depend on what else is in the batch or ran before."""
    model = build(name)
    with torch.no_grad():
        full = model(batch).logits
        model(batch.select(slice(1, 3)))
        alone = model(batch.select(slice(0, 1))).logits
    torch.testing.assert_close(alone[0], full[0])


@pytest.mark.parametrize("name, kw", [
    ("lstm", {}), ("mann", {}), ("mann", {"policy": "usage"}),
    ("mann", {"encoder": "conv", "conv_channels": 2}),
])
def test_gradcheck_float64(name: str, kw: dict, batch) -> None:
    model = build(name, **kw)
    seq = batch.select(slice(0, 1)).as_sequence()
    x = seq.x[:, :5].clone().requires_grad_(True)
    prev = seq.prev_y[:, :5]
    assert torch.autograd.gradcheck(lambda x: model.run(model.step_inputs(x, prev))[0], (x,),
                                    eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("policy", ["lru", "usage", "uniform", "cached_uniform"])
def test_every_write_policy_trains(policy: str, batch) -> None:
    model = build("mann", policy=policy).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    before = model(batch).loss
    before.backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0
    old = [p.detach().clone() for p in model.parameters()]
    opt.step()  # a real optimizer step: the weights move and the loss on this batch drops
    assert any(not torch.equal(o, p) for o, p in zip(old, model.parameters(), strict=True))
    with torch.no_grad():
        assert model(batch).loss < before.detach()


def test_bad_encoder_is_rejected() -> None:
    with pytest.raises(ValueError, match=r"unknown encoder 'mlp'; valid encoders: flatten, conv"):
        build("lstm", encoder="mlp")
