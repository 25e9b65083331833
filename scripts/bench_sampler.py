"""Episodes/s of metamem's batched sampler vs the bound and a straightforward per-episode sampler.

**The bound** is the least work any sampler must do, measured on the same data in the same
run: one ``index_select`` of the batch's images from the uint8 store, then conversion to the
output dtype (fresh tensors each call, like a plain implementation; the indices are fixed, so
drawing them costs nothing). The script prints metamem's episodes/s as a percentage of it,
for the sampler as the training loop uses it by default (``reuse_buffers=True``: output
buffers reused when nothing holds the previous batch; ``episodes.fused: auto``: gather,
conversion and scale in one kernel and the draw's hash in one loop, compiled by
``torch.compile`` where it builds them, else the eager path), for the eager path
(``episodes.fused: false``) and with fresh outputs each call. The default's first batch
compiles; its time is printed on its own (``compile``), before the timing starts. With
``--fused`` it also times ``fused=True`` explicitly.

The baseline is what most few-shot code does: per-class Python index lists, ``random.sample``
for the classes and the images of each episode, then ``torch.stack`` of in-memory float
tensors, one episode at a time, and a final stack into a batch. Both samplers use the same
data in the same run; the script prints the ratio as ``N.NNx`` and the absolute episodes/s.

Usage::

    python scripts/bench_sampler.py                      # bundled Omniglot, CPU
    python scripts/bench_sampler.py --dataset synthetic  # 964 classes x 20, no files
    python scripts/bench_sampler.py --threads 1 --no-baseline   # the bound ratios (CPU target >= 75%)
    python scripts/bench_sampler.py --threads 1 --no-baseline --fused   # also fused=True explicitly
    python scripts/bench_sampler.py --device cuda --batch-size 1024
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections.abc import Callable

import torch

import metamem
from metamem import EpisodeSampler, ImageDataset
from metamem.config import EpisodesCfg

#: what the training loop passes as ``fused`` when the config says nothing
DEFAULT_FUSED = EpisodesCfg().fused

SHAPES = [(5, 1, 15), (20, 5, 5)]


class Bound:
    """One ``index_select`` of a batch's images from the uint8 store + conversion to the output dtype."""

    def __init__(self, sampler: EpisodeSampler) -> None:
        b = sampler.sample()
        self.images, self.dtype = sampler.images, sampler.dtype
        self.index = torch.cat([b.support_index.reshape(-1), b.query_index.reshape(-1)])

    def __call__(self) -> torch.Tensor:
        return self.images.index_select(0, self.index).to(self.dtype)


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
        return tuple(torch.stack(parts) for parts in zip(*eps, strict=True))


