"""CLI start-up time: ``metamem --help``, ``ls`` and ``validate`` against their targets and
against ``python -c pass`` (and ``import torch``), measured in the same run.

Each command runs as a fresh process (``python -m metamem ...`` with this interpreter, so
this checkout's code), ``--repeat`` times, in interleaved rounds (every command once per
round) so that a change of load during the run hits all commands alike. The table gives
the median wall time, the median CPU time of the child (user + system, from
``getrusage``, which a busy machine inflates less than the wall time), the wall time above
the baseline's, and whether the median wall time meets the issue's target (``--help``
< 0.5 s; ``ls``, ``validate`` < 1.5 s). The load average is printed before and after.
The registry manifest (``metamem ls``, ``validate``) is built once before timing, as any
earlier ``metamem`` call in this checkout would have done.

    python scripts/bench_startup.py --repeat 7
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CFG = "experiments/omniglot/mann_lru.yaml"
#: (label, interpreter arguments, target wall seconds or None)
CMDS: list[tuple[str, list[str], float | None]] = [
    ("python -c pass (baseline)", ["-c", "pass"], None),
    ("python -c 'import torch' (reference)", ["-c", "import torch"], None),
    ("metamem --help", ["-m", "metamem", "--help"], 0.5),
    ("metamem train --help", ["-m", "metamem", "train", "--help"], 0.5),
    ("metamem eval --help", ["-m", "metamem", "eval", "--help"], 0.5),
    ("metamem ls learners", ["-m", "metamem", "ls", "learners"], 1.5),
    ("metamem ls datasets", ["-m", "metamem", "ls", "datasets"], 1.5),
    ("metamem validate --no-data mann_lru.yaml", ["-m", "metamem", "validate", "--no-data", CFG], 1.5),
    ("metamem validate mann_lru.yaml (loads the data)", ["-m", "metamem", "validate", CFG], 1.5),
]


def once(args: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall and CPU seconds of one fresh ``python ARGS`` process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    subprocess.run([sys.executable, *args], cwd=ROOT, env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def load() -> str:
    return ", ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=5, help="runs per command (median reported)")
    ap.add_argument("--only", nargs="*", default=None,
                    help="time only the commands whose label contains one of these words (the "
                    "baseline always runs)")
    a = ap.parse_args()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    cmds = [c for i, c in enumerate(CMDS) if i == 0 or not a.only or any(w in c[0] for w in a.only)]
    for _, args, _ in cmds:  # warm-up: manifest built, files in the page cache
        once(args, env)
    start = load()
    runs: dict[str, list[tuple[float, float]]] = {name: [] for name, _, _ in cmds}
    for _ in range(a.repeat):
        for name, args, _ in cmds:
            runs[name].append(once(args, env))
    end = load()
    base = statistics.median(w for w, _ in runs[cmds[0][0]])
    print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; load average (1, 5, 15 min) "
          f"{start} before, {end} after; {os.cpu_count()} CPUs; {a.repeat} interleaved runs each, medians")
    print("| command | target | wall s | CPU s | wall - baseline | meets target |")
    print("|---|---|---|---|---|---|")
    for name, _, target in cmds:
        wall = statistics.median(w for w, _ in runs[name])
        cpu = statistics.median(c for _, c in runs[name])
        verdict = "" if target is None else ("yes" if wall < target else "**no**")
        tgt = "" if target is None else f"< {target:g} s"
        print(f"| {name} | {tgt} | {wall:.2f} | {cpu:.2f} | {wall - base:+.2f} | {verdict} |")


if __name__ == "__main__":
    main()
