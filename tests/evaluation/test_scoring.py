"""Set and sequence scorings against hand-built learners and a naive reference."""

from __future__ import annotations

import io
import math
import statistics
import sys
import time

import pytest
import torch
from eval_learners import (
    NearestNeighbourLearner,
    OracleSequenceLearner,
    OracleSetLearner,
    PredictOnly,
    UniformLearner,
    UniformSequenceLearner,
    coded_dataset,
)

from metamem.evaluation import Protocol, evaluate, mean_ci95, presentation_accuracy
from metamem.evaluation.scoring import score_sequence

N, K, Q = 5, 1, 4


def _run(learner, ds=None, **kw):
    args = dict(n_way=N, k_shot=K, n_query=Q, episodes=12, seed=3, batch_size=5, protocol="both")
    args.update(kw)
    return evaluate(learner, ds if ds is not None else coded_dataset(), **args)


def test_ci95_by_hand():
    # per-episode accuracies 1, 1/2, 1/2, 0: mean 1/2, sample variance (1/4+0+0+1/4)/3 = 1/6
    mean, ci = mean_ci95(torch.tensor([1.0, 0.5, 0.5, 0.0]))
    assert mean == 0.5
    assert ci == pytest.approx(1.96 * math.sqrt(1 / 6) / 2, abs=1e-12)  # = 0.400083...
    assert ci == pytest.approx(0.4000833, abs=1e-6)
    assert math.isnan(mean_ci95(torch.tensor([0.3]))[1])


def test_ci95_of_an_evaluation_by_hand(noisy):
    r = evaluate(NearestNeighbourLearner(), noisy, n_way=5, k_shot=1, n_query=2, episodes=6, seed=0,
                 protocol="both")
    vals = [float(v) for v in r.per_episode]
    assert r.mean == pytest.approx(sum(vals) / 6, abs=1e-12)
    assert r.ci95 == pytest.approx(1.96 * statistics.stdev(vals) / math.sqrt(6), abs=1e-12)
    assert r.ci95 > 0


def test_presentation_accuracy_matches_a_loop():
    g = torch.Generator().manual_seed(0)
    b, t, p = 3, 7, 4
    correct = torch.rand(b, t, generator=g)
    pres = torch.randint(1, p + 1, (b, t), generator=g)
    got = presentation_accuracy(correct, pres, p)
    for i in range(b):
        for j in range(p):
            vals = [float(correct[i, s]) for s in range(t) if int(pres[i, s]) == j + 1]
            if vals:
                assert float(got[i, j]) == pytest.approx(sum(vals) / len(vals))
            else:
                assert math.isnan(float(got[i, j]))


def test_perfect_and_uniform_sequence_learners():
    perfect = _run(OracleSequenceLearner())
    # answers label 0 at a class's 1st presentation: exactly one of the N first presentations
    assert perfect.per_presentation == pytest.approx([1 / N] + [1.0] * (K + Q - 1), abs=1e-12)
    t = N * (K + Q)
    assert perfect.scores["sequence"].mean == pytest.approx((t - N + 1) / t)
    uniform = _run(UniformSequenceLearner(), protocol="sequence")
    assert uniform.per_presentation == pytest.approx([1 / N] * (K + Q), abs=1e-12)
    assert uniform.mean == pytest.approx(1 / N) and uniform.ci95 == pytest.approx(0, abs=1e-12)
    assert "set" not in uniform.scores


def test_set_learner_on_sequences_guesses_unseen_labels():
    r = _run(OracleSetLearner())
    # the j-th new label (j = 0..N-1) is credited 1/(N - j): mean H_N / N at presentation 1
    h_n = sum(1 / k for k in range(1, N + 1))
    assert r.per_presentation == pytest.approx([h_n / N] + [1.0] * (K + Q - 1), abs=1e-12)
    assert r.mean == 1.0  # set scoring: the oracle is perfect
    u = _run(UniformLearner())
    assert u.mean == pytest.approx(1 / N, abs=1e-12)  # arg-max label 0, balanced queries
    assert u.per_presentation[0] == pytest.approx(h_n / N, abs=1e-12)


