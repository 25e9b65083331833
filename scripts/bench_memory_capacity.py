#!/usr/bin/env python
"""Memory capacity benchmark: copy with fewer slots than items, one line per write policy.

A small LSTM-controller slot memory (:class:`metamem.memory.MemoryCore` + a linear head over
the bits) is trained on the copy task with the same seed, data stream and STEP budget for
each write policy, then scored by bit accuracy on a fixed held-out batch. The controller is
deliberately too small to hold the whole sequence by itself, so the result depends on what
the memory keeps (Le et al. 2019, papers.md §5.1: DNC 68.0 vs DNC+UW 97.7 bit accuracy on
copy, L=50, 4 slots).

Example (the run reported in docs/memory.md)::

    python scripts/bench_memory_capacity.py --steps 1500

Prints ``<policy>  steps=<n>  wall=<s>s  loss=<final>  bit_acc=<acc>%`` per policy.
"""

from __future__ import annotations

import argparse
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn

from metamem.memory import MemoryCore, TaskBatch, bit_accuracy, copy_task


class CopyModel(nn.Module):
    """MemoryCore + a linear head over the bits."""

    def __init__(self, bits: int, **core_kwargs: object) -> None:
        super().__init__()
        self.core = MemoryCore(bits + 1, **core_kwargs)  # type: ignore[arg-type]
        self.head = nn.Linear(self.core.out_features, bits)

    def forward(self, batch: TaskBatch) -> torch.Tensor:
        return self.head(self.core(batch.inputs, write_steps=batch.write_steps).features)


def masked_bce(logits: torch.Tensor, batch: TaskBatch) -> torch.Tensor:
    loss = F.binary_cross_entropy_with_logits(logits, batch.targets, reduction="none").mean(-1)
    mask = batch.mask.float()
    return (loss * mask).sum() / mask.sum()


def run_policy(policy: str, args: argparse.Namespace) -> tuple[float, float, float]:
    """Train one policy; return (held-out bit accuracy, wall seconds, final train loss)."""
    torch.manual_seed(args.seed)  # same seed before building each model (scripts may seed globally)
    options: dict[str, object] = {}
    if policy in ("uniform", "cached_uniform"):
        options["base"] = args.base
    if policy == "cached_uniform":
        options["cache_size"] = args.cache_size
    model = CopyModel(
        args.bits,
        hidden_size=args.hidden,
        slots=args.slots,
        width=args.width,
        read_heads=args.read_heads,
        policy=policy,
        policy_options=options,
    )
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    data = torch.Generator().manual_seed(args.seed)
    held_out = copy_task(args.eval_batch, args.length, args.bits, seed=args.seed + 10_000)
    start = time.perf_counter()
    loss_avg = torch.zeros(())
    for step in range(args.steps):
        batch = copy_task(args.batch, args.length, args.bits, generator=data)
        loss = masked_bce(model(batch), batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), args.clip)
        opt.step()
        loss_avg = 0.98 * loss_avg + 0.02 * loss.detach() if step else loss.detach()
        if args.log_every and (step + 1) % args.log_every == 0:
            print(f"  {policy} step {step + 1} loss {float(loss_avg):.4f}", file=sys.stderr, flush=True)
    wall = time.perf_counter() - start
    model.eval()
    with torch.no_grad():
        acc = float(bit_accuracy(model(held_out), held_out).mean())
    return 100.0 * acc, wall, float(loss_avg)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--policies", default="lru,usage,uniform,cached_uniform")
    p.add_argument("--steps", type=int, default=1500, help="training steps per policy")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--length", type=int, default=16, help="items per copy sequence")
    p.add_argument("--bits", type=int, default=6)
    p.add_argument("--slots", type=int, default=4)
    p.add_argument("--width", type=int, default=32)
    p.add_argument("--hidden", type=int, default=24, help="LSTM controller units")
    p.add_argument("--read-heads", type=int, default=1)
    p.add_argument("--base", default="usage", help="dense rule used by uniform/cached_uniform")
    p.add_argument("--cache-size", type=int, default=5)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--clip", type=float, default=10.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eval-batch", type=int, default=1000)
    p.add_argument("--log-every", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (tiny ops: 1 is fastest)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(
        f"# copy: {args.length} items x {args.bits} bits, S={args.slots} slots x D={args.width}, "
        f"LSTM {args.hidden}, R={args.read_heads}, batch {args.batch}, {args.steps} steps, "
        f"Adam lr {args.lr}, seed {args.seed}, held-out batch {args.eval_batch}, "
        f"torch threads {torch.get_num_threads()}",
        flush=True,
    )
    for policy in args.policies.split(","):
        acc, wall, loss = run_policy(policy, args)
        print(f"{policy:<15} steps={args.steps}  wall={wall:7.1f}s  loss={loss:.4f}  bit_acc={acc:.1f}%", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
