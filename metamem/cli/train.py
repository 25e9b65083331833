"""``metamem train CONFIG [key=value ...] [--out DIR]`` and ``metamem train --resume RUN_DIR``.

This entry point is the only place that touches the global torch RNG: it seeds it from the
config's ``seed`` (the learner's initial weights come from it) and, on ``--resume``, restores
the states saved in ``checkpoints/last.pt``. The same command runs under
``torchrun --nproc_per_node=P -m metamem train ...``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from metamem.cli._threads import add_threads_option, apply_threads


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train", help="train a learner from an experiment YAML",
        description="Train a learner. Overrides are dotted KEY=VALUE pairs, e.g. "
        "train.steps=2000 learner.slots=64 device=cpu (values parsed as YAML).",
    )
    p.add_argument("config", nargs="?", help="experiment YAML (omit with --resume)")
    p.add_argument("overrides", nargs="*", help="dotted KEY=VALUE overrides")
    p.add_argument("--out", help="run directory (default: runs/<config name>)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue RUN_DIR from checkpoints/last.pt")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run directory")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--no-eval", action="store_true", help="skip the final test-split evaluation")
    add_threads_option(p)
    p.add_argument("--traceback", action="store_true", help="show the full traceback on errors")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from metamem.config import load_config
    from metamem.runs import load_checkpoint, restore_global_rng
    from metamem.training import train

    apply_threads(args.threads)
    overrides = list(args.overrides)
    if args.resume:
        if args.config:  # with --resume every positional is an override
            overrides.insert(0, args.config)
        run_dir = Path(args.resume)
        config_file = run_dir / "config.yaml"
        if not config_file.is_file():
            raise FileNotFoundError(f"cannot resume: {config_file} not found; is {run_dir} a run directory?")
        cfg = load_config(config_file, overrides)
        ckpt = load_checkpoint(run_dir, which="last")
        restore_global_rng(ckpt)
    else:
        if not args.config:
            raise ValueError("give an experiment YAML (or --resume RUN_DIR)")
        cfg = load_config(args.config, overrides)
        run_dir = Path(args.out) if args.out else Path("runs") / Path(args.config).stem
        torch.manual_seed(cfg.seed)
        config_file = Path(args.config)
    result = train(cfg, run_dir, resume=bool(args.resume), overwrite=args.overwrite,
                   progress=not args.no_progress, final_eval=not args.no_eval,
                   source=str(config_file))
    if result.run_dir is not None:
        if result.last_metrics:
            summary = {k: result.last_metrics[k] for k in ("step", "loss", "acc") if k in result.last_metrics}
            summary["best_val_acc"] = result.best_val
            print(f"run directory: {result.run_dir}  {json.dumps(summary)}")
        elif result.evaluation:
            print(f"run directory: {result.run_dir}  (at step {result.step}; the missing final "
                  "evaluation was run)")
        else:
            print(f"run directory: {result.run_dir}  already complete at step {result.step}; "
                  "raise train.steps (a KEY=VALUE override) to continue it")
        for res in result.evaluation or []:
            _print_eval(res)
    return 0


def _print_eval(res: dict) -> None:
    proto = res.get("protocol", {})
    head = f"eval {proto.get('split')} {proto.get('n_way')}-way {proto.get('k_shot')}-shot"
    if proto.get("variable_limits"):
        head = f"eval {proto.get('split')} variable ways and shots ({proto['variable_limits']})"
    for name, score in res.get("scores", {}).items():
        line = f"{head} [{name}]: {100 * score['mean']:.2f}% ± {100 * score['ci95']:.2f}"
        pres = score.get("per_presentation")
        if pres:
            line += "  by presentation: " + " ".join(
                f"{100 * p:.1f}" if p is not None else "-" for p in pres[:10]
            )
        print(line)
    for name, why in (res.get("declined") or {}).items():
        print(f"{head} [{name}]: declined: {why}")
