"""How long metamem takes to score 10,000 5-way 1-shot episodes with a paper-size MANN.

The model is untrained (the time does not depend on the weights): LSTM 200, memory 128x40,
4 read heads, LRU writes, on Omniglot ``minimal/test`` at 20x20 with rotations, 9 queries per
class (T = 50 steps, 10 presentations per class as in Santoro et al.). Prints wall and CPU
time and the protocol fingerprint.

Usage::

    python scripts/bench_eval.py --protocol sequence          # or set, both
    python scripts/bench_eval.py --episodes 1000 --threads 2
"""

from __future__ import annotations

import argparse
import resource
import time

import torch

import metamem
from metamem.learners import build_learner


def cpu_seconds() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--protocol", choices=["set", "sequence", "both"], default="sequence")
    p.add_argument("--episodes", type=int, default=10_000)
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    ds = metamem.load_dataset("omniglot", split="minimal/test", image_size=20, rotations=True)
    torch.manual_seed(0)  # the untrained weights (entry point: allowed to seed)
    mann = build_learner("mann", n_way=5, image_shape=ds.image_shape, controller_size=200,
                         slots=128, width=40, read_heads=4)
    wall, cpu = time.perf_counter(), cpu_seconds()
    res = metamem.evaluate(mann, ds, n_way=5, k_shot=1, n_query=9, episodes=args.episodes,
                           seed=1234, protocol=args.protocol, batch_size=args.batch_size,
                           device=args.device)
    wall, cpu = time.perf_counter() - wall, cpu_seconds() - cpu
    print(f"{args.episodes} episodes, protocol {args.protocol}, batch {args.batch_size}, "
          f"{args.threads} thread(s), {args.device}: {wall:.1f} s wall, {cpu:.1f} s CPU, "
          f"{args.episodes / wall:,.0f} episodes/s; fingerprint {res.fingerprint[:12]}")


if __name__ == "__main__":
    main()
