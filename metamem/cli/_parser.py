"""The sub-parser of a command whose module docstring is its ``--help`` text."""

from __future__ import annotations

import argparse


def doc_parser(
    sub: argparse._SubParsersAction, name: str, help: str, doc: str | None
) -> argparse.ArgumentParser:
    """``sub.add_parser(name)`` described by ``doc`` minus its first paragraph (the usage
    line), with the docstring's line breaks kept."""
    return sub.add_parser(
        name, help=help, description=(doc or "").split("\n\n", 1)[-1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
