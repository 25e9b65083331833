"""Lake et al.'s within-alphabet task: ``eval.within_group`` + ``eval.data_options``.

A run trained with rotations is scored on episodes whose classes all come from one alphabet
and are original characters only (``eval.data_options={rotations: false}``). Uses the
bundled official ``background_small1`` set, so it runs offline.
"""

from __future__ import annotations

import pytest
from eval_learners import NearestNeighbourLearner, patch_load_run

from metamem.cli.main import main
from metamem.config import config_from_dict
from metamem.evaluation import parse_sweep, sweep
from metamem.evaluation.protocol import Protocol
from metamem.runs import dataset_for

DATA = {"name": "omniglot", "train_split": "background_small1", "val_split": None,
        "test_split": "background_small1", "options": {"image_size": 8, "rotations": True}}
CONFIG = {"seed": 0, "device": "cpu", "data": DATA, "learner": {"name": "nn"},
          "eval": {"split": "test", "n_way": 5, "k_shot": 1, "n_query": 1, "episodes": 4,
                   "seed": 3, "protocol": "set"}}


@pytest.fixture()
def run_dir(tmp_path, monkeypatch):
    d = tmp_path / "bg_run"
    (d / "checkpoints").mkdir(parents=True)
    (d / "checkpoints" / "last.pt").write_bytes(b"")
    patch_load_run(monkeypatch, lambda path, device: (NearestNeighbourLearner(), CONFIG))
    return d


def test_episodes_from_one_alphabet_original_characters_only(run_dir):
    ov = parse_sweep(["eval.n_way=20", "eval.within_group=true",
                          "eval.data_options={rotations: false}", "eval.episodes=6"])
    (res,) = sweep([run_dir], ov)
    assert res.data_options == {"rotations": False}
    ds = dataset_for(config_from_dict(CONFIG), "test", options={"rotations": False})
    assert ds.num_classes == 136 and not any("/rot" in n for n in ds.class_names)
    proto = Protocol.for_dataset(ds, n_way=20, k_shot=1, n_query=1, episodes=6, seed=3,
                                 within_group=True)
    assert res.fingerprint == proto.fingerprint(ds)
    for batch in proto.batches(ds, 3):
        for classes in batch.classes.tolist():
            alphabets = {ds.class_names[c].split("/")[0] for c in classes}
            assert len(alphabets) == 1 and len(set(classes)) == 20
    # without the option the same run draws rotated copies too
    (rot,) = sweep([run_dir], parse_sweep(["eval.n_way=20", "eval.within_group=true",
                                               "eval.episodes=6"]))
    assert rot.data_options is None and rot.fingerprint != res.fingerprint


def test_cli_reports_the_options(run_dir, tmp_path, capsys):
    rc = main(["eval", str(run_dir), "eval.n_way=20", "eval.within_group=true",
               "eval.data_options={rotations: false}", "eval.episodes=2", "--out",
               str(tmp_path / "out"), "--no-progress", "--no-plots"])
    assert rc == 0
    row = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("| nn")][0]
    assert 'omniglot/background_small1 (within group, {"rotations": false})' in row
    with pytest.raises(ValueError, match="eval.data_options must be a mapping"):
        parse_sweep(["eval.data_options=false"])
