"""A finished training run explains itself: ``eval.md``, the learning curve and the
per-presentation curve in the run directory (and no stale figure after an overwrite)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from metamem.config import load_config
from metamem.evaluation.run_report import plot_learning_curve
from metamem.training import train

SMOKE = Path(__file__).resolve().parents[2] / "experiments" / "smoke" / "synthetic_mann.yaml"
PNG = b"\x89PNG"
FAST = ["train.steps=3", "train.val_every=2", "train.val_episodes=2", "train.log_every=1",
        "eval.episodes=4", "eval.batch_size=4"]


def test_training_writes_eval_md_and_figures(tmp_path: Path) -> None:
    out = tmp_path / "run"
    old = os.umask(0o022)
    try:
        train(load_config(SMOKE, [*FAST, "eval.protocol=both"]), out, progress=False)
    finally:
        os.umask(old)
    for f in ("config.yaml", "eval.json", "eval.md", "learning_curve.png", "checkpoints/last.pt"):
        assert stat.S_IMODE((out / f).stat().st_mode) == 0o644, f  # as open() would, not 0600
    md = (out / "eval.md").read_text()
    assert "- protocol: synthetic split test, 5-way" in md and "| MANN |" in md
    assert "seq 1st %" in md and f"metamem eval {out}" in md
    for name in ("learning_curve.png", "per_presentation.png"):
        assert (out / name).read_bytes()[:4] == PNG, name
    # set scoring only: no per-presentation figure, and none left from the first run
    train(load_config(SMOKE, [*FAST, "eval.protocol=set", "eval.n_query=1"]), out, progress=False,
          overwrite=True)
    assert not (out / "per_presentation.png").exists()
    assert "scoring set," in (out / "eval.md").read_text()
    # no final evaluation: the learning curve is still drawn
    train(load_config(SMOKE, FAST), out, progress=False, overwrite=True, final_eval=False)
    assert (out / "learning_curve.png").is_file() and not (out / "eval.md").exists()


def test_learning_curve_draws_presentations_and_skips_empty(tmp_path: Path) -> None:
    recs = [{"step": 1, "loss": 1.6, "acc": 0.2}, {"step": 2, "loss": 1.5, "acc": 0.3},
            {"step": 2, "val_loss": 1.5, "val_acc": 0.3, "val_acc_by_presentation": [0.2, 0.3, 0.5]}]
    assert plot_learning_curve(recs, tmp_path / "c.png").read_bytes()[:4] == PNG
    assert plot_learning_curve([], tmp_path / "none.png") is None


def test_atomic_writes_honour_the_umask(tmp_path: Path) -> None:
    from metamem.files import write_text

    for mask, mode in ((0o022, 0o644), (0o027, 0o640), (0o077, 0o600)):
        old = os.umask(mask)
        try:
            path = write_text(tmp_path / f"f{mask:o}.txt", "x")
        finally:
            os.umask(old)
        assert stat.S_IMODE(path.stat().st_mode) == mode
