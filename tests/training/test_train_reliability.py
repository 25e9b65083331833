"""Nothing lost, nothing half-checked: resume after a kill at the end, orphan temp files, a
metrics line cut short, and every check ``train`` makes before it writes anything (shared
with ``metamem validate``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from metamem.cli.main import main
from metamem.config import ConfigError, load_config
from metamem.data import DATASETS, ImageDataset, load_dataset  # (builder annotations resolve in module scope)
from metamem.files import remove_orphan_temps
from metamem.runs import read_metrics
from metamem.training import CheckpointError, train
from metamem.training.loop import TIMING_KEYS
from metamem.validate import check_experiment, validate_config

SMOKE = Path(__file__).resolve().parents[2] / "experiments" / "smoke"
LSTM = str(SMOKE / "synthetic_lstm.yaml")
FAST = ["device=cpu", "train.steps=6", "train.log_every=4", "train.val_every=4",
        "train.checkpoint_every=4", "eval.episodes=8", "eval.batch_size=4"]


def cli_train(*args: str) -> int:
    return main(["train", *args, "--no-progress"])


def strip(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in records]


def eval_record(run: Path) -> list[dict]:
    """eval.json without its timing ("seconds") and run-directory ("source") fields."""
    res = json.loads((run / "eval.json").read_text())
    for r in res:
        r.pop("seconds", None)
        r.pop("source", None)
    return res


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An uninterrupted 6-step run (ends off the log schedule: it has "final" lines)."""
    run = tmp_path_factory.mktemp("done") / "run"
    assert cli_train(LSTM, *FAST, "--out", str(run)) == 0
    return run


