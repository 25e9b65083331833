"""The Omniglot paper protocols end to end on the full data, at a tiny budget (slow tier).

``metamem prepare omniglot --from ../shared/data/omniglot/full`` fills a fresh data root;
then the background-only ProtoNet config trains two steps and is scored on the within-alphabet
task, exported as a committed run would be, and re-scored from the export on new episodes;
the MANN config (augmentation on) trains two steps on the Vinyals split.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from metamem.cli.main import main

REPO = Path(__file__).resolve().parents[1]
PAPER = REPO / "experiments" / "omniglot" / "paper"
FULL = REPO.parent / "shared" / "data" / "omniglot" / "full"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (FULL / "images_background.zip").is_file(),
                       reason=f"the full Omniglot sets are not at {FULL} (../shared/data/omniglot/full)"),
]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    assert main(["prepare", "omniglot", "--from", str(FULL), "--root", str(root / "omniglot")]) == 0
    return root


def test_background_only_within_alphabet_export_and_rescore(data_root, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("METAMEM_DATA", str(data_root))
    run = tmp_path / "bg"
    rc = main(["train", str(PAPER / "protonet_background.yaml"), "train.steps=2",
               "episodes.n_way=10", "train.log_every=1", "eval.episodes=5", "device=cpu",
               "--out", str(run), "--no-progress"])
    assert rc == 0, capsys.readouterr().err
    (ev,) = json.loads((run / "eval.json").read_text())
    assert ev["protocol"]["within_group"] and ev["protocol"]["n_way"] == 20
    assert ev["data_options"] == {"rotations": False} and ev["protocol"]["split"] == "evaluation"
    monkeypatch.chdir(tmp_path)
    r = subprocess.run([sys.executable, str(REPO / "scripts" / "omniglot_paper.py"), "export",
                        str(run), "results/omniglot_paper/background_only"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    capsys.readouterr()
    rc = main(["eval", "results/omniglot_paper/background_only", "eval.seed=7", "--no-progress",
               "--no-plots", "--out", "rescore"])
    assert rc == 0, capsys.readouterr().err
    (new,) = json.loads((tmp_path / "rescore" / "results.json").read_text())["results"]
    assert new["source"] == "results/omniglot_paper/background_only"
    assert new["protocol"]["seed"] == 7 and new["fingerprint"] != ev["fingerprint"]
    assert new["data_options"] == {"rotations": False} and new["protocol"]["within_group"]


def test_mann_paper_config_trains_with_augmentation(data_root, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("METAMEM_DATA", str(data_root))
    rc = main(["train", str(PAPER / "mann_lru.yaml"), "train.steps=2", "train.log_every=1",
               "train.val_every=2", "train.val_episodes=4", "eval.episodes=4", "device=cpu",
               "--out", str(tmp_path / "mann"), "--no-progress"])
    assert rc == 0, capsys.readouterr().err
    (ev,) = json.loads((tmp_path / "mann" / "eval.json").read_text())
    assert ev["protocol"]["split"] == "vinyals/test" and len(ev["scores"]["sequence"]["per_presentation"]) == 10
    assert ev["config"]["episodes"]["augment"] == {"rotate": 11.25, "translate": 0.095}
