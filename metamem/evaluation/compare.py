"""Paired comparison of two learners scored on the same fixed episodes.

Two rows of ``metamem eval`` that share a fingerprint were scored on exactly the same
episodes, so their difference can be measured episode by episode. The per-episode
differences ``d_e = acc_B(e) - acc_A(e)`` cancel the part of the spread that comes from
easy and hard episodes, which both learners share; the paired interval is therefore
usually much narrower than the two rows' own ``± ci95`` suggest, and is the right one to
quote for "B beats A by x points".

    diff = mean(d),   ci95 = 1.96 * std(d, ddof=1) / sqrt(E),
    p    = erfc(|z| / sqrt(2)),  z = diff / (std(d, ddof=1) / sqrt(E)),

the same normal approximation as :func:`~metamem.evaluation.metrics.mean_ci95` (so the
interval excludes 0 exactly when ``p < 0.05``); it is meant for the hundreds to thousands of
episodes of an evaluation protocol. The interval is over **episodes** only: it says
nothing about how much a second training run of either learner would move (train more
seeds for that).

Example::

    from metamem.evaluation import read_results, paired_difference
    a, b = read_results("runs/mann/eval/results.json")[0], read_results("runs/nutm/eval/results.json")[0]
    d = paired_difference(a, b)
    print(d.diff, d.ci95, d.p_value, d.per_presentation)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from metamem.evaluation.metrics import mean_ci95, mean_t95
from metamem.evaluation.report import _ordinal
from metamem.evaluation.scoring import EvalResult, Score

__all__ = ["OverRuns", "PairedDifference", "over_runs", "paired_difference", "paired_markdown", "points"]


@dataclass(frozen=True)
class PairedDifference:
    """B minus A on the same episodes, in accuracy units ([0, 1]).

    Attributes:
        a, b: the two learners' display names (A is the baseline).
        scoring: ``"set"`` or ``"sequence"``.
        fingerprint: the episodes' fingerprint, shared by both rows.
        episodes: E, the number of paired episodes.
        mean_a, mean_b: the two accuracies.
        diff: ``mean_b - mean_a`` (the mean of the per-episode differences).
        ci95: 95% half-width of ``diff`` over the paired episodes (``nan`` for E < 2).
        p_value: two-sided p of "no difference" (normal approximation; ``nan`` when the
            differences have no spread: 1.0 if they are all 0).
        wins, ties, losses: episodes where B scored higher, the same, lower than A.
        per_presentation: ``[(diff, ci95), ...]`` at the 1st, 2nd, ... presentation
            (sequence scoring, when both rows kept per-episode presentation accuracies),
            else ``None``. Episodes without a p-th presentation are left out of that one.
    """

    a: str
    b: str
    scoring: str
    fingerprint: str
    episodes: int
    mean_a: float
    mean_b: float
    diff: float
    ci95: float
    p_value: float
    wins: int
    ties: int
    losses: int
    per_presentation: list[tuple[float, float]] | None = None


def _p_value(d: torch.Tensor) -> float:
    n = d.numel()
    if n < 2:
        return math.nan
    sd = float(d.std(correction=1))
    mean = float(d.mean())
    if sd == 0.0:
        return 1.0 if mean == 0.0 else 0.0
    z = mean / (sd / math.sqrt(n))
    return math.erfc(abs(z) / math.sqrt(2.0))


def _score(result: EvalResult, scoring: str | None) -> Score:
    if scoring is None:
        return result.primary
    s = result.scores.get(scoring)
    if s is None:
        raise ValueError(
            f"result {result.learner!r} has no {scoring!r} scoring (it has "
            f"{', '.join(sorted(result.scores))}): compare with --scoring "
            f"{sorted(result.scores)[0]} (scoring={sorted(result.scores)[0]!r} in Python), or "
            f"re-score it with eval.protocol=both"
        )
    return s


def _presentation_matrix(s: Score, episodes: int) -> torch.Tensor | None:
    m = s.per_presentation_episode
    if m is None or m.dim() != 2 or m.shape[0] != episodes:
        return None  # absent, or only the means (results.json written before compare existed)
    return m.to(torch.float64)


def paired_difference(a: EvalResult, b: EvalResult, scoring: str | None = None) -> PairedDifference:
    """B − A, episode by episode, on the episodes both were scored on.

    Args:
        a: the baseline row.
        b: the row compared with it.
        scoring: ``"set"`` or ``"sequence"``; default: A's primary scoring (set if it ran).

    Raises:
        ValueError: the two rows were not scored on the same episodes (different
            fingerprints or episode counts), or one lacks the scoring asked for.
    """
    if a.fingerprint != b.fingerprint:
        raise ValueError(
            f"{b.learner!r} was scored on episodes {b.fingerprint[:12]}, {a.learner!r} on "
            f"{a.fingerprint[:12]}: a paired comparison needs the same episodes; score both "
            f"with the same eval protocol (the same eval.split, eval.n_way, eval.k_shot, "
            f"eval.n_query, eval.episodes, eval.seed)"
        )
    scoring = scoring or a.primary.scoring
    sa, sb = _score(a, scoring), _score(b, scoring)
    ea, eb = sa.per_episode.to(torch.float64), sb.per_episode.to(torch.float64)
    if ea.numel() != eb.numel():
        raise ValueError(
            f"{a.learner!r} has {ea.numel()} episodes and {b.learner!r} {eb.numel()} under one "
            f"fingerprint: one of the results files was edited; re-score both"
        )
    d = eb - ea
    diff, ci = mean_ci95(d)
    per_presentation = None
    ma, mb = _presentation_matrix(sa, ea.numel()), _presentation_matrix(sb, eb.numel())
    if ma is not None and mb is not None and ma.shape == mb.shape:
        per_presentation = []
        for col in (mb - ma).T:
            per_presentation.append(mean_ci95(col[~torch.isnan(col)]))
    return PairedDifference(
        a=a.learner, b=b.learner, scoring=scoring, fingerprint=a.fingerprint,
        episodes=int(d.numel()), mean_a=float(ea.mean()), mean_b=float(eb.mean()),
        diff=diff, ci95=ci, p_value=_p_value(d),
        wins=int((d > 0).sum()), ties=int((d == 0).sum()), losses=int((d < 0).sum()),
        per_presentation=per_presentation,
    )


def points(diff: float, ci95: float = math.nan) -> str:
    """``diff ± ci95`` in signed points (``"+1.23 ± 0.45"``); ``–`` for an undefined diff, no
    ``±`` part for an undefined interval."""
    if math.isnan(diff):
        return "–"
    return f"{100 * diff:+.2f}" + ("" if math.isnan(ci95) else f" ± {100 * ci95:.2f}")


def _p(v: float) -> str:
    if math.isnan(v):
        return "–"
    return "< 0.0001" if v < 1e-4 else f"{v:.4f}"


def paired_markdown(diffs: Sequence[PairedDifference], presentations: int = 5) -> str:
    """A Markdown table of :func:`paired_difference` results against one baseline.

    Columns: the row, its accuracy, the baseline's, the difference ± paired half-width (in
    points), p, episodes better / equal / worse, and the difference at the first
    ``presentations`` presentations where both rows kept them.
    """
    if not diffs:
        return ""
    n_p = max((len(d.per_presentation or []) for d in diffs), default=0)
    n_p = min(n_p, presentations)
    head = ["learner (B)", "baseline (A)", "scoring", "A %", "B %", "B − A (points)", "p",
            "B better / same / worse"]
    head += [f"Δ {_ordinal(i + 1)}" for i in range(n_p)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for d in diffs:
        row = [d.b, d.a, d.scoring, f"{100 * d.mean_a:.2f}", f"{100 * d.mean_b:.2f}",
               points(d.diff, d.ci95), _p(d.p_value), f"{d.wins} / {d.ties} / {d.losses}"]
        pp = d.per_presentation or []
        row += [points(*pp[i]) if i < len(pp) else "" for i in range(n_p)]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class OverRuns:
    """The paired differences of several training runs (seeds) of the same two learners.

    Each run pair gives one difference ``diff_i`` (B_i − A_i over the same episodes); these
    are averaged, with a Student-t 95% half-width over the ``runs`` pairs, which is the
    interval that covers training-run variance (with 2-3 runs it is wide, as it should be).

    Attributes:
        runs: the number of run pairs.
        diff: mean of the per-pair differences.
        ci95: ``t_{0.975, runs-1} · std(diffs, ddof=1) / sqrt(runs)`` (``nan`` for one pair).
        diffs: the per-pair differences.
        per_presentation: ``[(mean, ci95), ...]`` by presentation when every pair has them.
    """

    runs: int
    diff: float
    ci95: float
    diffs: tuple[float, ...]
    per_presentation: list[tuple[float, float]] | None = None


def over_runs(diffs: Sequence[PairedDifference]) -> OverRuns:
    """Summarise the paired differences of several training runs (see :class:`OverRuns`).

    Raises:
        ValueError: on no differences, or differences of other scorings.
    """
    if not diffs:
        raise ValueError("over_runs: no paired differences to summarise")
    scorings = {d.scoring for d in diffs}
    if len(scorings) > 1:
        raise ValueError(f"over_runs: the pairs were compared on different scorings ({sorted(scorings)})")
    values = [d.diff for d in diffs]
    mean, ci = mean_t95(values)
    per_presentation = None
    lengths = {len(d.per_presentation or []) for d in diffs}
    if len(lengths) == 1 and 0 not in lengths:
        per_presentation = [
            mean_t95([(d.per_presentation or [])[i][0] for d in diffs]) for i in range(lengths.pop())
        ]
    return OverRuns(runs=len(diffs), diff=mean, ci95=ci, diffs=tuple(values),
                    per_presentation=per_presentation)