def _naive_sequence_score(learner, seq):
    """One predict call per step with the labelled steps before it as the support."""
    b, t = seq.y.shape
    out = torch.zeros(b, t, dtype=torch.float64)
    for i in range(b):
        for s in range(t):
            seen = set(seq.y[i, :s].tolist())
            if int(seq.y[i, s]) not in seen:
                out[i, s] = 1.0 / (seq.n_way - len(seen))
                continue
            logits = learner.predict(
                seq.x[i : i + 1, :s], seq.y[i : i + 1, :s], seq.x[i : i + 1, s : s + 1],
                n_way=seq.n_way,
            )
            out[i, s] = float(logits[0, 0].argmax() == seq.y[i, s])
    return out


class _PredictOnlyNN(PredictOnly, NearestNeighbourLearner):
    pass


@pytest.mark.parametrize("cap", [10_000, 40, 1])  # 40 support images: chunks of 2 rows
@pytest.mark.parametrize("learner_cls", [NearestNeighbourLearner, _PredictOnlyNN])  # features / predict paths
def test_set_learner_sequence_scoring_matches_naive(noisy, cap, learner_cls):
    proto = Protocol.for_dataset(noisy, n_way=3, k_shot=2, n_query=3, episodes=4, seed=5)
    seq = next(proto.batches(noisy, batch_size=4)).as_sequence()
    learner = learner_cls()
    got = score_sequence(learner, seq, max_support_images=cap)
    ref = _naive_sequence_score(learner, seq)
    assert torch.allclose(got.double(), ref, atol=1e-6)
    assert 0 < float(ref[seq.presentation > 1].mean()) < 1  # neither trivial nor perfect


def test_wrong_logit_shape_is_reported():
    class Bad(UniformLearner):
        def predict(self, support_x, support_y, query_x, *, n_way, support_mask=None):
            return super().predict(support_x, support_y, query_x, n_way=n_way)[..., :-1]

    with pytest.raises(RuntimeError, match=r"learner Bad returned query logits of shape \(5, 20, 4\), expected \(5, 20, 5\)"):
        _run(Bad())


class _GradInside(UniformLearner):
    """Like MAML: needs autograd inside predict, and switches it back on itself."""

    def predict(self, support_x, support_y, query_x, *, n_way, support_mask=None):
        assert not torch.is_grad_enabled()  # the evaluator runs without gradients
        with torch.enable_grad():
            w = torch.zeros(3, requires_grad=True)
            (g,) = torch.autograd.grad((w * 2).sum(), w)
        assert torch.equal(g, torch.full((3,), 2.0))
        return super().predict(support_x, support_y, query_x, n_way=n_way, support_mask=support_mask)


def test_no_grad_but_learners_can_reenable_it_and_mode_is_restored():
    learner = _GradInside()
    learner.train()
    r = _run(learner)
    assert learner.training
    assert r.mean == pytest.approx(1 / N)


def test_trace_is_kept_for_a_memory_learner():
    r = _run(OracleSequenceLearner(), keep_trace=True, episodes=3)
    assert r.trace["read_weights"].shape == (1, N * (K + Q), 4)
    assert _run(OracleSequenceLearner(), episodes=3).trace is None


class _FastNN(NearestNeighbourLearner):
    """Nearest neighbour with the optional ``predict_sequence`` fast path (one cdist)."""

    calls = 0

    def predict_sequence(self, x, y, *, n_way):
        type(self).calls += 1
        b, t = y.shape
        d = torch.cdist(x.reshape(b, t, -1), x.reshape(b, t, -1))  # [B, T(query), T(support)]
        before = torch.ones(t, t, dtype=torch.bool).tril(-1)
        onehot = torch.nn.functional.one_hot(y, n_way).bool()  # [B, T, N]
        ok = before[None, :, :, None] & onehot[:, None, :, :]  # [B, Tq, Ts, N]
        d = d[..., None].expand(-1, -1, -1, n_way).masked_fill(~ok, float("inf"))
        return -d.min(2).values


