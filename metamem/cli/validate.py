"""``metamem validate FILE... [key=value ...]``: check experiment configs without running them.

Each file is loaded (``extends`` applied, overrides applied), typed, and checked against the
registered builders (learner, dataset, optimizer and scheduler names; builder keyword
arguments bound with ``inspect.signature``). Nothing is loaded or built.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from metamem.config import ConfigError, load_config
from metamem.validate import validate_config


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("validate", help="check experiment YAMLs against the builders (runs nothing)")
    p.add_argument("items", nargs="+", metavar="FILE_OR_OVERRIDE",
                   help="experiment YAMLs and dotted KEY=VALUE overrides applied to each")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    files = [i for i in args.items if "=" not in i or Path(i).exists()]
    overrides = [i for i in args.items if i not in files]
    if not files:
        raise ValueError("give at least one experiment YAML")
    failed = 0
    for file in files:
        try:
            cfg = load_config(file, overrides)
            validate_config(cfg, source=file, require_learner=False)
        except (ConfigError, FileNotFoundError) as e:
            failed += 1
            print(f"FAIL {e}", file=sys.stderr)
            continue
        what = f"learner {cfg.learner.name}" if cfg.learner else "base file: no learner section"
        print(f"ok   {file} ({what}, dataset {cfg.data.name})")
    return 1 if failed else 0
