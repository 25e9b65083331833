"""Figures of evaluation results, drawn on matplotlib's Agg canvas and saved atomically.

* :func:`plot_per_presentation`: sequence accuracy by presentation, one curve per result
  (several learners on one figure, as in Santoro et al., 2016, Fig. 2);
* :func:`plot_accuracy_vs_shots`: accuracy against K, one curve per (learner, N);
* :func:`plot_memory_trace`: the read/write heatmap of one episode of a memory learner
  (delegates to :func:`metamem.memory.trace.plot_trace`);
* :func:`plot_learning_curves`: training and validation accuracy against wall-clock and CPU
  seconds of runs (from their ``metrics.jsonl``; :func:`learning_curve`);
* :func:`plot_paired_differences`: B − A by presentation, ± the paired interval, from
  :func:`metamem.evaluation.compare.paired_difference`.
"""

from __future__ import annotations

import io
import os
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from metamem.evaluation.compare import PairedDifference
from metamem.evaluation.scoring import EvalResult
from metamem.files import write_text

__all__ = [
    "learning_curve",
    "plot_accuracy_vs_shots",
    "plot_learning_curves",
    "plot_memory_trace",
    "plot_paired_differences",
    "plot_per_presentation",
]


def _figure(width: float = 6.0, height: float = 4.0) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig


