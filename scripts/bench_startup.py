"""CLI start-up time: ``metamem --help``, ``ls``, ``validate`` against ``python -c pass``
and ``import torch``, measured in the same run.

Each command runs ``--repeat`` times as a fresh process (``python -m metamem ...`` with this
interpreter, so this checkout's code); the table gives the median wall time and the median
CPU time of the child (user + system, from ``getrusage``), which a busy machine inflates
less than the wall time. The registry manifest (``metamem ls``) is built once before timing.

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
CMDS = [
    ("python -c pass (baseline)", ["-c", "pass"]),
    ("python -c 'import torch' (reference)", ["-c", "import torch"]),
    ("metamem --help", ["-m", "metamem", "--help"]),
    ("metamem ls learners", ["-m", "metamem", "ls", "learners"]),
    ("metamem validate --no-data mann_lru.yaml", ["-m", "metamem", "validate", "--no-data",
                                                  "experiments/omniglot/mann_lru.yaml"]),
    ("metamem validate mann_lru.yaml", ["-m", "metamem", "validate", "experiments/omniglot/mann_lru.yaml"]),
]


def once(args: list[str], env: dict[str, str]) -> tuple[float, float]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    subprocess.run([sys.executable, *args], cwd=ROOT, env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=5, help="runs per command (median reported)")
    a = ap.parse_args()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    once(["-m", "metamem", "ls", "learners"], env)  # build the manifest outside the timing
    rows = []
    for name, args in CMDS:
        runs = [once(args, env) for _ in range(a.repeat)]
        rows.append((name, statistics.median(w for w, _ in runs), statistics.median(c for _, c in runs)))
    base = rows[0][1]
    print(f"load average {os.getloadavg()[0]:.1f}, {a.repeat} runs each, medians")
    print("| command | wall s | CPU s | wall - baseline |")
    print("|---|---|---|---|")
    for name, wall, cpu in rows:
        print(f"| {name} | {wall:.2f} | {cpu:.2f} | {wall - base:+.2f} |")


if __name__ == "__main__":
    main()
