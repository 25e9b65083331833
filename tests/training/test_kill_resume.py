"""Crash safety as a test: ``metamem train`` is killed with SIGKILL at seeded points (during
steps, during a checkpoint write, between a metrics line and its checkpoint, with half a
metrics line written, during the final evaluation, while writing eval.json), then resumed
with ``--resume`` until it finishes. Every time, ``metrics.jsonl`` and ``eval.json`` must
equal those of an uninterrupted run byte for byte once the timing fields are removed, the
weights must be identical, and no temp file may be left behind.

The kill is a real ``SIGKILL`` the process sends itself at a named point
(:func:`metamem.files.kill_point`, replaced by ``kill_at.py`` in the killed process only),
so the points are exact and the test is deterministic: no ``finally``, ``atexit`` or
buffered write runs.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from metamem.cli.main import main
from metamem.runs import load_checkpoint
from metamem.training.loop import TIMING_KEYS

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
CONFIG = str(ROOT / "experiments" / "smoke" / "synthetic_lstm.yaml")
# 13 steps: checkpoints at 3, 6, 9, 12 and 13 (the end, off the log/val schedule: "final"
# lines); metrics lines every 2 steps, validation every 4
OVERRIDES = ["device=cpu", "train.steps=13", "train.log_every=2", "train.val_every=4",
             "train.checkpoint_every=3", "eval.episodes=12", "eval.batch_size=4",
             "eval.k_shot=[1,2]"]
SEED = 1203
#: (point, how many times the uninterrupted run reaches it): the seeded draw picks the n-th
POINTS = {
    "step": 13, "metrics_line": 6 + 3 + 2, "metrics_partial": 6 + 3 + 2, "write:last.pt": 5,
    "write:best.pt": 1, "eval": 2, "write:eval.json": 1,
}
#: a step kill before the first checkpoint leaves nothing to resume (by design)
FIRST_CKPT_STEP = 3


def strip_metrics(path: Path) -> list[str]:
    out = []
    for line in path.read_text().splitlines():
        rec = json.loads(line)
        out.append(json.dumps({k: v for k, v in rec.items() if k not in TIMING_KEYS}))
    return out


def strip_eval(path: Path) -> str:
    res = json.loads(path.read_text())
    for r in res:
        r.pop("seconds", None)  # timing
        r.pop("source", None)  # the run directory's path
    return json.dumps(res, sort_keys=True)


def train_killed(run: Path, point: str, n: int) -> int:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    args = [sys.executable, str(Path(__file__).with_name("kill_at.py")), point, str(n),
            "train", CONFIG, *OVERRIDES, "--out", str(run), "--no-progress"]
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=300).returncode


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("ref") / "run"
    assert main(["train", CONFIG, *OVERRIDES, "--out", str(run), "--no-progress"]) == 0
    return run


def kill_plan() -> list[tuple[str, int]]:
    """Seeded kill points: every kind of point at least once (>= 5 points in all)."""
    rng = random.Random(SEED)
    plan = []
    for point, reached in POINTS.items():
        low = 1
        if point == "step":
            low = FIRST_CKPT_STEP + 1
        if point.startswith("metrics"):
            low = 3  # past the first checkpoint (lines at steps 2 and 4 come first)
        plan.append((point, rng.randint(low, reached)))
    return plan


@pytest.mark.parametrize("point, n", kill_plan())
def test_sigkill_then_resume_equals_an_uninterrupted_run(reference: Path, tmp_path: Path,
                                                         point: str, n: int) -> None:
    run = tmp_path / "run"
    rc = train_killed(run, point, n)
    assert rc == -signal.SIGKILL, f"the process was not killed at {point}:{n} (exit {rc})"
    if point.startswith("write:"):  # killed mid-write: the temp file is there
        assert list(run.rglob(f".{point[6:]}.*.tmp")), "no temp file: the kill point was missed"
    assert main(["train", "--resume", str(run), "--no-progress"]) == 0
    assert strip_metrics(run / "metrics.jsonl") == strip_metrics(reference / "metrics.jsonl")
    assert strip_eval(run / "eval.json") == strip_eval(reference / "eval.json")
    for which in ("last", "best"):
        a = load_checkpoint(reference, which=which)
        b = load_checkpoint(run, which=which)
        assert a["step"] == b["step"]
        assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert not [p for p in run.rglob("*") if p.name.endswith(".tmp")], "temp files left behind"


def test_the_plan_covers_every_kind_of_point() -> None:
    kinds = {p for p, _ in kill_plan()}
    assert len(kill_plan()) >= 5 and {"step", "write:last.pt", "metrics_line", "eval"} <= kinds
