"""A real Omniglot run scored on a user folder of black-on-white shape drawings from the CLI
(``metamem eval RUN data=folder:PATH``): with the run's preprocessing applied (inverted,
resized to 28x28) it scores well above chance without a warning; with the inversion turned
off the polarity warning names the mismatch."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from metamem.cli.main import main
from metamem.data.shapes import write_shapes_folder

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def protonet_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "protonet"
    rc = main(["train", str(ROOT / "experiments/omniglot/protonet.yaml"), "episodes.n_way=20",
               "train.steps=30", "train.val_every=0", "--no-eval", "--no-progress",
               "--threads", "1", "--out", str(out)])
    assert rc == 0
    return out


def test_shapes_folder_scores_above_chance_or_warns(protonet_run, tmp_path, capsys) -> None:
    shapes = write_shapes_folder(tmp_path / "shapes", per_class=12)
    args = ["eval", str(protonet_run), f"data=folder:{shapes}", "eval.n_way=5", "eval.k_shot=1",
            "eval.n_query=5", "eval.episodes=200", "--no-progress", "--no-plots", "--threads", "1"]
    capsys.readouterr()
    assert main([*args, "--out", str(tmp_path / "ok")]) == 0
    out, err = capsys.readouterr()
    assert "warning:" not in err, err
    assert out.startswith(f"protocol (all rows, same episodes): folder {shapes} split all, 5-way 1-shot")
    res = json.loads((tmp_path / "ok" / "results.json").read_text())["results"][0]
    assert res["protocol"]["dataset"] == "shapes" and res["scores"]["set"]["mean"] > 0.35  # chance 0.2; 0.45 measured
    # the same folder without the run's inversion: the polarity warning
    assert main([*args, "data.options.invert=false", "--out", str(tmp_path / "flip")]) == 0
    err = capsys.readouterr().err
    assert "warning: polarity: the run was trained on a dark background" in err
    assert f"but {shapes} has a light one" in err and "Flip it with invert=True (CLI: data.options.invert=true)" in err
