#!/usr/bin/env python
"""MAML on the CPU: the B episodes of a batch one at a time, side by side in grouped convolutions, or in one vmap.

MAML (Finn et al. 2017) adapts one copy of the network per episode. This script times the
ways of running the episodes of a batch (``MAML(episode_batching=...)``) in the same
process, on synthetic images, in interleaved rounds (each round runs every mode once, in
alternating order; the first call of each is a warm-up), and prints the median CPU seconds
per episode of each mode and its ratio to ``--baseline`` (> 1: faster than the baseline):

- ``loop``: one episode at a time (``torch.func.grad``), the CPU default before ``grouped``;
- ``grouped``: the episodes side by side, one grouped convolution per layer
  (:mod:`metamem.learners.grouped`; ``train_chunk_images`` / ``eval_chunk_images`` episodes
  at a time), the CPU default of ``episode_batching="auto"`` for Conv-4 networks;
- ``vmap``: the episodes in one :func:`torch.func.vmap` (the GPU default).

A mode may name a backbone after ``@`` (default ``conv4``): ``grouped@conv4_stride`` is the
grouped path on MAML's Omniglot network of the paper (stride-2 convolutions; Omniglot cases
only, at their width), so ``--modes grouped,grouped@conv4_stride --baseline grouped`` measures
what that network saves.

Cases: a training step (predict + query cross-entropy + backward) at the paper settings
(channels-last weights, as the paper configs train) and scoring without autograd as
``metamem eval`` does (eval mode, 10 inner steps, 15 queries per class). Shapes: B episodes,
N ways, K shots, Q queries per class; Omniglot is Conv-4-64 on 28x28x1, mini-ImageNet
Conv-4-32 on 84x84x3. Like ``metamem train`` / ``eval``, the process keeps freed memory
(:func:`metamem.device.keep_freed_memory`). Example (the run in docs/benchmarks.md)::

    python scripts/bench_maml_batching.py --threads 1 --rounds 3
    python scripts/bench_maml_batching.py --threads 1 --rounds 3 --cases "omniglot train" \
        --modes grouped,grouped@conv4_stride --baseline grouped
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F

from metamem.device import keep_freed_memory
from metamem.learners import build_learner
from metamem.learners.maml import MAML


class Case(NamedTuple):
    name: str
    image_shape: tuple[int, int, int]
    width: int  # conv4 filters
    train: bool  # a training step (else scoring without autograd)
    first_order: bool
    steps: int  # inner steps of this pass (inner_steps in training, eval_inner_steps when scoring)
    inner_lr: float
    n: int  # N ways
    k: int  # K shots
    q: int  # Q queries per class
    b: int  # B episodes per call


OMNIGLOT, MINI = (1, 28, 28), (3, 84, 84)
CASES = [
    Case("omniglot train 5w1s1q B=32, 2nd order", OMNIGLOT, 64, True, False, 1, 0.4, 5, 1, 1, 32),
    Case("omniglot train 5w1s1q B=32, 1st order", OMNIGLOT, 64, True, True, 1, 0.4, 5, 1, 1, 32),
    Case("omniglot train 20w1s1q B=16, 2nd order", OMNIGLOT, 64, True, False, 1, 0.4, 20, 1, 1, 16),
    Case("omniglot train 20w1s1q B=16, 5 steps of 0.1", OMNIGLOT, 64, True, False, 5, 0.1, 20, 1, 1, 16),
    Case("omniglot score 5w1s15q B=8", OMNIGLOT, 64, False, False, 10, 0.4, 5, 1, 15, 8),
    Case("omniglot score 5w5s15q B=8", OMNIGLOT, 64, False, False, 10, 0.4, 5, 5, 15, 8),
    Case("omniglot score 20w1s15q B=4", OMNIGLOT, 64, False, False, 10, 0.4, 20, 1, 15, 4),
    Case("omniglot score 20w5s15q B=2", OMNIGLOT, 64, False, False, 10, 0.4, 20, 5, 15, 2),
    Case("mini-ImageNet train 5w1s15q B=4, 5 steps", MINI, 32, True, False, 5, 0.01, 5, 1, 15, 4),
    Case("mini-ImageNet score 5w1s15q B=4", MINI, 32, False, False, 10, 0.01, 5, 1, 15, 4),
    Case("mini-ImageNet score 5w5s15q B=4", MINI, 32, False, False, 10, 0.01, 5, 5, 15, 4),
]


def build(case: Case, mode: str) -> MAML:
    """The case's MAML in ``mode`` (``batching[@backbone][:chunk]``, ``chunk`` the
    ``train_chunk_images`` and ``eval_chunk_images`` limit, default the learner's), the same
    initial weights for every mode of one backbone."""
    mode, _, chunk = mode.partition(":")
    batching, _, backbone = mode.partition("@")
    limits = {"train_chunk_images": int(chunk), "eval_chunk_images": int(chunk)} if chunk else {}
    torch.manual_seed(0)
    m = build_learner("maml", n_way=case.n, image_shape=case.image_shape, backbone=backbone or "conv4",
                      backbone_channels=case.width, inner_steps=case.steps, eval_inner_steps=case.steps,
                      inner_lr=case.inner_lr, first_order=case.first_order, episode_batching=batching,
                      **limits)
    if case.train:
        m.to(memory_format=torch.channels_last)  # train.channels_last of the paper configs
    return m.train(case.train)


def make_call(m: MAML, case: Case, g: torch.Generator) -> Callable[[], None]:
    """One timed call on fixed random episodes: a training pass or a no-grad score."""
    sx = torch.rand(case.b, case.n * case.k, *case.image_shape, generator=g)
    sy = torch.arange(case.n).repeat_interleave(case.k).repeat(case.b, 1)
    qx = torch.rand(case.b, case.n * case.q, *case.image_shape, generator=g)
    qy = torch.arange(case.n).repeat_interleave(case.q).repeat(case.b, 1)

    def call() -> None:
        if case.train:
            m.zero_grad(set_to_none=True)
            logits = m.predict(sx, sy, qx, n_way=case.n)
            F.cross_entropy(logits.reshape(-1, case.n), qy.reshape(-1)).backward()
        else:
            with torch.no_grad():
                m.predict(sx, sy, qx, n_way=case.n)

    return call


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rounds", type=int, default=3, help="timed calls per mode (median), after one warm-up")
    p.add_argument("--modes", default="loop,grouped",
                   help="comma-separated episode_batching modes, each batching[@backbone][:chunk images]")
    p.add_argument("--baseline", default="loop", help="the mode the ratios divide")
    p.add_argument("--cases", default="", help="only cases whose name contains this")
    args = p.parse_args()
    modes = args.modes.split(",")
    if args.baseline not in modes:
        p.error(f"--baseline {args.baseline!r} is not among --modes {modes}")
    torch.set_num_threads(args.threads)
    keep_freed_memory()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), {torch.backends.cpu.get_cpu_capability()}; "
          f"CPU s per episode, median of {args.rounds} interleaved rounds; ratio = {args.baseline} / mode")
    for case in CASES:
        if args.cases not in case.name:
            continue
        calls = {mode: make_call(build(case, mode), case, torch.Generator().manual_seed(0)) for mode in modes}
        times: dict[str, list[float]] = {mode: [] for mode in modes}
        for mode in modes:
            calls[mode]()  # warm-up
        for r in range(args.rounds):
            for mode in modes if r % 2 == 0 else modes[::-1]:
                c = time.process_time()
                calls[mode]()
                times[mode].append((time.process_time() - c) / case.b)
        med = {mode: statistics.median(t) for mode, t in times.items()}
        cells = "  ".join(f"{mode} {med[mode]:.4f} ({med[args.baseline] / med[mode]:.2f}x)" for mode in modes)
        print(f"{case.name:42s} {cells}", flush=True)


if __name__ == "__main__":
    main()
