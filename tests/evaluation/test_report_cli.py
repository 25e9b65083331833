"""Reports (JSON/Markdown/CSV, atomic), plots, the sweep and ``metamem eval``."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from eval_learners import NearestNeighbourLearner, OracleSequenceLearner, UniformLearner, patch_load_run

import metamem
from metamem.cli.main import main
from metamem.evaluation import evaluate, parse_sweep, read_results, sweep, write_results
from metamem.evaluation.plots import (
    plot_accuracy_vs_shots,
    plot_memory_trace,
    plot_per_presentation,
)
from metamem.runs import checkpoint_path

PNG = b"\x89PNG"
DATA = {"name": "synthetic", "train_split": "train", "val_split": "val", "test_split": "test",
        "options": {"num_classes": 8, "per_class": 9, "image_size": 5, "noise": 0.35}}


def _config(learner: str) -> dict:
    return {"seed": 0, "device": "cpu", "data": DATA, "learner": {"name": learner},
            "eval": {"split": "test", "n_way": 3, "k_shot": 1, "n_query": 2, "episodes": 5,
                     "seed": 11, "protocol": "both"}}


def _run_dir(tmp_path: Path, name: str) -> Path:
    d = tmp_path / name
    (d / "checkpoints").mkdir(parents=True)
    (d / "checkpoints" / "last.pt").write_bytes(b"")
    return d


@pytest.fixture()
def fake_runs(tmp_path, monkeypatch):
    """Two run directories whose 'checkpoints' load as hand-written learners."""
    learners = {"a": (NearestNeighbourLearner, "nn"), "b": (OracleSequenceLearner, "oracle")}

    def load(path, device):
        cls, name = learners[Path(path).name]
        return cls(), _config(name)

    patch_load_run(monkeypatch, load)
    return [_run_dir(tmp_path, "a"), _run_dir(tmp_path, "b")]


def test_write_results_json_md_csv(tmp_path, noisy):
    rs = [evaluate(NearestNeighbourLearner(), noisy, n_way=3, k_shot=k, n_query=2, episodes=4, protocol="both",
                   config={"x": 1}) for k in (1, 2)]
    paths = write_results(rs, tmp_path / "out")
    doc = json.loads(paths["json"].read_text())
    r0 = doc["results"][0]
    assert r0["config"] == {"x": 1} and r0["version"] == metamem.__version__
    assert r0["device"] == "cpu" and r0["fingerprint"] == rs[0].fingerprint
    assert r0["protocol"]["k_shot"] == 1 and r0["protocol"]["dataset"] == "synthetic"
    assert len(r0["scores"]["set"]["per_episode"]) == 4
    assert r0["scores"]["sequence"]["per_presentation"] == pytest.approx(rs[0].per_presentation)
    back = read_results(paths["json"])
    assert back[1].mean == pytest.approx(rs[1].mean) and back[1].ci95 == pytest.approx(rs[1].ci95)
    rows = list(csv.DictReader(paths["csv"].open()))
    assert [r["k_shot"] for r in rows] == ["1", "2"]
    assert float(rows[1]["set_mean"]) == pytest.approx(rs[1].mean, abs=1e-6)
    assert rows[0]["p4"] == "" and rows[1]["p4"] != ""  # K+Q = 3 and 4 presentations
    md = paths["md"].read_text().splitlines()
    assert len(md) == 4 and "±" in md[2] and "seq 1st %" in md[0]
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.endswith(".tmp")]


def test_plots(tmp_path, noisy):
    rs = [evaluate(lr, noisy, n_way=3, k_shot=k, n_query=2, episodes=3, protocol="both")
          for lr in (NearestNeighbourLearner(), UniformLearner()) for k in (1, 2)]
    for path in (plot_per_presentation(rs, tmp_path / "pp.png"),
                 plot_accuracy_vs_shots(rs, tmp_path / "shots.png")):
        assert path.read_bytes()[:4] == PNG
    seq_only = [evaluate(UniformLearner(), noisy, n_way=3, n_query=1, episodes=2, protocol="set")]
    assert plot_per_presentation(seq_only, tmp_path / "none.png") is None
    r = evaluate(OracleSequenceLearner(), noisy, n_way=3, n_query=2, episodes=2, keep_trace=True,
                 protocol="both")
    assert plot_memory_trace(r.trace, tmp_path / "trace.png").read_bytes()[:4] == PNG
    with pytest.raises(ValueError, match="cannot plot a memory trace of type int"):
        plot_memory_trace(3, tmp_path / "bad.png")


def test_sweep_one_row_per_combination(fake_runs):
    ov = parse_sweep(["eval.n_way=[2,3]", "eval.k_shot=[1,2]", "eval.episodes=3"])
    rs = sweep(fake_runs, ov)
    combos = [(r.source, r.protocol.n_way, r.protocol.k_shot) for r in rs]
    assert len(combos) == 8 and len(set(combos)) == 8
    assert {r.protocol.episodes for r in rs} == {3}
    assert {r.protocol.seed for r in rs} == {11}  # from the run's eval: section
    # both learners saw the same episodes for each combination
    fp = {}
    for r in rs:
        fp.setdefault((r.protocol.n_way, r.protocol.k_shot), set()).add(r.fingerprint)
    assert all(len(v) == 1 for v in fp.values())


def test_cli_sweep_table_and_files(fake_runs, tmp_path, capsys):
    out = tmp_path / "res"
    rc = main(["eval", *map(str, fake_runs), "eval.n_way=[2,3]", "eval.k_shot=[1,2]",
               "eval.episodes=3", "eval.split=val", "device=cpu", "--out", str(out),
               "--no-progress"])
    assert rc == 0
    table = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("| ")]
    assert len(table) == 1 + 8  # header + one row per learner x ways x shots
    assert sum("nn [a]" in ln for ln in table) == 4
    assert all("synthetic/val" in ln for ln in table[1:])
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert sorted((r["learner"], r["n_way"], r["k_shot"]) for r in rows) == sorted(
        (lr, w, k) for lr in ("nn [a]", "oracle [b]") for w in ("2", "3") for k in ("1", "2")
    )
    for name in ("results.json", "results.md", "per_presentation.png", "accuracy_vs_shots.png",
                 "memory_trace_4.png"):
        assert (out / name).is_file(), name


def test_cli_errors(tmp_path, fake_runs, capsys):
    empty = tmp_path / "empty_run"
    empty.mkdir()
    assert main(["eval", str(empty)]) == 1
    assert "has no checkpoint" in capsys.readouterr().err
    with pytest.raises(FileNotFoundError, match=r"run directory .*empty_run has no checkpoint \(looked for .*best.pt and last.pt\)"):
        checkpoint_path(empty)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        checkpoint_path(tmp_path / "nope")
    assert main(["eval", str(fake_runs[0]), "eval.n_way=9", "--no-progress"]) == 1
    assert "n_way=9 is larger than the 8 classes of dataset 'synthetic' split 'test'" in capsys.readouterr().err
    assert main(["eval", str(fake_runs[0]), "eval.k_shot=8", "--no-progress"]) == 1
    assert "has 9 images, fewer than k_shot + n_query = 10" in capsys.readouterr().err


def test_override_parsing():
    ov = parse_sweep(["eval.n_way=[5,20]", "eval.protocol=sequence", "device=cpu"])
    assert ov == {"eval.n_way": [5, 20], "eval.protocol": ["sequence"], "device": ["cpu"]}
    with pytest.raises(ValueError, match="unknown override key 'eval.ways'; valid keys: eval.split"):
        parse_sweep(["eval.ways=5"])
    with pytest.raises(ValueError, match="eval.k_shot must be an integer, got 'one'"):
        parse_sweep(["eval.k_shot=one"])
    with pytest.raises(ValueError, match="eval.protocol must be one of set, sequence, both"):
        parse_sweep(["eval.protocol=[set,seq]"])
    with pytest.raises(ValueError, match="device cannot be swept"):
        parse_sweep(["device=[cpu,cuda]"])
    with pytest.raises(ValueError, match="is not key=value"):
        parse_sweep(["eval.n_way"])
