"""scripts/bench_memory_tasks.py: result rows read back from logs and pooled over seeds."""

from __future__ import annotations

import math
import statistics
import sys
from pathlib import Path

import pytest


@pytest.fixture()
def bench(load_script):
    return load_script("bench_memory_tasks")


def _log(bench, rows, header: bool = True) -> str:
    lines = ["# 8000 steps x batch 16, ...", "task                core  seed bit err/seq  test bce train err    wall",
             "# associative_recall: train 2-4 items of 2 steps, test 8 items, S=32"] if header else []
    lines += [bench.format_row(bench.Row("associative_recall", core, seed, err, 1.5, 0.25), 12.3)
              for core, seed, err in rows]
    return "\n".join(lines) + "\n"


def test_rows_read_back_what_the_script_prints(bench) -> None:
    text = _log(bench, [("ntm", 3, 4.77), ("nutm", 11, 0.02)])
    rows = bench.parse_rows(text)
    assert [(r.task, r.core, r.seed, r.err, r.bce, r.train_err) for r in rows] == [
        ("associative_recall", "ntm", 3, 4.77, 1.5, 0.25), ("associative_recall", "nutm", 11, 0.02, 1.5, 0.25)]


def test_a_line_that_is_not_a_row_is_named(bench) -> None:
    text = _log(bench, [("ntm", 0, 1.0)]) + "associative_recall  ntm  4.88  4.2260  25.3s  7.66 / 1.35\n"
    with pytest.raises(ValueError, match=r"^old\.log:5: not a result row .*4\.88"):
        bench.parse_rows(text, "old.log")


def test_summary_pools_seeds_against_a_naive_computation(bench) -> None:
    ntm = [4.77, 0.0, 2.74, 0.3, 5.14]
    nutm = [1.9, 2.59, 4.86]
    rows = bench.parse_rows(_log(bench, [("ntm", s, e) for s, e in enumerate(ntm)]
                                  + [("nutm", s, e) for s, e in enumerate(nutm)]))
    lines = bench.summarise(rows)
    by_core = {line.split()[1]: line.split() for line in lines if line.startswith("associative_recall")}
    for core, errs in (("ntm", ntm), ("nutm", nutm)):
        n = len(errs)
        mean = sum(errs) / n
        sd = math.sqrt(sum((e - mean) ** 2 for e in errs) / (n - 1))
        t = {4: 2.776, 2: 4.303}[n - 1]  # Student t, 97.5% quantile, from a table
        cells = by_core[core]
        assert int(cells[2]) == n
        assert float(cells[3]) == pytest.approx(mean, abs=0.006)
        assert float(cells[4]) == pytest.approx(t * sd / math.sqrt(n), abs=0.006)
        assert float(cells[5]) == pytest.approx(statistics.median(errs), abs=0.006)
        assert cells[8] == f"{sum(e < 0.5 for e in errs)}/{n}"
        assert cells[9] == ",".join(str(s) for s in range(n))
    test_line = [line for line in lines if "Mann-Whitney" in line]
    assert len(test_line) == 1 and "ntm vs nutm" in test_line[0] and "n = 5 and 3" in test_line[0]
    p = float(test_line[0].split("p = ")[1].split()[0])
    assert 0.0 < p <= 1.0


def test_the_same_run_counted_twice_is_refused(bench) -> None:
    rows = bench.parse_rows(_log(bench, [("ntm", 2, 1.0)]) * 2)
    with pytest.raises(ValueError, match="seed 2 of associative_recall / ntm appears twice"):
        bench.summarise(rows)


def test_summarise_option_pools_logs_and_names_a_missing_one(bench, tmp_path: Path, monkeypatch, capsys) -> None:
    a, b = tmp_path / "a.log", tmp_path / "b.log"
    a.write_text(_log(bench, [("ntm", 0, 1.0), ("ntm", 1, 3.0)]))
    b.write_text(_log(bench, [("ntm", 2, 5.0)]))
    monkeypatch.setattr(sys, "argv", ["bench_memory_tasks.py", "--summarise", str(a), str(b)])
    bench.main()
    row = [line for line in capsys.readouterr().out.splitlines() if line.startswith("associative_recall")]
    assert row[0].split()[2:4] == ["3", "3.00"]
    monkeypatch.setattr(sys, "argv", ["bench_memory_tasks.py", "--summarise", str(tmp_path / "nope.log")])
    with pytest.raises(SystemExit, match=r"nope\.log: cannot read the log"):
        bench.main()


def test_a_log_without_rows_is_named(bench, tmp_path: Path) -> None:
    empty = tmp_path / "empty.log"
    empty.write_text("# 8000 steps x batch 16\ntask core seed\n")
    with pytest.raises(ValueError, match=r"no result rows in .*empty\.log; pass logs written by this script"):
        bench.summarise_logs([str(empty)])


def test_a_multi_seed_run_ends_with_the_summary_of_its_own_rows(bench, monkeypatch, capsys) -> None:
    monkeypatch.setattr(sys, "argv", ["bench_memory_tasks.py", "--tasks", "copy", "--cores", "ntm", "--steps", "1",
                                      "--seed", "0,1", "--test-batch", "2", "--hidden", "4", "--width", "4"])
    bench.main()
    out = capsys.readouterr().out
    rows = bench.parse_rows(out.split("# summary")[0])  # the printed rows read back
    assert [(r.core, r.seed) for r in rows] == [("ntm", 0), ("ntm", 1)]
    summary = [line.split() for line in out.split("# summary")[1].splitlines() if line.startswith("copy")]
    assert len(summary) == 1 and summary[0][2] == "2"
    assert float(summary[0][3]) == pytest.approx(sum(r.err for r in rows) / 2, abs=0.006)
