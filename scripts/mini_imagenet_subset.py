"""Write a subset of mini-ImageNet (zips + matching split CSVs) small enough to upload.

The first N images of every class of each split (by filename, as the Ravi CSV lists them) are
copied, unchanged, from ``SOURCE/<split>.zip`` into ``OUT/<split>.zip`` (stored, not
recompressed), and ``OUT/<split>.csv`` lists them. Load it with
``data.options.root=OUT data.options.split_dir=OUT``. ``scripts/gpu_check.sh`` used one
(60 train, 100 test images a class, 19 MB) on a device machine that could not reach the full
zips. The files are written under temporary names and renamed when complete.

    python scripts/mini_imagenet_subset.py --out .devdata/mini
    python scripts/mini_imagenet_subset.py --source /data/mini_imagenet --split train=60 --split test=100
"""
from __future__ import annotations

import argparse
import csv
import os
import zipfile
from collections import defaultdict
from pathlib import Path

from metamem.data.mini_imagenet import read_split_csv
from metamem.data.paths import bundled_dir


def write_subset(source: Path, out: Path, split: str, per_class: int) -> tuple[int, int]:
    """Write ``out/<split>.zip`` and ``out/<split>.csv``; return (classes, images)."""
    rows = read_split_csv(bundled_dir("mini_imagenet") / f"{split}.csv")
    by_class: dict[str, list[str]] = defaultdict(list)
    for filename, label in rows:
        by_class[label].append(filename)
    keep = [(f, label) for label, files in by_class.items() for f in files[:per_class]]
    src = source / f"{split}.zip"
    if not src.is_file():
        raise SystemExit(f"mini_imagenet_subset: {src} not found; pass --source DIR holding {split}.zip")
    out.mkdir(parents=True, exist_ok=True)
    tmp_zip, tmp_csv = out / f".{split}.zip.tmp", out / f".{split}.csv.tmp"
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(tmp_zip, "w", zipfile.ZIP_STORED) as zout:
        for filename, _ in keep:
            zout.writestr(f"images/{filename}", zin.read(f"images/{filename}"))
    with open(tmp_csv, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["filename", "label"])
        w.writerows(keep)
    os.replace(tmp_zip, out / f"{split}.zip")
    os.replace(tmp_csv, out / f"{split}.csv")
    return len(by_class), len(keep)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--source", type=Path, default=Path("../shared/data/mini_imagenet"),
                   help="folder holding the split zips (images/<filename>)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--split", action="append", default=None, metavar="SPLIT=N",
                   help="a split and its images per class (default train=60 and test=100)")
    args = p.parse_args()
    for item in args.split or ["train=60", "test=100"]:
        split, _, n = item.partition("=")
        if not n.isdigit() or int(n) < 1:
            raise SystemExit(f"mini_imagenet_subset: --split {item!r} must be SPLIT=N with N >= 1, e.g. test=100")
        classes, images = write_subset(args.source, args.out, split, int(n))
        size = (args.out / f"{split}.zip").stat().st_size / 2**20
        print(f"{split}: {classes} classes, {images} images, {size:.1f} MiB -> {args.out / (split + '.zip')}")


if __name__ == "__main__":
    main()
