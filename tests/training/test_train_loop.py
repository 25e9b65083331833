"""The training loop end to end on tiny synthetic experiments: run directory, metrics,
checkpoints, exact resume, and every bad-input message."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from metamem import load_run
from metamem.cli.main import main
from metamem.config import ConfigError, config_from_dict
from metamem.learners.lstm import LSTMLearner
from metamem.runs import load_checkpoint, read_metrics
from metamem.training import CheckpointError, TrainingError, train
from metamem.training.loop import TIMING_KEYS

SMOKE = Path(__file__).resolve().parents[2] / "experiments" / "smoke"


def cli_train(*args: str) -> int:
    return main(["train", *args, "--no-progress"])


def strip_timing(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in records]


def test_train_writes_a_run_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    assert cli_train(str(SMOKE / "synthetic_mann.yaml"), "train.steps=10", "--out", str(run)) == 0
    assert "run directory" in capsys.readouterr().out
    assert {p.name for p in run.iterdir()} >= {"config.yaml", "metrics.jsonl", "checkpoints", "eval.json"}
    assert {p.name for p in (run / "checkpoints").iterdir()} == {"last.pt", "best.pt"}
    records = read_metrics(run / "metrics.jsonl")
    train_lines = [r for r in records if "loss" in r]
    assert [r["step"] for r in train_lines] == [5, 10]
    assert all(isinstance(r["loss"], float) and 0 <= r["acc"] <= 1 for r in train_lines)
    val = [r for r in records if "val_acc" in r]
    assert [r["step"] for r in val] == [10] and len(val[0]["val_acc_by_presentation"]) == 4
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["train"]["steps"] == 10 and saved["learner"]["name"] == "mann"
    evaluation = json.loads((run / "eval.json").read_text())
    assert {"set", "sequence"} == set(evaluation[0]["scores"])
    loaded = load_run(run, device="cpu")
    model = loaded.learner
    assert not model.training and loaded.config == config_from_dict(saved)
    ckpt = load_checkpoint(run, which="last")
    for key, value in ckpt["model"].items():
        torch.testing.assert_close(model.state_dict()[key], value, rtol=0, atol=0)


def test_resume_is_exact(tmp_path: Path) -> None:
    """40 steps in one go == 20 steps, then --resume to 40 (bitwise metrics and weights)."""
    cfg = str(SMOKE / "synthetic_mann.yaml")
    common = ["device=cpu", "train.log_every=4", "train.val_every=8", "train.checkpoint_every=12"]
    assert cli_train(cfg, "train.steps=40", *common, "--out", str(tmp_path / "a"), "--no-eval") == 0
    assert cli_train(cfg, "train.steps=20", *common, "--out", str(tmp_path / "b"), "--no-eval") == 0
    # a crash after the last checkpoint leaves stale lines; resume must drop them
    with open(tmp_path / "b" / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"step": 23, "loss": 9.0}) + "\n")
    assert cli_train("--resume", str(tmp_path / "b"), "train.steps=40", "--no-eval") == 0
    a = read_metrics(tmp_path / "a" / "metrics.jsonl")
    b = read_metrics(tmp_path / "b" / "metrics.jsonl")
    assert len(a) == 15 and strip_timing(a) == strip_timing(b)
    wa = load_checkpoint(tmp_path / "a", which="last")["model"]
    wb = load_checkpoint(tmp_path / "b", which="last")["model"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_existing_run_directory_needs_resume_or_overwrite(tmp_path: Path, capsys) -> None:
    cfg = str(SMOKE / "synthetic_lstm.yaml")
    run = tmp_path / "run"
    assert cli_train(cfg, "train.steps=5", "--out", str(run), "--no-eval") == 0
    assert cli_train(cfg, "train.steps=5", "--out", str(run), "--no-eval") == 1
    err = capsys.readouterr().err
    assert f"metamem train: error: run directory {run} already exists; pass --resume" in err
    assert cli_train(cfg, "train.steps=5", "train.log_every=1", "--out", str(run), "--overwrite", "--no-eval") == 0
    assert [r["step"] for r in read_metrics(run / "metrics.jsonl") if "loss" in r] == [1, 2, 3, 4, 5]


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tmp_path: Path, tiny_cfg, monkeypatch) -> None:
    calls = {"n": 0}
    forward = LSTMLearner.forward

    def poisoned(self, batch):
        out = forward(self, batch)
        if self.training:
            calls["n"] += 1
            if calls["n"] >= 8:
                out.loss = out.loss * float("nan")
        return out

    monkeypatch.setattr(LSTMLearner, "forward", poisoned)
    cfg = tiny_cfg("lstm", "train.checkpoint_every=5", "train.val_every=0")
    with pytest.raises(TrainingError, match=r"loss is not finite \(nan or inf\) at step 8; training "
                                            r"stopped at step 10\. The last good checkpoint is "
                                            r".*last\.pt \(step 5\)"):
        train(cfg, tmp_path / "run", progress=False, final_eval=False)
    assert load_checkpoint(tmp_path / "run", which="last")["step"] == 5


def test_resume_with_another_config_says_what_differs(tmp_path: Path, tiny_cfg) -> None:
    run = tmp_path / "run"
    train(tiny_cfg("lstm", "train.steps=5"), run, progress=False, final_eval=False)
    with pytest.raises(CheckpointError, match=r"written for another config \(checkpoint vs current\): "
                                              r"learner\.controller_size: 16 vs 9"):
        train(tiny_cfg("lstm", "train.steps=8", "learner.controller_size=9"), run, resume=True,
              progress=False, final_eval=False)
    with pytest.raises(CheckpointError, match=r"written for another learner .*learner\.name: 'lstm' vs 'mann'"):
        train(tiny_cfg("mann", "train.steps=8"), run, resume=True, progress=False, final_eval=False)
    with pytest.raises(CheckpointError, match=r"train\.optimizer\.lr: 0\.003 vs 0\.1; only device"):
        train(tiny_cfg("lstm", "train.steps=8", "train.optimizer.lr=0.1"), run, resume=True,
              progress=False, final_eval=False)
    with pytest.raises(TrainingError, match=r"cannot resume: .*last\.pt does not exist"):
        train(tiny_cfg("lstm"), tmp_path / "empty", resume=True, progress=False)


def test_files_that_are_not_checkpoints(tmp_path: Path) -> None:
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match=r"junk\.pt is not a metamem checkpoint \(torch\.load "
                                              r"with weights_only=True failed"):
        load_run(junk)
    other = tmp_path / "other.pt"
    torch.save({"state_dict": {}}, other)
    with pytest.raises(CheckpointError, match=r"other\.pt is not a metamem checkpoint \(no "
                                              r"format='metamem-checkpoint' marker\)"):
        load_run(other)
    with pytest.raises(FileNotFoundError, match=r"checkpoint or run directory .*nowhere.* not found"):
        load_run(tmp_path / "nowhere")
    (tmp_path / "empty_run").mkdir()
    with pytest.raises(FileNotFoundError, match=r"empty_run has no checkpoint \(looked for .*best\.pt and last\.pt\)"):
        load_run(tmp_path / "empty_run")


def test_checkpoint_weights_of_another_learner(tmp_path: Path, tiny_cfg) -> None:
    run = tmp_path / "run"
    train(tiny_cfg("lstm", "train.steps=2"), run, progress=False, final_eval=False)
    ckpt = load_checkpoint(run, which="last")
    ckpt["config"]["learner"] = {"name": "mann", "controller_size": 16}
    torch.save({k: v for k, v in ckpt.items() if k != "path"}, tmp_path / "edited.pt")
    with pytest.raises(CheckpointError, match=r"edited\.pt: weights do not fit learner 'mann'"):
        load_run(tmp_path / "edited.pt", device="cpu")


def test_cuda_requested_without_cuda(tmp_path: Path, tiny_cfg) -> None:
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    # refused by the checks train shares with `metamem validate`: no run directory is made
    with pytest.raises(ConfigError, match=r"override 'device=cuda': device: 'cuda' but CUDA is not "
                       r"available here; use device=cpu"):
        train(tiny_cfg("lstm", "device=cuda"), tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


@pytest.mark.gpu
@pytest.mark.parametrize("name", ["lstm", "mann"])
def test_cuda_with_amp(tmp_path: Path, tiny_cfg, name: str) -> None:
    result = train(tiny_cfg(name, "device=cuda", "train.amp=true", "train.steps=6"),
                   tmp_path / "run", progress=False)
    assert result.evaluation and all(r["step"] <= 6 for r in read_metrics(tmp_path / "run" / "metrics.jsonl"))
    assert all(torch.isfinite(p).all() for p in result.learner.parameters())
    model = load_run(tmp_path / "run", device="cuda").learner
    assert next(model.parameters()).is_cuda


PROTO_16 = ["learner.name=protonet", "learner.backbone=conv4", "data.options.image_size=16",
            "train.steps=4", "train.val_every=0", "eval.episodes=8", "eval.protocol=set"]


def test_channels_last_and_amp_options_on_cpu(tmp_path: Path, tiny_cfg) -> None:
    """channels_last trains NHWC weights to the NCHW result (float rounding); amp is a no-op on CPU."""
    runs = {}
    for name, extra in (("plain", []), ("cl", ["train.channels_last=true"]),
                        ("amp", ["train.amp=true", "train.amp_dtype=bfloat16"])):
        torch.manual_seed(0)
        runs[name] = train(tiny_cfg("lstm", *PROTO_16, *extra), tmp_path / name, progress=False)
    conv = runs["cl"].learner.backbone.blocks[1][0].weight  # [64, 64, 3, 3]
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    metrics = {k: strip_timing(read_metrics(tmp_path / k / "metrics.jsonl")) for k in runs}
    assert metrics["amp"] == metrics["plain"]  # bitwise: autocast is off on CPU
    # Adam turns rounding-level gradient differences into whole steps on a few weights, so
    # compare the losses of the run (same episodes) rather than the weights
    cl_loss = [r["loss"] for r in metrics["cl"] if "loss" in r]
    assert cl_loss == pytest.approx([r["loss"] for r in metrics["plain"] if "loss" in r], rel=1e-3)


def _fused_gathers(tmp_path: Path, tiny_cfg, monkeypatch, runs: dict[str, list[str]]) -> tuple[dict, dict]:
    """Train each of ``runs`` (name -> overrides) for 4 steps; the fused gathers each made and
    each run's metrics (timing stripped)."""
    import metamem.episodes.sampler as sampler_module

    calls = dict.fromkeys(runs, 0)
    real = sampler_module.fused_gather
    for name, extra in runs.items():
        def counting(name: str = name):
            calls[name] += 1
            return real()
        monkeypatch.setattr(sampler_module, "fused_gather", counting)
        torch.manual_seed(0)
        train(tiny_cfg("lstm", "train.steps=4", "train.val_every=0", "eval.episodes=8", *extra),
              tmp_path / name, progress=False)
    return calls, {k: strip_timing(read_metrics(tmp_path / k / "metrics.jsonl")) for k in runs}