def copy_run(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


def test_resume_at_the_last_step_runs_the_missing_final_evaluation(
    finished: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A kill during the final evaluation leaves last.pt at the final step and no eval.json:
    --resume must evaluate (it used to exit 0 silently), and keep the final metrics lines."""
    run = copy_run(finished, tmp_path / "run")
    (run / "eval.json").unlink()
    capsys.readouterr()
    assert cli_train("--resume", str(run)) == 0
    out = capsys.readouterr().out
    assert "missing final evaluation was run" in out and "eval test 5-way" in out
    assert eval_record(run) == eval_record(finished)
    before = read_metrics(finished / "metrics.jsonl")
    assert any(r.get("final") for r in before)
    assert strip(read_metrics(run / "metrics.jsonl")) == strip(before)


def test_resume_of_a_finished_run_says_so(finished: Path, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    run = copy_run(finished, tmp_path / "run")
    capsys.readouterr()
    assert cli_train("--resume", str(run)) == 0
    assert "already complete at step 6; raise train.steps" in capsys.readouterr().out
    assert (run / "eval.json").read_bytes() == (finished / "eval.json").read_bytes()


def test_resume_removes_orphan_temp_files(finished: Path, tmp_path: Path) -> None:
    run = copy_run(finished, tmp_path / "run")
    orphans = [run / "checkpoints" / ".last.pt.k3j_x1.tmp", run / ".metrics.jsonl.ab12.tmp",
               run / ".eval.json.zz.tmp"]
    for p in orphans:
        p.write_bytes(b"\0" * 1000)
    keep = run / "checkpoints" / "notes.tmp"  # not a name atomic_write makes
    keep.write_text("mine")
    assert cli_train("--resume", str(run), "train.steps=8") == 0
    assert not any(p.exists() for p in orphans) and keep.read_text() == "mine"
    assert not list(run.rglob(".*.tmp"))


def test_remove_orphan_temps_only_touches_atomic_write_names(tmp_path: Path) -> None:
    (tmp_path / ".last.pt.abc.tmp").write_text("x")
    (tmp_path / ".hidden").write_text("x")
    (tmp_path / "a.tmp").write_text("x")
    assert [p.name for p in remove_orphan_temps(tmp_path)] == [".last.pt.abc.tmp"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".hidden", "a.tmp"]


def test_resume_after_a_metrics_line_cut_short(finished: Path, tmp_path: Path) -> None:
    """A kill while appending leaves a partial last line (past the checkpoint): resume drops
    it instead of failing on a JSON error that names no file."""
    common = [*FAST, "train.steps=4", "--no-eval"]
    run = tmp_path / "run"
    assert cli_train(LSTM, *common, "--out", str(run)) == 0
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"step": 5, "loss": 0.12')  # no newline: cut short
    assert cli_train("--resume", str(run), "train.steps=6", "--no-eval") == 0
    got = strip(read_metrics(run / "metrics.jsonl"))
    assert got == strip(read_metrics(finished / "metrics.jsonl"))


def test_a_corrupt_metrics_line_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1}\n{"step": 2, oops\n{"step": 3}\n')
    with pytest.raises(CheckpointError, match=rf"{path}:2: line is not valid JSON .*delete that line"):
        read_metrics(path, drop_partial_tail=True)
    path.write_text('{"step": 1}\n{"step": 2')
    with pytest.raises(CheckpointError, match=rf"{path}:2: line is cut short"):
        read_metrics(path)
    assert read_metrics(path, drop_partial_tail=True) == [{"step": 1}]
    path.write_text('{"step": 1}\n[1, 2]\n')
    with pytest.raises(CheckpointError, match=rf"{path}:2: expected a JSON object"):
        read_metrics(path)


@pytest.mark.parametrize("override, match", [
    ("train.optimizer.lr=fast", r"^override 'train.optimizer.lr=fast': train.optimizer.lr: expected float"),
    ("train.optimizer.betas=[2,0]", r"^override 'train.optimizer.betas=\[2,0\]'.*train.optimizer: adam refuses .*Invalid beta"),
    ("train.optimizer.lr=-1", r"^override 'train.optimizer.lr=-1'.*Invalid learning rate"),
    ("eval.n_way=[5,7]", r"^override 'eval.n_way=\[5,7\]': eval.n_way: learner lstm has 5 label units \(learner.max_way, default episodes.n_way\) and cannot score \[7\]-way"),
    ("train.scheduler.name=step", r"^override 'train.scheduler.name=step': train.scheduler: missing a required argument: 'step_size'"),
    ("learner.controller_sise=3", r"^override 'learner.controller_sise=3': learner.controller_sise: unknown key"),
    ("episodes.n_way=0", r"^override 'episodes.n_way=0': episodes.n_way: must be >= 1"),
])
def test_errors_blame_the_override_and_validate_agrees_with_train(
    override: str, match: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = load_config(LSTM, [override])
    with pytest.raises(ConfigError, match=match):
        validate_config(cfg, source=LSTM)
    assert main(["validate", LSTM, override]) == 1
    assert f"FAIL {LSTM}: override" in capsys.readouterr().err
    run = tmp_path / "run"
    assert cli_train(LSTM, override, "--out", str(run)) == 1
    assert "metamem train: error: override" in capsys.readouterr().err
    assert not run.exists()


@pytest.mark.parametrize("override, role", [
    ("episodes.n_way=41", "train"),   # the splits have 40 classes
    ("eval.n_way=[5,41]", "evaluation"),
    ("eval.k_shot=19", "evaluation"),  # 20 images per class, 2 queries
])
def test_split_sizes_are_checked_before_the_run_directory_exists(
    override: str, role: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    proto = "learner.name=protonet"  # a set learner: any eval.n_way can be scored
    assert cli_train(LSTM, proto, override, "--out", str(run)) == 1
    err = capsys.readouterr().err
    assert f"override '{override}'" in err and f"the {role} ('" in err and "split cannot provide" in err
    assert not run.exists()  # a rerun needs no --overwrite
    assert main(["validate", LSTM, proto, override]) == 1
    assert "split cannot provide" in capsys.readouterr().err


def test_val_split_too_small_is_caught_before_writing(tmp_path: Path) -> None:
    """The val split is checked too (it used to fail after the run directory existed)."""
    base = LSTM
    cfg = load_config(base, ["episodes.n_query=30"])
    with pytest.raises(ConfigError, match=r"the train \('train'\) split cannot provide"):
        check_experiment(cfg, source=base)
    # only the val split too small: a dataset whose val split has fewer classes
    @DATASETS.register("tiny_val_for_test")
    def tiny(split: str | None = None, **_: object) -> ImageDataset:
        ds = load_dataset("synthetic", split=split, num_classes=40, per_class=20, image_size=8)
        return ds.subset(range(3)) if split == "val" else ds

    try:
        cfg = load_config(base, ["data.name=tiny_val_for_test", "data.options={}"])
        with pytest.raises(ConfigError, match=r"the val \('val'\) split cannot provide 5-way.*3 classes"):
            train(cfg, tmp_path / "run", progress=False, source=base)
        assert not (tmp_path / "run").exists()
        check_experiment(load_config(base, ["data.name=tiny_val_for_test", "data.options={}",
                                            "train.val_every=0"]), source=base)
    finally:
        DATASETS._items.pop("tiny_val_for_test", None)  # type: ignore[attr-defined]


def test_validate_cli_checks_the_data_unless_told_not_to(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", LSTM, "eval.k_shot=19"]) == 1
    assert main(["validate", LSTM, "eval.k_shot=19", "--no-data"]) == 0
    assert "ok" in capsys.readouterr().out
