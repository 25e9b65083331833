"""Episodes/s of metamem's batched sampler vs a straightforward per-episode sampler.

The baseline is what most few-shot code does: per-class Python index lists, ``random.sample``
for the classes and the images of each episode, then ``torch.stack`` of in-memory float
tensors, one episode at a time, and a final stack into a batch. Both samplers use the same
data in the same run; the script prints the ratio as ``N.NNx`` and the absolute episodes/s.

Usage::

    python scripts/bench_sampler.py                      # bundled Omniglot, CPU
    python scripts/bench_sampler.py --dataset synthetic  # 964 classes x 20, no files
    python scripts/bench_sampler.py --device cuda --batch-size 1024
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from typing import Callable

import torch

import metamem
from metamem import EpisodeSampler, ImageDataset

SHAPES = [(5, 1, 15), (20, 5, 5)]


class PerEpisodeSampler:
    """The straightforward baseline: a Python loop over episodes and samples."""

    def __init__(self, ds: ImageDataset, n_way: int, k_shot: int, n_query: int, batch_size: int,
                 seed: int, device: str) -> None:
        self.images = ds.images.float().div_(255).to(device)  # in-memory float tensors
        self.per_class: list[list[int]] = [[] for _ in range(ds.num_classes)]
        for i, c in enumerate(ds.labels.tolist()):
            self.per_class[c].append(i)
        self.n, self.k, self.q, self.b = n_way, k_shot, n_query, batch_size
        self.rng = random.Random(seed)

    def episode(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        classes = self.rng.sample(range(len(self.per_class)), self.n)
        sx, sy, qx, qy = [], [], [], []
        for label, c in enumerate(classes):
            idx = self.rng.sample(self.per_class[c], self.k + self.q)
            sx += [self.images[i] for i in idx[: self.k]]
            qx += [self.images[i] for i in idx[self.k :]]
            sy += [label] * self.k
            qy += [label] * self.q
        return torch.stack(sx), torch.tensor(sy), torch.stack(qx), torch.tensor(qy)

    def sample(self) -> tuple[torch.Tensor, ...]:
        eps = [self.episode() for _ in range(self.b)]
        return tuple(torch.stack(parts) for parts in zip(*eps))


def episodes_per_s(fn: Callable[[], object], batch: int, seconds: float, sync: Callable[[], None]) -> float:
    """Median episodes/s over 5 timed windows of about ``seconds / 5`` each."""
    for _ in range(3):
        fn()
    sync()
    rates = []
    for _ in range(5):
        n, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds / 5:
            fn()
            n += 1
        sync()
        rates.append(n * batch / (time.perf_counter() - start))
    return statistics.median(rates)


def load(name: str) -> ImageDataset:
    if name == "synthetic":
        return metamem.load_dataset("synthetic", num_classes=964, per_class=20, image_size=28)
    return metamem.load_dataset("omniglot", split=name, image_size=28)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="background_small1",
                   help="an Omniglot split (28x28) or 'synthetic' (964 classes x 20, 28x28)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seconds", type=float, default=3.0, help="time per measurement")
    p.add_argument("--no-baseline", action="store_true", help="skip the per-episode baseline")
    p.add_argument("--threads", type=int, default=None,
                   help="torch intra-op threads (default: torch's choice; 1 is steadier on a busy CPU)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    ds = load(args.dataset)
    dev = torch.device(args.device)
    sync = (lambda: torch.cuda.synchronize(dev)) if dev.type == "cuda" else (lambda: None)
    print(f"data: {ds!r}; device {dev}; batch {args.batch_size}; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    for n, k, q in SHAPES:
        fast = EpisodeSampler(ds, n_way=n, k_shot=k, n_query=q, batch_size=args.batch_size,
                              device=dev, seed=0)
        ours = episodes_per_s(fast.sample, args.batch_size, args.seconds, sync)
        line = f"{n}-way {k}-shot {q}-query: metamem {ours:,.0f} episodes/s"
        if not args.no_baseline:
            slow = PerEpisodeSampler(ds, n, k, q, args.batch_size, 0, str(dev))
            base = episodes_per_s(slow.sample, args.batch_size, args.seconds, sync)
            line += f", per-episode baseline {base:,.0f} episodes/s, ratio {ours / base:.2f}x"
        print(line, flush=True)


if __name__ == "__main__":
    main()
