"""The algorithmic suite: NTM, DNC, NUTM and MANN cores under one budget, scored on longer sequences.

Every core is an LSTM controller + memory (``metamem ls cores``) with a linear head, trained
with the same seed, data stream, step budget and optimiser on each task; the score is the
average number of wrong bits per sequence on a fixed held-out batch of LONGER sequences
(the NSM paper's figure). The NSM paper's NTM / NUTM (p = 2) numbers are printed beside for
orientation only: they come from ~10^5 training steps at the papers' sizes, this is a small
CPU budget at small sizes, and the test lengths differ.

Cores: ``ntm`` (1 read + 1 write head, shifts ±1), ``dnc`` (1 read head), ``nutm`` (the same
NTM with 2 programs per control head, Le et al. 2020), ``mann`` (slot memory with LRU writes,
Santoro et al. 2016).

Usage::

    python scripts/bench_memory_tasks.py --steps 400                   # every task and core
    python scripts/bench_memory_tasks.py --tasks copy,associative_recall --cores ntm,nutm --steps 1000
    python scripts/bench_memory_tasks.py --tasks associative_recall --cores ntm,nutm --seed 0,1,2
    python scripts/bench_memory_tasks.py --summarise run_a.log run_b.log   # pool seeds from logs

With several seeds the run ends with a summary per task and core: mean bit errors ± the 95%
Student-t half-width over seeds, median, range, and how many seeds solved the task (fewer
than 0.5 wrong bits per sequence), then a two-sided Mann-Whitney U test between each pair of
cores (seeds are few and their errors far from normal). ``--summarise`` prints the same for
the result rows of earlier logs (for seeds run as separate commands or on other machines).
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from metamem.evaluation.metrics import mean_t95
from metamem.memory import (
    TaskBatch,
    associative_recall_task,
    attach_programs,
    bit_errors,
    build_core,
    copy_task,
    ngram_task,
    priority_sort_task,
    program_regulariser,
    repeat_copy_task,
)

BITS = 6


@dataclass
class Task:
    """A task: a train batch drawn with random sizes, a fixed longer test setting, memory size,
    and the longest train setting (scored too, to tell "not learnt" from "not generalised")."""

    train: Callable[[torch.Generator, int], TaskBatch]
    test: Callable[[torch.Generator, int], TaskBatch]
    test_setting: str
    slots: int
    paper: tuple[float, float] | None  # NSM paper, bit error per sequence: NTM, NUTM (p=2)
    longest_train: Callable[[torch.Generator, int], TaskBatch]


def _randint(gen: torch.Generator, low: int, high: int) -> int:
    return int(torch.randint(low, high + 1, (1,), generator=gen))


TASKS: dict[str, Task] = {
    "copy": Task(
        lambda g, b: copy_task(b, _randint(g, 1, 10), BITS, generator=g),
        lambda g, b: copy_task(b, 20, BITS, generator=g),
        "train lengths 1-10, test length 20", 32, (0.0, 0.0),
        lambda g, b: copy_task(b, 10, BITS, generator=g),
    ),
    "repeat_copy": Task(
        lambda g, b: repeat_copy_task(b, _randint(g, 1, 5), _randint(g, 1, 5), BITS, generator=g),
        lambda g, b: repeat_copy_task(b, 5, 8, BITS, generator=g),
        "train length 1-5 x 1-5 repeats, test 5 x 8", 32, (405.10, 366.69),
        lambda g, b: repeat_copy_task(b, 5, 5, BITS, generator=g),
    ),
    "associative_recall": Task(
        lambda g, b: associative_recall_task(b, _randint(g, 2, 4), 2, BITS, generator=g),
        lambda g, b: associative_recall_task(b, 8, 2, BITS, generator=g),
        "train 2-4 items of 2 steps, test 8 items", 32, (7.66, 1.35),
        lambda g, b: associative_recall_task(b, 4, 2, BITS, generator=g),
    ),
    "priority_sort": Task(
        lambda g, b: priority_sort_task(b, 8, 6, BITS, generator=g),
        lambda g, b: priority_sort_task(b, 12, 9, BITS, generator=g),
        "train 8 -> 6 items, test 12 -> 9", 32, (24.41, 20.00),
        lambda g, b: priority_sort_task(b, 8, 6, BITS, generator=g),
    ),
    "ngrams": Task(
        lambda g, b: ngram_task(b, 60, n=6, generator=g),
        lambda g, b: ngram_task(b, 120, n=6, generator=g),
        "6-grams, train 60 bits, test 120", 32, (132.59, 127.68),
        lambda g, b: ngram_task(b, 60, n=6, generator=g),
    ),
    "long_copy": Task(
        lambda g, b: copy_task(b, _randint(g, 1, 20), BITS, generator=g),
        lambda g, b: copy_task(b, 40, BITS, generator=g),
        "train lengths 1-20, test length 40", 64, (16.04, 0.02),
        lambda g, b: copy_task(b, 20, BITS, generator=g),
    ),
}

CORES = ("ntm", "dnc", "nutm", "mann")


class Model(nn.Module):
    """Memory core + linear head (``logits [B, T, out]``)."""

    def __init__(self, core: str, in_dim: int, out_dim: int, *, hidden: int, slots: int, width: int) -> None:
        super().__init__()
        sizes = dict(input_size=in_dim, hidden_size=hidden, slots=slots, width=width, read_heads=1)
        if core == "mann":
            self.core = build_core("lstm_slot", policy="lru", **sizes)
        else:
            self.core = build_core("ntm" if core == "nutm" else core, **sizes)
        if core == "nutm":
            attach_programs(self.core.memory, 2, key_size=2)
        self.head = nn.Linear(self.core.out_features, out_dim)

    def forward(self, batch: TaskBatch) -> torch.Tensor:
        return self.head(self.core(batch.inputs, write_steps=batch.write_steps).features)


def masked_bce(logits: torch.Tensor, batch: TaskBatch) -> torch.Tensor:
    loss = F.binary_cross_entropy_with_logits(logits, batch.targets, reduction="none").sum(-1)
    mask = batch.mask.float()
    return (loss * mask).sum() / mask.sum()


def run(task_name: str, core: str, seed: int, args: argparse.Namespace) -> tuple[float, float, float, float]:
    """Train one core on one task; return (test bit errors, test BCE, longest-train bit errors, wall s)."""
    task = TASKS[task_name]
    probe = task.train(torch.Generator().manual_seed(0), 1)
    torch.manual_seed(seed)  # the script owns its RNG: same initial weights for every run
    model = Model(core, probe.inputs.shape[-1], probe.targets.shape[-1], hidden=args.hidden,
                  slots=task.slots, width=args.width)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    sched = (torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=args.steps)
             if args.schedule == "cosine" else None)
    gen = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    for step in range(args.steps):
        batch = task.train(gen, args.batch)
        loss = masked_bce(model(batch), batch)
        reg = program_regulariser(model)
        if reg is not None:
            loss = loss + 0.1 * 0.9 ** (step // 100) * reg
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        opt.step()
        if sched is not None:
            sched.step()
    wall = time.perf_counter() - start
    model.eval()
    test = task.test(torch.Generator().manual_seed(seed + 10_000), args.test_batch)
    longest = task.longest_train(torch.Generator().manual_seed(seed + 20_000), args.test_batch)
    with torch.no_grad():
        logits = model(test)
        train_err = float(bit_errors(model(longest), longest).mean())
    return float(bit_errors(logits, test).mean()), float(masked_bce(logits, test)), train_err, wall


SOLVED_BELOW = 0.5  # bit errors per sequence under which a seed counts as having solved the task


@dataclass(frozen=True)
class Row:
    """One result row: a task, core and seed, with its test bit errors per sequence."""

    task: str
    core: str
    seed: int
    err: float
    bce: float
    train_err: float


def format_row(row: Row, wall: float) -> str:
    """A result row as the script prints it (and :func:`parse_rows` reads it back)."""
    task = TASKS[row.task]
    paper = "" if task.paper is None else f"{task.paper[0]:.2f} / {task.paper[1]:.2f}"
    return (f"{row.task:<19} {row.core:<5} {row.seed:>4} {row.err:>11.2f} {row.bce:>9.4f} "
            f"{row.train_err:>9.2f} {wall:>6.1f}s   {paper}")


def parse_rows(text: str, source: str = "<log>") -> list[Row]:
    """The result rows of a log of this script (comment and header lines are skipped).

    Raises:
        ValueError: naming ``source`` and the line number for a line that is not a result
            row (e.g. a log from before the ``seed`` column: rerun it or drop the line).
    """
    rows = []
    for number, line in enumerate(text.splitlines(), 1):
        parts = line.split()
        if not parts or parts[0].startswith("#") or parts[0] == "task":
            continue
        try:
            if parts[0] not in TASKS or parts[1] not in CORES or not parts[6].endswith("s"):
                raise ValueError
            rows.append(Row(parts[0], parts[1], int(parts[2]), float(parts[3]), float(parts[4]), float(parts[5])))
        except (ValueError, IndexError):
            raise ValueError(
                f"{source}:{number}: not a result row of bench_memory_tasks.py (task core seed "
                f"bit-err bce train-err wall): {line.strip()!r}"
            ) from None
    return rows


def summarise(rows: Iterable[Row]) -> list[str]:
    """Summary lines for ``rows`` pooled over seeds, per task and core (see the module doc).

    Raises:
        ValueError: when a (task, core, seed) appears twice (the same run counted twice).
    """
    from scipy import stats  # scikit-learn's dependency; only the summary needs it

    groups: dict[tuple[str, str], dict[int, Row]] = {}
    for row in rows:
        seen = groups.setdefault((row.task, row.core), {})
        if row.seed in seen:
            raise ValueError(f"seed {row.seed} of {row.task} / {row.core} appears twice; "
                             "pass each run's log once")
        seen[row.seed] = row
    lines = [f"# summary over seeds: bit errors per sequence, mean ± 95% Student-t half-width; "
             f"solved: < {SOLVED_BELOW} errors",
             f"{'task':<19} {'core':<5} {'n':>3} {'mean':>7} {'± 95%':>6} {'median':>7} {'min':>6} {'max':>6} "
             f"{'solved':>7}  seeds"]
    for (task, core), by_seed in groups.items():
        errs = [r.err for r in by_seed.values()]
        n = len(errs)
        _, half = mean_t95(errs)  # Student t: mean_ci95's 1.96 suits 1,000 episodes, not a few seeds
        solved = sum(e < SOLVED_BELOW for e in errs)
        lines.append(f"{task:<19} {core:<5} {n:>3} {statistics.fmean(errs):>7.2f} {half:>6.2f} "
                     f"{statistics.median(errs):>7.2f} {min(errs):>6.2f} {max(errs):>6.2f} {solved:>3}/{n:<3}  "
                     + ",".join(str(s) for s in sorted(by_seed)))
    tasks = dict.fromkeys(task for task, _ in groups)
    for task in tasks:
        cores = [core for t, core in groups if t == task]
        for a, b in itertools.combinations(cores, 2):
            xa = [r.err for r in groups[(task, a)].values()]
            xb = [r.err for r in groups[(task, b)].values()]
            if len(xa) < 2 or len(xb) < 2:
                continue
            p = stats.mannwhitneyu(xa, xb, alternative="two-sided").pvalue
            lines.append(f"# {task}: {a} vs {b}, Mann-Whitney U two-sided p = {p:.2f} "
                         f"(n = {len(xa)} and {len(xb)})")
    return lines


def summarise_logs(paths: Sequence[str]) -> list[str]:
    """:func:`summarise` over the result rows of the logs ``paths``.

    Raises:
        ValueError: for a missing log (naming it) or a line that is not a result row.
    """
    rows: list[Row] = []
    for path in paths:
        try:
            text = Path(path).read_text()
        except OSError as e:
            raise ValueError(f"{path}: cannot read the log ({e.strerror})") from None
        rows += parse_rows(text, path)
    if not rows:
        raise ValueError(f"no result rows in {', '.join(paths)}; pass logs written by this script")
    return summarise(rows)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", default=",".join(TASKS), help="comma-separated: " + ", ".join(TASKS))
    p.add_argument("--cores", default=",".join(CORES), help="comma-separated: " + ", ".join(CORES))
    p.add_argument("--steps", type=int, default=400, help="training steps per task and core")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--test-batch", type=int, default=200)
    p.add_argument("--hidden", type=int, default=64, help="LSTM units")
    p.add_argument("--width", type=int, default=16, help="slot width D")
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--schedule", choices=("none", "cosine"), default="none",
                   help="learning rate: constant, or cosine-annealed to 0 over --steps")
    p.add_argument("--seed", default="0", help="seed, or comma-separated seeds (one row each)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--summarise", nargs="+", metavar="LOG",
                   help="print the summary over seeds of these logs' result rows; trains nothing")
    args = p.parse_args()
    if args.summarise:
        try:
            print("\n".join(summarise_logs(args.summarise)))
        except ValueError as e:
            sys.exit(f"bench_memory_tasks.py: {e}")
        return
    torch.set_num_threads(args.threads)
    tasks, cores = args.tasks.split(","), args.cores.split(",")
    try:
        seeds = [int(s) for s in args.seed.split(",")]
    except ValueError:
        p.error(f"--seed takes comma-separated ints, got {args.seed!r}")
    for name in tasks:
        if name not in TASKS:
            p.error(f"unknown task {name!r}; valid: {', '.join(TASKS)}")
    for name in cores:
        if name not in CORES:
            p.error(f"unknown core {name!r}; valid: {', '.join(CORES)}")
    print(f"# {args.steps} steps x batch {args.batch}, LSTM {args.hidden}, D={args.width}, R=1, Adam lr {args.lr}"
          f"{' cosine to 0' if args.schedule == 'cosine' else ''}, clip 10, seed {args.seed}, test batch {args.test_batch}, torch threads {args.threads}")
    print(f"{'task':<19} {'core':<5} {'seed':>4} {'bit err/seq':>11} {'test bce':>9} {'train err':>9} {'wall':>7}"
          "   NSM paper NTM / NUTM")
    rows = []
    for name in tasks:
        task = TASKS[name]
        print(f"# {name}: {task.test_setting}, S={task.slots}; train err: longest train setting")
        for core in cores:
            for seed in seeds:
                err, bce, train_err, wall = run(name, core, seed, args)
                rows.append(Row(name, core, seed, err, bce, train_err))
                print(format_row(rows[-1], wall), flush=True)
    if len(seeds) > 1:
        print("\n".join(summarise(rows)))

if __name__ == "__main__":
    main()
