"""An edited or damaged results.json is refused with one line naming the file and the field,
by `metamem compare` and by every reader (read_results); the files metamem writes, and
every one kept in results/, pass."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from metamem.cli.main import main
from metamem.evaluation import EvalResult, Protocol, Score, read_results, write_results
from metamem.results_check import ResultsError, check_results

ROOT = Path(__file__).resolve().parents[2]


def _row(name: str, per_episode: list[float], presentations=None) -> EvalResult:
    pe = torch.tensor(per_episode, dtype=torch.float64)
    ppe = None if presentations is None else torch.tensor(presentations, dtype=torch.float64)
    proto = Protocol(dataset="synthetic", split="test", n_way=3, k_shot=1, n_query=0,
                     episodes=len(per_episode), seed=5)
    return EvalResult(protocol=proto, fingerprint="ab" * 32, scores={"sequence": Score("sequence", pe, ppe)},
                      learner=name, device="cpu", seconds=0.1, version="test")


@pytest.fixture
def written(tmp_path: Path) -> Path:
    a = [0.5, 0.75, 1.0, 0.25]
    b = [0.75, 0.75, 1.0, 0.5]
    pa = [[0.5, 0.5], [1.0, 0.5], [1.0, 1.0], [0.0, 0.5]]
    pb = [[1.0, 0.5], [0.5, 1.0], [1.0, 1.0], [0.5, 0.5]]
    write_results([_row("A", a, pa), _row("B", b, pb)], tmp_path)
    return tmp_path / "results.json"


def _edit(path: Path, change) -> None:  # type: ignore[no-untyped-def]
    doc = json.loads(path.read_text())
    change(doc["results"][1])
    path.write_text(json.dumps(doc))


def _scale(row: dict) -> None:
    s = row["scores"]["sequence"]
    s["per_episode"] = [100 * v for v in s["per_episode"]]
    s["mean"] *= 100


def _nan_text(path: Path) -> None:
    doc = json.loads(path.read_text())
    doc["results"][1]["scores"]["sequence"]["per_episode"][2] = float("nan")
    path.write_text(json.dumps(doc))  # json writes NaN (not JSON)


CASES = [
    (lambda p: _edit(p, _scale), r"results\[1\]: scores.sequence.per_episode\[0\]: an accuracy must be a "
                                 r"finite number in \[0, 1\], got 75.0"),
    (_nan_text, r"holds NaN, which JSON does not allow"),
    (lambda p: _edit(p, lambda r: r["scores"]["sequence"]["per_episode"].__setitem__(1, None)),
     r"results\[1\]: scores.sequence.per_episode\[1\]: an accuracy must be a finite number in \[0, 1\], got None"),
    (lambda p: _edit(p, lambda r: r.__setitem__("scores", None)),
     r"results\[1\]: row.scores: expected dict, got None"),
    (lambda p: _edit(p, lambda r: r.__setitem__("fingerprint", 12345)),
     r"results\[1\]: row.fingerprint: expected str, got 12345"),
    (lambda p: _edit(p, lambda r: r["scores"]["sequence"].__setitem__("mean", 0.9)),
     r"results\[1\]: scores.sequence.mean: stored 0.9 but per_episode gives 0.75"),
    (lambda p: _edit(p, lambda r: r["scores"]["sequence"].__setitem__("ci95", 0.01)),
     r"results\[1\]: scores.sequence.ci95: stored 0.01 but per_episode gives 0.2"),
    (lambda p: _edit(p, lambda r: r["scores"]["sequence"]["per_presentation"].__setitem__(0, 0.1)),
     r"scores.sequence.per_presentation\[0\]: stored 0.1 but per_presentation_episode gives 0.75"),
    (lambda p: _edit(p, lambda r: r["scores"]["sequence"]["per_presentation_episode"][0].__setitem__(1, 2.0)),
     r"scores.sequence.per_presentation_episode\[0\]\[1\]: an accuracy must be a finite number"),
    (lambda p: _edit(p, lambda r: r["scores"]["sequence"].__setitem__("episodes", 5)),
     r"scores.sequence.episodes: stored 5 but per_episode holds 4"),
    (lambda p: _edit(p, lambda r: r["protocol"].__setitem__("episodes", 9)),
     r"scores.sequence.per_episode: holds 4 values but protocol.episodes is 9"),
    (lambda p: _edit(p, lambda r: r["protocol"].__setitem__("n_way", "3")),
     r"protocol.n_way: expected int, got '3'"),
    (lambda p: _edit(p, lambda r: r.__setitem__("seconds", -1)), r"seconds: expected a finite number >= 0"),
    (lambda p: _edit(p, lambda r: r["scores"].__setitem__("guess", r["scores"]["sequence"])),
     r"scores.guess: unknown scoring"),
    (lambda p: p.write_text('{"results": [1'), r"not valid JSON"),
    (lambda p: p.write_text('[1, 2]'), r"results\[0\]: \(row\): expected an object, got 1"),
]


@pytest.mark.parametrize("edit, message", CASES)
def test_compare_refuses_an_edited_results_file_in_one_line(written: Path, capsys, edit, message: str) -> None:
    assert main(["compare", str(written)]) == 0  # the file as written compares
    capsys.readouterr()
    edit(written)
    with pytest.raises(ResultsError, match=message):
        read_results(written)
    assert main(["compare", str(written)]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    err = captured.err.strip()
    assert err.startswith(f"metamem compare: error: {written}") and "\n" not in err
    assert len(err) < 400


def test_every_results_and_eval_file_kept_in_the_repository_passes() -> None:
    files = sorted((ROOT / "results").rglob("results.json"))
    evals = sorted((ROOT / "results").rglob("eval.json"))
    if not files:
        pytest.skip("no results/ folder in this checkout")
    for f in files:
        assert read_results(f)
    for f in evals:
        assert check_results(json.loads(f.read_text()), str(f))


def test_every_reader_checks_a_run_directorys_eval_json_and_results(written: Path, tmp_path: Path) -> None:
    from metamem.results_check import read_checked_results
    from metamem.runs import recorded_evaluations

    run = tmp_path / "run"
    (run / "eval").mkdir(parents=True)
    rows = json.loads(written.read_text())["results"]
    (run / "eval.json").write_text(json.dumps(rows))  # eval.json: a bare list of results
    (run / "eval" / "results.json").write_text(written.read_text())
    assert len(recorded_evaluations(run)) == 4
    assert read_checked_results(run / "eval.json") == rows
    rows[0]["scores"]["sequence"]["per_episode"][0] = 1.5
    (run / "eval.json").write_text(json.dumps(rows))
    with pytest.raises(ResultsError, match=r"eval\.json: results\[0\]: scores.sequence.per_episode\[0\]: "
                       r"an accuracy must be a finite number in \[0, 1\], got 1.5"):
        recorded_evaluations(run)
