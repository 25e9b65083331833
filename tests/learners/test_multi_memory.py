"""The two-view learners (dmnc, dcman): registry and YAML builds, shapes, write protection while
decoding, and the batched few-shot path against a naive per-episode, per-query loop (gradients
included) on small odd shapes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from metamem.config import load_config
from metamem.data import load_dataset
from metamem.learners import LEARNERS, build_learner
from metamem.learners.multi_memory import TwoViewLearner, episode_views
from metamem.memory.addressing import NORM_EPS
from metamem.memory.multi import Encoded, TwoViewBatch, concat_views

EXPERIMENTS = Path(__file__).resolve().parents[2] / "experiments" / "two_view"
SMALL = dict(hidden_size=5, slots=7, width=3, read_heads=2)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_listed_by_the_registry_and_ls(capsys: pytest.CaptureFixture[str]) -> None:
    from metamem.cli.main import main

    assert {"dmnc", "dcman"} <= set(LEARNERS.names())
    assert main(["ls", "learners"]) == 0
    out = capsys.readouterr().out
    assert "dmnc" in out and "dcman" in out and "Le et al." in out


@pytest.mark.parametrize("name", ["dmnc_sum", "dcman_sum", "dmnc_omniglot", "dcman_omniglot"])
def test_experiment_files_build(name: str) -> None:
    cfg = load_config(EXPERIMENTS / f"{name}.yaml")
    assert cfg.learner is not None
    if cfg.data.name == "two_view_sum":
        task = load_dataset("two_view_sum", "train", **cfg.data.options)
        model = build_learner(cfg.learner.name, n_way=task.classes, image_shape=task.image_shape,
                              **{**task.learner_kwargs(), **cfg.learner.kwargs})
        batch = task.sample(3, _gen(0))
        out = model(batch)
        assert out.logits.shape == (3, batch.targets.shape[1], 2 * cfg.data.options["base"] - 1)
    else:
        size = cfg.data.options["image_size"]
        model = build_learner(cfg.learner.name, n_way=cfg.episodes.n_way, image_shape=(1, size, size),
                              **cfg.learner.kwargs)
        n = cfg.episodes.n_way
        x = torch.rand(2, n, 1, size, size, generator=_gen(1))
        logits = model.predict(x, torch.arange(n).expand(2, n), x[:, :3], n_way=n)
        assert logits.shape == (2, 3, n)
    assert torch.isfinite(out.loss if cfg.data.name == "two_view_sum" else logits).all()


def test_sum_and_dnc_baseline_have_equal_parameter_counts() -> None:
    """The committed comparison's two files: within 1% of each other's parameter count."""
    task = load_dataset("two_view_sum", "train", max_length=8)
    counts = []
    for name in ("dmnc_sum", "dcman_sum"):
        cfg = load_config(EXPERIMENTS / f"{name}.yaml")
        assert cfg.learner is not None
        model = build_learner(cfg.learner.name, n_way=1, image_shape=task.image_shape,
                              **{**task.learner_kwargs(), **cfg.learner.kwargs})
        counts.append(sum(p.numel() for p in model.parameters()))
    assert abs(counts[0] - counts[1]) / counts[0] < 0.01, counts


@pytest.mark.parametrize("name,kw", [("dmnc", {}), ("dmnc", {"fusion": "early"}), ("dcman", {})])
def test_sum_task_shapes_and_loss(name: str, kw: dict) -> None:
    task = load_dataset("two_view_sum", "train", min_length=2, max_length=5, base=4)
    torch.manual_seed(0)
    model = build_learner(name, n_way=1, image_shape=task.image_shape, **SMALL, **kw, **task.learner_kwargs())
    batch = task.sample(3, _gen(2))
    ta, tb = batch.views[0].shape[1], batch.views[1].shape[1]
    out = model(batch)
    assert out.logits.shape == (3, max(ta, tb), 7)
    assert torch.allclose(out.loss, F.cross_entropy(out.logits.flatten(0, 1), batch.targets.flatten()))
    out.loss.backward()
    assert all(p.grad is not None for p in model.parameters())


def test_concat_views_pads_the_shorter_view() -> None:
    a, b = torch.rand(2, 4, 3, generator=_gen(0)), torch.rand(2, 2, 5, generator=_gen(1))
    c = concat_views([a, b], "features")
    assert c.shape == (2, 4, 8)
    assert torch.equal(c[:, :, :3], a) and torch.equal(c[:, :2, 3:], b) and not c[:, 2:, 3:].any()
    t = concat_views([a, b])  # in time: a, a separator step, b
    assert t.shape == (2, 4 + 1 + 2, 6)
    assert torch.equal(t[:, :4, :3], a) and not t[:, :4, 3:].any()
    assert torch.equal(t[:, 4], torch.tensor([0.0, 0, 0, 0, 0, 1]).expand(2, 6))
    assert torch.equal(t[:, 5:, :5], b) and not t[:, 5:, 5].any()


@pytest.mark.parametrize("name,kw", [("dmnc", {}), ("dmnc", {"fusion": "early"}), ("dcman", {})])
def test_memories_are_write_protected_while_decoding(name: str, kw: dict) -> None:
    """The decoder only reads: the memories it is given are not modified in place (their
    version counters do not move) and equal their values before decoding; a query's logits
    do not depend on the other queries decoded with it."""
    torch.manual_seed(1)
    model = build_learner(name, n_way=3, image_shape=(1, 5, 3), **SMALL, **kw).double()
    x = torch.rand(2, 6, 1, 5, 3, generator=_gen(3), dtype=torch.float64)
    y = torch.tensor([[0, 1, 2, 0, 1, 2], [2, 2, 1, 0, 0, 1]])
    onehot = F.one_hot(y, 3).double()
    enc = model._encode(episode_views(x, onehot))
    before = [(m.clone(), m._version) for m in enc.memories]
    q = torch.rand(2, 4, 15, generator=_gen(4), dtype=torch.float64)
    model.decode(enc, q)
    for m, (value, version) in zip(enc.memories, before, strict=True):
        assert m._version == version and torch.equal(m, value)
    both = model.predict(x, y, x[:, :2], n_way=3)
    alone = model.predict(x, y, x[:, 1:2], n_way=3)
    assert torch.allclose(both[:, 1:2], alone, atol=1e-12)


def _naive_predict(model: TwoViewLearner, sx: torch.Tensor, sy: torch.Tensor, qx: torch.Tensor, n_way: int
                   ) -> torch.Tensor:
    """One episode and one query at a time, the views built item by item, the decoder run
    step by step: the reference for the batched ``predict``."""
    rows = []
    for b in range(sx.shape[0]):
        half = sx.shape[-2] // 2
        items_a, items_b = [], []
        for s in range(sx.shape[1]):
            label = torch.zeros(model.classes, dtype=sx.dtype)
            label[sy[b, s]] = 1
            items_a.append(torch.cat((sx[b, s, :, :half].reshape(-1), label)))
            items_b.append(torch.cat((sx[b, s, :, half:].reshape(-1), label)))
        va, vb = torch.stack(items_a)[None], torch.stack(items_b[::-1])[None]
        if model.concat == "time":  # a, a separator step, b; one channel more for the separator
            width = max(va.shape[-1], vb.shape[-1]) + 1
            sep = torch.zeros(1, 1, width, dtype=sx.dtype)
            sep[..., -1] = 1
            pad = lambda v, w=width: torch.cat((v, torch.zeros(1, v.shape[1], w - v.shape[-1], dtype=sx.dtype)), -1)  # noqa: E731
            enc = model.core.encode([torch.cat((pad(va), sep, pad(vb)), 1)])
        elif model.concat:
            enc = model.core.encode([torch.cat((va, vb), -1)])
        else:
            enc = model.core.encode([va, vb])
        per_query = []
        for q in range(qx.shape[1]):
            h, c = enc.h, enc.c
            dec = model.core.decoder
            reads = torch.zeros(1, dec.read_size, dtype=sx.dtype)
            xq = qx[b, q].reshape(1, -1)
            for _ in range(model.decode_steps):
                h, c = dec.cell(torch.cat((xq, reads), 1), (h, c))
                raw = dec.interface(h).view(dec.memories, dec.read_heads, dec.width + 1)
                got = []
                for m, mem in enumerate(enc.memories):
                    for i in range(dec.read_heads):
                        key = torch.tanh(raw[m, i, : dec.width])
                        beta = 1 + F.softplus(raw[m, i, dec.width])
                        norms = torch.sqrt((mem[0] ** 2).sum(-1) + NORM_EPS) * torch.sqrt((key**2).sum() + NORM_EPS)
                        sim = (mem[0] @ key) / norms
                        w = torch.softmax(beta * sim, 0)
                        got.append(w @ mem[0])
                reads = torch.cat(got)[None]
            per_query.append(model.head(torch.cat((h, reads), 1))[0, :n_way])
        logits = torch.stack(per_query)
        present = torch.zeros(n_way, dtype=torch.bool)
        present[sy[b].unique()] = True
        rows.append(logits.masked_fill(~present, float("-inf")))
    return torch.stack(rows)


@pytest.mark.parametrize("name,kw", [("dmnc", {}), ("dcman", {}), ("dcman", {"view_concat": "features"})])
def test_predict_matches_naive_loop_with_gradients(name: str, kw: dict) -> None:
    torch.manual_seed(2)
    model = build_learner(name, n_way=3, image_shape=(1, 5, 3), max_way=4, decode_steps=3, **SMALL, **kw).double()
    sx = torch.rand(2, 5, 1, 5, 3, generator=_gen(5), dtype=torch.float64, requires_grad=True)
    sy = torch.tensor([[0, 1, 0, 1, 1], [1, 0, 1, 1, 0]])  # class 2 absent: -inf
    qx = torch.rand(2, 3, 1, 5, 3, generator=_gen(6), dtype=torch.float64, requires_grad=True)
    got = model.predict(sx, sy, qx, n_way=3)
    ref = _naive_predict(model, sx, sy, qx, 3)
    assert got.shape == (2, 3, 3)
    assert torch.isinf(got[..., 2]).all() and torch.isinf(ref[..., 2]).all()
    assert torch.allclose(got[..., :2], ref[..., :2], atol=1e-10)
    weights = torch.rand(2, 3, 2, generator=_gen(7), dtype=torch.float64)
    grads = torch.autograd.grad((got[..., :2] * weights).sum(), [sx, qx, *model.parameters()], allow_unused=True)
    ref_grads = torch.autograd.grad((ref[..., :2] * weights).sum(), [sx, qx, *model.parameters()], allow_unused=True)
    for g, r in zip(grads, ref_grads, strict=True):
        assert (g is None) == (r is None)
        if g is not None:
            assert torch.allclose(g, r, atol=1e-9)


def test_decoder_reads_for_plots() -> None:
    task = load_dataset("two_view_sum", "test", min_length=3, max_length=3, base=3)
    torch.manual_seed(3)
    model = build_learner("dmnc", n_way=1, image_shape=task.image_shape, **SMALL, **task.learner_kwargs())
    got = model.decoder_reads(task.sample(2, _gen(8)))
    assert got["read_weights"].shape == (2, 3, 2, 2, 7)  # [B, Td, M, R, S]
    assert torch.allclose(got["read_weights"].sum(-1), torch.ones(2, 3, 2, 2))
    assert [w.shape for w in got["write_weights"]] == [(2, 3, 1, 7), (2, 3, 1, 7)]
    assert got["memory_names"][0].startswith("memory a")


def test_layout_errors_name_the_keys() -> None:
    with pytest.raises(ValueError, match="view_sizes .* decoder_size and classes together"):
        build_learner("dmnc", n_way=3, image_shape=(1, 5, 5), view_sizes=[2, 2])
    with pytest.raises(ValueError, match="at least 2 rows"):
        build_learner("dcman", n_way=3, image_shape=(1, 1, 5))
    with pytest.raises(ValueError, match="decode_steps must be an integer >= 1"):
        build_learner("dmnc", n_way=3, image_shape=(1, 4, 4), decode_steps=0)
    model = build_learner("dmnc", n_way=3, image_shape=(1, 4, 4), **SMALL)
    x = torch.rand(1, 4, 1, 4, 4)
    with pytest.raises(ValueError, match="4-way episodes need max_way >= 4"):
        model.predict(x, torch.tensor([[0, 1, 2, 3]]), x, n_way=4)


def test_encoded_is_what_decode_reads() -> None:
    """``forward`` on a task batch is ``decode(encode(views))`` with the head (no hidden state)."""
    task = load_dataset("two_view_sum", "val", min_length=2, max_length=4, base=3)
    torch.manual_seed(4)
    model = build_learner("dmnc", n_way=1, image_shape=task.image_shape, **SMALL, **task.learner_kwargs())
    batch = task.sample(2, _gen(9))
    enc = model._encode(batch.views)
    assert isinstance(enc, Encoded) and len(enc.memories) == 2
    logits, _ = model.decode(enc, batch.decoder_inputs)
    assert torch.allclose(model(batch).logits, logits)
    assert isinstance(batch, TwoViewBatch)
