"""One scorer: validation during training is :func:`metamem.evaluate` on a fixed,
fingerprinted protocol, so ``val_acc`` is, to the last digit, what ``metamem eval`` reports
for the same checkpoint on the same episodes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from metamem.cli.main import main
from metamem.config import load_config
from metamem.runs import load_checkpoint, read_metrics
from metamem.training import train
from metamem.training.loop import validation_protocol

BASE = Path(__file__).resolve().parents[2] / "experiments" / "base" / "synthetic.yaml"


@pytest.mark.parametrize("learner, scoring", [("protonet", "set"), ("lstm", "sequence")])
def test_val_acc_is_what_metamem_eval_reports(tmp_path: Path, learner: str, scoring: str) -> None:
    extra = (["learner.controller_size=8"] if learner == "lstm"
             else ["data.options.image_size=16"])
    # one step, validated, checkpointed: best.pt holds exactly the weights that were validated
    cfg = load_config(BASE, [f"learner.name={learner}", *extra, "train.steps=1", "train.val_every=1",
                             "train.val_episodes=12", "seed=5"])
    torch.manual_seed(0)
    run = tmp_path / "run"
    train(cfg, run, progress=False, final_eval=False)
    (val,) = [r for r in read_metrics(run / "metrics.jsonl") if "val_acc" in r]
    assert val["val_scoring"] == scoring
    assert load_checkpoint(run)["best_val"] == val["val_acc"]

    proto = validation_protocol(cfg)
    out = tmp_path / "eval"
    args = [f"eval.{k}={json.dumps(v)}" for k, v in proto.items()]
    assert main(["eval", str(run), "eval.split=val", f"eval.protocol={scoring}", *args,
                 "--out", str(out), "--no-progress", "--no-plots"]) == 0
    (res,) = json.loads((out / "results.json").read_text())["results"]
    assert res["fingerprint"] == val["val_fingerprint"]
    assert res["scores"][scoring]["mean"] == val["val_acc"]  # exactly, not approximately
    if scoring == "sequence":
        assert res["scores"][scoring]["per_presentation"] == val["val_acc_by_presentation"]
    # another protocol seed gives other episodes (the fingerprint is of the episodes)
    assert main(["eval", str(run), "eval.split=val", f"eval.protocol={scoring}", *args, "eval.seed=6",
                 "--out", str(out), "--overwrite", "--no-progress", "--no-plots"]) == 0
    (other,) = json.loads((out / "results.json").read_text())["results"]
    assert other["fingerprint"] != val["val_fingerprint"]
