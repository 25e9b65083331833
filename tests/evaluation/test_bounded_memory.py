"""Bounded memory in evaluation: every learner call stays within ``memory_budget`` whatever the
learner and protocol; set learners without a linear-in-T sequence path are declined under
``protocol="both"``; and the README's own example (ProtoNet, default protocol) runs under an
address-space cap (``resource.setrlimit`` in a subprocess) where it used to ask for
gigabytes."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from eval_learners import NearestNeighbourLearner, PredictOnly

from metamem import evaluate
from metamem.config import EvalCfg, parse_memory_budget
from metamem.data import load_dataset
from metamem.evaluation.protocol import ProtocolError
from metamem.evaluation.scoring import images_per_call, sequence_path
from metamem.learners import build_learner

ROOT = Path(__file__).resolve().parents[2]


class _CountingNN(PredictOnly, NearestNeighbourLearner):
    """Predict-only nearest neighbour that records the images of every call."""

    def __init__(self) -> None:
        super().__init__()
        self.sizes: list[int] = []

    def predict(self, support_x, support_y, query_x, *, n_way, support_mask=None):
        self.sizes.append(support_x.shape[0] * (support_x.shape[1] + query_x.shape[1]))
        return super().predict(support_x, support_y, query_x, n_way=n_way, support_mask=support_mask)


def test_the_python_default_protocol_is_the_cli_default() -> None:
    import inspect

    assert inspect.signature(evaluate).parameters["protocol"].default == EvalCfg().protocol
    assert inspect.signature(evaluate).parameters["memory_budget"].default == EvalCfg().memory_budget


def test_memory_budget_parsing() -> None:
    assert parse_memory_budget("1GiB") == 1 << 30 and parse_memory_budget("512MB") == 512 * 10**6
    assert parse_memory_budget(3 << 20) == 3 << 20 and parse_memory_budget("1.5g") == 3 << 29
    for bad in ("lots", "10", 0, True, "1 parsec"):
        with pytest.raises(ValueError, match="eval.memory_budget must be bytes"):
            parse_memory_budget(bad)
    # the memory model: float32 pixels plus a 64-channel map per image
    assert images_per_call((1, 28, 28), "1GiB") == (1 << 30) // (4 * 28 * 28 * 65)


def test_every_call_fits_the_budget_and_scores_do_not_change(synth) -> None:
    kw = dict(n_way=5, k_shot=2, n_query=3, episodes=10, seed=4, batch_size=32)
    big = _CountingNN()
    ref = evaluate(big, synth, protocol="sequence", memory_budget="1GiB", **kw)
    small = _CountingNN()
    budget = 8 * 4 * 12 * 12 * 65 * 50  # room for 50 images of 1x12x12 (x8 for the MiB floor)
    cap = images_per_call(synth.image_shape, budget)
    got = evaluate(small, synth, protocol="sequence", memory_budget=budget, **kw)
    assert max(small.sizes) <= cap < max(big.sizes)
    assert got.fingerprint == ref.fingerprint
    assert torch.equal(got.scores["sequence"].per_episode, ref.scores["sequence"].per_episode)
    # the set scoring: batches of episodes shrink to fit (one 25-image episode per call here)
    s = _CountingNN()
    one = images_per_call(synth.image_shape, 1 << 20)
    r = evaluate(s, synth, protocol="set", memory_budget=1 << 20, **kw)
    assert max(s.sizes) <= max(one, 25) and r.fingerprint == ref.fingerprint


def test_learners_without_a_linear_sequence_path_are_declined_under_both(synth) -> None:
    kw = dict(n_way=3, k_shot=1, n_query=2, episodes=4, seed=1)
    r = evaluate(_CountingNN(), synth, **kw)  # default protocol: both
    assert set(r.scores) == {"set"}
    assert "has no linear-in-T sequence path" in r.declined["sequence"]
    assert "\n" not in r.declined["sequence"] and r.to_dict()["declined"] == r.declined
    r = evaluate(_CountingNN(), synth, protocol="sequence", **kw)  # asked for: scored
    assert set(r.scores) == {"sequence"} and r.declined is None
    assert sequence_path(NearestNeighbourLearner()) == "features"
    assert sequence_path(_CountingNN()) is None
    ds16 = load_dataset("synthetic", split="test", num_classes=6, per_class=6, image_size=16)
    proto = build_learner("protonet", n_way=3, image_shape=ds16.image_shape)
    assert sequence_path(proto) == "features"
    assert set(evaluate(proto, ds16, **kw).scores) == {"set", "sequence"}


def test_protonet_features_path_equals_the_per_step_predict_path(monkeypatch) -> None:
    """The linear path (embed every step once) scores exactly what one predict per step does."""
    import metamem.evaluation.scoring as scoring

    torch.manual_seed(0)
    synth = load_dataset("synthetic", split="test", num_classes=8, per_class=6, image_size=16, noise=0.3)
    proto = build_learner("protonet", n_way=4, image_shape=synth.image_shape).eval()
    kw = dict(n_way=4, k_shot=2, n_query=2, episodes=6, seed=9, protocol="sequence")
    a = evaluate(proto, synth, **kw)
    monkeypatch.setattr(scoring, "supports_feature_reuse", lambda learner: False)  # per-step predict
    b = evaluate(proto, synth, **kw)
    assert torch.allclose(a.scores["sequence"].per_episode, b.scores["sequence"].per_episode)
    assert a.per_presentation == pytest.approx(b.per_presentation)
    assert float(a.scores["sequence"].per_episode.std()) > 0  # not a degenerate comparison


def test_bad_memory_budget_is_a_protocol_error(synth) -> None:
    with pytest.raises(ProtocolError, match="eval.memory_budget must be bytes"):
        evaluate(_CountingNN(), synth, n_way=3, k_shot=1, n_query=1, episodes=1, memory_budget="x")


@pytest.mark.slow
def test_readme_example_runs_under_an_address_space_cap(tmp_path: Path) -> None:
    """ProtoNet, default protocol (both), 84x84 RGB episodes of T=80 steps at batch 32: the
    sequence scoring used to put ~65,000 support images (2.7 GB of pixels) in one call."""
    code = textwrap.dedent("""
        import resource, sys, torch
        import metamem
        from metamem.data import load_dataset
        from metamem.learners import build_learner
        torch.manual_seed(0)
        ds = load_dataset("synthetic", split="test", num_classes=6, per_class=16, image_size=84,
                          channels=3)
        learner = build_learner("protonet", n_way=5, image_shape=ds.image_shape)
        cap = 3 << 30
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
        r = metamem.evaluate(learner, ds, n_way=5, k_shot=1, n_query=15, episodes=3,
                             memory_budget="256MiB")
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print("ok", sorted(r.scores), round(r.scores["sequence"].mean, 4), peak)
    """)
    env = {"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    words = out.stdout.split()
    assert words[0] == "ok" and "sequence" in out.stdout
    assert int(words[-1]) < 2_000_000  # max RSS in KiB: under 2 GB