def test_episodes_fused_reaches_the_training_sampler(tmp_path: Path, tiny_cfg, monkeypatch) -> None:
    """``episodes.fused: true`` makes the training sampler use the fused gather, on the same
    batches: the same run, metric for metric."""
    calls, metrics = _fused_gathers(tmp_path, tiny_cfg, monkeypatch,
                                    {"plain": ["episodes.fused=false"], "fused": ["episodes.fused=true"]})
    assert calls["plain"] == 0 and calls["fused"] >= 4  # one per training step at least
    assert metrics["fused"] == metrics["plain"]


def test_bad_amp_dtype_is_named(tmp_path: Path, tiny_cfg) -> None:
    with pytest.raises(Exception, match=r"train\.amp_dtype: unknown dtype 'fp8'; valid: float16, bfloat16"):
        train(tiny_cfg("lstm", "train.amp_dtype=fp8"), tmp_path / "run", progress=False)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_cuda_amp_dtypes_with_channels_last(tmp_path: Path, tiny_cfg, dtype: str) -> None:
    result = train(tiny_cfg("lstm", *PROTO_16, "device=cuda", "train.amp=true", f"train.amp_dtype={dtype}",
                            "train.channels_last=true"), tmp_path / "run", progress=False)
    assert all(torch.isfinite(p).all() for p in result.learner.parameters())
    assert result.evaluation


