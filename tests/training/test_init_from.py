"""``train.init_from``: a run that starts from another run's weights (a warm start or a
curriculum), with a fresh optimizer and step count, and one-line errors for a missing or
unfitting source."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from metamem.runs import load_checkpoint
from metamem.training import train
from metamem.training.loop import TrainingError

QUIET = ("train.val_every=0", "eval.episodes=8", "train.checkpoint_every=0")


def _weights(run: Path, which: str = "last") -> dict[str, torch.Tensor]:
    return load_checkpoint(run, which)["model"]


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_run_starts_from_the_source_weights(tmp_path: Path, tiny_cfg) -> None:
    """With a learning rate of 0 the warm-started run ends where the source ended; without
    ``init_from`` the same run ends on its own fresh initial weights."""
    torch.manual_seed(0)
    train(tiny_cfg("mann", "train.steps=3", *QUIET), tmp_path / "src", progress=False)
    src = _weights(tmp_path / "src")

    frozen = ("train.steps=2", "train.optimizer.lr=0.0", *QUIET)
    torch.manual_seed(1)
    train(tiny_cfg("mann", *frozen, f"train.init_from={tmp_path / 'src'}"), tmp_path / "warm",
                progress=False)
    assert _same(_weights(tmp_path / "warm"), src)
    ckpt = load_checkpoint(tmp_path / "warm", "last")
    assert ckpt["step"] == 2  # its own steps, counted from 0
    assert ckpt["config"]["train"]["init_from"] == str(tmp_path / "src")

    torch.manual_seed(1)
    train(tiny_cfg("mann", *frozen), tmp_path / "cold", progress=False)
    assert not _same(_weights(tmp_path / "cold"), src)


def test_curriculum_from_fewer_ways(tmp_path: Path, tiny_cfg) -> None:
    """A MANN with ``max_way`` label units trained at 3 ways continues at 5 ways from its
    weights (the label units are sized by ``max_way``, not by the episodes' way): with a
    learning rate of 0 it ends on the 3-way run's weights."""
    torch.manual_seed(0)
    train(tiny_cfg("mann", "learner.max_way=5", "episodes.n_way=3", "eval.n_way=3", "train.steps=2", *QUIET),
          tmp_path / "three", progress=False)
    torch.manual_seed(1)
    train(tiny_cfg("mann", "learner.max_way=5", "episodes.n_way=5", "eval.n_way=5", "train.steps=2",
                   "train.optimizer.lr=0.0",
                   f"train.init_from={tmp_path / 'three' / 'checkpoints' / 'last.pt'}", *QUIET),
          tmp_path / "five", progress=False)
    assert load_checkpoint(tmp_path / "five", "last")["step"] == 2
    assert _same(_weights(tmp_path / "five"), _weights(tmp_path / "three"))


def test_missing_source_is_one_line_naming_the_key(tmp_path: Path, tiny_cfg) -> None:
    with pytest.raises(TrainingError, match=r"^train\.init_from: .*nowhere is neither a run directory") as e:
        train(tiny_cfg("mann", "train.steps=1", f"train.init_from={tmp_path / 'nowhere'}", *QUIET),
              tmp_path / "run", progress=False)
    assert "\n" not in str(e.value)


def test_unfitting_weights_are_named(tmp_path: Path, tiny_cfg) -> None:
    torch.manual_seed(0)
    train(tiny_cfg("mann", "train.steps=1", *QUIET), tmp_path / "src", progress=False)
    with pytest.raises(TrainingError, match=r"^train\.init_from: .*last\.pt: weights do not fit learner 'mann': "
                                            r".*size mismatch.*; use a run of the same learner") as e:
        train(tiny_cfg("mann", "train.steps=1", "learner.controller_size=9",
                       f"train.init_from={tmp_path / 'src'}", *QUIET), tmp_path / "run", progress=False)
    assert "\n" not in str(e.value)


def test_not_a_checkpoint_is_named(tmp_path: Path, tiny_cfg) -> None:
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(TrainingError, match=r"^train\.init_from: .*bad\.pt is not a metamem checkpoint"):
        train(tiny_cfg("mann", "train.steps=1", f"train.init_from={bad}", *QUIET), tmp_path / "run",
              progress=False)
