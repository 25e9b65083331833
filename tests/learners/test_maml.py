"""MAML: inner loop vs a hand-written SGD loop, outer gradients vs finite differences (float64),
first-order gradients, train/eval inner steps and the masked inner loss. (That MAML learns is
checked with the other set learners in ``test_set_learners.py``.)"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from metamem.learners import build_learner
from metamem.learners.backbones import BatchStatNorm2d, Conv4Stride, ConvBlock
from metamem.learners.grouped import grouped_forward, supports_grouped
from metamem.learners.maml import MAML
from metamem.types import EpisodeBatch

B, S, QN, N = 2, 6, 4, 3


def tiny_maml(*, inner_steps: int = 2, eval_inner_steps: int | None = None, first_order: bool = False,
              episode_batching: str = "vmap") -> MAML:
    """conv -> BatchNorm (batch statistics) -> tanh -> linear, float64: 81 parameters."""
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(1, 2, 3), BatchStatNorm2d(2), nn.Tanh(), nn.Flatten(), nn.Linear(18, N)
    ).double()
    return MAML(net, n_way=N, inner_steps=inner_steps, inner_lr=0.3,
                eval_inner_steps=eval_inner_steps, first_order=first_order, episode_batching=episode_batching)


def episode_batch(sx: torch.Tensor, sy: torch.Tensor, qx: torch.Tensor, qy: torch.Tensor, *, n_way: int,
                  k_shot: int, n_query: int) -> EpisodeBatch:
    """An EpisodeBatch of these support/query tensors (``[B, S, C, H, W]``, ``[B, S]``, ...)."""
    b, s, qn = sx.shape[0], sx.shape[1], qx.shape[1]
    return EpisodeBatch(
        support_x=sx, support_y=sy, query_x=qx, query_y=qy, classes=torch.arange(n_way).repeat(b, 1),
        support_index=torch.zeros(b, s, dtype=torch.long), query_index=torch.zeros(b, qn, dtype=torch.long),
        episode_keys=torch.arange(b), n_way=n_way, k_shot=k_shot, n_query=n_query,
    )


@pytest.fixture(scope="module")
def tiny_batch() -> EpisodeBatch:
    g = torch.Generator().manual_seed(1)
    return episode_batch(torch.randn(B, S, 1, 5, 5, generator=g, dtype=torch.float64),
                         torch.arange(S).remainder(N).repeat(B, 1),
                         torch.randn(B, QN, 1, 5, 5, generator=g, dtype=torch.float64),
                         torch.arange(QN).remainder(N).repeat(B, 1), n_way=N, k_shot=2, n_query=1)


def manual_adapt(model: MAML, params: dict, sx: torch.Tensor, sy: torch.Tensor, steps: int) -> dict:
    """Plain autograd SGD on the support loss (create_graph: second order)."""
    for _ in range(steps):
        loss = F.cross_entropy(functional_call(model.net, params, (sx,)), sy)
        grads = torch.autograd.grad(loss, list(params.values()), create_graph=not model.first_order)
        params = {k: p - model.inner_lr * g for (k, p), g in zip(params.items(), grads, strict=True)}
    return params


def reference_outer_loss(model: MAML, batch: EpisodeBatch, params: dict, steps: int) -> torch.Tensor:
    losses = []
    for b in range(batch.batch_size):  # a loop over episodes, the naive way
        adapted = manual_adapt(model, params, batch.support_x[b], batch.support_y[b], steps)
        losses.append(F.cross_entropy(functional_call(model.net, adapted, (batch.query_x[b],)), batch.query_y[b]))
    return torch.stack(losses).mean()


def test_inner_loop_matches_manual_sgd(tiny_batch: EpisodeBatch) -> None:
    model = tiny_maml(inner_steps=3)
    params = dict(model.net.named_parameters())
    got = model.adapt(params, tiny_batch.support_x[0], tiny_batch.support_y[0], 3)
    want = manual_adapt(model, params, tiny_batch.support_x[0], tiny_batch.support_y[0], 3)
    for k in params:
        torch.testing.assert_close(got[k], want[k])
    assert not torch.equal(got["4.weight"], params["4.weight"])


@pytest.mark.parametrize("batching", ["vmap", "loop", "grouped"])
def test_second_order_outer_gradient_against_finite_differences(tiny_batch: EpisodeBatch, batching: str) -> None:
    model = tiny_maml(inner_steps=2, episode_batching=batching)
    names = [n for n, _ in model.net.named_parameters()]

    def outer(*ps: torch.Tensor) -> torch.Tensor:
        params = dict(zip(names, ps, strict=True))
        losses = [
            F.cross_entropy(
                functional_call(model.net, model.adapt(params, tiny_batch.support_x[b], tiny_batch.support_y[b], 2),
                                (tiny_batch.query_x[b],)),
                tiny_batch.query_y[b],
            )
            for b in range(B)
        ]
        return torch.stack(losses).mean()

    inputs = tuple(p.detach().clone().requires_grad_() for p in model.net.parameters())
    assert torch.autograd.gradcheck(outer, inputs, eps=1e-6, atol=1e-5)
    # the batched forward (vmapped, or the episode loop) gives the reference loss and gradient
    assert_batched_matches_reference(model.train(), tiny_batch, 2)


def assert_batched_matches_reference(model: MAML, batch: EpisodeBatch, steps: int) -> None:
    """forward() (vmapped over episodes) gives the per-episode reference loss and gradients."""
    out = model(batch)
    out.loss.backward()
    ref = reference_outer_loss(model, batch, dict(model.net.named_parameters()), steps)
    torch.testing.assert_close(out.loss, ref)
    ref_grads = torch.autograd.grad(ref, list(model.net.parameters()))
    for (name, p), g in zip(model.net.named_parameters(), ref_grads, strict=True):
        torch.testing.assert_close(p.grad, g, msg=name)


@pytest.mark.parametrize("backbone", ["conv4", "conv4_stride"])
@pytest.mark.parametrize("batching", ["vmap", "loop", "grouped", "auto"])
def test_registered_maml_batched_gradients_match_the_loop(batching: str, backbone: str) -> None:
    """The built-in conv4 MAML: vmap + second order through BatchNorm equals the per-episode loop.

    (The fused BatchNorm kernel fails this under vmap, hence ``BatchStatNorm2d``.)
    """
    torch.manual_seed(0)
    model = build_learner("maml", n_way=2, image_shape=(1, 16, 16), inner_steps=2,
                          episode_batching=batching, backbone=backbone).double()
    g = torch.Generator().manual_seed(2)
    batch = episode_batch(torch.rand(2, 4, 1, 16, 16, generator=g, dtype=torch.float64),
                          torch.tensor([[0, 1, 0, 1]] * 2),
                          torch.rand(2, 2, 1, 16, 16, generator=g, dtype=torch.float64),
                          torch.tensor([[0, 1]] * 2), n_way=2, k_shot=2, n_query=1)
    assert_batched_matches_reference(model, batch, 2)


def test_first_order_drops_the_hessian_term(tiny_batch: EpisodeBatch) -> None:
    fo, so = tiny_maml(first_order=True), tiny_maml(first_order=False)
    fo(tiny_batch).loss.backward()
    so(tiny_batch).loss.backward()
    # first order: the mean over episodes of the query-loss gradient at the adapted parameters
    params = {k: v.detach().requires_grad_() for k, v in fo.net.named_parameters()}
    want = {k: torch.zeros_like(v) for k, v in params.items()}
    for b in range(B):
        adapted = {k: v.detach().requires_grad_() for k, v in
                   manual_adapt(fo, params, tiny_batch.support_x[b], tiny_batch.support_y[b], 2).items()}
        loss = F.cross_entropy(functional_call(fo.net, adapted, (tiny_batch.query_x[b],)), tiny_batch.query_y[b])
        for k, g in zip(adapted, torch.autograd.grad(loss, list(adapted.values())), strict=True):
            want[k] += g / B
    for k, p in fo.net.named_parameters():
        torch.testing.assert_close(p.grad, want[k], msg=k)
    assert any(not torch.allclose(p.grad, q.grad) for p, q in zip(fo.parameters(), so.parameters(), strict=True))


def test_eval_mode_uses_eval_inner_steps(tiny_batch: EpisodeBatch) -> None:
    model = tiny_maml(inner_steps=1, eval_inner_steps=3)
    params = dict(model.net.named_parameters())
    for train, steps in ((True, 1), (False, 3)):
        model.train(train)
        with torch.no_grad():
            got = model(tiny_batch).loss
        torch.testing.assert_close(got, reference_outer_loss(model, tiny_batch, params, steps).detach())
    no_adapt = tiny_maml(inner_steps=0)
    logits = no_adapt.predict(tiny_batch.support_x, tiny_batch.support_y, tiny_batch.query_x, n_way=N)
    torch.testing.assert_close(logits, torch.stack([no_adapt.net(tiny_batch.query_x[b]) for b in range(B)]))


@pytest.mark.parametrize("limit", [1, 10, 21])  # 1 and 10: one episode per chunk; 21: two, then one
def test_scoring_in_chunks_without_autograd_gives_the_batched_logits(limit: int) -> None:
    g = torch.Generator().manual_seed(3)
    b5 = 5  # an odd batch, so the last chunk is short
    sx = torch.randn(b5, S, 1, 5, 5, generator=g, dtype=torch.float64)
    sy = torch.arange(S).remainder(N).repeat(b5, 1)
    qx = torch.randn(b5, QN, 1, 5, 5, generator=g, dtype=torch.float64)
    model = tiny_maml()
    model.eval_chunk_images = None
    whole = model.predict(sx, sy, qx, n_way=N)  # one vmap over all 5 (autograd on)
    model.eval_chunk_images = limit
    assert model.eval_chunk(b5, S + QN) == b5  # autograd on (training): never chunked
    with torch.no_grad():
        assert model.eval_chunk(b5, S + QN) == max(1, limit // (S + QN))
        chunked = model.predict(sx, sy, qx, n_way=N)
    torch.testing.assert_close(chunked, whole.detach())
    for i in range(b5):  # and each episode equals the naive loop
        adapted = manual_adapt(model, dict(model.net.named_parameters()), sx[i], sy[i], 2)
        torch.testing.assert_close(chunked[i], functional_call(model.net, adapted, (qx[i],)).detach())


def test_auto_batching_groups_on_the_cpu_and_gives_the_vmapped_logits(tiny_batch: EpisodeBatch) -> None:
    auto, vm = tiny_maml(episode_batching="auto"), tiny_maml(episode_batching="vmap")
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert auto.groups_episodes(cpu) and not auto.loops_over_episodes(cpu)
    assert not auto.groups_episodes(cuda) and not auto.loops_over_episodes(cuda)  # vmap on a GPU
    assert not vm.loops_over_episodes(cpu) and not vm.groups_episodes(cpu)
    assert tiny_maml(episode_batching="loop").loops_over_episodes(cuda)
    assert tiny_maml(episode_batching="grouped").groups_episodes(cuda)
    for train in (True, False):
        auto.train(train), vm.train(train)
        with torch.no_grad():
            got = auto.predict(tiny_batch.support_x, tiny_batch.support_y, tiny_batch.query_x, n_way=N)
            want = vm.predict(tiny_batch.support_x, tiny_batch.support_y, tiny_batch.query_x, n_way=N)
        torch.testing.assert_close(got, want)
        assert got.shape == (B, QN, N)


def test_masked_inner_loss_ignores_absent_items(tiny_batch: EpisodeBatch) -> None:
    model = tiny_maml()
    mask = torch.tensor([[1, 1, 1, 0, 0, 0], [1, 0, 1, 0, 1, 1]], dtype=torch.bool)
    b = tiny_batch
    got = model.predict(b.support_x, b.support_y, b.query_x, n_way=N, support_mask=mask)
    params = dict(model.net.named_parameters())
    for i in range(B):
        adapted = manual_adapt(model, params, b.support_x[i][mask[i]], b.support_y[i][mask[i]], 2)
        torch.testing.assert_close(got[i], functional_call(model.net, adapted, (b.query_x[i],)))


def test_bad_arguments() -> None:
    # another way is not refused: the head starts at zero for that episode (test_any_way.py)
    logits = tiny_maml().predict(torch.zeros(1, 5, 1, 5, 5, dtype=torch.float64),
                                 torch.arange(5)[None], torch.zeros(1, 2, 1, 5, 5, dtype=torch.float64), n_way=5)
    assert logits.shape == (1, 2, 5)
    headless = MAML(nn.Sequential(nn.Flatten(), nn.Tanh()), n_way=25)
    with pytest.raises(ValueError, match="no nn.Linear head to re-initialise for n_way=5"):
        headless.predict(torch.zeros(1, 5, 1, 5, 5), torch.arange(5)[None], torch.zeros(1, 2, 1, 5, 5), n_way=5)
    with pytest.raises(ValueError, match="maml: episode_batching must be 'auto', 'vmap', 'loop' or 'grouped', got 'map'"):
        build_learner("maml", n_way=3, image_shape=(1, 28, 28), episode_batching="map")
    with pytest.raises(ValueError, match="maml: eval_chunk_images must be >= 1 or None, got 0"):
        build_learner("maml", n_way=3, image_shape=(1, 28, 28), eval_chunk_images=0)
    with pytest.raises(ValueError, match="maml: train_chunk_images must be >= 1 or None, got 0"):
        build_learner("maml", n_way=3, image_shape=(1, 28, 28), train_chunk_images=0)
    with pytest.raises(ValueError, match="maml: episode_batching='grouped' needs a network of"):
        MAML(nn.Sequential(nn.Conv2d(1, 2, 3), nn.Dropout(), nn.Flatten(), nn.Linear(18, 3)), n_way=3,
             episode_batching="grouped")
    with pytest.raises(ValueError, match="maml: inner_steps and eval_inner_steps must be >= 0"):
        build_learner("maml", n_way=3, image_shape=(1, 28, 28), inner_steps=-1)


def test_backbone_channels_sets_the_conv4_width_with_batch_statistics() -> None:
    # the MAML paper's mini-ImageNet Conv-4 has 32 filters (experiments/mini_imagenet/maml.yaml)
    model = build_learner("maml", n_way=5, image_shape=(3, 84, 84), backbone_channels=32)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [32, 32, 32, 32]
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert norms and all(isinstance(m, BatchStatNorm2d) and not m.track_running_stats for m in norms)
    head = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
    assert head.in_features == 32 * 5 * 5
    default = build_learner("maml", n_way=5, image_shape=(3, 84, 84))
    assert [m.out_channels for m in default.modules() if isinstance(m, nn.Conv2d)] == [64] * 4
    with pytest.raises(ValueError, match="maml: backbone_channels=32 applies to backbones 'conv4' and 'conv4_stride' only"):
        build_learner("maml", n_way=5, image_shape=(3, 84, 84), backbone="resnet12", backbone_channels=32)


# --- the grouped path: every episode's adapted network side by side, one grouped conv per layer

GB, GN, GK, GQ = 3, 3, 2, 2  # 3 episodes, 3-way 2-shot, 2 queries per class: odd on purpose


def grouped_net() -> nn.Sequential:
    """Two Conv-4 blocks on 2-channel 12x12 images (12 -> 6 -> 3), then a linear head, float64."""
    torch.manual_seed(4)
    return nn.Sequential(
        ConvBlock(2, 3, track_running_stats=False), ConvBlock(3, 4, track_running_stats=False),
        nn.Flatten(), nn.Linear(4 * 3 * 3, GN),
    ).double()


@pytest.fixture(scope="module")
def odd_batch() -> EpisodeBatch:
    g = torch.Generator().manual_seed(5)
    return episode_batch(torch.randn(GB, GN * GK, 2, 12, 12, generator=g, dtype=torch.float64),
                         torch.arange(GN).repeat_interleave(GK).repeat(GB, 1),
                         torch.randn(GB, GN * GQ, 2, 12, 12, generator=g, dtype=torch.float64),
                         torch.arange(GN).repeat_interleave(GQ).repeat(GB, 1), n_way=GN, k_shot=GK, n_query=GQ)


def reference_logits(model: MAML, batch: EpisodeBatch, steps: int) -> torch.Tensor:
    """Query logits of the naive per-episode loop (plain autograd, ``manual_adapt``)."""
    params = dict(model.net.named_parameters())
    return torch.stack([
        functional_call(model.net, manual_adapt(model, params, batch.support_x[b], batch.support_y[b], steps),
                        (batch.query_x[b],))
        for b in range(batch.batch_size)
    ])


@pytest.mark.parametrize("first_order", [False, True])
@pytest.mark.parametrize("steps", [1, 2])
@pytest.mark.parametrize("chunk", [None, 4, 24])  # whole batch; one episode per chunk; 2 then 1
def test_grouped_training_matches_the_per_episode_reference(odd_batch: EpisodeBatch, first_order: bool,
                                                             steps: int, chunk: int | None) -> None:
    """Query logits, outer loss and the meta-gradient of every parameter, first and second order."""
    model = MAML(grouped_net(), n_way=GN, inner_steps=steps, inner_lr=0.3, first_order=first_order,
                 episode_batching="grouped", train_chunk_images=chunk).train()
    assert model.grouped_chunk(GB, GN * (GK + GQ)) == {None: GB, 4: 1, 24: 2}[chunk]
    logits = model.predict(odd_batch.support_x, odd_batch.support_y, odd_batch.query_x, n_way=GN)
    want_logits = reference_logits(model, odd_batch, steps)
    torch.testing.assert_close(logits, want_logits)
    out = model(odd_batch)
    out.loss.backward()
    params = dict(model.net.named_parameters())
    ref = reference_outer_loss(model, odd_batch, params, steps)
    torch.testing.assert_close(out.loss, ref)
    if first_order:  # the query-loss gradient at the adapted parameters, averaged over episodes
        want = {k: torch.zeros_like(v) for k, v in params.items()}
        for b in range(GB):
            adapted = {k: v.detach().requires_grad_() for k, v in
                       manual_adapt(model, params, odd_batch.support_x[b], odd_batch.support_y[b], steps).items()}
            loss = F.cross_entropy(functional_call(model.net, adapted, (odd_batch.query_x[b],)), odd_batch.query_y[b])
            for k, g in zip(adapted, torch.autograd.grad(loss, list(adapted.values())), strict=True):
                want[k] += g / GB
        ref_grads = list(want.values())
    else:
        ref_grads = list(torch.autograd.grad(ref, list(params.values())))
    for (name, p), g in zip(params.items(), ref_grads, strict=True):
        torch.testing.assert_close(p.grad, g, msg=name)


@pytest.mark.parametrize("first_order", [False, True])
def test_grouped_training_with_the_strided_conv4_matches_the_per_episode_reference(
        odd_batch: EpisodeBatch, first_order: bool) -> None:
    """MAML's Omniglot net (stride-2 convolutions, mean over positions): logits, loss, meta-gradients."""
    torch.manual_seed(6)
    net = nn.Sequential(Conv4Stride((2, 12, 12), channels=3, track_running_stats=False), nn.Linear(3, GN)).double()
    model = MAML(net, n_way=GN, inner_steps=2, inner_lr=0.3, first_order=first_order,
                 episode_batching="grouped").train()
    assert supports_grouped(net) and model.groups_episodes(torch.device("cpu"))
    torch.testing.assert_close(model.predict(odd_batch.support_x, odd_batch.support_y, odd_batch.query_x, n_way=GN),
                               reference_logits(model, odd_batch, 2))
    out = model(odd_batch)
    out.loss.backward()
    loop = MAML(net, n_way=GN, inner_steps=2, inner_lr=0.3, first_order=first_order, episode_batching="loop").train()
    grads = {k: p.grad.clone() for k, p in net.named_parameters()}
    net.zero_grad()
    ref = loop(odd_batch)
    ref.loss.backward()
    torch.testing.assert_close(out.loss, ref.loss)
    for name, p in net.named_parameters():
        torch.testing.assert_close(grads[name], p.grad, msg=name)


