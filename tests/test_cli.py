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


def test_validate_expands_folders_and_each_fail_names_its_file(
    tmp_path: Path, repo_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``metamem validate DIR`` checks every *.yaml below DIR (no shell glob needed), and a
    FAIL line names the YAML file even when an override is at fault."""
    base = (repo_root / "experiments/base/synthetic.yaml").as_posix()
    (tmp_path / "exp" / "deep" / "deeper").mkdir(parents=True)
    good = tmp_path / "exp" / "a.yaml"
    nested = tmp_path / "exp" / "deep" / "deeper" / "b.yaml"
    for f in (good, nested):
        f.write_text(f"extends: {base}\nlearner:\n  name: lstm\n  controller_size: 16\n")
    (tmp_path / "exp" / "notes.txt").write_text("not a config")
    assert main(["validate", "--no-data", str(tmp_path / "exp")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split()[1] for line in out] == [str(good), str(nested)]
    assert main(["validate", "--no-data", str(tmp_path / "exp"), "learner.slotz=3"]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err == [
        f"FAIL {f}: override 'learner.slotz=3': learner.slotz: unknown key for build_lstm; "
        f"allowed keys: {err[0].split('allowed keys: ')[1]}" for f in (good, nested)
    ]
    (tmp_path / "empty").mkdir()
    assert main(["validate", str(tmp_path / "empty")]) == 1
    assert f"error: folder {tmp_path / 'empty'} holds no *.yaml file" in capsys.readouterr().err
