"""The learner contract, checked for EVERY registered learner (parametrized over the registry).

A learner added later (one module + one import line in ``metamem/learners/__init__.py``) is
picked up here automatically. If its builder has a keyword without a default, add a test
value to ``REQUIRED_KWARGS`` (``test_builds_with_defaults`` says which).

Batch independence is always checked in eval mode; a learner whose train-mode outputs are
also per-episode (no BatchNorm statistics pooled across episodes) can declare
``batch_independent_train = True`` to have train mode checked too.
"""

from __future__ import annotations

import inspect

import pytest
import torch
from torch import nn

from metamem.data import load_dataset
from metamem.episodes.sampler import EpisodeSampler
from metamem.learners import BACKBONES, LEARNERS, Learner, SequenceLearner, build_learner
from metamem.learners import capabilities as caps
from metamem.registry import UnknownNameError
from metamem.types import EpisodeBatch, LearnerOutput

IMAGE_SHAPE = (1, 28, 28)
N_WAY, K_SHOT, N_QUERY, BATCH = 3, 2, 2, 4
NUM_CLASSES = 8
#: test values for builder keywords that have no default
REQUIRED_KWARGS: dict[str, dict[str, object]] = {"linear_probe": {"num_train_classes": NUM_CLASSES}}
NAMES = LEARNERS.names()


def build(name: str, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)  # tests may seed; library code never does
    return build_learner(name, n_way=N_WAY, image_shape=IMAGE_SHAPE, **REQUIRED_KWARGS.get(name, {}))


@pytest.fixture(scope="module")
def batches() -> tuple[EpisodeBatch, EpisodeBatch]:
    ds = load_dataset("synthetic", num_classes=NUM_CLASSES, per_class=6, image_size=28, seed=3)
    kw = dict(n_way=N_WAY, k_shot=K_SHOT, n_query=N_QUERY, batch_size=BATCH)
    return EpisodeSampler(ds, seed=1, **kw).sample(), EpisodeSampler(ds, seed=2, **kw).sample()


def expected_targets(model: nn.Module, batch: EpisodeBatch) -> torch.Tensor:
    return batch.as_sequence().y if isinstance(model, caps.SequencePrediction) else batch.query_y


def test_registry_is_populated() -> None:
    assert {"protonet", "matching", "maml", "linear_probe"} <= set(NAMES)
    assert {"conv4", "resnet12"} <= set(BACKBONES.names())


@pytest.mark.parametrize("name", NAMES)
def test_builds_with_defaults(name: str) -> None:
    sig = inspect.signature(LEARNERS.get(name))
    required = {
        p.name for p in sig.parameters.values()
        if p.default is inspect.Parameter.empty and p.kind is not p.VAR_KEYWORD
    } - {"n_way", "image_shape"} - set(REQUIRED_KWARGS.get(name, {}))
    assert not required, f"learner {name!r} needs {sorted(required)}: add test values to REQUIRED_KWARGS"
    model = build(name)
    assert isinstance(model, nn.Module) and isinstance(model, Learner)
    assert inspect.getdoc(LEARNERS.get(name)), f"learner {name!r}: builder needs a docstring"


@pytest.mark.parametrize("name", NAMES)
def test_output_shapes_and_finite(name: str, batches: tuple[EpisodeBatch, EpisodeBatch]) -> None:
    batch = batches[0]
    model = build(name)
    for train in (True, False):
        model.train(train)
        out = model(batch)
        assert isinstance(out, LearnerOutput)
        targets = expected_targets(model, batch)
        assert out.logits.shape == (*targets.shape, N_WAY)
        assert torch.equal(out.targets, targets)
        assert out.loss.shape == () and torch.isfinite(out.loss)
        assert torch.isfinite(out.logits).all(), "a full episode must give finite logits"
        assert out.accuracy().shape == (BATCH,)
    with torch.no_grad():
        logits = model.predict(batch.support_x, batch.support_y, batch.query_x, n_way=N_WAY)
    assert logits.shape == (BATCH, N_WAY * N_QUERY, N_WAY)
    assert not torch.isnan(logits).any()


@pytest.mark.parametrize("name", NAMES)
def test_gradients_reach_every_parameter(name: str, batches: tuple[EpisodeBatch, EpisodeBatch]) -> None:
    model = build(name).train()
    model(batches[0]).loss.backward()
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    assert params, f"learner {name!r} has no trainable parameters"
    no_grad = [n for n, p in params if p.grad is None or not bool(p.grad.abs().sum() > 0)]
    assert not no_grad, f"learner {name!r}: no gradient reaches {no_grad}"
    assert all(torch.isfinite(p.grad).all() for _, p in params)