@pytest.mark.parametrize("chunk", [None, 10, 25])  # whole batch; one episode per chunk; 2 then 1
def test_grouped_eval_adaptation_matches_the_per_episode_reference(odd_batch: EpisodeBatch, chunk: int | None) -> None:
    """Scoring (eval mode, no autograd) adapts with eval_inner_steps, chunked by eval_chunk_images."""
    model = MAML(grouped_net(), n_way=GN, inner_steps=1, eval_inner_steps=3, inner_lr=0.3,
                 episode_batching="grouped", eval_chunk_images=chunk).eval()
    with torch.no_grad():
        assert model.grouped_chunk(GB, GN * (GK + GQ)) == {None: GB, 10: 1, 25: 2}[chunk]
        got = model.predict(odd_batch.support_x, odd_batch.support_y, odd_batch.query_x, n_way=GN)
    assert not got.requires_grad
    torch.testing.assert_close(got, reference_logits(model, odd_batch, 3).detach())
    loop = MAML(model.net, n_way=GN, inner_steps=1, eval_inner_steps=3, inner_lr=0.3, episode_batching="loop").eval()
    with torch.no_grad():
        torch.testing.assert_close(got, loop.predict(odd_batch.support_x, odd_batch.support_y, odd_batch.query_x,
                                                     n_way=GN))