def accuracy_axes(ax: Any, xlabel: str, title: str, ylabel: str = "accuracy (%)") -> None:
    """The look of every accuracy-in-percent plot: labels, 0..100 %, a light grid, a legend."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    ax.set_title(title)


def _save(fig: Any, path: str | os.PathLike[str]) -> Path:
    path = Path(path)
    fmt = path.suffix.lstrip(".").lower()
    if not fmt:
        raise ValueError(f"plot path {path} has no suffix; use e.g. .png or .pdf")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format=fmt)
    return write_text(path, buf.getvalue())


def _label(r: EvalResult) -> str:
    p = r.protocol
    return f"{r.learner} ({p.n_way}-way {p.k_shot}-shot)"


def plot_per_presentation(
    results: Sequence[EvalResult], path: str | os.PathLike[str], *, title: str | None = None
) -> Path | None:
    """Sequence accuracy at the 1st, 2nd, ... presentation, one line (± ci95) per result.

    Returns:
        The written path, or ``None`` when no result has a sequence scoring.
    """
    seq = [r for r in results if r.scores.get("sequence") is not None]
    if not seq:
        return None
    fig = _figure()
    ax = fig.add_subplot(1, 1, 1)
    for r in seq:
        s = r.scores["sequence"]
        ys = s.per_presentation or []
        ci = [0.0 if c != c else c for c in (s.per_presentation_ci95 or [0.0] * len(ys))]
        xs = list(range(1, len(ys) + 1))
        ax.errorbar(xs, [100 * y for y in ys], yerr=[100 * c for c in ci], marker="o",
                    capsize=2, label=_label(r))
    accuracy_axes(ax, "presentation of the class", title or "sequence accuracy by presentation")
    return _save(fig, path)


def plot_accuracy_vs_shots(
    results: Sequence[EvalResult],
    path: str | os.PathLike[str],
    *,
    scoring: str = "set",
    title: str | None = None,
) -> Path | None:
    """Mean accuracy (± ci95) against K, one line per (learner, N).

    Returns:
        The written path, or ``None`` when no result has the ``scoring``.
    """
    lines: dict[tuple[str, int], list[tuple[int, float, float]]] = defaultdict(list)
    for r in results:
        s = r.scores.get(scoring)
        if s is not None:
            ci = s.ci95
            lines[(r.learner, r.protocol.n_way)].append(
                (r.protocol.k_shot, s.mean, 0.0 if ci != ci else ci)
            )
    if not lines:
        return None
    fig = _figure()
    ax = fig.add_subplot(1, 1, 1)
    for (learner, n_way), pts in sorted(lines.items()):
        pts.sort()
        ax.errorbar([p[0] for p in pts], [100 * p[1] for p in pts],
                    yerr=[100 * p[2] for p in pts], marker="o", capsize=2,
                    label=f"{learner} ({n_way}-way)")
    accuracy_axes(ax, "shots per class (K)", title or f"{scoring} accuracy vs shots", f"{scoring} accuracy (%)")
    return _save(fig, path)


def plot_memory_trace(
    trace: Any, path: str | os.PathLike[str], *, title: str | None = None
) -> Path:
    """The read/write heatmap (steps x slots) of episode 0 of a memory trace.

    Args:
        trace: a :class:`metamem.memory.trace.MemoryTrace`, or a mapping with
            ``read_weights``/``write_weights`` of shape ``[B, T, S]`` or ``[B, T, R, S]``.
        path: output image.
        title: figure title.
    """
    from metamem.memory.trace import MemoryTrace, plot_trace

    if not isinstance(trace, MemoryTrace):
        try:
            r, w = trace["read_weights"], trace["write_weights"]
        except (TypeError, KeyError):
            raise ValueError(
                f"cannot plot a memory trace of type {type(trace).__name__}; expected a "
                "MemoryTrace or a mapping with read_weights and write_weights"
            ) from None
        trace = MemoryTrace(r if r.dim() == 4 else r[:, :, None], w if w.dim() == 4 else w[:, :, None])
    return plot_trace(trace, path, episode=0, title=title)


def learning_curve(records: Sequence[dict[str, Any]]) -> dict[str, list[float]]:
    """Accuracy against step, wall and CPU seconds from the records of a ``metrics.jsonl``.

    Training lines carry ``acc`` and the timing keys ``elapsed_s``/``cpu_s``; validation
    lines carry ``val_acc`` at a step and get the timing of the last training line at or
    before that step. Lines marked ``final`` are included; a resumed run's are not repeated.
    The timing keys count from the start of each training process, so the segments of a
    resumed run (where they drop back) are laid end to end: each segment's times are offset
    by the last logged times of the segments before it.

    Returns:
        ``{"step", "wall_s", "cpu_s", "acc"}`` for the training lines and ``{"val_step",
        "val_wall_s", "val_cpu_s", "val_acc"}`` for the validation lines (lists of floats).
    """
    train = sorted(
        (r for r in records if "acc" in r and "elapsed_s" in r), key=lambda r: r["step"]
    )
    curve: dict[str, list[float]] = {k: [] for k in (
        "step", "wall_s", "cpu_s", "acc", "val_step", "val_wall_s", "val_cpu_s", "val_acc")}
    wall_off = cpu_off = prev_wall = prev_cpu = 0.0
    timed: list[tuple[float, float, float]] = []  # (step, wall, cpu) on the joined clock
    for r in train:
        wall, cpu = float(r["elapsed_s"]), float(r.get("cpu_s", float("nan")))
        if wall < prev_wall:  # a resumed process: its clock starts again from zero
            wall_off, cpu_off = wall_off + prev_wall, cpu_off + prev_cpu
        prev_wall, prev_cpu = wall, cpu
        timed.append((float(r["step"]), wall + wall_off, cpu + cpu_off))
        curve["step"].append(float(r["step"]))
        curve["wall_s"].append(wall + wall_off)
        curve["cpu_s"].append(cpu + cpu_off)
        curve["acc"].append(float(r["acc"]))
    for r in sorted((r for r in records if "val_acc" in r), key=lambda r: r["step"]):
        before = [t for t in timed if t[0] <= r["step"]]
        if not before:
            continue
        _, wall, cpu = before[-1]
        curve["val_step"].append(float(r["step"]))
        curve["val_wall_s"].append(wall)
        curve["val_cpu_s"].append(cpu)
        curve["val_acc"].append(float(r["val_acc"]))
    return curve


_CURVE_AXES = {"step": ("training steps", 1.0), "wall_s": ("wall-clock minutes", 60.0),
               "cpu_s": ("CPU minutes (training process)", 60.0)}


def plot_learning_curves(
    runs: dict[str, Sequence[dict[str, Any]]], path: str | os.PathLike[str], *,
    title: str | None = None, x: Sequence[str] = ("wall_s", "cpu_s"),
) -> Path:
    """Accuracy against wall-clock and CPU time (or training steps), one colour per run.

    Training accuracy (thin line, the mean over each logging interval) and validation
    accuracy (markers) of every run, from their ``metrics.jsonl`` records; one panel per
    entry of ``x``.

    Args:
        runs: ``{display name: metrics records}``.
        path: output file (``.png``, ``.pdf``...).
        title: figure title.
        x: the panels' x axes, each ``"step"`` (training steps: compares runs at equal
            budgets), ``"wall_s"`` or ``"cpu_s"`` (minutes; compares their cost).

    Raises:
        ValueError: for no runs, or an ``x`` entry that is not one of those three.
    """
    if not runs:
        raise ValueError("plot_learning_curves: no runs given")
    keys = list(x)
    bad = [k for k in keys if k not in _CURVE_AXES]
    if bad or not keys:
        raise ValueError(f"plot_learning_curves: x must name panels among {', '.join(_CURVE_AXES)}, "
                         f"got {bad or keys!r}")
    fig = _figure(4.0 + 5.0 * len(keys), 4.2)
    axes = fig.subplots(1, len(keys), sharey=True, squeeze=False)[0]
    for i, (name, records) in enumerate(runs.items()):
        c = learning_curve(records)
        color = f"C{i % 10}"  # past 10 runs the colours repeat: the marker and dash tell them apart
        marker, dash = ("o", "s", "^", "D")[(i // 10) % 4], "-" if i < 10 else "--"
        for ax, key in zip(axes, keys, strict=True):
            scale = _CURVE_AXES[key][1]
            ax.plot([v / scale for v in c[key]], c["acc"], color=color, ls=dash, lw=0.8, alpha=0.6,
                    label=f"{name} (train)")
            if c["val_acc"]:
                ax.plot([v / scale for v in c[f"val_{key}"]], c["val_acc"], color=color, marker=marker,
                        ls=dash, ms=3.5, lw=1.2, label=f"{name} (val)")
    for ax, key in zip(axes, keys, strict=True):
        ax.set_xlabel(_CURVE_AXES[key][0])
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("accuracy")
    axes[-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def plot_paired_differences(
    diffs: Sequence[PairedDifference], path: str | os.PathLike[str], *, title: str | None = None
) -> Path | None:
    """B − A in points at the 1st, 2nd, ... presentation, ± the paired 95% half-width, one
    line per comparison, with the difference over all steps as a dotted level.

    Returns:
        The written path, or ``None`` when no comparison has differences by presentation
        (set scoring, or results written before they were kept).
    """
    shown = [d for d in diffs if d.per_presentation]
    if not shown:
        return None
    fig = _figure()
    ax = fig.add_subplot(1, 1, 1)
    ax.axhline(0.0, color="black", linewidth=0.8)
    for d in shown:
        xs = list(range(1, len(d.per_presentation or []) + 1))
        ys = [100 * m for m, _ in d.per_presentation or []]
        err = [0.0 if c != c else 100 * c for _, c in d.per_presentation or []]
        line = ax.errorbar(xs, ys, yerr=err, marker="o", capsize=3, label=f"{d.b} − {d.a}")
        ax.axhline(100 * d.diff, linestyle=":", color=line[0].get_color(), linewidth=1.0)
    ax.set_xlabel("presentation of the class")
    ax.set_ylabel("B − A (points)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    ax.set_title(title or f"paired over {shown[0].episodes} episodes ({shown[0].fingerprint[:12]})")
    return _save(fig, path)
