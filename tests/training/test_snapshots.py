"""``train.snapshot_every``: weight snapshots for learning curves on the test protocol, and
``scripts/time_to_accuracy.py``, which scores them against the training CPU time."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

import metamem
from metamem.config import ConfigError
from metamem.runs import load_checkpoint
from metamem.training import train

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
import time_to_accuracy as tta  # noqa: E402

QUIET = ("train.val_every=0", "eval.episodes=8", "train.checkpoint_every=0")


def test_snapshots_hold_the_weights_of_their_step(tmp_path: Path, tiny_cfg) -> None:
    """Snapshots at every multiple of snapshot_every hold that step's weights: the one at the
    last step equals last.pt's, an earlier one differs, and each loads as a run."""
    train(tiny_cfg("mann", "train.steps=4", "train.snapshot_every=2", *QUIET), tmp_path / "r", progress=False)
    ck = tmp_path / "r" / "checkpoints"
    assert sorted(p.name for p in ck.glob("step_*.pt")) == ["step_000002.pt", "step_000004.pt"]
    last = load_checkpoint(tmp_path / "r", "last")["model"]
    snap4 = torch.load(ck / "step_000004.pt", weights_only=True)
    snap2 = torch.load(ck / "step_000002.pt", weights_only=True)
    assert snap4["step"] == 4 and snap2["step"] == 2
    assert "optimizer" not in snap4  # weights only: a snapshot is small
    assert all(torch.equal(last[k], snap4["model"][k]) for k in last)
    assert any(not torch.equal(last[k], snap2["model"][k]) for k in last)
    run = metamem.load_run(ck / "step_000002.pt", device="cpu")
    assert run.config.learner.name == "mann"


def test_no_snapshots_by_default_and_a_negative_period_is_refused(tmp_path: Path, tiny_cfg) -> None:
    train(tiny_cfg("mann", "train.steps=2", *QUIET), tmp_path / "r", progress=False)
    assert not list((tmp_path / "r" / "checkpoints").glob("step_*.pt"))
    from metamem.validate import validate_config

    with pytest.raises(ConfigError, match="train.snapshot_every"):
        validate_config(tiny_cfg("mann", "train.snapshot_every=-1"))


def test_cumulative_cpu_chains_resumed_segments(tmp_path: Path) -> None:
    """cpu_s restarts in a resumed process; the CPU time at a step adds the segments."""
    lines = [{"step": 10, "cpu_s": 5.0}, {"step": 20, "cpu_s": 10.0}, {"step": 20, "val_acc": 0.5},
             {"step": 30, "cpu_s": 4.0}, {"step": 40, "cpu_s": 9.0}]
    (tmp_path / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in lines) + "\n")
    curve = tta.cumulative_cpu(tmp_path / "metrics.jsonl")
    assert curve == [(10, 5.0), (20, 10.0), (30, 14.0), (40, 19.0)]
    assert tta.cpu_at(curve, 40) == 19.0
    assert tta.cpu_at(curve, 35) == pytest.approx(16.5)
    assert tta.cpu_at(curve, 5) == 0.0
    assert tta.parse_setting("20w5s") == (20, 5)
    with pytest.raises(SystemExit, match="5way"):
        tta.parse_setting("5way")


def test_time_to_accuracy_scores_each_snapshot_once(tmp_path: Path, tiny_cfg) -> None:
    run = tmp_path / "r"
    train(tiny_cfg("mann", "train.steps=4", "train.snapshot_every=2", "train.log_every=1", *QUIET),
          run, progress=False)
    args = [str(run), "--settings", "3w1s", "--episodes", "4", "--n-query", "2", "--targets", "3w1s=0"]
    assert tta.main(args) == 0
    data = json.loads((run / "time_to_accuracy.json").read_text())
    assert [p["step"] for p in data["points"]] == [2, 4]
    assert data["reached"]["3w1s"]["step"] == 2  # a target of 0 % is met by the first snapshot
    assert data["points"][1]["cpu_s"] > data["points"][0]["cpu_s"] > 0
    direct = metamem.load_run(run / "checkpoints" / "step_000004.pt", device="cpu").evaluate(
        n_way=3, k_shot=1, n_query=2, episodes=4, seed=2026, protocol="set", progress=False)
    assert data["points"][1]["acc"]["3w1s"][0] == round(100 * direct.mean, 2)
    assert (run / "time_to_accuracy.png").is_file()
    # --stop-when-reached: nothing after the first snapshot that meets every target is scored
    out = tmp_path / "early.json"
    assert tta.main([*args, "--stop-when-reached", "--out", str(out)]) == 0
    early = json.loads(out.read_text())
    assert [p["step"] for p in early["points"]] == [2] and early["reached"]["3w1s"]["step"] == 2


def test_time_to_accuracy_keeps_what_it_scored_when_interrupted(tmp_path: Path, tiny_cfg, monkeypatch) -> None:
    run = tmp_path / "r"
    train(tiny_cfg("mann", "train.steps=4", "train.snapshot_every=2", "train.log_every=1", *QUIET),
          run, progress=False)
    args = [str(run), "--settings", "3w1s", "--episodes", "4", "--n-query", "2"]
    real_load, loaded = metamem.load_run, []

    def load_then_stop(path, **kw):  # the second snapshot is never scored: the process dies
        loaded.append(Path(path).name)
        if len(loaded) == 2:
            raise KeyboardInterrupt
        return real_load(path, **kw)

    monkeypatch.setattr(metamem, "load_run", load_then_stop)
    with pytest.raises(KeyboardInterrupt):
        tta.main(args)
    data = json.loads((run / "time_to_accuracy.json").read_text())
    assert [p["step"] for p in data["points"]] == [2]
    loaded.clear()
    monkeypatch.setattr(metamem, "load_run", lambda path, **kw: (loaded.append(Path(path).name), real_load(path, **kw))[1])
    assert tta.main(args) == 0  # the re-run scores only the snapshot it had not
    assert loaded == ["step_000004.pt"]
    assert [p["step"] for p in json.loads((run / "time_to_accuracy.json").read_text())["points"]] == [2, 4]
