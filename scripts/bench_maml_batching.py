#!/usr/bin/env python
"""MAML on the CPU: the B episodes of a batch in one ``vmap`` against one episode at a time.

Under :func:`torch.func.vmap` every convolution of the B adapted networks becomes one grouped
convolution over B sets of weights. This script times both ways of running MAML's episodes
(``episode_batching="vmap"`` and ``"loop"``; ``"auto"`` picks the loop on the CPU) in the same
process, alternating, on synthetic images:

- a training step (forward + backward of the outer loss), second and first order;
- scoring without autograd, as ``metamem eval`` does (10 inner steps).

Shapes: Omniglot (Conv-4-64, 28x28, the paper's 1 inner step in training, 3 at test) and
mini-ImageNet (Conv-4-32, 84x84x3, 5 inner steps, 10 at test). Prints CPU seconds per
episode for each and the ratio vmap / loop (> 1: the loop is faster). Example (the run in
docs/benchmarks.md)::

    python scripts/bench_maml_batching.py --threads 1
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from metamem.learners import build_learner

CASES = [
    # name, image shape, conv4 width, inner steps, eval inner steps, N, K, Q (train), Q (eval), B
    ("omniglot 5w1s", (1, 28, 28), 64, 1, 3, 5, 1, 15, 15, 8),
    ("omniglot 20w5s", (1, 28, 28), 64, 1, 3, 20, 5, 5, 15, 4),
    ("mini-ImageNet 5w1s", (3, 84, 84), 32, 5, 10, 5, 1, 5, 15, 2),
    ("mini-ImageNet 5w5s", (3, 84, 84), 32, 5, 10, 5, 5, 5, 15, 2),
]


def cpu_per_call(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        c = time.process_time()
        fn()
        times.append(time.process_time() - c)
    return statistics.median(times)


def make_step(m: torch.nn.Module, train: bool, sx: torch.Tensor, sy: torch.Tensor, qx: torch.Tensor,
              qy: torch.Tensor, n: int) -> Callable[[], None]:
    """One timed call: a training pass (predict + cross-entropy + backward) or a no-grad score."""

    def step() -> None:
        if train:
            logits = m.predict(sx, sy, qx, n_way=n)
            F.cross_entropy(logits.reshape(-1, n), qy.reshape(-1)).backward()
        else:
            with torch.no_grad():
                m.predict(sx, sy, qx, n_way=n)

    return step


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s); CPU s per episode (median of "
          f"{args.repeats}); ratio = vmap / loop")
    for name, shape, width, steps, eval_steps, n, k, q, q_eval, b in CASES:
        models = {
            mode: build_learner("maml", n_way=n, image_shape=shape, backbone_channels=width, inner_steps=steps,
                                inner_lr=0.01, eval_inner_steps=eval_steps, episode_batching=mode)
            for mode in ("vmap", "loop")
        }
        models["loop"].load_state_dict(models["vmap"].state_dict())
        sx = torch.rand(b, n * k, *shape, generator=g)
        sy = torch.arange(n).repeat_interleave(k).repeat(b, 1)
        qx = torch.rand(b, n * q, *shape, generator=g)
        qy = torch.arange(n).repeat_interleave(q).repeat(b, 1)
        qx_eval = torch.rand(b, n * q_eval, *shape, generator=g)
        for what in ("train, second order", "train, first order", "score, no grad"):
            t: dict[str, float] = {}
            for mode in ("vmap", "loop"):  # same process, one after the other
                m = models[mode]
                m.first_order = what == "train, first order"
                m.train(what.startswith("train"))

                step = make_step(m, what.startswith("train"), sx, sy, qx if what.startswith("train") else qx_eval,
                                 qy, n)
                t[mode] = cpu_per_call(step, args.repeats) / b
            print(f"{name:20s} {what:21s} vmap {t['vmap']:.3f}  loop {t['loop']:.3f}  ratio {t['vmap'] / t['loop']:.2f}x",
                  flush=True)


if __name__ == "__main__":
    main()
