"""metamem compare RESULTS... [--baseline NAME] [--scoring set|sequence] [--out FILE.md]

Compares learners scored on the same fixed episodes, episode by episode. Each RESULTS is a
results.json written by `metamem eval`, or a folder holding one (DIR/results.json or
DIR/eval/results.json, so a run directory scored with --out RUN/eval works). Every row is
compared with the baseline row (the first one, or the one whose learner name contains
--baseline): B - A in points, with the paired 95% half-width over the episodes, a two-sided
p, the number of episodes where B scored higher / the same / lower, and the difference at
each presentation when both rows kept per-episode presentation accuracies (sequence
scoring; results.json files written before `metamem compare` existed keep only the means:
re-score them to get these columns).

  metamem eval runs/mann runs/nutm eval.seed=2026 --out cmp
  metamem compare cmp/results.json --baseline mann
  metamem compare results/omniglot_paper/mann_lru results/omniglot_paper/nutm_lru

Rows scored on other episodes (another fingerprint) are refused: score them with the same
eval protocol. The interval is over episodes, not over training runs: a second training
seed of either learner may move its row by more than that.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from metamem.cli._parser import doc_parser

if TYPE_CHECKING:  # the evaluation modules import torch: only when the command runs
    from metamem.evaluation.scoring import EvalResult


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = doc_parser(sub, "compare", "paired differences between learners scored on the same fixed "
                   "episodes", __doc__)
    p.add_argument("results", nargs="+", type=Path, metavar="RESULTS",
                   help="results.json files of `metamem eval`, or folders holding one")
    p.add_argument("--baseline", default=None, metavar="NAME",
                   help="the row the others are compared with: the one whose learner name "
                   "contains NAME (default: the first row)")
    p.add_argument("--scoring", choices=("set", "sequence"), default=None,
                   help="which scoring to compare (default: the baseline's: set if it ran)")
    p.add_argument("--presentations", type=int, default=5, metavar="P",
                   help="columns for the first P presentations (default 5)")
    p.add_argument("--out", type=Path, default=None, metavar="FILE.md",
                   help="also write the table to this Markdown file (atomically)")
    p.add_argument("--traceback", action="store_true", help="show the traceback of an error")
    p.set_defaults(func=run)


def results_file(path: Path) -> Path:
    """``path`` itself, or the results.json in it (``DIR/results.json``, ``DIR/eval/results.json``)."""
    if path.is_file():
        return path
    for candidate in (path / "results.json", path / "eval" / "results.json"):
        if candidate.is_file():
            return candidate
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or folder")
    raise FileNotFoundError(
        f"{path}: no results.json in it or in {path / 'eval'}: score it first with "
        f"`metamem eval {path} --out {path / 'eval'}`"
    )


def load_rows(paths: list[Path]) -> list[EvalResult]:
    """Every row of every results file, in order."""
    from metamem.evaluation.report import read_results

    rows: list[EvalResult] = []
    for path in paths:
        f = results_file(path)
        try:
            found = read_results(f)
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"{f}: not a results.json of `metamem eval` ({type(e).__name__}: {e})") from e
        if not found:
            raise ValueError(f"{f}: holds no results")
        rows.extend(found)
    return rows


def pick_baseline(rows: list[EvalResult], name: str | None) -> int:
    """Index of the baseline row: the first, or the one row whose learner name contains ``name``."""
    if name is None:
        return 0
    hits = [i for i, r in enumerate(rows) if name in r.learner]
    if len(hits) != 1:
        names = ", ".join(repr(r.learner) for r in rows)
        what = "no row" if not hits else f"{len(hits)} rows"
        raise ValueError(f"--baseline {name!r} matches {what} of {names}: give a part of exactly one name")
    return hits[0]


def run(args: argparse.Namespace) -> int:
    from metamem.evaluation.compare import paired_difference, paired_markdown
    from metamem.files import write_text

    rows = load_rows(list(args.results))
    if len(rows) < 2:
        raise ValueError(f"{args.results[0]}: one row only; a comparison needs two or more")
    if args.presentations < 1:
        raise ValueError(f"--presentations {args.presentations}: give 1 or more")
    base = pick_baseline(rows, args.baseline)
    a = rows[base]
    diffs = [paired_difference(a, b, args.scoring) for i, b in enumerate(rows) if i != base]
    d0 = diffs[0]
    header = (f"paired over {d0.episodes} episodes (fingerprint {d0.fingerprint[:12]}), "
              f"{d0.scoring} scoring; B − A in points ± the paired 95% half-width")
    table = paired_markdown(diffs, presentations=args.presentations)
    print(header)
    print()
    print(table, end="")
    if args.out is not None:
        write_text(args.out, header + "\n\n" + table)
        print(f"\nwritten: {args.out}")
    return 0
