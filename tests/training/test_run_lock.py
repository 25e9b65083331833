"""One writer per run directory: a second ``metamem train`` (fresh, ``--resume`` or
``--overwrite``) on a directory another live process is training into is refused with a line
naming that process's pid, and writes nothing; the lock of a process killed with SIGKILL
does not block. Two real processes each time."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from metamem.files import LOCK_NAME, DirectoryBusy, lock_directory
from metamem.runs import load_checkpoint, read_metrics

ROOT = Path(__file__).resolve().parents[2]
CONFIG = str(ROOT / "experiments" / "smoke" / "synthetic_lstm.yaml")
# long enough to outlive the test; a checkpoint every step so that a resume has one soon
LONG = ["device=cpu", "train.steps=100000", "train.log_every=1", "train.val_every=0",
        "train.checkpoint_every=1"]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def _metamem(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "metamem", *args], env=_env(),
                          capture_output=True, text=True, timeout=timeout)


def _start_long_run(run: Path) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "metamem", "train", CONFIG, *LONG, "--out", str(run), "--no-progress",
         "--no-eval"], env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (run / "checkpoints" / "last.pt").is_file():
        if proc.poll() is not None:
            pytest.fail(f"the first training process ended early: {proc.stderr.read() if proc.stderr else ''}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("the first training process wrote no checkpoint in 120 s")
        time.sleep(0.1)
    return proc


@pytest.fixture
def live_run(tmp_path: Path):
    run = tmp_path / "run"
    proc = _start_long_run(run)
    yield run, proc
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=60)


@pytest.mark.slow
def test_a_second_writer_is_refused_with_the_holders_pid(live_run) -> None:
    run, proc = live_run
    for args in (["train", "--resume", str(run)],
                 ["train", CONFIG, "device=cpu", "--out", str(run), "--overwrite"]):
        res = _metamem(*args, "--no-progress", "--no-eval")
        assert res.returncode == 1, res.stderr
        lines = res.stderr.strip().splitlines()
        assert lines == [f"metamem train: error: run directory {run} is in use by another metamem "
                         f"process (pid {proc.pid}); wait for it to finish or stop it, or pass "
                         "another --out"], res.stderr
        assert proc.poll() is None, "the first run must go on"
    # the first run still owns the directory: one line per step, none lost or repeated
    steps = [r["step"] for r in read_metrics(run / "metrics.jsonl", drop_partial_tail=True)]
    assert steps == list(range(1, len(steps) + 1))
    assert (run / "config.yaml").is_file() and (run / "checkpoints" / "last.pt").is_file()


@pytest.mark.slow
def test_the_lock_of_a_kill9_process_does_not_block(live_run) -> None:
    run, proc = live_run
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    assert (run / LOCK_NAME).read_text().strip() == str(proc.pid)  # the stale file is there
    step = load_checkpoint(run, which="last")["step"]
    res = _metamem("train", "--resume", str(run), f"train.steps={step + 2}", "--no-progress", "--no-eval")
    assert res.returncode == 0, res.stderr
    assert load_checkpoint(run, which="last")["step"] == step + 2


def test_lock_directory_in_one_process_and_across_processes(tmp_path: Path) -> None:
    with lock_directory(tmp_path / "d"):
        assert (tmp_path / "d" / LOCK_NAME).read_text().strip() == str(os.getpid())
        # another process cannot take it while this one holds it ...
        code = ("import sys; from metamem.files import lock_directory, DirectoryBusy\n"
                "try:\n  with lock_directory(sys.argv[1]): print('locked')\n"
                "except DirectoryBusy as e: print(e)")
        out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "d")], env=_env(),
                             capture_output=True, text=True, timeout=60).stdout
        assert f"(pid {os.getpid()})" in out
        # ... nor a second open in this one (flock locks belong to the open file)
        with pytest.raises(DirectoryBusy, match=rf"\(pid {os.getpid()}\)"):
            with lock_directory(tmp_path / "d"):
                pass
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "d")], env=_env(),
                         capture_output=True, text=True, timeout=60).stdout
    assert out.strip() == "locked"
