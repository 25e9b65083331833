"""``metamem`` command-line entry point: ``metamem <command> [...]``.

Each command lives in its own module of :mod:`metamem.cli` exposing
``add_parser(subparsers)`` and ``run(args) -> int``.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Sequence

#: command name -> module under metamem.cli
COMMANDS: dict[str, str] = {
    "ls": "ls",
    "prepare": "prepare",
    "train": "train",
    "validate": "validate",
    "eval": "eval",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="metamem",
        description="Few-shot meta-learning with memory-augmented learners.",
    )
    from metamem import __version__

    parser.add_argument("--version", action="version", version=f"metamem {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module in COMMANDS.items():
        try:
            mod = importlib.import_module(f"metamem.cli.{module}")
        except ModuleNotFoundError as e:  # command not built yet in this checkout
            if e.name == f"metamem.cli.{module}":
                continue
            raise
        mod.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the process exit code."""
    from metamem.registry import load_plugins

    load_plugins()
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError, FileExistsError, RuntimeError) as e:
        if getattr(args, "traceback", False):
            raise
        print(f"metamem {args.command}: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
