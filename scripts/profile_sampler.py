"""Profile EpisodeSampler.sample(): which ops and kernels one batch costs, and how many.

Prints torch.profiler's table for ``--calls`` calls after a warm-up, sorted by device time on a
GPU (by CPU time otherwise), and the number of ops and of GPU kernel launches per call: the
figures that say whether the index draw or the gather dominates at a given batch size.

    python scripts/profile_sampler.py --device cuda --batch-size 1024
    python scripts/profile_sampler.py --n-way 20 --k-shot 5 --n-query 5 --batch-size 32
"""
from __future__ import annotations

import argparse

import torch
from torch.profiler import ProfilerActivity, profile

import metamem
from metamem.episodes import EpisodeSampler


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch-size", type=int, default=1024)
    p.add_argument("--n-way", type=int, default=5)
    p.add_argument("--k-shot", type=int, default=1)
    p.add_argument("--n-query", type=int, default=15)
    p.add_argument("--calls", type=int, default=32, help="profiled sample() calls")
    p.add_argument("--rows", type=int, default=15, help="rows of the op table")
    args = p.parse_args()
    dev = torch.device(args.device)
    ds = metamem.load_dataset("omniglot", split="background_small1", image_size=28)
    sampler = EpisodeSampler(ds, n_way=args.n_way, k_shot=args.k_shot, n_query=args.n_query,
                             batch_size=args.batch_size, device=dev, seed=0, reuse_buffers=True)
    sync = (lambda: torch.cuda.synchronize(dev)) if dev.type == "cuda" else (lambda: None)
    held = None
    for _ in range(2 * args.calls):  # warm-up: allocator, draw-ahead caches
        held = None
        held = sampler.sample()
    sync()
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev.type == "cuda" else [])
    with profile(activities=acts) as prof:
        for _ in range(args.calls):
            held = None
            held = sampler.sample()
        sync()
    del held
    events = prof.key_averages()
    sort = "self_cuda_time_total" if dev.type == "cuda" else "self_cpu_time_total"
    print(f"{args.n_way}-way {args.k_shot}-shot {args.n_query}-query, batch {args.batch_size}, "
          f"{args.calls} calls on {dev}, torch {torch.__version__}")
    print(events.table(sort_by=sort, row_limit=args.rows))
    ops = sum(e.count for e in events if e.key.startswith("aten::"))
    print(f"aten ops per call: {ops / args.calls:.1f}")
    if dev.type == "cuda":
        launches = sum(e.count for e in events if e.key in ("cudaLaunchKernel", "cudaLaunchKernelExC",
                                                            "cuLaunchKernel", "cuLaunchKernelEx"))
        print(f"kernel launches per call: {launches / args.calls:.1f}")


if __name__ == "__main__":
    main()
