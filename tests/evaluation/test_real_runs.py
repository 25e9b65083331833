"""End to end with the real learners and a real (tiny) training run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from metamem.cli.main import main
from metamem.config import load_config
from metamem.data import load_dataset
from metamem.evaluation import evaluate
from metamem.learners import build_learner
from metamem.training import train

SMOKE = Path(__file__).resolve().parents[2] / "experiments" / "smoke" / "synthetic_mann.yaml"


@pytest.fixture(scope="module")
def mann_run(tmp_path_factory) -> Path:
    cfg = load_config(SMOKE, ["train.steps=2", "train.val_every=2", "train.checkpoint_every=2",
                              "train.val_episodes=2", "train.log_every=1"])
    out = tmp_path_factory.mktemp("runs") / "mann_smoke"
    train(cfg, out, progress=False, final_eval=False)
    return out


def test_metamem_eval_on_a_trained_mann(mann_run, tmp_path, capsys):
    out = tmp_path / "ev"
    rc = main(["eval", str(mann_run), "eval.k_shot=[1,2]", "eval.episodes=3",
               "eval.batch_size=2", "device=cpu", "--no-progress", "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    table = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("| mann")]
    assert len(table) == 2
    doc = json.loads((out / "results.json").read_text())["results"]
    assert [r["protocol"]["k_shot"] for r in doc] == [1, 2]
    assert doc[0]["config"]["learner"]["name"] == "mann"
    assert doc[0]["protocol"]["split"] == "test" and doc[0]["device"] == "cpu"
    assert set(doc[0]["scores"]) == {"set", "sequence"}
    assert (out / "memory_trace_0.png").is_file()  # MANN exposes its memory trace
    # a MANN with 5 label units cannot score 6-way episodes: said before anything runs
    assert main(["eval", str(mann_run), "eval.n_way=[3,6]", "--no-progress", "--no-plots",
                 "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "has 5 label units (learner.max_way) and cannot score n_way=[6] episodes" in err


def test_real_set_learner_both_scorings_are_reproducible():
    ds = load_dataset("synthetic", split="test", num_classes=6, per_class=6, image_size=16)
    net = build_learner("protonet", n_way=3, image_shape=(1, 16, 16))
    kw = dict(n_way=3, k_shot=1, n_query=2, episodes=3, seed=9, batch_size=2, protocol="both")
    a, b = evaluate(net, ds, **kw), evaluate(net, ds, **dict(kw, batch_size=3))
    assert a.fingerprint == b.fingerprint
    assert torch.allclose(a.per_episode, b.per_episode)
    assert len(a.per_presentation) == 3
    h3 = (1 + 1 / 2 + 1 / 3) / 3  # set learners guess at a class's 1st presentation
    assert a.per_presentation[0] == pytest.approx(h3)
