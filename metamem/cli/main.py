"""``metamem`` command-line entry point: ``metamem <command> [...]``.

Each command lives in its own module of :mod:`metamem.cli` exposing
``add_parser(subparsers)`` and ``run(args) -> int``.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

#: command name -> module under metamem.cli
COMMANDS: dict[str, str] = {
    "ls": "ls",
    "prepare": "prepare",
    "train": "train",
    "validate": "validate",
    "eval": "eval",
    "compare": "compare",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="metamem",
        description="Few-shot meta-learning with memory-augmented learners.",
    )
    from metamem._version import __version__

    parser.add_argument("--version", action="version", version=f"metamem {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in COMMANDS.values():
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
    try:
        return _main(argv)
    except BrokenPipeError:  # `metamem ls learners | head`: the reader has gone, say nothing
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no error at exit's flush
        return 141  # as a shell reports a process ended by SIGPIPE


def _main(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # KEY=VALUE overrides may follow options (`metamem train cfg.yaml --out x train.steps=5`);
    # argparse stops collecting a positional list at the first option, so gather the rest
    stray = [a for a in extra if a.startswith("-") or "=" not in a]
    target = next((k for k in ("overrides", "items") if hasattr(args, k)), None)
    if stray or (extra and target is None):
        parser.error(f"unrecognized arguments: {' '.join(stray or extra)}")
    if extra:
        setattr(args, target, list(getattr(args, target)) + extra)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    from metamem.registry import load_plugins

    load_plugins()  # after parsing: --help and usage errors answer without scanning packages
    _one_line_warnings()
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


def _one_line_warnings() -> None:
    """Show metamem's own warnings (a renamed config key...) as ``warning: MESSAGE``, one line."""
    import warnings

    default = warnings.formatwarning

    def fmt(message: Warning | str, category: type[Warning], *args: object, **kwargs: object) -> str:
        if category.__module__.startswith("metamem."):
            return f"warning: {message}\n"
        return default(message, category, *args, **kwargs)  # type: ignore[arg-type]

    warnings.formatwarning = fmt  # type: ignore[assignment]


if __name__ == "__main__":
    sys.exit(main())