def test_a_checkpoint_from_before_a_key_was_added_resumes_when_the_key_is_at_its_default() -> None:
    from metamem.config import ExperimentCfg, NamedCfg, config_to_dict
    from metamem.runs import check_compatible

    current = config_to_dict(ExperimentCfg(learner=NamedCfg("lstm", {"controller_size": 16})))
    old = json.loads(json.dumps(current))  # a run written before train.channels_last and amp_dtype existed
    del old["train"]["channels_last"], old["train"]["amp_dtype"]
    check_compatible({"config": old, "path": "last.pt"}, current, resume=True)  # no error
    changed = json.loads(json.dumps(current))
    changed["train"]["channels_last"] = True  # not the behaviour the old run trained with
    with pytest.raises(CheckpointError, match=r"train\.channels_last: False vs True; only device"):
        check_compatible({"config": old, "path": "last.pt"}, changed, resume=True)
    old["learner"].pop("controller_size")  # a learner keyword left out compares as its default
    with pytest.raises(CheckpointError, match=r"learner\.controller_size: 200 vs 16"):
        check_compatible({"config": old, "path": "last.pt"}, current, resume=True)
    current["learner"]["controller_size"] = 200  # the default, written down: the same run
    check_compatible({"config": old, "path": "last.pt"}, current, resume=True)


