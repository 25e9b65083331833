"""``evaluate(..., variable=...)`` and ``metamem eval eval.variable=true``: variable-way,
variable-shot episodes scored batched (padding + masks) against scoring each episode alone."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from eval_learners import NearestNeighbourLearner, patch_load_run

from metamem.cli.main import main
from metamem.data import load_dataset
from metamem.episodes.variable import VariableEpisodeSampler, VariableSpec
from metamem.evaluation.protocol import Protocol, ProtocolError
from metamem.evaluation.scoring import evaluate
from metamem.evaluation.sweeps import parse_sweep
from metamem.learners import build_learner

SPEC = {"min_ways": 3, "max_ways": 8, "max_support": 25, "max_support_per_class": 6, "max_query": 4}


@pytest.fixture(scope="module")
def noisy10():
    """12 hard synthetic classes of 10-13 images (nearest neighbour is far from perfect)."""
    ds = load_dataset("synthetic", split="test", num_classes=12, per_class=13, image_size=16, noise=0.45, seed=4)
    keep = torch.cat([torch.nonzero(ds.labels == c).flatten()[: 10 + c % 4] for c in range(12)])
    return type(ds)(ds.images[keep], ds.labels[keep], ds.class_names, name=ds.name, split=ds.split)


def _one_by_one(learner, ds, keys: torch.Tensor, spec: VariableSpec) -> list[float]:
    """Each episode alone, unpadded, with its own number of ways and no mask."""
    sampler = VariableEpisodeSampler(ds, spec)
    out = []
    learner.eval()
    with torch.no_grad():
        for k in keys.tolist():
            b = sampler.sample_keys(torch.tensor([k]))
            n = int(b.ways[0])
            logits = learner.predict(b.support_x, b.support_y, b.query_x, n_way=n)
            out.append(float((logits.argmax(-1) == b.query_y).double().mean()))
    return out


@pytest.mark.parametrize("make", [lambda ds: NearestNeighbourLearner(),
                                  lambda ds: build_learner("protonet", n_way=5, image_shape=ds.image_shape)])
def test_batched_scores_equal_each_episode_scored_alone(noisy10, make) -> None:
    torch.manual_seed(0)
    learner = make(noisy10)
    res = evaluate(learner, noisy10, episodes=11, seed=5, batch_size=4, protocol="set", variable=SPEC)
    keys = Protocol.for_dataset(noisy10, episodes=11, seed=5).keys(0, 11)
    ref = _one_by_one(learner, noisy10, keys, VariableSpec(**SPEC))
    got = res.scores["set"].per_episode.tolist()
    assert got == pytest.approx(ref, abs=1e-12)
    assert 0.15 < sum(got) / len(got) < 0.99  # a real score, neither chance-free nor perfect
    again = evaluate(learner, noisy10, episodes=11, seed=5, batch_size=7, protocol="set", variable=SPEC)
    assert again.fingerprint == res.fingerprint and again.scores["set"].per_episode.tolist() == got
    assert res.protocol.variable_limits == "min_ways=3 max_ways=8 max_support=25 max_support_per_class=6 max_query=4"
    assert res.protocol.describe().startswith("variable ways and shots (min_ways=3")
    fixed = evaluate(learner, noisy10, episodes=11, seed=5, n_query=3, protocol="set")
    assert fixed.fingerprint != res.fingerprint


def test_variable_protocol_errors(noisy10) -> None:
    nn_ = NearestNeighbourLearner()
    with pytest.raises(ProtocolError, match=r"variable episodes are scored with the set protocol only"):
        evaluate(nn_, noisy10, episodes=2, protocol="sequence", variable=True)
    with pytest.raises(ProtocolError, match=r"unknown eval.variable key 'ways'"):
        evaluate(nn_, noisy10, episodes=2, variable={"ways": 5})
    with pytest.raises(ProtocolError, match=r"has 12 classes, fewer than min_ways=20"):
        evaluate(nn_, noisy10, episodes=2, variable={"min_ways": 20, "max_ways": 30})
    both = evaluate(nn_, noisy10, episodes=3, variable={"min_ways": 5, "max_ways": 12})
    assert set(both.scores) == {"set"} and "no sequence scoring" in both.declined["sequence"]


def test_metamem_eval_scores_variable_episodes(tmp_path: Path, monkeypatch, capsys) -> None:
    cfg = {"seed": 0, "device": "cpu", "learner": {"name": "nn"},
           "data": {"name": "synthetic", "train_split": "train", "val_split": "val", "test_split": "test",
                    "options": {"num_classes": 9, "per_class": 8, "image_size": 5}},
           "eval": {"split": "test", "n_way": 3, "k_shot": 1, "n_query": 2, "episodes": 4, "seed": 3,
                    "protocol": "set"}}
    patch_load_run(monkeypatch, lambda path, device: (NearestNeighbourLearner(), cfg))
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "last.pt").write_bytes(b"")
    out = tmp_path / "res"
    assert main(["eval", str(run), "eval.variable=true", "eval.episodes=5", "--no-progress", "--no-plots",
                 "--out", str(out)]) == 0, capsys.readouterr().err
    header = capsys.readouterr().out.splitlines()[0]
    assert "variable ways and shots True" in header and "5 episodes" in header
    (row,) = json.loads((out / "results.json").read_text())["results"]
    assert row["protocol"]["variable_limits"].startswith("min_ways=5 max_ways=50")
    assert row["scores"]["set"]["episodes"] == 5
    table = (out / "results.md").read_text()
    assert "| variable | variable | variable | 5 |" in table
    assert parse_sweep(["eval.variable={max_ways: 20}"]) == {"eval.variable": [{"max_ways": 20}]}


def test_validate_checks_variable_limits_against_the_split(tmp_path: Path, capsys) -> None:
    cfg = tmp_path / "v.yaml"
    base = ("learner: {name: protonet}\n"
            "data: {name: synthetic, options: {num_classes: 20, per_class: 12, image_size: 16}}\n"
            "episodes: {n_way: 5, k_shot: 1, n_query: 5}\n")
    cfg.write_text(base + "eval: {variable: {max_ways: 10}, protocol: set}\n")  # 15 queries would not fit
    assert main(["validate", str(cfg)]) == 0, capsys.readouterr().err
    capsys.readouterr()
    cfg.write_text(base + "eval: {variable: {min_ways: 25, max_ways: 30}}\n")
    assert main(["validate", str(cfg)]) == 1
    got = capsys.readouterr()
    assert "eval.variable: the evaluation ('test') split cannot provide variable episodes" in got.out + got.err
    cfg.write_text(base + "eval: {variable: {ways: 5}}\n")
    assert main(["validate", str(cfg)]) == 1
    got = capsys.readouterr()
    assert "eval.variable: unknown key 'ways'" in got.out + got.err