@pytest.mark.parametrize("head_init", ["learned", "zero"])
def test_grouped_zero_head_for_another_way_matches_the_loop(odd_batch: EpisodeBatch, head_init: str) -> None:
    """A 2-way episode on a 3-way MAML (zero head, not a parameter) and head_init='zero'."""
    b = odd_batch
    keep = b.support_y[0] < 2
    sx, sy = b.support_x[:, keep], b.support_y[:, keep]
    qx = b.query_x[:, b.query_y[0] < 2]
    out = {}
    for batching in ("grouped", "loop"):
        model = MAML(grouped_net(), n_way=GN, inner_steps=2, inner_lr=0.3, head_init=head_init,
                     episode_batching=batching).train()
        logits = model.predict(sx, sy, qx, n_way=2)
        logits.square().sum().backward()
        out[batching] = logits, [p.grad for p in model.parameters()]
    torch.testing.assert_close(out["grouped"][0], out["loop"][0])
    for g, want in zip(out["grouped"][1], out["loop"][1], strict=True):
        torch.testing.assert_close(g, want)


def test_supports_grouped() -> None:
    assert supports_grouped(build_learner("maml", n_way=5, image_shape=(1, 28, 28)).net)
    assert supports_grouped(tiny_maml().net) and supports_grouped(grouped_net())
    resnet = build_learner("maml", n_way=5, image_shape=(3, 32, 32), backbone="resnet12")
    assert not supports_grouped(resnet.net)
    assert resnet.loops_over_episodes(torch.device("cpu")) and not resnet.groups_episodes(torch.device("cpu"))
    assert supports_grouped(nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten()))  # features out, no head needed
    assert not supports_grouped(nn.Sequential(nn.Conv2d(1, 2, 3)))  # images out
    assert not supports_grouped(nn.Sequential(nn.Linear(4, 2)))  # a linear layer on images
    assert not supports_grouped(nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Flatten(), nn.Linear(18, 2)))
    assert not supports_grouped(nn.Sequential(nn.Conv2d(1, 2, 3, padding_mode="reflect", padding=1), nn.Flatten(),
                                              nn.Linear(50, 2)))


