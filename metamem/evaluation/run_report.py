"""What a training run writes about itself when it ends: ``eval.md`` and its figures.

* ``learning_curve.png``: training accuracy and loss by step (from ``metrics.jsonl``) with
  the validation accuracy; for sequence learners also the validation accuracy at the 2nd
  and last presentation of a class.
* ``per_presentation.png``: test accuracy by presentation (sequence scoring), one line
  per evaluated protocol.
* ``eval.md``: the test results as a table with the protocol above it, what the numbers
  mean, and how to score the run again.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from metamem.evaluation.metrics import unseen_label_guess
from metamem.evaluation.plots import _figure, _save, accuracy_axes, plot_per_presentation
from metamem.evaluation.report import atomic_write_text, to_markdown
from metamem.evaluation.scoring import EvalResult

__all__ = ["plot_learning_curve", "protocol_line", "write_run_report"]


def plot_learning_curve(records: Sequence[dict[str, Any]], path: str | os.PathLike[str], *,
                        title: str | None = None) -> Path | None:
    """Accuracy (training, validation) and training loss against the step.

    Args:
        records: the lines of ``metrics.jsonl`` (``step`` with ``loss``/``acc``, or with
            ``val_acc`` and optionally ``val_acc_by_presentation``).
        path: the image to write.

    Returns:
        The written path, or ``None`` when there is nothing to draw.
    """
    train = [r for r in records if "acc" in r and "loss" in r]
    val = [r for r in records if r.get("val_acc") is not None]
    if not train and not val:
        return None
    fig = _figure(9.0, 3.6)
    ax, lx = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    if train:
        ax.plot([r["step"] for r in train], [100 * r["acc"] for r in train], lw=1, alpha=0.7,
                label="training episodes")
        lx.plot([r["step"] for r in train], [r["loss"] for r in train], lw=1)
    if val:
        ax.plot([r["step"] for r in val], [100 * r["val_acc"] for r in val], "o-",
                label="validation (all steps)")
        pres = [r for r in val if r.get("val_acc_by_presentation")]
        if pres:
            n = len(pres[0]["val_acc_by_presentation"])
            for i, name in ((1, "2nd"), (n - 1, f"{n}th")):
                pts = [(r["step"], r["val_acc_by_presentation"][i]) for r in pres
                       if i < len(r["val_acc_by_presentation"]) and r["val_acc_by_presentation"][i] is not None]
                if pts and i > 0:
                    ax.plot([p[0] for p in pts], [100 * p[1] for p in pts], "s--", ms=3,
                            label=f"validation, {name} presentation")
    accuracy_axes(ax, "training step", title or "learning curve")
    lx.set_xlabel("training step")
    lx.set_ylabel("training loss")
    lx.grid(alpha=0.3)
    return _save(fig, path)


def protocol_line(r: EvalResult) -> str:
    """One line describing the protocol of a result."""
    return r.protocol_line()


def _first_presentation_note(results: Sequence[EvalResult]) -> str:
    """What a guess scores at the 1st presentation, for the ways of ``results``."""
    ways = list(dict.fromkeys(r.protocol.n_way for r in results))
    each = "; ".join(f"{100 / n:.1f}% among all {n} labels, {100 * unseen_label_guess(n):.1f}% "
                     "among those not shown yet in the episode" for n in ways)
    return f"The 1st presentation of a class cannot be known: a guess scores {each}."


def write_run_report(run_dir: str | os.PathLike[str], results: Sequence[EvalResult],
                     records: Sequence[dict[str, Any]], *, plots: bool = True) -> dict[str, Path]:
    """Write ``eval.md``, ``learning_curve.png`` and ``per_presentation.png`` in ``run_dir``.

    Figures that no longer apply (no sequence scoring this time) are removed, so none is
    left over from an earlier run in the same folder.
    """
    run_dir = Path(run_dir)
    written: dict[str, Path] = {}
    if results:
        lines = ["# Test evaluation", ""]
        lines += [f"- protocol: {protocol_line(r)}" for r in results]
        lines += [
            "",
            to_markdown(results),
            "Accuracies are the mean over the episodes with the 95% confidence half-width. "
            "`set`: queries scored given the support set; `sequence`: every step of the episode "
            "read as a sequence whose labels arrive one step late, and `seq Nth` the accuracy the "
            f"Nth time a class is shown. {_first_presentation_note(results)} See docs/glossary.md.",
            "",
            f"Score it again, or on other settings or data: `metamem eval {run_dir}` "
            "(for instance `'eval.k_shot=[1,5]'` or `data=folder:PATH`).",
            "",
        ]
        written["md"] = atomic_write_text(run_dir / "eval.md", "\n".join(lines))
    if not plots:
        return written
    curve = plot_learning_curve(records, run_dir / "learning_curve.png")
    if curve is not None:
        written["learning_curve"] = curve
    pp = plot_per_presentation(list(results), run_dir / "per_presentation.png",
                               title="test accuracy by presentation")
    if pp is not None:
        written["per_presentation"] = pp
    else:
        (run_dir / "per_presentation.png").unlink(missing_ok=True)
    return written