def _logits(model: nn.Module, batch: EpisodeBatch) -> torch.Tensor:
    with torch.no_grad():
        return model(batch).logits


@pytest.mark.parametrize("name", NAMES)
def test_episodes_are_independent_of_the_batch(name: str, batches: tuple[EpisodeBatch, EpisodeBatch]) -> None:
    batch = batches[0]
    model = build(name)
    modes = [False] + ([True] if getattr(model, "batch_independent_train", False) else [])
    for train in modes:
        model.train(train)
        full = _logits(model, batch)
        singles = torch.cat([_logits(model, batch.select(slice(i, i + 1))) for i in range(BATCH)])
        torch.testing.assert_close(singles, full, rtol=1e-4, atol=1e-4, msg=f"{name} train={train}")


@pytest.mark.parametrize("name", NAMES)
def test_no_state_leaks_between_episodes(name: str, batches: tuple[EpisodeBatch, EpisodeBatch]) -> None:
    a, b = batches
    for train in (False, True):
        alone, after = build(name).train(train), build(name).train(train)
        torch.manual_seed(5)
        ref = _logits(alone, b)
        _logits(after, a)
        torch.manual_seed(5)
        torch.testing.assert_close(_logits(after, b), ref, rtol=1e-5, atol=1e-5, msg=f"{name} train={train}")


@pytest.mark.parametrize("name", NAMES)
def test_seeded_builds_are_identical(name: str, batches: tuple[EpisodeBatch, EpisodeBatch]) -> None:
    m1, m2, other = build(name, seed=7), build(name, seed=7), build(name, seed=8)
    s1, s2 = m1.state_dict(), m2.state_dict()
    assert s1.keys() == s2.keys()
    assert all(torch.equal(s1[k], s2[k]) for k in s1)
    assert any(not torch.equal(p, q) for p, q in zip(m1.parameters(), other.parameters(), strict=True))
    m1.eval(), m2.eval()
    assert torch.equal(_logits(m1, batches[0]), _logits(m2, batches[0]))


@pytest.mark.parametrize("name", NAMES)
def test_class_without_present_support_gets_minus_inf(name: str, batches: tuple[EpisodeBatch, EpisodeBatch]) -> None:
    batch = batches[0]
    model = build(name).eval()
    mask = torch.ones_like(batch.support_y, dtype=torch.bool)
    mask[0] = batch.support_y[0] != 1  # episode 0: class 1 absent
    mask[1, 1:] = False  # episode 1: a single item of class 0 left
    with torch.no_grad():
        logits = model.predict(batch.support_x, batch.support_y, batch.query_x, n_way=N_WAY, support_mask=mask)
    assert logits.shape == (BATCH, N_WAY * N_QUERY, N_WAY)
    assert torch.isneginf(logits[0, :, 1]).all() and torch.isfinite(logits[0][:, [0, 2]]).all()
    assert torch.isneginf(logits[1, :, 1:]).all() and (logits[1].argmax(-1) == 0).all()
    assert torch.isfinite(logits[2:]).all()


#: capability -> the methods it obliges a learner to implement
CAPABILITY_METHODS = {
    caps.SetPrediction: ("predict",),
    caps.SequencePrediction: ("forward_sequence",),
    caps.MemoryInspection: ("memory_trace",),
    caps.ProgramInspection: ("program_weights",),
    caps.StepwiseSequence: ("step_inputs", "run"),
    caps.FeaturePrediction: ("embed", "predict_features"),
    caps.RunningSetPrediction: ("predict_sequence",),
    caps.DecoderInspection: ("decoder_reads",),
}


