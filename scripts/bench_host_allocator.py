#!/usr/bin/env python
"""CPU scoring cost of MAML episodes under glibc's default allocator and under the commands'
setting (:func:`metamem.device.keep_freed_memory`), with and without MAML's no-grad chunks.

Each variant runs in its own process (an allocator setting is process-wide), on the same
synthetic 20-way 5-shot 15-query episodes (28x28, Conv-4-64, 10 inner steps, a zero head per
episode), scored under ``torch.no_grad()`` as ``metamem eval`` scores them, ``--batch``
episodes per call:

- ``system, one vmap``: glibc's defaults, the whole batch in one ``vmap`` (metamem before
  commit 9e85626);
- ``kept, one vmap``: the commands' allocator setting only;
- ``kept, chunks``: the setting and MAML's ``eval_chunk_images=512`` (what the commands do now).

Prints, per variant, CPU seconds per episode (user + system, from ``getrusage``), the system
part, minor page faults per episode, and the ratio to the first variant measured in the same
run. Example (the run in docs/benchmarks.md, "Host allocator")::

    python scripts/bench_host_allocator.py --episodes 16 --batch 8
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

VARIANTS = {
    "system, one vmap": {"METAMEM_MALLOC": "system", "CHUNK": "none"},
    "kept, one vmap": {"METAMEM_MALLOC": "", "CHUNK": "none"},
    "kept, chunks": {"METAMEM_MALLOC": "", "CHUNK": "512"},
}


def child(episodes: int, batch: int, n_way: int, k_shot: int, n_query: int) -> dict[str, float]:
    """Score the episodes in this process; returns CPU seconds, system seconds, faults."""
    import resource

    import torch

    from metamem.device import keep_freed_memory
    from metamem.learners import build_learner

    torch.set_num_threads(1)
    keep_freed_memory()  # a no-op under METAMEM_MALLOC=system
    chunk = os.environ["CHUNK"]
    model = build_learner("maml", n_way=5, image_shape=(1, 28, 28), inner_steps=1,
                          eval_inner_steps=10, eval_chunk_images=None if chunk == "none" else int(chunk))
    model.eval()
    g = torch.Generator().manual_seed(0)
    sx = torch.rand(batch, n_way * k_shot, 1, 28, 28, generator=g)
    sy = torch.arange(n_way).repeat_interleave(k_shot).repeat(batch, 1)
    qx = torch.rand(batch, n_way * n_query, 1, 28, 28, generator=g)

    def run(n: int) -> None:
        with torch.no_grad():
            for _ in range(n // batch):
                model.predict(sx, sy, qx, n_way=n_way)

    run(batch)  # warm-up: first allocations, one-time setup
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    run(episodes)
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    n = (episodes // batch) * batch
    return {
        "cpu_s": (r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime) / n,
        "sys_s": (r1.ru_stime - r0.ru_stime) / n,
        "faults": (r1.ru_minflt - r0.ru_minflt) / n,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--episodes", type=int, default=16, help="episodes scored per variant (after one warm-up batch)")
    p.add_argument("--batch", type=int, default=8, help="episodes per predict call (metamem eval's batch)")
    p.add_argument("--n-way", type=int, default=20)
    p.add_argument("--k-shot", type=int, default=5)
    p.add_argument("--n-query", type=int, default=15)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.episodes < a.batch or a.batch < 1:
        p.error(f"--episodes ({a.episodes}) must be >= --batch ({a.batch}) >= 1")
    if a.child:
        print(json.dumps(child(a.episodes, a.batch, a.n_way, a.k_shot, a.n_query)))
        return 0
    print(f"MAML eval, {a.n_way}-way {a.k_shot}-shot {a.n_query}-query, Conv-4 28x28, 10 inner steps, "
          f"batch {a.batch}, {a.episodes} episodes per variant, one thread")
    base = None
    args = [sys.executable, __file__, "--child", "--episodes", str(a.episodes), "--batch", str(a.batch),
            "--n-way", str(a.n_way), "--k-shot", str(a.k_shot), "--n-query", str(a.n_query)]
    for name, env in VARIANTS.items():
        out = subprocess.run(args, env={**os.environ, **env, "OMP_NUM_THREADS": "1"},
                             capture_output=True, text=True, check=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        base = base or r["cpu_s"]
        print(f"{name:18s} {r['cpu_s']:6.2f} CPU-s/episode (system {r['sys_s']:5.2f})  "
              f"{r['faults']:10,.0f} faults/episode  {base / r['cpu_s']:5.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
