"""Paired comparison of rows scored on the same episodes (`metamem compare`)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from metamem.cli.main import main
from metamem.evaluation import (
    EvalResult,
    Protocol,
    Score,
    paired_difference,
    paired_markdown,
    read_results,
    write_results,
)

FP = "ab" * 32


def _result(name: str, per_episode, presentations=None, fingerprint: str = FP,
            scoring: str = "sequence") -> EvalResult:
    pe = torch.as_tensor(per_episode, dtype=torch.float64)
    ppe = None if presentations is None else torch.as_tensor(presentations, dtype=torch.float64)
    proto = Protocol(dataset="synthetic", split="test", n_way=3, k_shot=2, n_query=0,
                     episodes=int(pe.numel()), seed=5)
    return EvalResult(protocol=proto, fingerprint=fingerprint,
                      scores={scoring: Score(scoring, pe, ppe)}, learner=name,
                      device="cpu", seconds=0.1, version="test")


def _pair(rng: np.random.Generator, e: int = 37, p: int = 3):
    a_pp = rng.integers(0, 4, size=(e, p)) / 3.0
    b_pp = np.clip(a_pp + rng.integers(-1, 3, size=(e, p)) / 3.0, 0, 1)
    a_pp[rng.random((e, p)) < 0.1] = np.nan  # some episodes without a p-th presentation
    a = np.nanmean(np.where(np.isnan(a_pp), 0.5, a_pp), axis=1)
    b = b_pp.mean(axis=1)
    return a, a_pp, b, b_pp


def test_paired_difference_matches_a_naive_computation():
    rng = np.random.default_rng(3)
    a, a_pp, b, b_pp = _pair(rng)
    d = paired_difference(_result("A", a, a_pp), _result("B", b, b_pp))
    diffs = [b[i] - a[i] for i in range(len(a))]
    n = len(diffs)
    mean = sum(diffs) / n
    sd = math.sqrt(sum((x - mean) ** 2 for x in diffs) / (n - 1))
    assert d.diff == pytest.approx(mean, abs=1e-12)
    assert d.ci95 == pytest.approx(1.96 * sd / math.sqrt(n), rel=1e-9)
    z = mean / (sd / math.sqrt(n))
    assert d.p_value == pytest.approx(2 * (1 - 0.5 * (1 + math.erf(abs(z) / math.sqrt(2)))), rel=1e-9)
    assert (d.wins, d.ties, d.losses) == (sum(x > 0 for x in diffs), sum(x == 0 for x in diffs),
                                          sum(x < 0 for x in diffs))
    assert d.wins + d.ties + d.losses == n == d.episodes
    assert d.mean_a == pytest.approx(a.mean()) and d.mean_b == pytest.approx(b.mean())
    assert d.per_presentation is not None and len(d.per_presentation) == 3
    for j, (m, c) in enumerate(d.per_presentation):
        col = [b_pp[i, j] - a_pp[i, j] for i in range(n) if not np.isnan(a_pp[i, j])]
        cm = sum(col) / len(col)
        cs = math.sqrt(sum((x - cm) ** 2 for x in col) / (len(col) - 1))
        assert m == pytest.approx(cm, abs=1e-12)
        assert c == pytest.approx(1.96 * cs / math.sqrt(len(col)), rel=1e-9)


def test_p_value_agrees_with_a_paired_t_test_on_many_episodes():
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    a = rng.random(3000)
    b = np.clip(a + rng.normal(0.01, 0.2, size=a.size), 0, 1)
    d = paired_difference(_result("A", a), _result("B", b))
    assert d.p_value == pytest.approx(stats.ttest_rel(b, a).pvalue, abs=2e-3)
    assert (d.p_value < 0.05) == (abs(d.diff) > d.ci95)


def test_degenerate_differences():
    same = paired_difference(_result("A", [0.5, 0.7, 0.1]), _result("B", [0.5, 0.7, 0.1]))
    assert same.diff == 0 and same.p_value == 1.0 and same.ties == 3 and same.ci95 == 0
    shifted = paired_difference(_result("A", [0.5, 0.7]), _result("B", [0.6, 0.8]))
    assert shifted.diff == pytest.approx(0.1) and shifted.p_value == 0.0
    one = paired_difference(_result("A", [0.5]), _result("B", [1.0]))
    assert math.isnan(one.ci95) and math.isnan(one.p_value) and one.wins == 1


def test_other_episodes_and_missing_scorings_are_refused():
    a = _result("mann", [0.5, 0.6])
    with pytest.raises(ValueError, match=r"'nutm' was scored on episodes cdcdcdcdcdcd, 'mann' on abababababab.*eval\.seed"):
        paired_difference(a, _result("nutm", [0.5, 0.6], fingerprint="cd" * 32))
    with pytest.raises(ValueError, match=r"'mann' has no 'set' scoring \(it has sequence\): compare with --scoring sequence .*eval\.protocol=both"):
        paired_difference(a, _result("nutm", [0.5, 0.6]), scoring="set")
    with pytest.raises(ValueError, match=r"2 episodes and 'nutm' 3"):
        paired_difference(a, _result("nutm", [0.5, 0.6, 0.7]))


def test_presentations_survive_json_and_old_files_still_compare(tmp_path):
    rng = np.random.default_rng(1)
    a, a_pp, b, b_pp = _pair(rng, e=11, p=4)
    write_results([_result("A", a, a_pp), _result("B", b, b_pp)], tmp_path)
    text = (tmp_path / "results.json").read_text()
    lines = [ln.strip().rstrip(",") for ln in text.splitlines()]
    row = json.dumps([None if np.isnan(v) else float(v) for v in a_pp[0]]).replace("NaN", "null")
    assert row in lines  # a row of per-episode presentation accuracies is one line
    assert json.loads(text)["results"][1]["scores"]["sequence"]["per_presentation_episode"][0] == [
        float(v) for v in b_pp[0]]
    back = read_results(tmp_path / "results.json")
    got = back[0].scores["sequence"].per_presentation_episode
    assert got.shape == (11, 4)
    assert torch.equal(torch.isnan(got), torch.from_numpy(np.isnan(a_pp)))
    assert torch.allclose(torch.nan_to_num(got), torch.from_numpy(np.nan_to_num(a_pp)))
    assert paired_difference(*back).per_presentation == paired_difference(
        _result("A", a, a_pp), _result("B", b, b_pp)).per_presentation
    # a results.json of an earlier version kept only the means by presentation
    doc = json.loads((tmp_path / "results.json").read_text())
    for row in doc["results"]:
        del row["scores"]["sequence"]["per_presentation_episode"]
    (tmp_path / "results.json").write_text(json.dumps(doc))
    old = read_results(tmp_path / "results.json")
    d = paired_difference(*old)
    assert d.per_presentation is None
    assert d.diff == pytest.approx(float(np.mean(b - a)))


def test_results_json_packs_lists_of_numbers_16_to_a_line():
    from metamem.evaluation.report import results_json_text

    doc = {"short": [1, -2.5, None, 3e-05] * 4, "long": list(range(37)), "words": ["a", "b"],
           "nested": [[0.1, 0.2], [None, 1]], "empty": [], "deep": {"x": [list(range(17))]}}
    text = results_json_text(doc)
    assert json.loads(text) == doc and text.endswith("}\n")
    lines = [ln.strip().rstrip(",") for ln in text.splitlines()]
    assert '"short": [1, -2.5, null, 3e-05, 1, -2.5, null, 3e-05, 1, -2.5, null, 3e-05, 1, -2.5, null, 3e-05]' in lines
    # 37 numbers: rows of 16, 16 and 5 under the key, indented like one item per line would be
    at = lines.index('"long": [')
    assert lines[at + 1:at + 5] == [", ".join(map(str, range(16))), ", ".join(map(str, range(16, 32))),
                                    "32, 33, 34, 35, 36", "]"]
    assert '"words": [' in lines and '"a"' in lines
    assert "[0.1, 0.2]" in lines and "[null, 1]" in lines
    assert "16" in lines  # 17 numbers in a list in a list: 16, then one
    assert json.loads(text) == json.loads(json.dumps(doc, indent=1))


def test_markdown_table():
    rng = np.random.default_rng(2)
    a, a_pp, b, b_pp = _pair(rng, e=20, p=3)
    d = paired_difference(_result("A", a, a_pp), _result("B", b, b_pp))
    md = paired_markdown([d], presentations=2)
    head, rule, row = md.strip().splitlines()
    assert head.count("|") == rule.count("|") == row.count("|") == 11  # 8 columns + 2 presentations
    assert "Δ 2nd" in head and "Δ 3rd" not in head
    assert f"{100 * d.diff:+.2f} ± {100 * d.ci95:.2f}" in row
    assert f"{d.wins} / {d.ties} / {d.losses}" in row
    assert paired_markdown([]) == ""


def test_cli_compares_run_folders(tmp_path, capsys):
    rng = np.random.default_rng(4)
    a, a_pp, b, b_pp = _pair(rng, e=15, p=3)
    write_results([_result("mann [run_a]", a, a_pp)], tmp_path / "run_a" / "eval")
    write_results([_result("nutm [run_b]", b, b_pp), _result("lstm [run_c]", a[::-1].copy())],
                  tmp_path / "sweep")
    out = tmp_path / "cmp.md"
    rc = main(["compare", str(tmp_path / "sweep"), str(tmp_path / "run_a"),
               "--baseline", "run_a", "--out", str(out)])
    text = capsys.readouterr().out
    assert rc == 0
    d = paired_difference(_result("mann [run_a]", a, a_pp), _result("nutm [run_b]", b, b_pp))
    assert f"{100 * d.diff:+.2f} ± {100 * d.ci95:.2f}" in text
    assert "| lstm [run_c] | mann [run_a] |" in text
    assert "fingerprint abababababab: paired over 15 episodes, sequence scoring" in text
    assert out.read_text() == text.split("\nwritten:")[0]


def test_cli_pairs_rows_within_each_protocol_of_a_sweep(tmp_path, capsys):
    rows = [_result("a [r1]", [0.5, 0.6, 0.9]), _result("b [r2]", [0.6, 0.6, 1.0]),
            _result("a [r1]", [0.2, 0.4], fingerprint="cd" * 32),
            _result("b [r2]", [0.1, 0.4], fingerprint="cd" * 32),
            _result("c [r3]", [0.3], fingerprint="ef" * 32)]
    write_results(rows, tmp_path)
    assert main(["compare", str(tmp_path), "--baseline", "r2"]) == 0
    captured = capsys.readouterr()
    tables = captured.out.split("\n\n")
    assert len(tables) == 4  # a header and a table for each of the two shared protocols
    assert "fingerprint abababababab" in tables[0] and "fingerprint cdcdcdcdcdcd" in tables[2]
    assert "| a [r1] | b [r2] | sequence | 73.33 | 66.67 | -6.67 ± " in tables[1]
    assert "| a [r1] | b [r2] | sequence | 25.00 | 30.00 | +5.00 ± " in tables[3]
    assert "note: not compared: " in captured.err and "fingerprint efefefefefef (its only row)" in captured.err


@pytest.mark.parametrize("argv, message", [
    (["--baseline", "zz"], "--baseline 'zz' matches no row of a protocol with two or more rows"),
    (["--baseline", "run"], "--baseline 'run' matches 2 rows of one protocol ('a [run_a]', 'b [run_b]')"),
])
def test_cli_baseline_errors(tmp_path, capsys, argv, message):
    write_results([_result("a [run_a]", [0.5, 0.6]), _result("b [run_b]", [0.4, 0.6])], tmp_path)
    assert main(["compare", str(tmp_path)] + argv) == 1
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_cli_input_errors(tmp_path, capsys):
    assert main(["compare", str(tmp_path / "missing")]) == 1
    assert "missing: no such file or folder" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["compare", str(tmp_path / "empty")]) == 1
    assert "no results.json in it" in capsys.readouterr().err
    write_results([_result("a", [0.5, 0.6])], tmp_path / "one")
    assert main(["compare", str(tmp_path / "one")]) == 1
    assert "one row only: a comparison needs two rows of one protocol" in capsys.readouterr().err
    write_results([_result("b", [0.5, 0.6], fingerprint="cd" * 32)], tmp_path / "other")
    assert main(["compare", str(tmp_path / "one"), str(tmp_path / "other")]) == 1
    assert "no two of the 2 rows were scored on the same episodes (fingerprints abababababab, " \
        "cdcdcdcdcdcd)" in capsys.readouterr().err
    (tmp_path / "bad.json").write_text('{"rows": []}')
    assert main(["compare", str(tmp_path / "bad.json"), str(tmp_path / "one")]) == 1
    assert "bad.json: not a results.json of `metamem eval`" in capsys.readouterr().err


def test_plot_paired_differences(tmp_path, capsys):
    from metamem.evaluation.plots import plot_paired_differences

    rng = np.random.default_rng(5)
    a, a_pp, b, b_pp = _pair(rng, e=12, p=3)
    d = paired_difference(_result("A", a, a_pp), _result("B", b, b_pp))
    assert plot_paired_differences([d], tmp_path / "d.png").read_bytes()[:4] == b"\x89PNG"
    flat = paired_difference(_result("A", a), _result("B", b))  # no presentations kept
    assert plot_paired_differences([flat], tmp_path / "none.png") is None
    assert not (tmp_path / "none.png").exists()
    # the CLI: one figure per protocol, FILE.png then FILE_2.png; a protocol without
    # presentation data is named instead
    write_results([_result("A", a, a_pp), _result("B", b, b_pp),
                   _result("A", [0.1, 0.2], fingerprint="cd" * 32),
                   _result("B", [0.3, 0.2], fingerprint="cd" * 32)], tmp_path / "r")
    assert main(["compare", str(tmp_path / "r"), "--plot", str(tmp_path / "cmp.png")]) == 0
    out = capsys.readouterr()
    assert (tmp_path / "cmp.png").read_bytes()[:4] == b"\x89PNG"
    assert not (tmp_path / "cmp_2.png").exists()
    assert "note: no plot for cdcdcdcdcdcd" in out.err


def test_mean_t95_against_scipy_and_at_the_edges():
    stats = pytest.importorskip("scipy.stats")
    from metamem.evaluation import mean_t95

    values = [0.3, -1.2, 2.5, 0.7]
    mean, half = mean_t95(values)
    assert mean == pytest.approx(float(np.mean(values)))
    lo, hi = stats.t.interval(0.95, len(values) - 1, loc=mean, scale=stats.sem(values))
    assert half == pytest.approx((hi - lo) / 2)
    assert mean_t95([2.0])[0] == 2.0 and math.isnan(mean_t95([2.0])[1])
    assert all(math.isnan(v) for v in mean_t95([]))


def test_over_runs_matches_a_student_t_over_pairs():
    stats = pytest.importorskip("scipy.stats")
    from metamem.evaluation import over_runs

    rng = np.random.default_rng(6)
    diffs = []
    for shift in (0.02, -0.05, 0.01):
        a, a_pp, _, _ = _pair(rng, e=25, p=3)
        b_pp = np.clip(np.nan_to_num(a_pp, nan=0.5) + shift, 0, 1)
        diffs.append(paired_difference(_result("A", a, a_pp), _result("B", b_pp.mean(1), b_pp)))
    s = over_runs(diffs)
    values = [d.diff for d in diffs]
    sem = float(np.std(values, ddof=1)) / math.sqrt(3)
    assert s.runs == 3 and s.diffs == tuple(values)
    assert s.diff == pytest.approx(float(np.mean(values)))
    assert s.ci95 == pytest.approx(stats.t.ppf(0.975, 2) * sem)
    col = [d.per_presentation[1][0] for d in diffs]
    assert s.per_presentation[1][0] == pytest.approx(float(np.mean(col)))
    assert s.per_presentation[1][1] == pytest.approx(
        stats.t.ppf(0.975, 2) * float(np.std(col, ddof=1)) / math.sqrt(3))
    one = over_runs(diffs[:1])
    assert one.diff == diffs[0].diff and math.isnan(one.ci95)
    with pytest.raises(ValueError, match="no paired differences"):
        over_runs([])


def test_cli_pairs_of_runs(tmp_path, capsys):
    r = [_result("mann [s0]", [0.5, 0.6, 0.7]), _result("nutm [s0]", [0.6, 0.6, 0.9]),
         _result("mann [s1]", [0.2, 0.4], fingerprint="cd" * 32),
         _result("nutm [s1]", [0.1, 0.4], fingerprint="cd" * 32)]
    write_results(r[:2], tmp_path / "s0")
    write_results(r[2:], tmp_path / "s1")
    assert main(["compare", "--pairs", str(tmp_path / "s0"), str(tmp_path / "s1")]) == 0
    out = capsys.readouterr().out
    d0, d1 = paired_difference(r[0], r[1]), paired_difference(r[2], r[3])
    assert f"per pair: {100 * d0.diff:+.2f}, {100 * d1.diff:+.2f}" in out
    assert f"mean over the 2 pairs: {100 * (d0.diff + d1.diff) / 2:+.2f} ± " in out
    write_results(r[:1], tmp_path / "odd")
    assert main(["compare", "--pairs", str(tmp_path / "s0"), str(tmp_path / "odd")]) == 1
    assert "--pairs needs an even number of rows (A1 B1 A2 B2 ...), got 3" in capsys.readouterr().err
    assert main(["compare", "--pairs", "--baseline", "mann", str(tmp_path / "s0")]) == 1
    assert "drop --baseline" in capsys.readouterr().err