def test_grouped_forward_is_each_copy_on_its_own_images() -> None:
    """Copy e of grouped_forward equals functional_call with copy e's weights (bias, strides)."""
    torch.manual_seed(6)
    net = nn.Sequential(nn.Conv2d(2, 4, 3, stride=2, padding=1), BatchStatNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),
                        nn.Conv2d(4, 4, 1, groups=2), nn.Tanh(), nn.Flatten(), nn.Linear(4 * 2 * 2, 3)).double()
    params = {k: v.detach() + 0.1 * torch.randn(3, *v.shape, dtype=torch.float64)
              for k, v in net.named_parameters()}
    x = torch.randn(3, 5, 2, 9, 9, dtype=torch.float64)
    got = grouped_forward(net, params, x)
    assert got.shape == (3, 5, 3)
    for e in range(3):
        torch.testing.assert_close(got[e], functional_call(net, {k: v[e] for k, v in params.items()}, (x[e],)))


def reference_grouped_query_logits(model: MAML, batch: EpisodeBatch, steps: int) -> torch.Tensor:
    """Naive ``query_groups="one_per_class"``: per episode, per j, the j-th query of every
    class through the adapted network together (plain autograd, index lists)."""
    params = dict(model.net.named_parameters())
    n, q = batch.n_way, batch.query_x.shape[1] // batch.n_way
    rows = []
    for b in range(batch.batch_size):
        adapted = manual_adapt(model, params, batch.support_x[b], batch.support_y[b], steps)
        out: list[torch.Tensor | None] = [None] * (n * q)
        for j in range(q):
            idx = [c * q + j for c in range(n)]
            logits = functional_call(model.net, adapted, (batch.query_x[b, idx],))
            for row, i in enumerate(idx):
                out[i] = logits[row]
        rows.append(torch.stack(out))  # type: ignore[arg-type]
    return torch.stack(rows)


