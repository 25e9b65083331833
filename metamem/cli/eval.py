"""metamem eval RUN... [key=value ...] [--out DIR] [--overwrite]

Scores trained runs (run directories or checkpoint files) on one common protocol of fixed
episodes: the first run's eval: section, changed by the overrides, and prints one table
with the protocol above it. Overrides:

  eval.split=, eval.n_way=, eval.k_shot=, eval.n_query=, eval.episodes=, eval.seed=,
  eval.protocol=set|sequence|both, eval.batch_size=, eval.within_group=,
  eval.data_options=                                                      the protocol
  device=auto|cpu|cuda                                                    where to run
  data=folder:PATH  or  data=NAME                                         other data
  data.options.KEY=VALUE                                                  loader options

Weights kept elsewhere: a run directory whose checkpoints/weights.yaml names a url: and a
sha256: loads them from there (downloaded once, checked); --weights PATH_OR_URL --sha256 HEX
does the same for one run from the command line.

A list value sweeps (quote it in the shell):
  metamem eval runs/a runs/b 'eval.n_way=[5,20]' 'eval.k_shot=[1,5]'
scores both runs on the four combinations (one row per run x combination).

Other data gets the run's preprocessing (image size, channels, inversion), and a warning
names any large difference in pixel statistics (polarity, mean ink):
  metamem eval runs/mann_quick data=folder:runs/shapes 'eval.k_shot=1' 'eval.n_query=5'

Asking for k_shot or n_query on a run scored with the sequence protocol (MANN) switches to
the set protocol with a note; add eval.protocol=sequence to keep it. Runs that cannot
share a protocol (different data, or more ways than a MANN/LSTM/MetaNet run's
learner.max_way label units) are refused with the rows named. Every learner can be scored at
any way up to that: a 5-way-trained MAML gets a zero head per episode, MetaNet fast weights
sized per episode, MANN/LSTM their first N label units (docs/evaluation.md).

Output: results.json/.md/.csv and plots in --out (default RUN/eval for one run, else
./metamem-eval). A folder that already holds results is never overwritten silently: the
new results go to a timestamped sub-folder, or replace the old ones (plots included) with
--overwrite.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

from metamem.cli._parser import doc_parser
from metamem.cli._threads import add_threads_option, apply_threads

#: files ``metamem eval`` writes (removed first by --overwrite, so no stale plot stays)
OUTPUT_GLOBS = ("results.json", "results.md", "results.csv", "per_presentation.png",
                "accuracy_vs_shots.png", "memory_trace_*.png")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = doc_parser(sub, "eval", "score trained runs on one fixed episode protocol (any dataset), "
                   "one table", __doc__)
    p.add_argument(
        "items", nargs="+", metavar="RUN_OR_OVERRIDE",
        help="run directories / checkpoint files, then key=value overrides (see above)",
    )
    p.add_argument("--out", type=Path, default=None,
                   help="output folder (default: RUN/eval for one run directory, else ./metamem-eval)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the results already in the output folder (default: a new "
                   "timestamped sub-folder)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--no-plots", action="store_true", help="do not draw figures")
    p.add_argument("--inspect", action="store_true",
                   help="also draw episode 0's memory trace, NSM program weights and sequential-Jacobian "
                   "saliency (sequence learners) into OUT/inspect[_i]")
    p.add_argument("--weights", default=None, metavar="PATH_OR_URL",
                   help="the run's weights from elsewhere: an http(s) URL (downloaded once into "
                   "$METAMEM_CACHE/weights, needs --sha256), a checkpoint file, or a folder holding one")
    p.add_argument("--sha256", default=None, metavar="HEX",
                   help="the sha256 of --weights (required for a URL, checked for a file)")
    add_threads_option(p)
    p.add_argument("--traceback", action="store_true", help="show the traceback of an error")
    p.set_defaults(func=run)


def split_items(items: list[str]) -> tuple[list[str], list[str]]:
    """Separate run paths from ``key=value`` overrides (an existing path is always a path)."""
    paths, overrides = [], []
    for it in items:
        if "=" in it and not Path(it).exists():
            overrides.append(it)
        else:
            paths.append(it)
    if not paths:
        raise ValueError("no run directory or checkpoint given; usage: metamem eval RUN_DIR... [key=value ...]")
    return paths, overrides


def default_out(paths: list[str]) -> Path:
    if len(paths) == 1 and Path(paths[0]).is_dir():
        return Path(paths[0]) / "eval"
    return Path("metamem-eval")


def _existing_outputs(out: Path) -> list[Path]:
    return sorted({p for g in OUTPUT_GLOBS for p in out.glob(g) if p.is_file()})


def output_folder(out: Path, overwrite: bool) -> Path:
    """Where to write: ``out`` (emptied of earlier results with ``overwrite``), or a new
    timestamped sub-folder of it when it already holds results."""
    old = _existing_outputs(out) if out.is_dir() else []
    if not old:
        return out
    if overwrite:
        for p in old:
            p.unlink()
        return out
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    new = out / stamp
    n = 1
    while new.exists():
        n += 1
        new = out / f"{stamp}-{n}"
    print(f"{out} already holds results; writing to {new} (--overwrite replaces them)", file=sys.stderr)
    return new


def run(args: argparse.Namespace) -> int:
    apply_threads(args.threads)
    from metamem.evaluation.plots import (
        plot_accuracy_vs_shots,
        plot_memory_trace,
        plot_per_presentation,
    )
    from metamem.evaluation.report import to_markdown, write_results
    from metamem.evaluation.sweeps import parse_sweep, plan_sweep, sweep

    paths, items = split_items(args.items)
    overrides = parse_sweep(items)
    plots = not args.no_plots
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        plan = plan_sweep(paths, overrides, weights=args.weights, sha256=args.sha256)
        for note in plan.notes:
            print(f"note: {note}", file=sys.stderr)
        results = sweep(paths, overrides, progress=not args.no_progress, keep_trace=plots, plan=plan)
    for w in caught:
        print(f"warning: {w.message}", file=sys.stderr)
    out = output_folder(args.out if args.out is not None else default_out(paths), args.overwrite)
    header = plan.describe()
    written = write_results(results, out, header=header)
    if plots:
        written["per_presentation"] = plot_per_presentation(results, out / "per_presentation.png")
        if len({r.protocol.k_shot for r in results}) > 1:
            written["accuracy_vs_shots"] = plot_accuracy_vs_shots(
                results, out / "accuracy_vs_shots.png",
                scoring="set" if any("set" in r.scores for r in results) else "sequence",
            )
        for i, r in enumerate(results):
            if r.trace is not None:
                written[f"trace{i}"] = plot_memory_trace(
                    r.trace, out / f"memory_trace_{i}.png", title=f"{r.learner}, episode 0"
                )
    if args.inspect:
        from metamem.evaluation.inspect_memory import inspect_run

        for i, path in enumerate(paths):
            sub = out / ("inspect" if len(paths) == 1 else f"inspect_{i}")
            written.update({f"{k}{i}": v for k, v in inspect_run(path, sub, weights=args.weights,
                                                                  sha256=args.sha256).items()})
    sys.stdout.write(header + "\n\n" + to_markdown(results))
    for r in results:  # scorings a learner cannot do in bounded, linear-in-T cost
        for scoring, why in (r.declined or {}).items():
            print(f"note: {r.learner}: {scoring} scoring declined: {why}", file=sys.stderr)
    for path in written.values():
        if path is not None:
            print(f"wrote {path}", file=sys.stderr)
    return 0
