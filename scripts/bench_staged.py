"""Peak memory and speed of the staged sampler on a split larger than memory.

Builds two decode-cache entries in ``--dir``:

* a tiered-ImageNet-sized train split, 448,695 x 3 x 84 x 84 uint8 (9.5 GB, 351 classes),
  written as a sparse file (its pages read as zeros: the figures measure the sampler and the
  page handling, not a disk);
* a split that fits, 38,400 x 3 x 84 x 84 (mini-ImageNet's train size, 813 MB), random pixels.

Batches are 16 episodes 5-way 1-shot 15-query (1,280 images, 27 MB uint8) drawn on the CPU.

* Speed: one process draws from the fitting split in memory (copied into RAM: the usual
  path, the baseline) and staged from its cache file (``store_budget=0``), alternating blocks
  of 10 batches (``--rounds`` rounds), so both see the same machine load; it reports the
  median episodes/s of each and their ratio.
* Memory: each of ``staged-big`` (the 9.5 GB split staged from its cache file) and
  ``mapped-big`` (the same split gathered through the memmap without staging, what a CPU
  sampler under the budget does: every page a batch touches stays resident) runs in a fresh
  process, ``--batches`` batches after 5 warm-up ones, and reports its resident memory
  before and after and its peak (``VmHWM``), and its episodes/s.

The files are deleted at the end (``--keep`` keeps them).

Usage::

    nice -n 10 python scripts/bench_staged.py --threads 1 --dir /work/tmp-staged
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

BIG, SMALL = (448_695, 351), (38_400, 64)
SHAPE = (3, 84, 84)


def _status(key: str) -> int:
    """``VmRSS`` / ``VmHWM`` of this process in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {key} in /proc/self/status")


def _entry(cache: Path, name: str, m: int, classes: int, fill: bool):
    from metamem.data.cache import Decoded, cached_decode, images_buffer, to_dataset

    labels = (np.arange(m, dtype=np.int64) * classes) // m

    def build() -> Decoded:
        out = images_buffer(name, (m, *SHAPE), cache_dir=cache)
        if fill:
            rng = np.random.default_rng(0)
            for i in range(0, m, 4096):
                out[i:i + 4096] = rng.integers(0, 256, out[i:i + 4096].shape, dtype=np.uint8)
        return Decoded(out, labels, [f"c{c}" for c in range(classes)])

    d, info = cached_decode(name, {"bench": name, "m": m}, build, cache_dir=cache)
    return to_dataset(d, name=name, split="train", info=info)


def speed(args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(args.threads)
    from metamem.episodes import EpisodeSampler

    ds = _entry(Path(args.dir), "small", *SMALL, fill=True)
    kw = dict(n_way=5, k_shot=1, n_query=15, batch_size=16, seed=0, reuse_buffers=True)
    inram = type(ds)(ds.images.clone(), ds.labels, ds.class_names, name=ds.name, split=ds.split)
    paths = {"memory": EpisodeSampler(inram, **kw), "staged": EpisodeSampler(ds, **kw, store_budget=0)}
    rates: dict[str, list[float]] = {k: [] for k in paths}
    for s in paths.values():
        for _ in range(3):
            s.sample()
    for _ in range(args.rounds):
        for k, s in paths.items():
            t0 = time.perf_counter()
            for _ in range(10):
                s.sample()
            rates[k].append(160 / (time.perf_counter() - t0))
    print(json.dumps({k: float(np.median(v)) for k, v in rates.items()}))


def child(args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(args.threads)
    from metamem.episodes import EpisodeSampler

    if args.mode == "speed":
        speed(args)
        return

    big = args.mode.endswith("-big")
    ds = _entry(Path(args.dir), "big" if big else "small", *(BIG if big else SMALL), fill=not big)
    budget = 0 if args.mode == "staged-big" else 1 << 62  # mapped-big: the memmap as the store
    s = EpisodeSampler(ds, n_way=5, k_shot=1, n_query=15, batch_size=16, seed=0, store_budget=budget,
                       reuse_buffers=True)
    for _ in range(5):
        s.sample()
    before = _status("VmRSS")
    t0 = time.perf_counter()
    for _ in range(args.batches):
        s.sample()
    dt = time.perf_counter() - t0
    print(json.dumps({"mode": args.mode, "images": len(ds), "eps_per_s": 16 * args.batches / dt,
                      "rss_before": before, "rss_after": _status("VmRSS"), "peak": _status("VmHWM"),
                      "read_mib": s.staged.bytes_read / 2**20 if s.staged is not None else 0}))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dir", default="/tmp/metamem-bench-staged", help="where the two cache entries go")
    p.add_argument("--batches", type=int, default=200)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rounds", type=int, default=10, help="speed: alternating blocks of 10 batches per path")
    p.add_argument("--modes", nargs="+", default=["speed", "staged-big", "mapped-big"])
    p.add_argument("--keep", action="store_true", help="keep the files")
    p.add_argument("--child", dest="mode", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.mode is not None:
        child(args)
        return
    import torch

    d = Path(args.dir)
    d.mkdir(parents=True, exist_ok=True)
    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, {args.threads} thread(s); {args.batches} batches "
          f"of 16 episodes 5-way 1-shot 15-query at 3x84x84; files in {d}", flush=True)
    try:
        t0 = time.perf_counter()
        _entry(d, "big", *BIG, fill=False)
        _entry(d, "small", *SMALL, fill=True)
        print(f"cache entries built in {time.perf_counter() - t0:.1f} s", flush=True)
        rows = {}
        for mode in args.modes:
            out = subprocess.run([sys.executable, __file__, "--child", mode, "--dir", str(d), "--batches",
                                  str(args.batches), "--threads", str(args.threads), "--rounds", str(args.rounds)],
                                 check=True, capture_output=True, text=True).stdout
            r = rows[mode] = json.loads(out.strip().splitlines()[-1])
            if mode == "speed":
                print(f"fitting split (38,400 images), median of {args.rounds} alternating blocks: in memory "
                      f"{r['memory']:.1f} episodes/s, staged from the file {r['staged']:.1f} episodes/s "
                      f"({r['staged'] / r['memory']:.2f}x)", flush=True)
                continue
            growth = r["rss_after"] - r["rss_before"]
            print(f"{mode:>10}: {r['images']:>7,} images, {r['eps_per_s']:7.1f} episodes/s, resident memory "
                  f"{r['rss_before'] / 2**20:5.0f} MiB after 5 warm-up batches, {r['rss_after'] / 2**20:5.0f} MiB "
                  f"after {args.batches} more ({growth / 2**20:+.0f} MiB), peak {r['peak'] / 2**20:5.0f} MiB; "
                  f"{r['read_mib']:.0f} MiB read from the file", flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