@pytest.mark.parametrize("batching", ["grouped", "loop", "vmap"])
@pytest.mark.parametrize("train", [True, False])
def test_one_query_per_class_batches_match_the_naive_reference(odd_batch: EpisodeBatch, batching: str,
                                                                train: bool) -> None:
    """Logits (train and eval), outer loss and meta-gradients of query_groups='one_per_class'
    against a per-episode, per-group loop; and they differ from scoring all queries at once."""
    model = MAML(grouped_net(), n_way=GN, inner_steps=2, eval_inner_steps=3, inner_lr=0.3,
                 episode_batching=batching, query_groups="one_per_class", eval_chunk_images=25)
    model.train(train)
    steps = 2 if train else 3
    assert model.query_batches(GN * GQ, GN) == GQ
    want = reference_grouped_query_logits(model, odd_batch, steps)
    with torch.set_grad_enabled(train):
        got = model.predict(odd_batch.support_x, odd_batch.support_y, odd_batch.query_x, n_way=GN)
    torch.testing.assert_close(got, want if train else want.detach())
    whole = MAML(model.net, n_way=GN, inner_steps=2, eval_inner_steps=3, inner_lr=0.3,
                 episode_batching=batching).train(train)
    with torch.no_grad():
        other = whole.predict(odd_batch.support_x, odd_batch.support_y, odd_batch.query_x, n_way=GN)
    assert (other - got.detach()).abs().max() > 1e-3  # BatchNorm sees another query batch
    if train:
        out = model(odd_batch)
        out.loss.backward()
        params = dict(model.net.named_parameters())
        ref = F.cross_entropy(want.flatten(0, 1), odd_batch.query_y.flatten(), reduction="none").view(GB, -1)
        ref = ref.mean(1).mean()
        torch.testing.assert_close(out.loss, ref)
        for (name, p), g in zip(params.items(), torch.autograd.grad(ref, list(params.values())), strict=True):
            torch.testing.assert_close(p.grad, g, msg=name)


