"""Run directories written by the code before the layering refactor (#13) still load and
re-score with ``metamem eval``: same checkpoint format and layout (``config.yaml``,
``checkpoints/best.pt``/``last.pt``), same learner state-dict keys, a config with the keys of
that time (no ``eval.data_options``; ``eval.protocol: set``)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
import yaml

import metamem
from metamem.cli.main import main
from metamem.learners import build_learner

#: the resolved config of a ProtoNet run as the pre-refactor code wrote it (the keys of
#: /work/runs/omniglot_paper/protonet/config.yaml), on a small synthetic dataset
OLD_CONFIG = {
    "learner": {"name": "protonet", "backbone": "conv4"},
    "seed": 0, "device": "auto",
    "data": {"name": "synthetic", "train_split": "train", "val_split": "val", "test_split": "test",
             "options": {"num_classes": 12, "per_class": 6, "image_size": 16}},
    "episodes": {"n_way": 5, "k_shot": 1, "n_query": 5, "batch_size": 1, "within_group": False},
    "train": {"steps": 2500, "optimizer": {"name": "adam", "lr": 0.001, "weight_decay": 0.0},
              "scheduler": {"name": "step", "step_size": 1000, "gamma": 0.5}, "grad_clip": None,
              "val_every": 200, "val_episodes": 100, "log_every": 10, "checkpoint_every": 250,
              "amp": False, "compile": False},
    "eval": {"split": "test", "n_way": 5, "k_shot": 1, "n_query": 2, "episodes": 6, "seed": 1234,
             "protocol": "set", "within_group": False, "batch_size": 32},
}


def test_a_run_directory_of_the_old_code_rescores(tmp_path: Path) -> None:
    torch.manual_seed(0)
    learner = build_learner("protonet", n_way=5, image_shape=(1, 16, 16), backbone="conv4")
    assert all(k.startswith("backbone.") for k in learner.state_dict())  # the keys of the old code
    run = tmp_path / "protonet"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump(OLD_CONFIG, sort_keys=False))
    for name, step in (("last.pt", 250), ("best.pt", 200)):  # plain torch.save, as the old writer
        torch.save({"format": "metamem-checkpoint", "version": 1, "config": OLD_CONFIG,
                    "learner": "protonet", "image_shape": [1, 16, 16], "step": step, "best_val": 0.5,
                    "model": learner.state_dict(), "optimizer": {}, "scheduler": {}, "scaler": {},
                    "sampler": [], "accum": {}, "rng": {}}, run / "checkpoints" / name)
    out = tmp_path / "out"
    assert main(["eval", str(run), "device=cpu", "--out", str(out), "--no-progress", "--no-plots"]) == 0
    (res,) = json.loads((out / "results.json").read_text())["results"]
    assert set(res["scores"]) == {"set"}  # the run's eval.protocol
    ds = metamem.load_dataset("synthetic", split="test", num_classes=12, per_class=6, image_size=16)
    want = metamem.evaluate(learner.eval(), ds, n_way=5, k_shot=1, n_query=2, episodes=6, protocol="set")
    assert res["fingerprint"] == want.fingerprint and res["scores"]["set"]["mean"] == want.mean
