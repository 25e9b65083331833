"""``metamem eval RUN_DIR_OR_CHECKPOINT... [key=value ...] [--out DIR]``.

Evaluates every checkpoint on the fixed protocol of its ``eval:`` section, changed by
overrides (``eval.split=``, ``eval.n_way=``, ``eval.k_shot=``, ``eval.n_query=``,
``eval.episodes=``, ``eval.seed=``, ``eval.protocol=set|sequence|both``,
``eval.batch_size=``, ``eval.within_group=``, ``eval.data_options=``, ``device=``). A list value sweeps:
``metamem eval runs/a runs/b eval.n_way=[5,20] eval.k_shot=[1,5]`` scores both runs on the
four combinations and prints one table (one row per checkpoint x combination). Results are
written to ``--out`` as ``results.json``/``.md``/``.csv`` plus plots.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from metamem.cli._threads import add_threads_option, apply_threads
from metamem.evaluation.runs import OVERRIDE_KEYS, parse_overrides, sweep


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval",
        help="evaluate checkpoints on a fixed episode protocol (set and sequence scorings)",
        description=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "items", nargs="+", metavar="RUN_OR_OVERRIDE",
        help="run directories / checkpoint files, then key=value overrides "
        f"({', '.join(OVERRIDE_KEYS)}); a [list] value sweeps",
    )
    p.add_argument("--out", type=Path, default=None,
                   help="output folder (default: RUN_DIR/eval for one run directory, "
                   "else ./metamem-eval)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--no-plots", action="store_true", help="do not draw figures")
    p.add_argument("--inspect", action="store_true",
                   help="also draw episode 0's memory trace, NSM program weights and sequential-Jacobian "
                   "saliency (sequence learners) into OUT/inspect[_i]")
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


def run(args: argparse.Namespace) -> int:
    apply_threads(args.threads)
    from metamem.evaluation.plots import (
        plot_accuracy_vs_shots,
        plot_memory_trace,
        plot_per_presentation,
    )
    from metamem.evaluation.report import to_markdown, write_results

    paths, items = split_items(args.items)
    overrides = parse_overrides(items)
    plots = not args.no_plots
    results = sweep(paths, overrides, progress=not args.no_progress, keep_trace=plots)
    out = args.out if args.out is not None else default_out(paths)
    written = write_results(results, out)
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
            written.update({f"{k}{i}": v for k, v in inspect_run(path, sub).items()})
    sys.stdout.write(to_markdown(results))
    for path in written.values():
        if path is not None:
            print(f"wrote {path}", file=sys.stderr)
    return 0
