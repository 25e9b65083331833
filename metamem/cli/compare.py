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
  metamem compare results/omniglot_paper/mann_lru results/omniglot_paper/nutm_lru --plot cmp.png

Rows are paired only with rows scored on the same episodes (the same fingerprint): the
rows of a sweep (`metamem eval A B 'eval.n_way=[5,20]'`) give one table per protocol, each
with its own baseline. The interval is over episodes, not over training runs: a second training
seed of either learner may move its row by more than that.
"""

from __future__ import annotations

import argparse
import sys
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
    p.add_argument("--plot", type=Path, default=None, metavar="FILE.png",
                   help="also draw B − A by presentation ± the paired interval (one figure per "
                   "protocol: FILE.png, then FILE_2.png, ...)")
    p.add_argument("--pairs", action="store_true",
                   help="read the rows as pairs A1 B1 A2 B2 ... (training runs of two learners, e.g. "
                   "seeds), compare each B_i with its A_i, and add the mean difference over the "
                   "pairs with a Student-t 95%% interval over runs")
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
    from metamem.results_check import ResultsError

    rows: list[EvalResult] = []
    for path in paths:
        f = results_file(path)
        try:
            found = read_results(f)
        except ResultsError:
            raise
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"{f}: not a results.json of `metamem eval` ({type(e).__name__}: {e})") from e
        if not found:
            raise ValueError(f"{f}: holds no results")
        rows.extend(found)
    return rows


def pick_baseline(rows: list[EvalResult], name: str | None) -> int | None:
    """Index of the baseline among ``rows`` (one protocol): the first row, or the one row whose
    learner name contains ``name`` (``None`` when none does)."""
    if name is None:
        return 0
    hits = [i for i, r in enumerate(rows) if name in r.learner]
    if len(hits) > 1:
        names = ", ".join(repr(rows[i].learner) for i in hits)
        raise ValueError(f"--baseline {name!r} matches {len(hits)} rows of one protocol ({names}): "
                         f"give a part of exactly one name")
    return hits[0] if hits else None


def by_protocol(rows: list[EvalResult]) -> dict[str, list[EvalResult]]:
    """The rows grouped by the episodes they were scored on (fingerprint), in order."""
    groups: dict[str, list[EvalResult]] = {}
    for r in rows:
        groups.setdefault(r.fingerprint, []).append(r)
    return groups


def run(args: argparse.Namespace) -> int:
    from metamem.evaluation.compare import paired_difference, paired_markdown
    from metamem.evaluation.run_report import protocol_line

    rows = load_rows(list(args.results))
    if args.presentations < 1:
        raise ValueError(f"--presentations {args.presentations}: give 1 or more")
    if args.pairs:
        return _run_pairs(args, rows)
    groups = by_protocol(rows)
    if all(len(g) < 2 for g in groups.values()):
        what = (f"{args.results[0]}: one row only" if len(rows) == 1 else
                f"no two of the {len(rows)} rows were scored on the same episodes (fingerprints "
                f"{', '.join(fp[:12] for fp in groups)})")
        raise ValueError(f"{what}: a comparison needs two rows of one protocol; score them with the "
                         f"same eval protocol (eval.split, eval.n_way, eval.k_shot, eval.n_query, "
                         f"eval.episodes, eval.seed)")
    parts, skipped, plots = [], [], []
    for group in groups.values():
        base = pick_baseline(group, args.baseline)
        if len(group) < 2 or base is None:
            skipped.append(group)
            continue
        a = group[base]
        diffs = [paired_difference(a, b, args.scoring) for i, b in enumerate(group) if i != base]
        header = (f"{protocol_line(a)}: paired over {diffs[0].episodes} episodes, {diffs[0].scoring} "
                  f"scoring; B − A in points ± the paired 95% half-width")
        parts.append(header + "\n\n" + paired_markdown(diffs, presentations=args.presentations))
        plots.append(diffs)
    if not parts:
        names = ", ".join(repr(r.learner) for r in rows)
        raise ValueError(f"--baseline {args.baseline!r} matches no row of a protocol with two or "
                         f"more rows ({names}): give a part of one learner name")
    for group in skipped:
        why = "its only row" if len(group) == 1 else f"no row named like {args.baseline!r}"
        print(f"note: not compared: {protocol_line(group[0])} ({why})", file=sys.stderr)
    _emit("\n".join(parts), args.out)
    if args.plot is not None:
        from metamem.evaluation.plots import plot_paired_differences

        for i, diffs in enumerate(plots):
            path = args.plot if i == 0 else args.plot.with_name(f"{args.plot.stem}_{i + 1}{args.plot.suffix}")
            if plot_paired_differences(diffs, path) is None:
                print(f"note: no plot for {diffs[0].fingerprint[:12]}: no differences by presentation "
                      f"(set scoring, or results.json written before they were kept)", file=sys.stderr)
            else:
                print(f"written: {path}")
    return 0


def _run_pairs(args: argparse.Namespace, rows: list[EvalResult]) -> int:
    """``--pairs``: rows A1 B1 A2 B2 ...; one difference per pair, then their mean over runs."""
    from metamem.evaluation.compare import over_runs, paired_difference, paired_markdown, points

    if args.baseline is not None:
        raise ValueError("--pairs takes the baseline of each pair from the order (A1 B1 A2 B2 ...); "
                         "drop --baseline")
    if len(rows) < 2 or len(rows) % 2:
        raise ValueError(f"--pairs needs an even number of rows (A1 B1 A2 B2 ...), got {len(rows)}: "
                         f"{', '.join(repr(r.learner) for r in rows)}")
    diffs = [paired_difference(rows[i], rows[i + 1], args.scoring) for i in range(0, len(rows), 2)]
    summary = over_runs(diffs)
    lines = [f"{len(diffs)} pairs of runs, each paired over its episodes; B − A in points ± the "
             f"paired 95% half-width over episodes", "", paired_markdown(diffs, args.presentations),
             f"mean over the {summary.runs} pairs: {points(summary.diff, summary.ci95)} points "
             f"(Student-t 95% over runs; per pair: "
             f"{', '.join(f'{100 * v:+.2f}' for v in summary.diffs)})"]
    if summary.per_presentation:
        shown = summary.per_presentation[: args.presentations]
        lines.append("by presentation: " + ", ".join(
            f"{i + 1}: {points(m, c)}" for i, (m, c) in enumerate(shown)))
    _emit("\n".join(lines) + "\n", args.out)
    return 0


def _emit(text: str, out: Path | None) -> None:
    """Print the tables, and write them to ``out`` (atomically) when given."""
    from metamem.files import write_text

    print(text, end="")
    if out is not None:
        write_text(out, text)
        print(f"\nwritten: {out}")
