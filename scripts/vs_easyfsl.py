"""metamem's Prototypical Networks against easyfsl's, at equal CPU budgets on the same episodes.

Both learners train on the same 60-way 1-shot 5-query Omniglot episodes (``vinyals/train``,
28x28, rotations; one episode per step, Adam 1e-3; metamem's sampler draws them once per
seed, so both see identical images in identical order) and are scored on the same fixed
5-way 1-shot 15-query episodes of ``vinyals/test``. Only training counts towards the CPU
budget (the process's CPU time, one thread); scoring happens at each budget point with the
clock stopped.

- ``metamem``: ``build_learner("protonet")`` with its defaults (Conv-4 without conv bias, pool
  before ReLU, channels-last; plain Euclidean logits; support and query in one backbone call).
- ``easyfsl``: ``easyfsl.methods.PrototypicalNetworks`` (1.5.0) on a Conv-4 as its users
  write it (conv bias, PyTorch's default init, conv -> BN -> ReLU -> pool, NCHW), fed with
  ``process_support_set`` then ``forward`` (support and query pass the network separately;
  logits are minus plain Euclidean distances).
- ablations of metamem, to find which recipe difference matters: ``metamem-paper``
  (``learner.distance: sqeuclidean``, the paper's squared-distance logits), ``metamem-separate``
  (support and query in separate backbone calls, so BatchNorm normalises each with its own
  batch statistics and updates its running statistics twice a step) and ``metamem-coldbn``
  (BatchNorm running statistics as ``nn.BatchNorm2d`` keeps them, from 0 and 1 by a
  momentum of 0.1 from the first step, instead of
  :class:`~metamem.learners.backbones.WarmBatchNorm2d`'s average of the first batches).

easyfsl imports torchvision for models this script does not use; where torchvision is absent
a stand-in module is registered that only lets the import succeed. Install easyfsl with
``pip install --no-deps easyfsl==1.5.0``.

Usage::

    python scripts/vs_easyfsl.py --seeds 0 1 2 --budgets 0.5 1 2 4 8 --out runs/vs_easyfsl
    python scripts/vs_easyfsl.py --learners metamem easyfsl metamem-paper --seeds 0 --budgets 0.5 1

Budgets are CPU-minutes of training. Writes ``results.json`` (every point), ``results.md``
(mean over seeds with the spread) and ``accuracy_vs_cpu.png`` into ``--out``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import statistics
import sys
import time
import types
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from metamem.data import load_dataset
from metamem.episodes import EpisodeSampler
from metamem.evaluation.metrics import mean_ci95
from metamem.files import write_text
from metamem.learners import build_learner
from metamem.learners.backbones import WarmBatchNorm2d

LEARNERS = ("metamem", "easyfsl", "metamem-paper", "metamem-separate", "metamem-coldbn")
DATA = dict(image_size=28, rotations=True)
LABELS = {"metamem": "metamem (default: plain distance)", "metamem-paper": "metamem, squared distance (paper)",
          "easyfsl": "easyfsl 1.5.0", "metamem-separate": "metamem, separate support/query passes",
          "metamem-coldbn": "metamem, BatchNorm running statistics from (0, 1) by momentum 0.1"}


def _torchvision_stand_in() -> None:
    """Register a minimal ``torchvision`` so that ``import easyfsl.methods`` succeeds."""
    if "torchvision" in sys.modules or importlib.util.find_spec("torchvision") is not None:
        return

    class _Unavailable(nn.Module):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            raise RuntimeError("torchvision is not installed (stand-in registered by vs_easyfsl.py)")

    def _module(name: str, **attrs: Any) -> types.ModuleType:
        mod = types.ModuleType(name)
        mod.__dict__.update(attrs)
        sys.modules[name] = mod
        return mod

    resnet = _module("torchvision.models.resnet", BasicBlock=_Unavailable, Bottleneck=_Unavailable,
                     conv1x1=_Unavailable, conv3x3=_Unavailable)
    models = _module("torchvision.models", resnet=resnet)
    _module("torchvision", models=models, __version__="0.0-stand-in")


def easyfsl_conv4(channels: int = 64) -> nn.Module:
    """A Conv-4 as an easyfsl user writes it: conv bias, default init, NCHW, plain order."""
    layers: list[nn.Module] = []
    for i in range(4):
        layers += [nn.Conv2d(1 if i == 0 else channels, channels, 3, padding=1), nn.BatchNorm2d(channels),
                   nn.ReLU(), nn.MaxPool2d(2)]
    return nn.Sequential(*layers, nn.Flatten())


class _Learner:
    """One library's ProtoNet behind one interface: ``loss`` on a training episode, ``logits``."""

    def __init__(self, kind: str, seed: int) -> None:
        torch.manual_seed(seed)
        self.kind = kind
        if kind == "easyfsl":
            _torchvision_stand_in()
            from easyfsl.methods import PrototypicalNetworks  # noqa: PLC0415

            self.model: nn.Module = PrototypicalNetworks(easyfsl_conv4())
        else:
            options = {"distance": "sqeuclidean"} if kind == "metamem-paper" else {}
            self.model = build_learner("protonet", n_way=60, image_shape=(1, 28, 28), **options)
            self.model.to(memory_format=torch.channels_last)
            if kind == "metamem-coldbn":  # plain nn.BatchNorm2d running statistics
                for m in self.model.modules():
                    if isinstance(m, WarmBatchNorm2d):
                        m.warm_up = False
        self.opt = torch.optim.Adam(self.model.parameters(), lr=1e-3)

    def logits(self, sx: torch.Tensor, sy: torch.Tensor, qx: torch.Tensor, n_way: int) -> torch.Tensor:
        """Logits ``[N*Q, N]`` of one episode (``sx [N*K, C, H, W]``, ``sy [N*K]``, ``qx [N*Q, ...]``)."""
        if self.kind == "easyfsl":
            self.model.process_support_set(sx, sy)
            return self.model(qx)
        net: Any = self.model
        if self.kind == "metamem-separate":
            s, q = net.backbone(sx)[None], net.backbone(qx)[None]
        else:
            both = net.backbone(torch.cat([sx, qx]))
            s, q = both[None, : len(sx)], both[None, len(sx):]
        return net.predict_features(s, sy[None], q, n_way=n_way)[0]

    def step(self, sx: torch.Tensor, sy: torch.Tensor, qx: torch.Tensor, qy: torch.Tensor, n_way: int) -> None:
        self.model.train()
        loss = F.cross_entropy(self.logits(sx, sy, qx, n_way), qy)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()

    @torch.no_grad()
    def score(self, episodes: list[tuple[torch.Tensor, ...]]) -> list[float]:
        self.model.eval()
        return [float((self.logits(sx, sy, qx, 5).argmax(-1) == qy).float().mean()) for sx, sy, qx, qy in episodes]


