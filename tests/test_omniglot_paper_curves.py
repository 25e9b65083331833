"""scripts/omniglot_paper.py curves: NAME=RUN_DIR arguments, names holding '=' included."""

from __future__ import annotations

import shutil
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RUN = REPO / "results" / "omniglot_paper" / "nutm_lru_10way"


def _run_copy(tmp_path: Path, name: str) -> Path:
    run = tmp_path / name
    run.mkdir()
    shutil.copy(RUN / "metrics.jsonl", run / "metrics.jsonl")
    return run


def test_curves_takes_names_with_equals_signs(load_script, tmp_path: Path, monkeypatch) -> None:
    script = load_script("omniglot_paper")
    a, b = _run_copy(tmp_path, "a"), _run_copy(tmp_path, "b")
    drawn = {}

    def fake_plot(runs, out, title=None, x=()):
        drawn.update(runs)
        drawn["x"] = list(x)
        return out

    monkeypatch.setattr(script, "plot_learning_curves", fake_plot)
    out = tmp_path / "c.png"
    assert script.main(["curves", f"NUTM p=3={a}", f"MANN={b}", "--out", str(out)]) == 0
    assert drawn.pop("x") == ["wall_s", "cpu_s"]
    assert sorted(drawn) == ["MANN", "NUTM p=3"]
    assert len(drawn["NUTM p=3"]) == len(drawn["MANN"]) > 0
    assert script.main(["curves", f"MANN={b}", "--x", "step", "--out", str(out)]) == 0
    assert drawn["x"] == ["step"]


def test_curves_names_a_bad_axis(load_script, tmp_path: Path, capsys) -> None:
    script = load_script("omniglot_paper")
    a = _run_copy(tmp_path, "a")
    assert script.main(["curves", f"A={a}", "--x", "step,episodes", "--out", str(tmp_path / "c.png")]) == 2
    assert "x must name panels among step, wall_s, cpu_s, got ['episodes']" in capsys.readouterr().err
    assert not (tmp_path / "c.png").exists()


def test_curves_names_the_missing_run_and_refuses_no_name(load_script, tmp_path: Path, capsys) -> None:
    script = load_script("omniglot_paper")
    assert script.main(["curves", f"x={tmp_path / 'nope'}", "--out", str(tmp_path / "c.png")]) == 2
    assert f"{tmp_path / 'nope' / 'metrics.jsonl'} not found" in capsys.readouterr().err
    assert script.main(["curves", f"={tmp_path}", "--out", str(tmp_path / "c.png")]) == 2
    assert "is not NAME=RUN_DIR" in capsys.readouterr().err