@pytest.mark.parametrize("name", NAMES)
def test_capabilities_are_declared_and_implemented(name: str) -> None:
    """Every capability a learner has is declared (a base class, not found by probing), and
    every declared capability is implemented (not the Protocol's empty stub)."""
    cls = type(build(name))
    assert issubclass(cls, caps.SetPrediction) and caps.SetPrediction in cls.__mro__, name
    for cap, methods in CAPABILITY_METHODS.items():
        declared = cap in cls.__mro__
        has = all(callable(getattr(cls, m, None)) for m in methods)
        assert declared == has, f"{name}: {cap.__name__} declared={declared} but methods present={has}"
        for m in methods if declared else ():
            assert getattr(cls, m) is not getattr(cap, m), f"{name} declares {cap.__name__} but not {m}()"
    # a sequence learner (SequencePrediction) is one of metamem's SequenceLearner subclasses
    assert issubclass(cls, SequenceLearner) == (caps.SequencePrediction in cls.__mro__), name
    # LimitedWays (with max_way) is declared by exactly the learners that refuse more ways
    limited = caps.LimitedWays in cls.__mro__
    assert not (limited and issubclass(cls, caps.AnyWay)), name
    model = build(name).eval()
    support_y = torch.arange(N_WAY + 1).repeat_interleave(2)[None]  # one way more than built for
    args = (torch.rand(1, support_y.shape[1], *IMAGE_SHAPE), support_y, torch.rand(1, 2, *IMAGE_SHAPE))
    if limited:
        assert cls.max_way is not caps.LimitedWays.max_way, f"{name} declares LimitedWays but not max_way"
        assert model.max_way == N_WAY
        with pytest.raises(ValueError, match="max_way"), torch.no_grad():
            model.predict(*args, n_way=N_WAY + 1)
    else:
        with torch.no_grad():
            assert model.predict(*args, n_way=N_WAY + 1).shape == (1, 2, N_WAY + 1), name


@pytest.mark.parametrize("name", [n for n in NAMES if issubclass(type(build(n)), caps.AnyWay)])
def test_any_way_learners_serve_other_ways(name: str, batches: tuple[EpisodeBatch, EpisodeBatch]) -> None:
    model = build(name).eval()
    b = batches[0]
    keep = b.support_y < 2  # a 2-way episode out of the 3-way one (the model was built for 3)
    sx = b.support_x[:, keep[0]]
    sy = b.support_y[:, keep[0]]
    with torch.no_grad():
        two = model.predict(sx, sy, b.query_x, n_way=2)
        five = model.predict(b.support_x, b.support_y, b.query_x, n_way=5)
    assert two.shape == (BATCH, b.query_x.shape[1], 2) and torch.isfinite(two).all()
    assert torch.isneginf(five[..., 3:]).all() and torch.isfinite(five[..., :3]).all()


@pytest.mark.parametrize("name", [n for n in NAMES if issubclass(type(build(n)), caps.MemoryInspection)])
def test_memory_inspection_traces_every_step(name: str, batches: tuple[EpisodeBatch, EpisodeBatch]) -> None:
    seq = batches[0].as_sequence()
    model = build(name).eval()
    with torch.no_grad():
        trace = model.memory_trace(seq)
        programs = model.program_weights(seq) if isinstance(model, caps.ProgramInspection) else {}
    assert trace.read_weights.shape[:2] == (BATCH, seq.steps)
    assert trace.write_weights.shape[:2] == (BATCH, seq.steps)
    assert torch.isfinite(trace.read_weights).all()
    assert all(w.shape[:2] == (BATCH, seq.steps) for w in programs.values())


def test_unknown_names_list_the_valid_ones() -> None:
    with pytest.raises(UnknownNameError, match=r"unknown learner 'protonett' \(did you mean 'protonet'\?\).*maml"):
        build_learner("protonett", n_way=5, image_shape=IMAGE_SHAPE)
    with pytest.raises(UnknownNameError, match=r"unknown backbone 'conv5'.*valid backbones: .*conv4.*resnet12"):
        build_learner("protonet", n_way=5, image_shape=IMAGE_SHAPE, backbone="conv5")


@pytest.mark.parametrize("name", ["protonet", "matching", "maml", "linear_probe"])
def test_backbone_too_small_for_the_images(name: str) -> None:
    with pytest.raises(ValueError, match=r"backbone 'conv4' .* at least 16x16, got 8x8"):
        build_learner(name, n_way=5, image_shape=(1, 8, 8), **REQUIRED_KWARGS.get(name, {}))


@pytest.mark.gpu
@pytest.mark.parametrize("name", NAMES)
def test_cuda_matches_cpu(name: str, batches: tuple[EpisodeBatch, EpisodeBatch],
                          monkeypatch: pytest.MonkeyPatch) -> None:
    # cuDNN convolutions default to TF32 (10-bit mantissa, ~1e-3 relative error); MAML's inner
    # steps amplify that past any tolerance (0.33 on an H200), so compare in full float32
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    batch = batches[0]
    model = build(name).eval()
    cpu = _logits(model, batch)
    gpu = _logits(model.to("cuda"), batch.to("cuda"))
    assert gpu.device.type == "cuda"
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-3, atol=1e-3)
