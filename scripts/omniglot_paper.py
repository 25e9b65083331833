"""The Omniglot reproduction (docs/results/omniglot_paper.md): export runs, draw their curves.

Export a finished training run as a committed, re-scorable run directory (config, metrics,
eval.json and the final weights only, no machine paths, <= 5 MB), then re-score it::

    python scripts/omniglot_paper.py export runs/omniglot_paper/protonet results/omniglot_paper/protonet
    metamem eval results/omniglot_paper/protonet eval.n_way=[5,20] eval.k_shot=[1,5] eval.n_query=1

Learning curves (training and validation accuracy against wall-clock and CPU minutes) of
committed rows, into one figure::

    python scripts/omniglot_paper.py curves protonet=results/omniglot_paper/protonet \\
        --out docs/results/omniglot_paper_curves.png
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from metamem.evaluation.plots import plot_learning_curves
from metamem.runs import read_metrics
from metamem.training.export import DEFAULT_MAX_BYTES, export_run


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("export", help="write the shareable copy of a run directory")
    e.add_argument("run", type=Path)
    e.add_argument("dest", type=Path)
    e.add_argument("--which", choices=["last", "best"], default="last",
                   help="final weights (default) or the best validation checkpoint")
    e.add_argument("--max-mb", type=float, default=DEFAULT_MAX_BYTES / 2**20)
    e.add_argument("--overwrite", action="store_true")
    e.add_argument("--half", action="store_true",
                   help="store the weights in float16 (half the size; score the copy, not the run)")
    e.add_argument("--no-weights", action="store_true",
                   help="leave the weights out (a network too large to share), with a note saying so")
    c = sub.add_parser("curves", help="accuracy against wall and CPU minutes (or steps) of runs")
    c.add_argument("runs", nargs="+", metavar="NAME=RUN_DIR")
    c.add_argument("--x", default="wall_s,cpu_s",
                   help="comma-separated panels' x axes among step, wall_s, cpu_s (default: wall_s,cpu_s)")
    c.add_argument("--out", type=Path, required=True)
    c.add_argument("--title", default=None)
    args = p.parse_args(argv)
    if args.cmd == "export":
        out = export_run(args.run, args.dest, which=args.which,
                         max_bytes=int(args.max_mb * 2**20), overwrite=args.overwrite,
                         weights=not args.no_weights,
                         weights_dtype=torch.float16 if args.half else None)
        size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
        print(f"exported {args.run} -> {out} ({size / 2**20:.2f} MiB)")
        return 0
    runs = {}
    for item in args.runs:
        # the name may hold '=' itself ("NUTM p=3=runs/x"): split at the first '=' after which
        # a run folder follows, else at the first '='
        cuts = [i for i, ch in enumerate(item) if ch == "="]
        if not cuts or cuts[0] == 0:
            print(f"error: {item!r} is not NAME=RUN_DIR", file=sys.stderr)
            return 2
        cut = next((i for i in cuts if (Path(item[i + 1:]) / "metrics.jsonl").is_file()), cuts[0])
        name, path = item[:cut], item[cut + 1:]
        metrics = Path(path) / "metrics.jsonl"
        if not metrics.is_file():
            print(f"error: {metrics} not found", file=sys.stderr)
            return 2
        runs[name] = read_metrics(metrics)
    try:
        out = plot_learning_curves(runs, args.out, title=args.title, x=args.x.split(","))
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
