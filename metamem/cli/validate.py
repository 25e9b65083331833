"""``metamem validate FILE_OR_DIR... [key=value ...]``: check experiment configs without running them.

A folder stands for every ``*.yaml`` below it (recursively, in sorted order), so
``metamem validate experiments/`` needs no shell glob. Each file is loaded (``extends`` applied, overrides applied), typed, and checked exactly as
``metamem train`` checks it before writing anything (:func:`metamem.validate.check_experiment`):
registered names, builder keyword arguments (bound with ``inspect.signature``, types checked,
optimizer and scheduler built on a dummy parameter unless their values surely build), and the
data splits against the episode settings (``--no-data`` skips loading the data, and with it
the torch import). Nothing is trained or written.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("validate", help="check experiment YAMLs against the builders (runs nothing)")
    p.add_argument("items", nargs="+", metavar="FILE_OR_OVERRIDE",
                   help="experiment YAMLs, folders of them (every *.yaml below, recursively) "
                        "and dotted KEY=VALUE overrides applied to each")
    p.add_argument("--no-data", action="store_true",
                   help="skip loading the data splits (checks the config and builders only)")
    p.set_defaults(func=run)


def expand_folders(items: list[str]) -> list[str]:
    """``items`` with each folder replaced by the ``*.yaml`` files below it, sorted.

    Raises:
        ValueError: for a folder that holds no ``*.yaml`` file.
    """
    out: list[str] = []
    for item in items:
        path = Path(item)
        if not path.is_dir():
            out.append(item)
            continue
        found = sorted(str(p) for p in path.rglob("*.yaml") if p.is_file())
        if not found:
            raise ValueError(f"folder {item} holds no *.yaml file; give experiment YAMLs or a folder of them")
        out += found
    return out


def run(args: argparse.Namespace) -> int:
    from metamem.config import ConfigError, load_config
    from metamem.validate import check_experiment

    def reported(e: Exception) -> bool:
        if isinstance(e, (ConfigError, FileNotFoundError)):
            return True
        # only loading the data raises DatasetError: its module (and torch) is imported then,
        # so a config error is reported before paying for either
        base = sys.modules.get("metamem.data.base")
        return base is not None and isinstance(e, base.DatasetError)

    given = [i for i in args.items if "=" not in i or Path(i).exists()]
    overrides = [i for i in args.items if i not in given]
    files = expand_folders(given)
    if not files:
        raise ValueError("give at least one experiment YAML or a folder of them")
    failed = 0
    for file in files:
        try:
            cfg = load_config(file, overrides)
            check_experiment(cfg, source=file, require_learner=cfg.learner is not None,
                             data=not args.no_data)
        except Exception as e:
            if not reported(e):
                raise
            failed += 1
            msg = str(e).removeprefix(f"{file}: ")  # the file is named once, first
            print(f"FAIL {file}: {msg}", file=sys.stderr, flush=True)
            continue
        what = f"learner {cfg.learner.name}" if cfg.learner else "base file: no learner section"
        data = "" if args.no_data else ", splits fit the episodes"
        print(f"ok   {file} ({what}, dataset {cfg.data.name}{data})", flush=True)
    return 1 if failed else 0
