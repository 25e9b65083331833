"""Summary statistics of an evaluation: mean, 95% confidence interval, accuracy by presentation.

The confidence interval is the normal approximation used throughout the few-shot literature,

    ci95 = 1.96 * s / sqrt(n),

where ``n`` is the number of episodes and ``s`` the **sample** standard deviation of the
per-episode accuracies (Bessel-corrected, divisor ``n - 1``). With a single episode the
interval is undefined and reported as ``nan`` (``null`` in JSON).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from metamem.results_check import Z95  # the 95% normal quantile, one constant for all

__all__ = ["Z95", "mean_ci95", "mean_t95", "presentation_accuracy", "unseen_label_guess"]



def mean_ci95(values: torch.Tensor) -> tuple[float, float]:
    """Mean and 95% confidence half-width of per-episode values.

    Args:
        values: float ``[E]`` one value per episode (any device).

    Returns:
        ``(mean, ci95)`` as Python floats; ``ci95 = 1.96 * std(ddof=1) / sqrt(E)``, ``nan``
        when ``E < 2``; both ``nan`` when ``E == 0``.
    """
    v = values.detach().to(torch.float64).flatten().cpu()
    n = v.numel()
    if n == 0:
        return math.nan, math.nan
    mean = float(v.mean())
    if n < 2:
        return mean, math.nan
    return mean, float(Z95 * v.std(correction=1) / math.sqrt(n))


def mean_t95(values: Sequence[float]) -> tuple[float, float]:
    """Mean and Student-t 95% half-width of a few values (training seeds, run pairs).

    ``t_{0.975, n-1} · std(ddof=1) / sqrt(n)``: for a handful of values the normal 1.96 of
    :func:`mean_ci95` (meant for hundreds of episodes) would be far too narrow.

    Returns:
        ``(mean, half_width)``; the half-width is ``nan`` for one value, both ``nan`` for none.
    """
    n = len(values)
    if n == 0:
        return math.nan, math.nan
    mean = math.fsum(values) / n
    if n < 2:
        return mean, math.nan
    from scipy import stats  # scikit-learn's dependency; imported only when needed

    sd = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))
    return mean, float(stats.t.ppf(0.975, n - 1)) * sd / math.sqrt(n)


def presentation_accuracy(
    correct: torch.Tensor, presentation: torch.Tensor, max_presentation: int
) -> torch.Tensor:
    """Per-episode accuracy at the 1st, 2nd, ... presentation of a class.

    Args:
        correct: float ``[B, T]`` score of each step (1/0, or an expected score in [0, 1]).
        presentation: int64 ``[B, T]`` 1-based presentation number of each step.
        max_presentation: P, the largest presentation number (``K + Q``).

    Returns:
        float ``[B, P]``: mean score of the steps with presentation p+1 in each episode
        (``nan`` where an episode has no such step).
    """
    b = correct.shape[0]
    idx = (presentation - 1).clamp(0, max_presentation - 1)
    total = torch.zeros(b, max_presentation, dtype=torch.float64, device=correct.device)
    count = torch.zeros_like(total)
    total.scatter_add_(1, idx, correct.to(torch.float64))
    count.scatter_add_(1, idx, torch.ones_like(correct, dtype=torch.float64))
    return total / count


def unseen_label_guess(n_way: int) -> float:
    """Expected accuracy at the 1st presentation of a guess among the labels not shown yet.

    No learner can know a label at its 1st presentation. A uniform guess among all N labels
    scores 1/N; a guess among the labels not yet shown in the episode (what a set learner is
    credited with, and what a sequence learner can learn) scores 1/(N - k + 1) on the k-th
    new class, so ``H_N / N`` over the N 1st presentations: 45.7% for 5-way, 18.0% for 20-way.
    """
    if n_way < 1:
        raise ValueError(f"n_way must be >= 1, got {n_way}")
    return sum(1.0 / k for k in range(1, n_way + 1)) / n_way
