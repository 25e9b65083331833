"""CPU cost of one training episode for every learner at its Omniglot paper settings.

Each learner is built from its experiments/omniglot/paper/<name>.yaml (episode shape, learner
keys, optimizer), fed real ``vinyals/train`` episodes, and trained for a few steps (forward,
loss, backward, optimizer step) two ways in the same process, interleaved round by round:

- ``before``: NCHW tensors and the textbook block order conv -> BatchNorm -> ReLU -> pool;
- ``after``: what metamem runs now: pool before the activation (the same values and
  gradients, on a quarter of the elements) and, where the config sets ``train.channels_last``,
  channels-last weights and images.

Prints CPU-seconds per training episode (the process's CPU time, the steadier figure on a
shared machine with ``--threads 1``) and the ratio ``before / after`` per learner. The
median over ``--rounds`` rounds is reported.

Usage::

    python scripts/bench_learners.py                      # every learner, 1 thread
    python scripts/bench_learners.py protonet matching --steps 5 --rounds 3
    python scripts/bench_learners.py protonet --profile     # where a "before" step's CPU goes
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path

import torch

from metamem.config import load_config
from metamem.data import load_dataset
from metamem.episodes import EpisodeSampler
from metamem.learners import build_learner
from metamem.learners.backbones import ConvBlock
from metamem.optim import build_optimizer

PAPER = Path(__file__).resolve().parent.parent / "experiments" / "omniglot" / "paper"
LEARNERS = ["protonet", "matching", "memory_matching", "metanet", "maml", "linear_probe", "mann_lru", "lstm"]


@contextmanager
def textbook_order() -> Iterator[None]:
    """Run every ConvBlock in the plain conv -> norm -> ReLU -> pool order (the ``before`` path)."""
    fast = ConvBlock.forward

    def plain(self: ConvBlock, x: torch.Tensor) -> torch.Tensor:
        conv, norm, relu, pool = self
        return pool(relu(norm(conv(x))))

    ConvBlock.forward = plain  # type: ignore[method-assign]
    try:
        yield
    finally:
        ConvBlock.forward = fast  # type: ignore[method-assign]


def per_episode(name: str, steps: int, warmup: int, channels_last: bool, textbook: bool,
                cache: dict[str, object]) -> float:
    """CPU-seconds per training episode of ``name`` over ``steps`` steps after ``warmup``."""
    cfg = load_config(PAPER / f"{name}.yaml")
    ep = cfg.episodes
    key = f"{cfg.data.name}:{cfg.data.train_split}:{sorted(cfg.data.options.items())}"
    if key not in cache:
        cache[key] = load_dataset(cfg.data.name, split=cfg.data.train_split, **cfg.data.options)
    ds = cache[key]
    torch.manual_seed(0)
    learner = build_learner(cfg.learner.name, n_way=ep.n_way, image_shape=ds.image_shape,  # type: ignore[attr-defined]
                            **cfg.learner.kwargs)
    if channels_last:
        learner.to(memory_format=torch.channels_last)
    opt = build_optimizer(learner.parameters(), cfg.train.optimizer.name, **cfg.train.optimizer.kwargs)
    sampler = EpisodeSampler(ds, n_way=ep.n_way, k_shot=ep.k_shot, n_query=ep.n_query,  # type: ignore[arg-type]
                             batch_size=ep.batch_size, seed=0)
    learner.train()
    with textbook_order() if textbook else nullcontext():
        for i in range(warmup + steps):
            if i == warmup:
                c0 = time.process_time()
            out = learner(sampler.sample())
            opt.zero_grad(set_to_none=True)
            out.loss.backward()
            opt.step()
    return (time.process_time() - c0) / (steps * ep.batch_size)


#: operator families of a Conv-4 step, by the start of their aten names (``--profile``)
FAMILIES = {
    "convolution": ("aten::convolution", "aten::mkldnn_convolution", "aten::_convolution"),
    "BatchNorm": ("aten::native_batch_norm", "aten::batch_norm"),
    "ReLU": ("aten::relu", "aten::clamp_min", "aten::threshold"),
    "max-pool (and its zero-fill)": ("aten::max_pool2d", "aten::fill_", "aten::zero_"),
}


def profile(name: str, steps: int, cache: dict[str, object]) -> None:
    """Print the share of a ``before`` step's self CPU time per operator family."""
    from torch.profiler import ProfilerActivity  # noqa: PLC0415
    from torch.profiler import profile as torch_profile

    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        per_episode(name, steps, 1, False, True, cache)
    total = sum(e.self_cpu_time_total for e in prof.key_averages())
    print(f"{name}: self CPU time by operator family (before path, {steps} steps)")
    for family, prefixes in FAMILIES.items():
        t = sum(e.self_cpu_time_total for e in prof.key_averages() if e.key.startswith(prefixes))
        print(f"  {family:<30} {100 * t / total:5.1f} %")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("learners", nargs="*", default=LEARNERS, help=f"among {', '.join(LEARNERS)}")
    p.add_argument("--steps", type=int, default=4, help="timed steps per measurement (default 4)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds; the median is reported")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--profile", action="store_true", help="print where a before-path step's CPU time goes")
    args = p.parse_args(argv)
    bad = [n for n in args.learners if n not in LEARNERS]
    if bad:
        p.error(f"unknown learner(s) {bad}; choose among {LEARNERS}")
    torch.set_num_threads(args.threads)
    cache: dict[str, object] = {}
    if args.profile:
        for name in args.learners:
            profile(name, args.steps, cache)
        return 0
    print(f"torch {torch.__version__}, {args.threads} thread(s), CPU capability "
          f"{torch.backends.cpu.get_cpu_capability()}, median of {args.rounds} rounds x {args.steps} steps")
    print(f"{'learner':<16} {'before CPU-s/ep':>16} {'after CPU-s/ep':>15} {'before/after':>13}")
    for name in args.learners:
        cl = bool(load_config(PAPER / f"{name}.yaml").train.channels_last)
        before, after = [], []
        for _ in range(args.rounds):
            before.append(per_episode(name, args.steps, args.warmup, False, True, cache))
            after.append(per_episode(name, args.steps, args.warmup, cl, False, cache))
        b, a = statistics.median(before), statistics.median(after)
        print(f"{name:<16} {b:>16.4f} {a:>15.4f} {b / a:>12.2f}x", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