def test_a_new_run_records_every_learner_default_and_an_old_run_resumes_unchanged(
        tmp_path: Path, tiny_cfg) -> None:
    from metamem.runs import load_checkpoint

    run = tmp_path / "run"
    train(tiny_cfg("lstm", *PROTO_16, "train.steps=2", "train.checkpoint_every=1"), run, progress=False)
    saved = yaml.safe_load((run / "config.yaml").read_text())["learner"]
    assert saved == {"name": "protonet", "backbone": "conv4", "distance": "euclidean"}
    assert load_checkpoint(run, which="last")["config"]["learner"] == saved
    # a run written before training recorded its defaults: its config and checkpoint leave the
    # distance out; it resumes, and nothing is added to what it says
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    del cfg["learner"]["distance"]
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    last = run / "checkpoints" / "last.pt"
    ckpt = torch.load(last, weights_only=True)
    del ckpt["config"]["learner"]["distance"]
    torch.save(ckpt, last)
    resumed = tiny_cfg("lstm", *PROTO_16, "train.steps=3", "train.checkpoint_every=1")
    resumed.learner.kwargs.pop("distance", None)
    train(resumed, run, resume=True, progress=False)
    assert "distance" not in yaml.safe_load((run / "config.yaml").read_text())["learner"]
    assert "distance" not in load_checkpoint(run, which="last")["config"]["learner"]
    # the old run's checkpoint against a config stating another distance: refused
    other = tiny_cfg("lstm", *PROTO_16, "train.steps=4", "learner.distance=sqeuclidean")
    with pytest.raises(CheckpointError, match=r"learner\.distance: 'euclidean' vs 'sqeuclidean'"):
        train(other, run, resume=True, progress=False)


def test_the_default_training_sampler_is_fused_where_it_compiles(tmp_path: Path, tiny_cfg, monkeypatch) -> None:
    """``episodes.fused`` defaults to ``auto``: with nothing set, training gathers with the
    compiled kernel (where torch.compile builds it) and runs the same as ``fused: false``."""
    import metamem.episodes.sampler as sampler_module

    monkeypatch.delenv(sampler_module.FUSED_ENV, raising=False)
    monkeypatch.setattr(sampler_module, "_FUSED_BROKEN", set())
    calls, metrics = _fused_gathers(tmp_path, tiny_cfg, monkeypatch,
                                    {"default": [], "eager": ["episodes.fused=false"]})
    assert calls["default"] >= 4 and calls["eager"] == 0
    assert metrics["default"] == metrics["eager"]


def test_resume_may_change_a_learners_execution_options_only(tmp_path: Path, tiny_cfg) -> None:
    """MAML's chunk sizes and batching change how it computes, not what: a resume may change
    them (and continues as the unchanged run would, up to float rounding); its inner_lr not."""
    from metamem.learners.base import execution_options

    assert execution_options("maml") == ("episode_batching", "train_chunk_images", "eval_chunk_images")
    assert execution_options("lstm") == () and execution_options("no such learner") == ()
    maml = ("learner={name: maml, backbone: conv4, backbone_channels: 4, inner_steps: 1, inner_lr: 0.4, "
            "train_chunk_images: 40}")

    def cfg(*more: str):
        return tiny_cfg("lstm", maml, "data.options.image_size=16", "train.checkpoint_every=2", "train.val_every=2",
                        "train.snapshot_every=2", "episodes.batch_size=4", *more)

    train(cfg("train.steps=2"), tmp_path / "a", progress=False, final_eval=False)
    import shutil

    shutil.copytree(tmp_path / "a", tmp_path / "b")
    train(cfg("train.steps=4"), tmp_path / "a", resume=True, progress=False, final_eval=False)
    train(cfg("train.steps=4", "learner.train_chunk_images=1000"), tmp_path / "b", resume=True,
          progress=False, final_eval=False)
    a, b = load_checkpoint(tmp_path / "a", "last"), load_checkpoint(tmp_path / "b", "last")
    assert b["step"] == 4 and b["config"]["learner"]["train_chunk_images"] == 1000
    for k, v in a["model"].items():
        torch.testing.assert_close(b["model"][k], v, msg=k)
    # a snapshot from before the change (chunk 40; config.yaml now says 1000) still loads
    from metamem.evaluation.trained_run import load_run

    snap = tmp_path / "b" / "checkpoints" / "step_000002.pt"
    assert load_checkpoint(snap)["config"]["learner"]["train_chunk_images"] == 40
    assert "train_chunk_images: 1000" in (tmp_path / "b" / "config.yaml").read_text()
    load_run(snap, device="cpu")
    with pytest.raises(CheckpointError, match=r"learner\.inner_lr: 0\.4 vs 0\.3; only device.*execution options"):
        train(cfg("train.steps=6", "learner.inner_lr=0.3"), tmp_path / "a", resume=True, progress=False,
              final_eval=False)