def episodes_per_s(fn: Callable[[], object], batch: int, seconds: float, sync: Callable[[], None]) -> tuple[float, float]:
    """Median episodes/s per CPU second of this process and per wall second, over 5 timed
    windows of about ``seconds / 5`` each (CPU time is steadier on a shared machine; on a GPU
    use the wall figure)."""
    for _ in range(3):
        fn()
    sync()
    cpu_rates, wall_rates = [], []
    for _ in range(5):
        n, start, c0 = 0, time.perf_counter(), time.process_time()
        while time.perf_counter() - start < seconds / 5:
            fn()
            n += 1
        sync()
        wall, cpu = time.perf_counter() - start, time.process_time() - c0
        wall_rates.append(n * batch / wall)
        cpu_rates.append(n * batch / max(cpu, 1e-9))
    return statistics.median(cpu_rates), statistics.median(wall_rates)


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
    p.add_argument("--fused", action="store_true", help="also time fused=True (torch.compile'd gather)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds of bound/metamem timing")
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
        kw = dict(n_way=n, k_shot=k, n_query=q, batch_size=args.batch_size, device=dev, seed=0)
        loop = EpisodeSampler(ds, reuse_buffers=True, fused=DEFAULT_FUSED, **kw)
        eager = EpisodeSampler(ds, reuse_buffers=True, fused=False, **kw)
        fused = EpisodeSampler(ds, reuse_buffers=True, fused=True, **kw) if args.fused else None
        fresh = EpisodeSampler(ds, **kw)
        bound = Bound(fresh)
        held: list[object] = [None]

        def loop_step(loop: EpisodeSampler = loop, held: list[object] = held) -> None:
            held[0] = None  # metamem's loops let go of a batch before drawing the next
            held[0] = loop.sample()

        def holding_step(loop: EpisodeSampler = loop, held: list[object] = held) -> None:
            held[0] = loop.sample()  # a loop that holds batch t-1 while drawing batch t

        def eager_step(eager: EpisodeSampler = eager, held: list[object] = held) -> None:
            held[0] = None
            held[0] = eager.sample()

        def fused_step(fused: EpisodeSampler | None = fused, held: list[object] = held) -> None:
            assert fused is not None
            held[0] = None
            held[0] = fused.sample()

        t0 = time.perf_counter()
        loop_step()  # the default compiles here (where it is fused), not in the timing
        sync()
        compile_s = time.perf_counter() - t0
        if fused is not None:
            fused_step()

        # interleave the measurements so that a change in machine load hits all alike; CPU time
        # of this process (a shared machine's other jobs do not count), wall time beside it
        rates: dict[str, list[float]] = {"loop": [], "eager": [], "holding": [], "fresh": [], "bound": []}
        steps: list[tuple[str, Callable[[], object]]] = [
            ("bound", bound), ("loop", loop_step), ("eager", eager_step), ("holding", holding_step),
            ("fresh", fresh.sample)]
        if fused is not None:
            rates["fused"] = []
            steps.append(("fused", fused_step))
        walls: dict[str, list[float]] = {k: [] for k in rates}
        for _ in range(args.rounds):
            for key, fn in steps:
                cpu, wall = episodes_per_s(fn, args.batch_size, args.seconds / args.rounds, sync)
                rates[key].append(cpu)
                walls[key].append(wall)
                held[0] = None
        med = {key: statistics.median(v) for key, v in rates.items()}
        wmed = {key: statistics.median(v) for key, v in walls.items()}
        if dev.type == "cuda":  # the host's CPU time says nothing about a GPU: wall clock first
            med, wmed = wmed, med
        ours = med["loop"]
        pct = lambda key, med=med: 100 * med[key] / med["bound"]  # noqa: E731
        path = "fused" if loop.fused else "eager (torch.compile unavailable)"
        line = (f"{n}-way {k}-shot {q}-query: metamem default ({path}) {ours:,.0f} episodes/s = "
                f"{pct('loop'):.0f}% of the bound ({med['bound']:,.0f} episodes/s) "
                f"[{'wall clock' if dev.type == 'cuda' else 'per CPU second'}; "
                f"{'per CPU second' if dev.type == 'cuda' else 'wall clock'} "
                f"{wmed['loop']:,.0f} vs {wmed['bound']:,.0f} = {100 * wmed['loop'] / wmed['bound']:.0f}%]; "
                f"compile {compile_s:.1f} s; eager {pct('eager'):.0f}%, "
                f"holding the previous batch {pct('holding'):.0f}%, fresh outputs {pct('fresh'):.0f}%")
        if fused is not None:
            line += f"; fused=True {med['fused']:,.0f} episodes/s = {pct('fused'):.0f}% of the bound"
        if not args.no_baseline:
            slow = PerEpisodeSampler(ds, n, k, q, args.batch_size, 0, str(dev))
            base = episodes_per_s(slow.sample, args.batch_size, args.seconds, sync)[0]
            line += f", per-episode baseline {base:,.0f} episodes/s, ratio {ours / base:.2f}x"
        print(line, flush=True)


if __name__ == "__main__":
    main()
