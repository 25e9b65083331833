"""``metamem prepare omniglot [--root DIR]``: download, verify and extract dataset archives."""

from __future__ import annotations

import argparse

from metamem.data.download import OMNIGLOT_FILES, omniglot_base_url, prepare_omniglot
from metamem.data.paths import data_root


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "prepare",
        help="download and verify dataset archives (omniglot)",
        description=(
            "Download the official Omniglot archives (images_background.zip, "
            "images_evaluation.zip), check their md5, and extract them into ROOT. The base "
            "URL can be overridden with --url or $METAMEM_OMNIGLOT_URL."
        ),
    )
    p.add_argument("dataset", choices=["omniglot"], help="dataset to prepare")
    p.add_argument(
        "--root",
        default=None,
        help="target folder (default $METAMEM_DATA/omniglot or ~/.cache/metamem/data/omniglot)",
    )
    p.add_argument(
        "--sets",
        nargs="+",
        default=["background", "evaluation"],
        choices=sorted(OMNIGLOT_FILES),
        help="official sets to fetch (default: background evaluation)",
    )
    p.add_argument("--url", default=None, help="base URL of the archives (overrides the env var)")
    p.add_argument("--no-extract", action="store_true", help="keep the zip archives only")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    root = args.root if args.root is not None else data_root() / "omniglot"
    print(f"fetching omniglot {' '.join(args.sets)} from {omniglot_base_url(args.url)} into {root}")
    paths = prepare_omniglot(
        root,
        sets=tuple(args.sets),
        base_url=args.url,
        extract=not args.no_extract,
        progress=not args.quiet,
    )
    for p in paths:
        print(f"ok  {p}")
    return 0