def run(kind: str, seed: int, budgets: list[float], train_ds: Any, test: list[tuple[torch.Tensor, ...]]) -> list[dict[str, Any]]:
    """Train one learner on one seed's episodes; score it at each CPU budget (minutes)."""
    learner = _Learner(kind, seed)
    sampler = EpisodeSampler(train_ds, n_way=60, k_shot=1, n_query=5, batch_size=1, seed=seed)
    cpu, episodes, points = 0.0, 0, []
    for budget in sorted(budgets):
        while cpu < budget * 60:
            b = sampler.sample()
            c0 = time.process_time()
            learner.step(b.support_x[0], b.support_y[0], b.query_x[0], b.query_y[0], 60)
            cpu += time.process_time() - c0
            episodes += 1
        acc = learner.score(test)
        mean, ci = mean_ci95(torch.tensor(acc))
        points.append({"learner": kind, "seed": seed, "budget_cpu_min": budget, "cpu_s": round(cpu, 2),
                       "episodes": episodes, "accuracy": mean, "ci95": ci})
        print(f"{kind:<17} seed {seed}  {budget:>5.2f} CPU-min  {episodes:>5} episodes  "
              f"{100 * mean:6.2f} ± {100 * ci:.2f}", flush=True)
    return points


def summarise(points: list[dict[str, Any]]) -> str:
    """Markdown: mean accuracy over seeds (min-max) per learner and budget, and episodes trained."""
    kinds = list(dict.fromkeys(p["learner"] for p in points))
    budgets = sorted({p["budget_cpu_min"] for p in points})
    lines = ["| CPU-min | " + " | ".join(kinds) + " |", "|---" * (len(kinds) + 1) + "|"]
    for b in budgets:
        cells = []
        for k in kinds:
            accs = [100 * p["accuracy"] for p in points if p["learner"] == k and p["budget_cpu_min"] == b]
            eps = [p["episodes"] for p in points if p["learner"] == k and p["budget_cpu_min"] == b]
            cells.append(f"{statistics.mean(accs):.2f} ({min(accs):.2f}-{max(accs):.2f}; "
                         f"{int(statistics.mean(eps))} ep)" if accs else "-")
        lines.append(f"| {b:g} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(points: list[dict[str, Any]], path: Path) -> None:
    import matplotlib  # noqa: PLC0415
    import matplotlib.ticker  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    fig, ax = plt.subplots(figsize=(6, 4))
    for k in dict.fromkeys(p["learner"] for p in points):
        budgets = sorted({p["budget_cpu_min"] for p in points if p["learner"] == k})
        means = [100 * statistics.mean(p["accuracy"] for p in points
                                       if p["learner"] == k and p["budget_cpu_min"] == b) for b in budgets]
        (line,) = ax.plot(budgets, means, marker="o", label=LABELS.get(k, k))
        mine = [p for p in points if p["learner"] == k]
        ax.scatter([p["budget_cpu_min"] for p in mine], [100 * p["accuracy"] for p in mine], s=10,
                   alpha=0.4, color=line.get_color())
    ax.set_xscale("log")
    ax.set_xticks(sorted({p["budget_cpu_min"] for p in points}))
    ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlabel("training CPU-minutes (one thread)")
    ax.set_ylabel("5-way 1-shot accuracy, vinyals/test (%)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--learners", nargs="+", default=["metamem", "easyfsl"], choices=LEARNERS)
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--budgets", nargs="+", type=float, default=[0.5, 1, 2, 4, 8], help="CPU-minutes")
    p.add_argument("--test-episodes", type=int, default=1000)
    p.add_argument("--test-seed", type=int, default=2026)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=Path("runs/vs_easyfsl"))
    p.add_argument("--summarise", nargs="+", type=Path, metavar="RESULTS_JSON",
                   help="train nothing: pool the points of earlier runs' results.json into --out")
    args = p.parse_args(argv)
    if args.summarise:
        points = [pt for f in args.summarise for pt in json.loads(f.read_text())["points"]]
        keys = [(pt["learner"], pt["seed"], pt["budget_cpu_min"]) for pt in points]
        if len(set(keys)) != len(keys):
            p.error("the files share a learner, seed and budget: pool runs of different seeds")
        _write(args.out, points, {"pooled": [str(f) for f in args.summarise]})
        return 0
    torch.set_num_threads(args.threads)
    if "easyfsl" in args.learners and importlib.util.find_spec("easyfsl") is None:
        p.error("easyfsl is not installed: pip install --no-deps easyfsl==1.5.0")
    train_ds = load_dataset("omniglot", split="vinyals/train", **DATA)
    test_ds = load_dataset("omniglot", split="vinyals/test", **DATA)
    ts = EpisodeSampler(test_ds, n_way=5, k_shot=1, n_query=15, batch_size=1, seed=args.test_seed)
    test = []
    for _ in range(args.test_episodes):
        b = ts.sample()
        test.append((b.support_x[0].clone(), b.support_y[0].clone(), b.query_x[0].clone(), b.query_y[0].clone()))
    meta = {"torch": torch.__version__, "threads": args.threads, "test_episodes": args.test_episodes,
            "test_seed": args.test_seed, "command": " ".join(sys.argv)}
    points: list[dict[str, Any]] = []
    for seed in args.seeds:
        for kind in args.learners:
            points += run(kind, seed, args.budgets, train_ds, test)
            _write(args.out, points, meta)  # after each run: a crash keeps what was measured
    print(summarise(points))
    return 0


def _write(out: Path, points: list[dict[str, Any]], meta: dict[str, Any]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / "results.json", json.dumps({"meta": meta, "points": points}, indent=1) + "\n")
    write_text(out / "results.md", summarise(points))
    plot(points, out / "accuracy_vs_cpu.png")


if __name__ == "__main__":
    raise SystemExit(main())