def test_predict_sequence_fast_path_matches_the_generic_path(noisy):
    kw = dict(n_way=4, k_shot=2, n_query=3, episodes=6, seed=2, batch_size=4, protocol="sequence")
    slow = evaluate(NearestNeighbourLearner(), noisy, **kw)
    fast = evaluate(_FastNN(), noisy, **kw)
    assert _FastNN.calls == 2
    assert torch.equal(slow.per_episode, fast.per_episode)
    assert slow.per_presentation == fast.per_presentation


class _SlowUniform(UniformLearner):
    def predict(self, support_x, support_y, query_x, *, n_way, support_mask=None):
        time.sleep(0.03)
        return super().predict(support_x, support_y, query_x, n_way=n_way, support_mask=support_mask)


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_by_default_on_a_terminal_for_work_over_the_delay(monkeypatch) -> None:
    from metamem.evaluation import scoring

    monkeypatch.setattr(scoring, "PROGRESS_DELAY_S", 0.1)
    for stream, delay, shown in ((_Terminal(), 0.1, True), (io.StringIO(), 0.1, False),
                                 (_Terminal(), 60.0, False)):
        monkeypatch.setattr(scoring, "PROGRESS_DELAY_S", delay)
        monkeypatch.setattr(sys, "stderr", stream)
        _run(_SlowUniform(), episodes=20, batch_size=2, protocol="set")
        assert ("20/20" in stream.getvalue()) == shown, (delay, stream.getvalue())
    stream = io.StringIO()  # asked for: shown wherever stderr goes
    monkeypatch.setattr(sys, "stderr", stream)
    _run(UniformLearner(), episodes=20, batch_size=2, protocol="set", progress=True)
    assert "20/20" in stream.getvalue()


def test_printing_a_result_shows_every_scoring_it_ran() -> None:
    res = _run(NearestNeighbourLearner(), protocol="both")
    text = str(res).splitlines()
    assert text[0] == f"NearestNeighbourLearner: {res.protocol_line()}"
    assert "scoring set+sequence" in text[0] and res.fingerprint[:12] in text[0]
    s, q = res.scores["set"], res.scores["sequence"]
    assert text[1] == f"  set       {100 * s.mean:.2f}% ± {100 * s.ci95:.2f}"
    assert text[2].startswith(f"  sequence  {100 * q.mean:.2f}% ± {100 * q.ci95:.2f}, by presentation "
                              f"{100 * q.per_presentation[0]:.1f}% ")
    assert len(text) == 3


@pytest.mark.parametrize("n_way", [3, 5])
def test_unseen_label_guess_is_what_a_set_learner_is_credited(n_way, tmp_path) -> None:
    """At the 1st presentation a guess among the labels not shown yet scores H_N / N (45.7%
    at 5-way), not the 1/N of a guess among all labels; eval.md states both."""
    from metamem.evaluation.metrics import unseen_label_guess
    from metamem.evaluation.run_report import write_run_report

    res = _run(UniformLearner(), n_way=n_way, k_shot=1, n_query=2, protocol="sequence")
    guess = sum(1 / k for k in range(1, n_way + 1)) / n_way
    assert res.per_presentation[0] == pytest.approx(guess, abs=1e-12)
    assert unseen_label_guess(n_way) == pytest.approx(guess, abs=1e-15)
    assert unseen_label_guess(5) == pytest.approx(0.45667, abs=1e-5)
    write_run_report(tmp_path, [res], [], plots=False)
    text = (tmp_path / "eval.md").read_text()
    assert (f"a guess scores {100 / n_way:.1f}% among all {n_way} labels, {100 * guess:.1f}% among "
            "those not shown yet in the episode") in text
    assert "chance" not in text
