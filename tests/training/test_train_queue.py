"""scripts/train_queue.py: a queue of runs is started, resumed exactly, exported and re-scored."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


def _config(tmp_path: Path) -> Path:
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(yaml.safe_dump({
        "extends": str(ROOT / "experiments" / "base" / "synthetic.yaml"),
        "learner": {"name": "protonet", "backbone": "conv4"},
        "data": {"options": {"num_classes": 40, "per_class": 20, "image_size": 16}},
        "episodes": {"n_way": 3, "k_shot": 1, "n_query": 2, "batch_size": 2},
        "train": {"steps": 4, "val_every": 0, "log_every": 1, "checkpoint_every": 2},
        "eval": {"n_way": 3, "k_shot": 1, "n_query": 2, "episodes": 4, "protocol": "set"},
    }))
    return cfg


def _queue(tmp_path: Path, steps: int, export: bool = True) -> Path:
    job = {"name": "tiny", "config": str(_config(tmp_path)), "overrides": [f"train.steps={steps}"]}
    if export:
        job["export"] = str(tmp_path / "results" / "tiny")
        job["rescore"] = {"eval_2way": ["eval.n_way=2", "eval.episodes=4", "eval.seed=7"]}
    q = tmp_path / "queue.yaml"
    q.write_text(yaml.safe_dump({"runs_dir": str(tmp_path / "runs"), "threads": 1, "jobs": [job]}))
    return q


@pytest.fixture
def queue(load_script: Callable[[str], ModuleType]) -> ModuleType:
    return load_script("train_queue")


def _status(queue: ModuleType, path: Path, capsys: pytest.CaptureFixture[str]) -> dict:
    assert queue.main(["status", str(path), "--json"]) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[0])


@pytest.mark.slow  # three real trainings and a re-score in subprocesses
def test_queue_trains_then_resumes_to_a_longer_target_then_exports(
        queue: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    q = _queue(tmp_path, steps=2, export=False)
    assert _status(queue, q, capsys)["state"] == "queued"
    assert queue.main(["run", str(q)]) == 0
    capsys.readouterr()
    st = _status(queue, q, capsys)
    assert (st["state"], st["step"]) == ("trained", 2)
    # a longer target: the run is stopped at step 2 of 4 and resumes from its checkpoint
    q = _queue(tmp_path, steps=4)
    st = _status(queue, q, capsys)
    assert (st["state"], st["step"], st["target"]) == ("stopped", 2, 4)
    assert queue.main(["run", str(q)]) == 0
    out = capsys.readouterr().out
    assert "--resume" in out and "train.steps=4" in out
    assert _status(queue, q, capsys)["state"] == "exported"
    dest = tmp_path / "results" / "tiny"
    assert (dest / "checkpoints" / "last.pt").is_file()
    assert (dest / "eval_2way" / "results.json").is_file()
    steps = [json.loads(line)["step"] for line in (tmp_path / "runs" / "tiny" / "metrics.jsonl").open()
             if '"loss"' in line]
    assert steps == [1, 2, 3, 4]  # one line per step, none repeated by the resume
    # nothing left to do: a second run changes nothing
    before = (dest / "metrics.jsonl").read_bytes()
    assert queue.main(["run", str(q)]) == 0
    assert (dest / "metrics.jsonl").read_bytes() == before


def test_dry_run_prints_the_commands_and_runs_nothing(
        queue: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    q = _queue(tmp_path, steps=3)
    assert queue.main(["run", str(q), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "metamem train" in out and "export" in out and "eval_2way" in out
    assert not (tmp_path / "runs" / "tiny").exists()


def test_a_job_another_process_trains_is_shown_running_and_left_to_it(
        queue: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Two runners on one queue: a run directory whose lock is held is "running" (with the
    holder's pid), and ``run`` goes on without touching it; once the lock is released the
    job is "stopped" again and ``run`` resumes it."""
    import os

    from metamem.files import directory_holder, lock_directory

    q = _queue(tmp_path, steps=3, export=False)
    run_dir = tmp_path / "runs" / "tiny"
    calls: list[list[str]] = []
    monkeypatch.setattr(queue, "_run", lambda cmd, log, dry: calls.append(cmd) or 0)
    assert directory_holder(run_dir) is None  # no lock file yet
    with lock_directory(run_dir):  # flock belongs to the open file: this open conflicts with the probe's
        assert directory_holder(run_dir) == str(os.getpid())
        st = _status(queue, q, capsys)
        assert (st["state"], st["step"], st["target"]) == ("running", 0, 3)
        assert queue.main(["status", str(q)]) == 0
        assert f"(pid {os.getpid()})" in capsys.readouterr().out
        assert queue.main(["run", str(q)]) == 0
        assert "left to it" in capsys.readouterr().out
        assert calls == []
    assert directory_holder(run_dir) is None  # the lock file stays, its holder is gone
    assert _status(queue, q, capsys)["state"] == "stopped"
    assert queue.main(["run", str(q)]) == 0
    assert len(calls) == 1 and "--overwrite" in calls[0]  # no checkpoint yet: started again


@pytest.mark.parametrize(("doc", "message"), [
    ({"jobs": "x"}, "'jobs' list"),
    ({"jobs": [], "extra": 1}, "unknown key(s) ['extra']"),
    ({"jobs": [{"name": "a"}]}, "jobs[0] needs at least 'name' and 'config'"),
    ({"jobs": [{"name": "a b", "config": "x.yaml"}]}, "must be letters"),
    ({"jobs": [{"name": "a", "config": "missing.yaml"}]}, "jobs[0].config: missing.yaml not found"),
    ({"jobs": [], "threads": 0}, "threads must be a positive integer"),
])
def test_bad_queue_files_get_one_line(queue: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                      doc: dict, message: str) -> None:
    q = tmp_path / "queue.yaml"
    q.write_text(yaml.safe_dump(doc))
    assert queue.main(["status", str(q)]) == 2
    err = capsys.readouterr().err
    assert message in err and str(q) in err and len(err.strip().splitlines()) == 1


def test_unknown_job_name_is_refused(queue: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    q = _queue(tmp_path, steps=2)
    assert queue.main(["run", str(q), "--only", "nope"]) == 2
    assert "no job named ['nope']" in capsys.readouterr().err


def test_the_committed_queue_files_parse(queue: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)  # their paths are relative to the repository root
    files = sorted((ROOT / "queues").glob("*.yaml"))
    assert files
    for f in files:
        jobs, threads, _ = queue.read_queue(f)
        assert jobs and threads >= 1
        for job in jobs:
            assert job.steps > 0
