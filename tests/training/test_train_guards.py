"""Refusals and one-line messages around training and trained runs: a run directory held
by another process, the thread count of a resume, a full disk during a write, non-finite
config numbers and a missing CUDA caught before a run directory exists, damaged or edited
checkpoints (NaN weights, a 'learner' field or config.yaml that disagrees with the weights)
and checkpoints holding code (no advice to load them unsafely)."""

from __future__ import annotations

import errno
import io
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from metamem import load_run
from metamem.cli.main import main
from metamem.config import ConfigError
from metamem.files import LOCK_NAME, WriteError, atomic_write
from metamem.runs import CheckpointError, load_checkpoint, read_metrics, save_checkpoint
from metamem.training import train
from metamem.training.loop import ThreadsChanged

ROOT = Path(__file__).resolve().parents[2]
LSTM = str(ROOT / "experiments" / "smoke" / "synthetic_lstm.yaml")
FAST = ["device=cpu", "train.steps=2", "train.log_every=1", "train.val_every=0", "--no-eval",
        "--no-progress"]


@pytest.fixture(scope="module")
def two_steps(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("guards") / "run"
    assert main(["train", LSTM, *FAST, "--threads", "1", "--out", str(run)]) == 0
    return run


def _copy(run: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(run, dst)
    return dst


# ------------------------------------------------------------------ one writer per run
def test_train_into_a_directory_another_process_holds_is_refused(tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from metamem.files import lock_directory\n"
         "with lock_directory(sys.argv[1]):\n print('held', flush=True); time.sleep(120)", str(run)],
        env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        assert main(["train", LSTM, *FAST, "--out", str(run)]) == 1
        err = capsys.readouterr().err.strip()
        assert err == (f"metamem train: error: run directory {run} is in use by another metamem "
                       f"process (pid {holder.pid}); wait for it to finish or stop it, or pass another --out")
        assert sorted(p.name for p in run.iterdir()) == [LOCK_NAME]  # nothing written
    finally:
        holder.kill()
        holder.wait()
    # the holder is gone (killed): its lock is gone with it
    assert main(["train", LSTM, *FAST, "--out", str(run)]) == 0
    assert (run / LOCK_NAME).read_text().strip() == str(os.getpid())


# ------------------------------------------------------------------ thread count
def test_thread_count_is_recorded_and_a_resume_on_another_count_says_so(two_steps: Path, tmp_path: Path) -> None:
    assert {r["threads"] for r in read_metrics(two_steps / "metrics.jsonl")} == {1}
    assert load_checkpoint(two_steps, which="last")["threads"] == 1
    run = _copy(two_steps, tmp_path / "run")
    before = torch.get_num_threads()
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert main(["train", "--resume", str(run), "train.steps=3", "--threads", "2",
                         "--no-eval", "--no-progress"]) == 0
    finally:
        torch.set_num_threads(before)
    said = [str(w.message) for w in caught if issubclass(w.category, ThreadsChanged)]
    assert said == ["resuming with 2 torch thread(s); the run was trained with 1: the results are no "
                    "longer bitwise equal to an uninterrupted run (pass --threads 1 to keep them)"]
    assert read_metrics(run / "metrics.jsonl")[-1]["threads"] == 2
    with warnings.catch_warnings(record=True) as caught:  # the same count: no word
        warnings.simplefilter("always")
        assert main(["train", "--resume", str(run), "train.steps=4", "--threads", "2",
                     "--no-eval", "--no-progress"]) == 0
    torch.set_num_threads(before)
    assert not [w for w in caught if issubclass(w.category, ThreadsChanged)]


# ------------------------------------------------------------------ full disk
class _FullDisk(io.RawIOBase):
    """A file that takes ``room`` bytes and then fails as a full disk does."""

    def __init__(self, real: io.BufferedWriter, room: int) -> None:
        self.real, self.room = real, room

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:  # type: ignore[override]
        if len(data) > self.room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.room -= len(data)
        return self.real.write(data)

    def fileno(self) -> int:
        return self.real.fileno()

    def flush(self) -> None:
        self.real.flush()

    def close(self) -> None:
        super().close()  # flushes
        self.real.close()


def _fill_disk_after(monkeypatch: pytest.MonkeyPatch, room: int) -> None:
    real_fdopen = os.fdopen
    monkeypatch.setattr(os, "fdopen", lambda fd, *a, **k: _FullDisk(real_fdopen(fd, *a, **k), room))


def test_a_full_disk_inside_torch_save_names_the_file_and_the_cause(tmp_path: Path, monkeypatch) -> None:
    target = tmp_path / "last.pt"
    target.write_bytes(b"old")
    _fill_disk_after(monkeypatch, 2000)
    with pytest.raises(WriteError) as info:  # torch says "[enforce fail ...] unexpected pos"
        save_checkpoint(target, {"model": {"w": torch.zeros(10_000)}})
    assert str(info.value) == (f"cannot write {target}: No space left on device; the disk is full: "
                               "free some space or write elsewhere")
    assert info.value.errno == errno.ENOSPC
    assert target.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]


def test_other_os_errors_during_a_write_name_the_file(tmp_path: Path, monkeypatch) -> None:
    def refuse(fd: int) -> None:
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(os, "fsync", refuse)
    with pytest.raises(WriteError, match=rf"^cannot write {tmp_path / 'x.json'}: Input/output error$"):
        atomic_write(tmp_path / "x.json", lambda f: f.write(b"{}"))
    assert not list(tmp_path.iterdir())
    with pytest.raises(ZeroDivisionError):  # not an OS error: unchanged
        atomic_write(tmp_path / "y", lambda f: 1 / 0)


def test_a_full_disk_during_training_is_one_line(tmp_path: Path, monkeypatch, capsys) -> None:
    run = tmp_path / "run"
    _fill_disk_after(monkeypatch, 20_000)  # config.yaml fits, a checkpoint does not
    assert main(["train", LSTM, *FAST, "--out", str(run)]) == 1
    err = capsys.readouterr().err.strip()
    assert err == (f"metamem train: error: cannot write {run / 'checkpoints' / 'last.pt'}: No space "
                   "left on device; the disk is full: free some space or write elsewhere")
    assert not list(run.rglob("*.tmp"))


def test_a_full_disk_while_appending_a_metrics_line(tmp_path: Path, tiny_cfg, monkeypatch) -> None:
    import builtins

    real_open = builtins.open

    def full_open(file, mode="r", *a, **k):  # type: ignore[no-untyped-def]
        f = real_open(file, mode, *a, **k)
        if str(file).endswith("metrics.jsonl") and "a" in mode:
            f.write = lambda s: (_ for _ in ()).throw(OSError(errno.ENOSPC, "No space left on device"))
        return f

    monkeypatch.setattr(builtins, "open", full_open)
    with pytest.raises(WriteError, match=r"cannot write .*metrics\.jsonl: No space left on device"):
        train(tiny_cfg("lstm", "train.steps=2", "train.log_every=1"), tmp_path / "run",
              progress=False, final_eval=False)


# ------------------------------------------------------------------ checked before a run directory
@pytest.mark.parametrize("override, message", [
    ("train.optimizer.lr=.inf", "train.optimizer.lr: must be a finite number, got inf"),
    ("train.grad_clip=.nan", "train.grad_clip: must be a finite number, got nan"),
    ("train.optimizer.weight_decay=-.inf", "train.optimizer.weight_decay: must be a finite number, got -inf"),
])
def test_non_finite_numbers_fail_validate_and_train_before_a_run_directory(
        tmp_path: Path, capsys, override: str, message: str) -> None:
    assert main(["validate", LSTM, override, "--no-data"]) == 1
    assert capsys.readouterr().err == f"FAIL {LSTM}: override '{override}': {message}\n"
    with pytest.raises(ConfigError, match=rf"override '{override}': {message}"):
        from metamem.config import load_config

        train(load_config(LSTM, [override]), tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


def test_cuda_without_cuda_fails_validate(capsys) -> None:
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    assert main(["validate", LSTM, "device=cuda", "--no-data"]) == 1
    assert "device: 'cuda' but CUDA is not available here; use device=cpu" in capsys.readouterr().err


# ------------------------------------------------------------------ damaged or edited checkpoints
def test_nan_weights_are_refused_by_eval(two_steps: Path, tmp_path: Path, capsys) -> None:
    run = _copy(two_steps, tmp_path / "run")
    ckpt = load_checkpoint(run, which="best")
    name = next(k for k, v in ckpt["model"].items() if v.is_floating_point())
    ckpt["model"][name][0] = float("nan")
    save_checkpoint(run / "checkpoints" / "best.pt", {k: v for k, v in ckpt.items()
                                                      if k not in ("path", "format", "version")})
    with pytest.raises(CheckpointError, match=rf"best\.pt: weights hold NaN/Inf values \(\d+ of \d+ in '{name}'\)"):
        load_run(run, device="cpu")
    assert main(["eval", str(run), "eval.episodes=4", "--out", str(tmp_path / "ev")]) == 1
    err = capsys.readouterr().err
    assert "weights hold NaN/Inf values" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "ev" / "results.json").exists()


def test_a_learner_field_or_config_yaml_that_disagrees_with_the_weights_is_named(
        two_steps: Path, tmp_path: Path) -> None:
    run = _copy(two_steps, tmp_path / "run")
    cfg = (run / "config.yaml").read_text()
    (run / "config.yaml").write_text(cfg.replace("controller_size: 16", "controller_size: 32"))
    with pytest.raises(CheckpointError, match=r"config\.yaml disagrees with the weights in .*last\.pt "
                                              r"\(learner\.controller_size: 32 vs 16, config\.yaml vs checkpoint\)"):
        load_run(run, device="cpu")
    (run / "config.yaml").write_text(cfg)
    ckpt = load_checkpoint(run, which="best")
    ckpt["learner"] = "mann"
    edited = tmp_path / "edited.pt"
    save_checkpoint(edited, {k: v for k, v in ckpt.items() if k not in ("path", "format", "version")})
    with pytest.raises(CheckpointError, match=r"edited\.pt: its 'learner' field says 'mann' but its "
                                              r"weights are of learner 'lstm'"):
        load_run(edited, device="cpu")
    load_run(run, device="cpu")  # the unedited run loads


def test_a_checkpoint_holding_code_gets_no_unsafe_advice(tmp_path: Path) -> None:
    class Payload:
        def __reduce__(self):  # type: ignore[no-untyped-def]
            return (print, ("this must never run",))

    bad = tmp_path / "code.pt"
    torch.save({"format": "metamem-checkpoint", "x": Payload()}, bad)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(bad)
    msg = str(info.value)
    assert msg == (f"{bad} is not a metamem checkpoint (torch.load with weights_only=True failed: it "
                   "holds a Python object (print), not only tensors and plain values; metamem never "
                   "loads code from a checkpoint)")
    assert "weights_only=False" not in msg and "safe_globals" not in msg
