"""The command-line entry points: dispatch, listing, and the CPU thread policy."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from metamem.cli._threads import apply_threads
from metamem.cli.main import main


def test_python_dash_m_lists_registries() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "metamem", "ls", "write-policies"],
        capture_output=True, text=True, check=True,
    ).stdout
    assert [line.split()[0] for line in out.splitlines()] == [
        "cached_uniform", "lru", "uniform", "usage",
    ]


@pytest.mark.parametrize(
    "what,expected",
    [
        ("datasets", {"folder", "mini_imagenet", "omniglot", "pairs", "synthetic"}),
        ("learners", {"lstm", "mann", "matching", "memory_matching", "metanet", "protonet",
                      "maml", "linear_probe"}),
        ("backbones", {"conv4", "resnet12"}),
    ],
)
def test_ls(capsys: pytest.CaptureFixture[str], what: str, expected: set[str]) -> None:
    assert main(["ls", what]) == 0
    names = {line.split()[0] for line in capsys.readouterr().out.splitlines()}
    assert expected <= names


def test_no_command_prints_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "train" in capsys.readouterr().out


def test_thread_policy(monkeypatch: pytest.MonkeyPatch) -> None:
    before = torch.get_num_threads()
    try:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
        assert apply_threads(None) == 1 and torch.get_num_threads() == 1
        monkeypatch.setenv("OMP_NUM_THREADS", "2")
        assert apply_threads(None) == 2 and torch.get_num_threads() == 2
        assert apply_threads(1) == 1 and torch.get_num_threads() == 1
        with pytest.raises(ValueError, match="--threads must be >= 1, got 0"):
            apply_threads(0)
    finally:
        torch.set_num_threads(before)


def test_overrides_may_follow_options(
    tmp_path: Path, repo_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = str(repo_root / "experiments/smoke/synthetic_lstm.yaml")
    assert main(["validate", cfg]) == 0
    out = tmp_path / "run"
    code = main(["train", cfg, "--out", str(out),
                 "--no-progress", "--no-eval", "train.steps=2", "train.val_every=2",
                 "train.log_every=1"])
    assert code == 0
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert any('"step": 2' in line for line in lines) and not any('"step": 3' in line for line in lines)
    with pytest.raises(SystemExit):
        main(["train", cfg, "--bogus-option"])
    assert "unrecognized arguments: --bogus-option" in capsys.readouterr().err