def test_one_query_per_class_is_the_whole_query_set_for_one_query_or_an_uneven_set(odd_batch: EpisodeBatch) -> None:
    """Q = 1 (the paper's training shape) and query sets that are not N*Q: one batch, as 'episode'."""
    grouped = MAML(grouped_net(), n_way=GN, inner_steps=1, inner_lr=0.3, query_groups="one_per_class").eval()
    whole = MAML(grouped.net, n_way=GN, inner_steps=1, inner_lr=0.3).eval()
    assert grouped.query_batches(GN, GN) == 1 and grouped.query_batches(GN * GQ + 1, GN) == 1
    assert whole.query_batches(GN * GQ, GN) == 1
    for qx in (odd_batch.query_x[:, ::GQ], odd_batch.query_x[:, :GN * GQ - 1]):
        with torch.no_grad():
            torch.testing.assert_close(grouped.predict(odd_batch.support_x, odd_batch.support_y, qx, n_way=GN),
                                       whole.predict(odd_batch.support_x, odd_batch.support_y, qx, n_way=GN))


def test_query_groups_is_checked_and_reaches_the_registered_learner() -> None:
    with pytest.raises(ValueError, match="query_groups must be 'episode' or 'one_per_class', got 'class'"):
        MAML(grouped_net(), n_way=GN, query_groups="class")  # type: ignore[arg-type]
    model = build_learner("maml", n_way=5, image_shape=(1, 28, 28), backbone="conv4_stride",
                          query_groups="one_per_class")
    assert isinstance(model, MAML) and model.query_groups == "one_per_class"


