"""``metamem eval`` scores a run on each benchmark loader, read from small archives in the
real formats (tests/benchmark_archives.py)."""

from __future__ import annotations

import json

import pytest
from benchmark_archives import cifar100_archive, cub_archive, tiered_release
from eval_learners import NearestNeighbourLearner, patch_load_run

from metamem.cli.main import main

CONFIG = {"seed": 0, "device": "cpu", "learner": {"name": "nn"},
          "data": {"name": "synthetic", "train_split": "train", "val_split": "val", "test_split": "test",
                   "options": {"num_classes": 6, "per_class": 4, "image_size": 8, "channels": 3}},
          "eval": {"split": "test", "n_way": 3, "k_shot": 1, "n_query": 1, "episodes": 4, "seed": 3,
                   "protocol": "set"}}


@pytest.fixture(scope="module")
def archives(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[str]]:
    """dataset -> its ``data.options`` overrides."""
    t = tmp_path_factory.mktemp("bench")
    cifar100_archive(t / "cifar" / "cifar-100-python.tar.gz")
    cub_archive(t / "cub" / "CUB_200_2011.tgz", per_class=2)
    split_dir, _ = tiered_release(t / "tiered", "test", classes=4, superclasses=2, per_class=3)
    cache = f"data.options.cache_dir={t / 'cache'}"
    return {"cifar_fs": [f"data.options.root={t / 'cifar'}", cache],
            "fc100": [f"data.options.root={t / 'cifar'}", cache],
            "cub": [f"data.options.root={t / 'cub'}", cache],
            "tiered_imagenet": [f"data.options.root={t / 'tiered'}", f"data.options.split_dir={split_dir}", cache]}


@pytest.mark.parametrize("name", ["cifar_fs", "fc100", "cub", "tiered_imagenet"])
def test_metamem_eval_scores_a_run_on_each_benchmark(name, archives, tmp_path, monkeypatch, capsys) -> None:
    patch_load_run(monkeypatch, lambda path, device: (NearestNeighbourLearner(), CONFIG))
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "last.pt").write_bytes(b"")
    out = tmp_path / "res"
    args = ["eval", str(run), f"data={name}", *archives[name], "eval.split=test", "eval.episodes=6",
            "--no-progress", "--no-plots", "--out", str(out)]
    assert main(args) == 0, capsys.readouterr().err
    header = capsys.readouterr().out.splitlines()[0]
    assert header.startswith(f"protocol (all rows, same episodes): {name} ") and " split test, 3-way 1-shot" in header
    doc = json.loads((out / "results.json").read_text())
    (row,) = doc["results"]
    assert row["protocol"]["dataset"] == name and row["protocol"]["split"] == "test"
    set_ = row["scores"]["set"]
    assert set_["episodes"] == 6 and len(set_["per_episode"]) == 6 and 0.0 <= set_["mean"] <= 1.0
