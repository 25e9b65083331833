"""``metamem prepare NAME [--root DIR] [--from PATH]``: fetch or install verified dataset files.

Omniglot: without ``--from``, download the official archives, check their md5 and extract
them. With ``--from PATH``: take a local zip or folder (one set, or a folder holding both),
verify its images against the committed content manifests (a re-zipped intact copy passes;
a changed, missing or extra image is refused, naming the first one) and install it into ROOT.

CIFAR-FS, FC100 (both the CIFAR-100 python archive) and CUB: download the official archive,
or install a local copy with ``--from PATH``; either way its md5 must be the official one.
tiered-ImageNet: ``--from PATH`` only (a folder of the pickle/npz release), checked against
the published class counts.
"""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "prepare",
        help="download and verify dataset archives (omniglot, cifar_fs, fc100, cub, tiered_imagenet)",
        description=(
            "Download the official Omniglot archives (images_background.zip, "
            "images_evaluation.zip), check their md5, and extract them into ROOT. The base "
            "URL can be overridden with --url or $METAMEM_OMNIGLOT_URL. With --from PATH, "
            "install a local copy instead (a zip or folder of one set, or a folder holding "
            "both), verified image by image against the official content. cifar_fs and fc100 "
            "fetch the official CIFAR-100 python archive, cub the official CUB_200_2011.tgz (md5 "
            "checked; --from PATH installs a local copy with the official md5); tiered_imagenet "
            "installs a local copy of the pickle/npz release (--from PATH), checked against the "
            "published class counts."
        ),
    )
    p.add_argument("dataset", choices=["omniglot", "cifar_fs", "fc100", "cub", "tiered_imagenet"],
                   help="dataset to prepare")
    p.add_argument(
        "--root",
        default=None,
        help="target folder (default $METAMEM_DATA/<folder> or ~/.cache/metamem/data/<folder>, "
        "<folder> being omniglot, cifar100, cub or tiered_imagenet)",
    )
    p.add_argument(
        "--sets",
        nargs="+",
        default=None,
        metavar="SET",
        help="official sets to fetch (default: background evaluation; with --from: every "
        "full set found; also background_small1, background_small2)",
    )
    p.add_argument("--url", default=None, help="base URL of the archives (overrides the env var)")
    p.add_argument("--from", dest="source", default=None, metavar="PATH",
                   help="install a local zip/folder (verified by content) instead of downloading")
    p.add_argument("--no-extract", action="store_true", help="keep the zip archives only")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.dataset != "omniglot":
        return _run_other(args)
    from metamem.data.download import (
        OMNIGLOT_FILES,
        omniglot_base_url,
        prepare_omniglot,
    )
    from metamem.data.paths import data_root

    unknown = [s for s in args.sets or () if s not in OMNIGLOT_FILES]
    if unknown:
        raise ValueError(f"unknown omniglot set {unknown[0]!r}; valid sets: {', '.join(sorted(OMNIGLOT_FILES))}")
    root = args.root if args.root is not None else data_root() / "omniglot"
    if args.source is not None:
        from metamem.data.verify import prepare_from

        sets = tuple(args.sets) if args.sets is not None else None
        print(f"verifying omniglot from {args.source} against the official content manifests")
        for p in prepare_from(args.source, root, sets=sets):
            print(f"ok  {p}")
        return 0
    args.sets = args.sets or ["background", "evaluation"]
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


def _run_other(args: argparse.Namespace) -> int:
    from metamem.data.archives import (
        ARCHIVE_OF,
        ARCHIVES,
        prepare_archive,
        prepare_tiered_imagenet,
    )

    if args.sets is not None or args.no_extract:
        raise ValueError(f"--sets and --no-extract apply to omniglot only, not {args.dataset}")
    if args.dataset == "tiered_imagenet":
        if args.source is None:
            raise ValueError(
                "tiered_imagenet has no official download with a published checksum; download the "
                "release (<split>_images_png.pkl and <split>_labels.pkl) by hand and run: "
                "metamem prepare tiered_imagenet --from FOLDER"
            )
        print(f"checking tiered_imagenet in {args.source} against the published class counts")
        for p in prepare_tiered_imagenet(args.source, args.root):
            print(f"ok  {p}")
        return 0
    a = ARCHIVES[ARCHIVE_OF[args.dataset]]
    if args.source is not None:
        print(f"verifying {a.filename} from {args.source} (md5 {a.md5})")
    else:
        print(f"fetching {a.filename} from {args.url or a.url} (md5 {a.md5})")
    path = prepare_archive(args.dataset, args.root, source=args.source, url=args.url, progress=not args.quiet)
    print(f"ok  {path}")
    return 0
