"""MANN training throughput: metamem's learner vs a straightforward reference, same run.

Both train on the same synthetic 20x20 episodes (5 classes x 10 presentations, T = 50) with
Santoro et al.'s sizes: LSTM 200, memory 128 x 40, 4 read heads, LRU writes (gamma = 0.95),
Adam 1e-3. One training step = forward over the T steps, cross-entropy over all steps,
backward, Adam step. The reference is what a direct port of the paper's equations looks
like: a per-step Python loop of plain PyTorch ops with one linear layer per head and per
quantity, a Python loop over heads for reads and writes, and a loop over the episodes of the
batch for the least-used slots.

Usage::

    python scripts/bench_train_step.py                    # batch 16 and 128, both models
    python scripts/bench_train_step.py --batch 16 --steps 20 --threads 1
    python scripts/bench_train_step.py --compile          # also time torch.compile(metamem)
    python scripts/bench_train_step.py --device cuda --batch 128 1024 --no-reference
    python scripts/bench_train_step.py --batch 16 --threads 1 --no-reference --programs 3 --compile
    python scripts/bench_train_step.py --batch 16 --threads 1 --no-reference --programs 3 --profile 5

``--programs P`` also times NUTM (the same MANN with P stored programs per control head, Le
et al. 2020) and prints ``nutm / metamem`` (and, with ``--compile``, the compiled pair);
``--profile N`` prints torch.profiler's busiest operators over N training steps of each model,
with the number of operator calls per step (what the per-step Python/dispatch overhead scales with).

Prints episodes/s of each model and the ratio ``metamem / reference`` as ``N.NNx``, by wall
time and by the process's CPU time (the fairer figure on a busy shared machine with
``--threads 1``).
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from torch import nn

from metamem.data import load_dataset
from metamem.episodes import EpisodeSampler
from metamem.learners import build_learner
from metamem.types import NO_LABEL, EpisodeBatch

N_WAY, K_SHOT, IMAGE = 5, 10, 20
SIZES = dict(controller_size=200, slots=128, width=40, read_heads=4)


class ReferenceMANN(nn.Module):
    """A naive MANN with LRU access (Santoro et al. 2016), written step by step."""

    def __init__(self, in_dim: int, n_way: int, hidden: int = 200, slots: int = 128,
                 width: int = 40, heads: int = 4, gamma: float = 0.95) -> None:
        super().__init__()
        self.n_way, self.slots, self.width, self.heads, self.gamma = n_way, slots, width, heads, gamma
        self.cell = nn.LSTMCell(in_dim + n_way + heads * width, hidden)
        self.key = nn.ModuleList(nn.Linear(hidden, width) for _ in range(heads))
        self.strength = nn.ModuleList(nn.Linear(hidden, 1) for _ in range(heads))
        self.add = nn.ModuleList(nn.Linear(hidden, width) for _ in range(heads))
        self.gate = nn.ModuleList(nn.Linear(hidden, 1) for _ in range(heads))
        self.out = nn.Linear(hidden + heads * width, n_way)

    def forward(self, batch: EpisodeBatch) -> torch.Tensor:
        seq = batch.as_sequence()
        b, t = seq.y.shape
        x = seq.x.flatten(2)
        prev = F.one_hot(seq.prev_y.clamp(min=0), self.n_way).float() * (seq.prev_y != NO_LABEL)[..., None]
        s, d, r = self.slots, self.width, self.heads
        memory = torch.full((b, s, d), 1e-6)
        usage = torch.zeros(b, s)
        usage[:, 0] = 1.0
        w_read = [F.one_hot(torch.zeros(b, dtype=torch.long), s).float() for _ in range(r)]
        reads = torch.zeros(b, r * d)
        h = c = torch.zeros(b, self.cell.hidden_size)
        logits = []
        for step in range(t):
            h, c = self.cell(torch.cat([x[:, step], prev[:, step], reads], 1), (h, c))
            least = torch.stack([torch.argsort(usage[e])[:r] for e in range(b)])  # [B, R]
            memory = memory * (1 - F.one_hot(least[:, 0], s).float())[..., None]
            w_write_sum = torch.zeros(b, s)
            for i in range(r):
                g = torch.sigmoid(self.gate[i](h))
                w_write = g * w_read[i] + (1 - g) * F.one_hot(least[:, i], s).float()
                memory = memory + w_write[..., None] * torch.tanh(self.add[i](h))[:, None, :]
                w_write_sum = w_write_sum + w_write
            new_reads = []
            for i in range(r):
                key = torch.tanh(self.key[i](h))
                beta = 1 + F.softplus(self.strength[i](h))
                sim = F.cosine_similarity(key[:, None, :], memory, dim=-1)  # [B, S]
                w_read[i] = torch.softmax(beta * sim, dim=-1)
                new_reads.append((w_read[i][..., None] * memory).sum(1))
            usage = self.gamma * usage + sum(w_read) + w_write_sum
            reads = torch.cat(new_reads, 1)
            logits.append(self.out(torch.cat([h, reads], 1)))
        out = torch.stack(logits, 1)
        return F.cross_entropy(out.flatten(0, 1), seq.y.flatten())


def time_steps(loss_fn, params, batches: list[EpisodeBatch], warmup: int,
               sync=lambda: None) -> tuple[float, float]:
    """(wall, process CPU) seconds per training step (forward, backward, Adam) after warm-up.

    The CPU time of this process is the fairer figure on a shared machine with one thread
    (it does not count time spent waiting for a core); with several threads, use the wall time.
    """
    opt = torch.optim.Adam(params, lr=1e-3)
    for i, batch in enumerate(batches):
        if i == warmup:
            sync()
            wall, cpu = time.perf_counter(), time.process_time()
        opt.zero_grad(set_to_none=True)
        loss_fn(batch).backward()
        opt.step()
    sync()
    n = len(batches) - warmup
    return (time.perf_counter() - wall) / n, (time.process_time() - cpu) / n


def bench(batch_size: int, steps: int, warmup: int, compile_: bool, device: str = "cpu",
          reference: bool = True, programs: int = 0) -> dict[str, tuple[float, float]]:
    """Episodes/s of each model, by wall time and by process CPU time."""
    dev = torch.device(device)
    sync = (lambda: torch.cuda.synchronize(dev)) if dev.type == "cuda" else (lambda: None)
    ds = load_dataset("synthetic", num_classes=60, per_class=20, image_size=IMAGE, seed=0)
    sampler = EpisodeSampler(ds, n_way=N_WAY, k_shot=K_SHOT, n_query=0, batch_size=batch_size, seed=0,
                             device=dev)
    batches = [sampler.sample() for _ in range(steps + warmup)]
    torch.manual_seed(0)  # a script entry point may seed the global RNG
    ours = build_learner("mann", n_way=N_WAY, image_shape=(1, IMAGE, IMAGE), **SIZES).to(dev)
    timings = {"metamem": time_steps(lambda b: ours(b).loss, ours.parameters(), batches, warmup, sync)}
    if reference:  # the naive reference runs on the CPU only
        ref = ReferenceMANN(IMAGE * IMAGE, N_WAY)
        cpu_batches = [b.to("cpu") if dev.type != "cpu" else b for b in batches]
        timings["reference"] = time_steps(ref, ref.parameters(), cpu_batches, warmup)
    if compile_:
        compiled = torch.compile(ours)
        timings["metamem+compile"] = time_steps(
            lambda b: compiled(b).loss, ours.parameters(), batches[:2] + batches, warmup + 2, sync)
    if programs:
        torch.manual_seed(0)
        nutm = build_learner("mann", n_way=N_WAY, image_shape=(1, IMAGE, IMAGE), programs=programs, **SIZES).to(dev)
        timings["nutm"] = time_steps(lambda b: nutm(b).loss, nutm.parameters(), batches, warmup, sync)
        if compile_:
            nutm_c = torch.compile(nutm)
            timings["nutm+compile"] = time_steps(
                lambda b: nutm_c(b).loss, nutm.parameters(), batches[:2] + batches, warmup + 2, sync)
    return {name: (batch_size / wall, batch_size / cpu) for name, (wall, cpu) in timings.items()}


def profile(batch_size: int, steps: int, programs: int, top: int = 12) -> None:
    """torch.profiler's busiest operators (self CPU time) over ``steps`` training steps of MANN
    and of NUTM (``programs`` per head), after one warm-up step each."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    ds = load_dataset("synthetic", num_classes=60, per_class=20, image_size=IMAGE, seed=0)
    sampler = EpisodeSampler(ds, n_way=N_WAY, k_shot=K_SHOT, n_query=0, batch_size=batch_size, seed=0)
    batches = [sampler.sample() for _ in range(steps + 1)]
    for name, p in (("mann", 0), (f"nutm (programs={programs})", programs)):
        torch.manual_seed(0)
        model = build_learner("mann", n_way=N_WAY, image_shape=(1, IMAGE, IMAGE), programs=p, **SIZES)
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)

        def step(b: EpisodeBatch, model: torch.nn.Module = model, opt: torch.optim.Optimizer = opt) -> None:
            opt.zero_grad(set_to_none=True)
            model(b).loss.backward()
            opt.step()

        step(batches[0])
        with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
            for b in batches[1:]:
                step(b)
        events = prof.key_averages()
        calls = sum(e.count for e in events if not e.key.startswith(("ProfilerStep", "autograd::engine")))
        total = sum(e.self_cpu_time_total for e in events)
        print(f"\n{name}: {total / steps / 1e3:.1f} ms self CPU per step, {calls / steps:.0f} operator calls per step")
        print(events.table(sort_by="self_cpu_time_total", row_limit=top))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, nargs="+", default=[16, 128])
    p.add_argument("--steps", type=int, default=10, help="timed steps per model")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    p.add_argument("--compile", action="store_true", help="also time torch.compile(metamem MANN)")
    p.add_argument("--device", default="cpu", help="where metamem's MANN runs (the reference: CPU)")
    p.add_argument("--no-reference", action="store_true", help="time metamem's MANN only")
    p.add_argument("--programs", type=int, default=0, metavar="P",
                   help="also time NUTM: MANN with P programs per control head")
    p.add_argument("--profile", type=int, default=0, metavar="N",
                   help="print torch.profiler's busiest operators over N steps of MANN and NUTM, then exit")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.profile:
        for b in args.batch:
            profile(b, args.profile, args.programs or 3)
        return
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, metamem on {args.device}; "
          f"T={N_WAY * K_SHOT}, LSTM 200, memory 128x40, 4 heads, LRU")
    for b in args.batch:
        res = bench(b, args.steps, args.warmup, args.compile, args.device, not args.no_reference, args.programs)
        for name, (wall, cpu) in res.items():
            print(f"batch {b}: {name:<16} {wall:7.1f} episodes/s (wall)  {cpu:7.1f} episodes/s (CPU time)")
        for name, base in (("nutm", "metamem"), ("nutm+compile", "metamem+compile"), ("nutm+compile", "nutm")):
            if name in res and base in res:
                print(f"batch {b}: {name}/{base} {res[name][0] / res[base][0]:.2f}x (wall)  "
                      f"{res[name][1] / res[base][1]:.2f}x (CPU time)  (episodes/s; below 1: slower)")
        for name in [n for n in res if n not in ("reference", "nutm", "nutm+compile") and "reference" in res]:
            ratio_wall = res[name][0] / res["reference"][0]
            ratio_cpu = res[name][1] / res["reference"][1]
            print(f"batch {b}: {name}/reference {ratio_wall:.2f}x (wall)  {ratio_cpu:.2f}x (CPU time)")


if __name__ == "__main__":
    main()
