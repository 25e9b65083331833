"""Decode time and cache size of mini-ImageNet splits read straight from their zips.

For each split: the time of the first load (decode every JPEG into the uint8 cache), the
time of a second load (a cache hit: memory-mapped ``.npy``), the cache entry's size on disk
and the images' size in memory (``M x 3 x 84 x 84`` bytes).

Usage::

    python scripts/bench_decode.py --root ../shared/data/mini_imagenet
    python scripts/bench_decode.py --root ../shared/data/mini_imagenet --cache-dir /tmp/c --splits test
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch

import metamem


def dir_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.iterdir() if f.is_file())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", default=str(Path(__file__).resolve().parents[1].parent / "shared" / "data"
                                         / "mini_imagenet"), help="folder holding <split>.zip")
    p.add_argument("--splits", nargs="+", default=["train", "val", "test"])
    p.add_argument("--cache-dir", default=None, help="decode cache root (default $METAMEM_CACHE or ~/.cache/metamem)")
    p.add_argument("--image-size", type=int, default=84)
    args = p.parse_args()
    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs; root {args.root}")
    for split in args.splits:
        t0, c0 = time.perf_counter(), time.process_time()
        ds = metamem.load_dataset("mini_imagenet", split=split, root=args.root, layout="zip",
                                  image_size=args.image_size, cache_dir=args.cache_dir)
        first, first_cpu = time.perf_counter() - t0, time.process_time() - c0
        t1 = time.perf_counter()
        again = metamem.load_dataset("mini_imagenet", split=split, root=args.root, layout="zip",
                                     image_size=args.image_size, cache_dir=args.cache_dir)
        hit = time.perf_counter() - t1
        disk = dir_size(Path(ds.info["cache_path"]))
        mem = ds.images.numel() * ds.images.element_size()
        how = "decoded" if not ds.info["cache_hit"] else "cache hit (delete the entry to time a decode)"
        print(f"{split}: {len(ds):,} images x {tuple(ds.image_shape)}, {ds.num_classes} classes; "
              f"first load {first:.1f} s wall / {first_cpu:.1f} s CPU ({how}"
              f"{', decode ' + format(ds.info['decode_s'], '.1f') + ' s' if 'decode_s' in ds.info else ''}); "
              f"second load {hit * 1000:.0f} ms (hit={again.info['cache_hit']}); "
              f"cache on disk {disk / 2**20:.1f} MiB; images in memory {mem / 2**20:.1f} MiB", flush=True)


if __name__ == "__main__":
    main()