def test_query_groups_script_amends_a_one_query_run_and_refuses_others(tmp_path, load_script, capsys) -> None:
    """scripts/maml_query_groups.py: config.yaml and every checkpoint get the option, weights
    untouched; a run trained with Q > 1, another learner or an already-set option is refused
    before any file changes."""
    import yaml

    from metamem.runs import learner_from_checkpoint, save_checkpoint, save_config

    script = load_script("maml_query_groups")
    learner = {"name": "maml", "backbone": "conv4_stride", "inner_steps": 1}
    config = {"learner": learner, "episodes": {"n_way": 5, "k_shot": 1, "n_query": 1}}
    model = build_learner("maml", n_way=5, image_shape=(1, 28, 28), backbone="conv4_stride", inner_steps=1)
    run = tmp_path / "run"
    save_config(run / "config.yaml", config)
    for name in ("best.pt", "step_000100.pt"):
        save_checkpoint(run / "checkpoints" / name,
                        {"config": config, "model": model.state_dict(), "image_shape": [1, 28, 28], "step": 100})
    assert script.main([str(run)]) == 0
    assert "amended 3 files" in capsys.readouterr().out
    assert yaml.safe_load((run / "config.yaml").read_text())["learner"]["query_groups"] == "one_per_class"
    for name in ("best.pt", "step_000100.pt"):
        ckpt = torch.load(run / "checkpoints" / name, weights_only=True)
        assert ckpt["config"]["learner"] == {**learner, "query_groups": "one_per_class"} and ckpt["step"] == 100
        rebuilt = learner_from_checkpoint(ckpt)
        assert isinstance(rebuilt, MAML) and rebuilt.query_groups == "one_per_class"
        for k, v in model.state_dict().items():
            torch.testing.assert_close(rebuilt.state_dict()[k], v)
    assert script.main([str(run)]) == 2  # already set
    assert "learner.query_groups is already 'one_per_class'" in capsys.readouterr().err

    for bad, message in ((dict(config, episodes={"n_query": 15}), "trained with episodes.n_query=15"),
                         (dict(config, learner={"name": "protonet"}), "learner.name is 'protonet', not maml")):
        other = tmp_path / message.split()[0]
        save_config(other / "config.yaml", config)
        save_checkpoint(other / "checkpoints" / "a.pt", {"config": config, "model": {}})
        save_checkpoint(other / "checkpoints" / "b.pt", {"config": bad, "model": {}})
        before = (other / "checkpoints" / "a.pt").read_bytes()
        assert script.main([str(other)]) == 2
        assert message in capsys.readouterr().err
        assert (other / "checkpoints" / "a.pt").read_bytes() == before  # nothing written
        assert "query_groups" not in (other / "config.yaml").read_text()
