"""Any way for every learner: a learner trained at N ways is scored at N' (MAML: zero head per
episode; MetaNet: fast weights sized per episode; MANN/LSTM: label units up to max_way), and
one ``metamem eval`` sweep fills every (way, shot) cell for small trained runs."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

import metamem
from metamem.cli.main import main
from metamem.learners import build_learner

SMOKE = Path(__file__).resolve().parents[2] / "experiments" / "smoke"
SMALL = {
    "maml": dict(inner_steps=1, eval_inner_steps=2, inner_lr=0.1),
    "metanet": dict(hidden=8, repr_dim=8, generator_hidden=4, max_way=7),
    "lstm": dict(controller_size=16, max_way=7),
    "mann": dict(controller_size=16, slots=8, width=4, read_heads=1, max_way=7),
}


@pytest.fixture(scope="module")
def ds16():
    return metamem.load_dataset("synthetic", num_classes=20, per_class=8, image_size=16, seed=1)


@pytest.mark.parametrize("name", list(SMALL))
def test_scored_at_other_ways(ds16, name: str) -> None:
    torch.manual_seed(0)
    learner = build_learner(name, n_way=3, image_shape=ds16.image_shape, **SMALL[name]).eval()
    for n in (2, 3, 7):
        s = ds16.images[:2 * n].float().view(1, 2 * n, *ds16.image_shape) / 255
        y = torch.arange(n).repeat(2)[None]
        with torch.no_grad():
            logits = learner.predict(s, y, s[:, :3], n_way=n)
        assert logits.shape == (1, 3, n) and torch.isfinite(logits).all()
    res = metamem.evaluate(learner, ds16, n_way=7, k_shot=1, n_query=1, episodes=4, protocol="set")
    assert math.isfinite(res.mean)
    if name != "maml":  # the declared width is the limit, named in the message
        with pytest.raises(ValueError, match=r"max_way >= 8"):
            s = ds16.images[:8].float().view(1, 8, *ds16.image_shape) / 255
            learner.predict(s, torch.arange(8)[None], s, n_way=8)


def test_sequence_learners_mask_unused_label_units(ds16) -> None:
    """A 3-way episode on a 7-unit MANN equals the first 3 logits; units 3..6 play no part."""
    torch.manual_seed(0)
    mann = build_learner("mann", n_way=3, image_shape=ds16.image_shape, **SMALL["mann"]).eval()
    batch = metamem.EpisodeSampler(ds16, n_way=3, k_shot=2, n_query=0, batch_size=2, seed=0).sample()
    seq = batch.as_sequence()
    with torch.no_grad():
        got = mann.forward_sequence(seq)
        full, _ = mann.run(mann.step_inputs(seq.x, seq.prev_y))
        assert got.shape[-1] == 3 and torch.equal(got, full[..., :3])
        mann.head.weight[3:].normal_()  # the unused units' weights do not matter
        torch.testing.assert_close(mann.forward_sequence(seq), got)
    out = mann.train()(batch)
    out.loss.backward()
    assert mann.head.weight.grad[3:].abs().sum() == 0  # masked units get no gradient


@pytest.mark.parametrize("name", ["lstm", "mann"])
def test_spread_labels_trains_every_unit_and_matches_a_per_episode_loop(ds16, name: str) -> None:
    """spread_labels: in training, episode b's labels 0..N-1 sit on drawn units u_b (distinct,
    from the episode key); the loss equals a naive loop that one-hot encodes u_b[y] for each
    episode alone and takes the cross-entropy over the logits of u_b; every unit gets gradient."""
    torch.manual_seed(0)
    learner = build_learner(name, n_way=3, image_shape=ds16.image_shape, spread_labels=True, **SMALL[name]).double()
    batch = metamem.EpisodeSampler(ds16, n_way=3, k_shot=2, n_query=0, batch_size=5, seed=4,
                                   dtype=torch.float64).sample()
    units = learner.episode_units(batch.episode_keys, 3)
    assert units.shape == (5, 3) and int(units.min()) >= 0 and int(units.max()) < 7
    assert all(len(set(r.tolist())) == 3 for r in units)  # distinct within an episode
    assert torch.equal(units, learner.episode_units(batch.episode_keys.clone(), 3))  # a function of the keys
    assert len({tuple(r.tolist()) for r in units}) > 1  # not the same units for every episode
    out = learner.train()(batch)
    seq = batch.as_sequence()
    losses = []
    for b in range(5):  # the naive way: one episode at a time, one-hot built by hand
        x = seq.x[b : b + 1]
        feats = learner.encoder(x)
        onehot = torch.zeros(1, seq.y.shape[1], 7, dtype=torch.float64)
        for t in range(seq.y.shape[1]):
            if int(seq.prev_y[b, t]) >= 0:
                onehot[0, t, int(units[b, int(seq.prev_y[b, t])])] = 1.0
        logits, _ = learner.run(torch.cat([feats, onehot], dim=-1))
        picked = logits[0][:, units[b]]  # [T, N], in the episode's label order
        losses.append(torch.nn.functional.cross_entropy(picked, seq.y[b], reduction="sum"))
    reference = torch.stack(losses).sum() / seq.y.numel()
    torch.testing.assert_close(out.loss, reference)
    out.loss.backward()
    rows = learner.head.weight.grad.abs().sum(1)
    assert (rows[units.unique()] > 0).all() and (rows[3:] > 0).any()  # units past N are trained
    learner.eval()  # eval mode: units 0..N-1, as scoring
    with torch.no_grad():
        torch.testing.assert_close(learner(batch).logits, learner.forward_sequence(seq))


def test_metanet_wider_episodes_use_the_mean_trained_label_row(ds16) -> None:
    """Built at max_way 7 for 3-way training: episodes of <= 3 ways use the slow rows as they
    are; a 7-way episode gives labels 3..6 the mean of rows 0..2, so the never-trained rows
    3..6 play no part, and changing the trained rows changes what labels 3..6 get."""
    torch.manual_seed(0)
    net = build_learner("metanet", n_way=3, image_shape=ds16.image_shape, **SMALL["metanet"]).eval()
    assert (net.trained_way, net.max_way) == (3, 7)
    w, b = net.label_rows(net.w2, 7)
    torch.testing.assert_close(w[3:], net.w2.weight[:3].mean(0).expand(4, -1))
    torch.testing.assert_close(b[3:], net.w2.bias[:3].mean().expand(4))
    assert torch.equal(net.label_rows(net.w2, 3)[0], net.w2.weight[:3])

    def logits(n: int) -> torch.Tensor:
        s = ds16.images[: 2 * n].float().view(1, 2 * n, *ds16.image_shape) / 255
        with torch.no_grad():
            return net.predict(s, torch.arange(n).repeat(2)[None], s[:, :5], n_way=n)

    three, seven = logits(3), logits(7)
    with torch.no_grad():
        for layer in (net.w2, net.repr_head):  # the untrained rows do not matter
            layer.weight[3:].normal_(std=5.0)
            layer.bias[3:].normal_(std=5.0)
    torch.testing.assert_close(logits(3), three)
    torch.testing.assert_close(logits(7), seven)
    with torch.no_grad():
        net.w2.bias[:3] += torch.tensor([3.0, 0.0, 0.0])  # the trained rows do
    assert not torch.allclose(logits(7), seven)
    with pytest.raises(ValueError, match="trained_way must lie in 1..n_way=4"):
        type(net)(net.base_trunk, None, n_way=4, trained_way=5)


def test_maml_zero_head_per_episode(ds16) -> None:
    torch.manual_seed(0)
    maml = build_learner("maml", n_way=3, image_shape=ds16.image_shape, **SMALL["maml"])
    learned = maml.episode_params(3)
    assert learned["1.weight"] is dict(maml.net.named_parameters())["1.weight"]
    other = maml.episode_params(5)
    assert other["1.weight"].shape == (5, maml.net[1].in_features) and not other["1.weight"].any()
    assert other["1.bias"].shape == (5,) and not other["1.bias"].any()
    zero = build_learner("maml", n_way=3, image_shape=ds16.image_shape, head_init="zero", **SMALL["maml"])
    assert not zero.episode_params(3)["1.weight"].any()
    batch = metamem.EpisodeSampler(ds16, n_way=3, k_shot=1, n_query=2, batch_size=2, seed=0).sample()
    zero(batch).loss.backward()  # trains through the zero head's inner loop
    assert zero.net[0].blocks[0][0].weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="head_init must be 'learned' or 'zero'"):
        build_learner("maml", n_way=3, image_shape=ds16.image_shape, head_init="random")


@pytest.mark.slow
def test_eval_sweep_fills_every_cell_for_small_trained_runs(tmp_path: Path) -> None:
    """5-way-trained MAML, MetaNet, MANN and LSTM (and ProtoNet) each get 20-way rows."""
    base = SMOKE.parent / "base" / "synthetic.yaml"
    learners = {
        "maml": "{name: maml, backbone: conv4, inner_steps: 1, eval_inner_steps: 2, inner_lr: 0.1}",
        "metanet": "{name: metanet, hidden: 8, repr_dim: 8, generator_hidden: 4, max_way: 20}",
        "lstm": "{name: lstm, controller_size: 16, max_way: 20}",
        "mann": "{name: mann, controller_size: 16, slots: 8, width: 4, read_heads: 1, max_way: 20}",
        "protonet": "{name: protonet, backbone: conv4}",
    }
    runs = []
    for name, learner in learners.items():
        cfg = tmp_path / f"{name}.yaml"
        cfg.write_text(f"extends: {base}\nlearner: {learner}\n"
                       "data: {options: {num_classes: 40, per_class: 20, image_size: 16}}\n")
        run = tmp_path / name
        assert main(["train", str(cfg), "train.steps=2", "train.val_every=0", "train.checkpoint_every=0",
                     "--no-eval", "--no-progress", "--out", str(run)]) == 0, name
        runs.append(str(run))
    out = tmp_path / "sweep"
    assert main(["eval", *runs, "eval.n_way=[5,20]", "eval.k_shot=[1,5]", "eval.n_query=2",
                 "eval.episodes=4", "eval.protocol=set", "--out", str(out), "--no-progress"]) == 0
    rows = json.loads((out / "results.json").read_text())["results"]
    assert len(rows) == 5 * 4
    ways = {}
    for r in rows:
        ways.setdefault(r["learner"], set()).add((r["protocol"]["n_way"], r["protocol"]["k_shot"]))
        assert math.isfinite(r["scores"]["set"]["mean"])
    assert all(v == {(5, 1), (5, 5), (20, 1), (20, 5)} for v in ways.values()) and len(ways) == 5
