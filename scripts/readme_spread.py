"""Measure the spread of the README's main job over seeds, thread counts and CPU kernels.

The main job (``metamem train experiments/omniglot/mann_lru.yaml train.steps=2000``) is
deterministic on one machine, but MANN leaves its plateau at a step that moves with tiny
numeric differences. This script runs the job once per cell of

    seeds x thread counts x ATEN_CPU_CAPABILITY (torch's CPU kernels: avx2, avx512)

scores each run on the README's shapes folder too, and writes one record per cell to
``results/readme_spread/spread.json`` (atomically, after every cell, so an interrupted
matrix resumes where it stopped). The README's spread table and its bands are rendered
from that file by ``python scripts/render_tables.py``::

    python scripts/readme_spread.py                      # 5 seeds x 1, 2 threads x avx2, avx512
    python scripts/readme_spread.py --seeds 0 1 --threads 1 --kernels avx512
    python scripts/readme_spread.py --summary            # print the table of what is there

A record: seed, threads, kernels, ``acc`` (all steps of the 1,000 test episodes, %),
``first``/``second`` (the 1st/2nd presentation, %), ``left_plateau`` (2nd above 1st),
``cpu_s`` (training CPU-seconds), ``shapes`` (%), ``cpu`` (the processor's model name).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

from metamem.files import write_text

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "results" / "readme_spread" / "spread.json"
CONFIG = "experiments/omniglot/mann_lru.yaml"


def cpu_model() -> str:
    """The processor's model name (``/proc/cpuinfo``), or ``platform.processor()``."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def load(path: Path) -> list[dict[str, Any]]:
    """The records already measured (an empty list when the file does not exist)."""
    if not path.exists():
        return []
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict) or not isinstance(data.get("runs"), list):
        raise SystemExit(f"{path}: expected {{'runs': [...]}}; move the file away to start over")
    return list(data["runs"])


def save(path: Path, runs: list[dict[str, Any]]) -> None:
    """Write the records atomically (temp file in the same folder, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    runs = sorted(runs, key=lambda r: (r["kernels"], r["threads"], r["seed"]))
    write_text(path, json.dumps({"command": f"metamem train {CONFIG} train.steps=2000", "runs": runs}, indent=1) + "\n")


def measure(seed: int, threads: int, kernels: str, work: Path, steps: int) -> dict[str, Any]:
    """Train and score one cell; returns its record."""
    run = work / f"seed{seed}_t{threads}_{kernels}"
    env = {**os.environ, "ATEN_CPU_CAPABILITY": kernels, "OMP_NUM_THREADS": str(threads),
           "MPLBACKEND": "Agg"}
    train = ["metamem", "train", CONFIG, f"train.steps={steps}", f"seed={seed}", "--out", str(run),
             "--threads", str(threads), "--no-progress", "--overwrite"]
    subprocess.run(train, cwd=REPO, env=env, check=True)
    shapes_dir = work / "shapes"
    if not shapes_dir.exists():
        subprocess.run([sys.executable, "scripts/make_shapes.py", str(shapes_dir)], cwd=REPO, check=True)
    shapes_out = work / f"{run.name}_shapes"
    subprocess.run(["metamem", "eval", str(run), f"data=folder:{shapes_dir}", "--out", str(shapes_out),
                    "--overwrite", "--threads", str(threads)], cwd=REPO, env=env, check=True,
                   stdout=subprocess.DEVNULL)
    seq = json.loads((run / "eval.json").read_text())[0]["scores"]["sequence"]
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    shapes = json.loads((shapes_out / "results.json").read_text())["results"][0]["scores"]["sequence"]
    first, second = seq["per_presentation"][:2]
    return {"seed": seed, "threads": threads, "kernels": kernels,
            "acc": round(100 * seq["mean"], 2), "first": round(100 * first, 1),
            "second": round(100 * second, 1), "left_plateau": bool(second > first),
            "cpu_s": round(max(float(r["cpu_s"]) for r in records if "cpu_s" in r)),
            "shapes": round(100 * shapes["mean"], 1), "cpu": cpu_model(), "steps": steps}


def summary(runs: list[dict[str, Any]]) -> str:
    """Mean, min and max of the accuracy, by whether the run left the plateau."""
    lines = []
    for name, group in (("left the plateau", [r for r in runs if r["left_plateau"]]),
                        ("on the plateau", [r for r in runs if not r["left_plateau"]]),
                        ("all", runs)):
        if group:
            accs = [r["acc"] for r in group]
            lines.append(f"{name}: {len(group)} runs, mean {statistics.fmean(accs):.2f} %, "
                         f"min {min(accs):.2f}, max {max(accs):.2f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--kernels", nargs="+", default=["avx2", "avx512"], choices=["default", "avx2", "avx512"])
    ap.add_argument("--steps", type=int, default=2000, help="training steps (the README's 2,000)")
    ap.add_argument("--work", type=Path, default=REPO / "runs" / "readme_spread", help="run directories")
    ap.add_argument("--out", type=Path, default=OUT, help="the records file (default: %(default)s)")
    ap.add_argument("--summary", action="store_true", help="print what the records file holds and stop")
    args = ap.parse_args(argv)
    runs = load(args.out)
    if not args.summary:
        for threads in args.threads:
            for kernels in args.kernels:
                for seed in args.seeds:
                    key = (seed, threads, kernels, cpu_model())
                    if any((r["seed"], r["threads"], r["kernels"], r["cpu"]) == key and r["steps"] == args.steps
                           for r in runs):
                        continue
                    print(f"== seed {seed}, {threads} thread(s), {kernels}", flush=True)
                    rec = measure(seed, threads, kernels, args.work, args.steps)
                    print(json.dumps(rec), flush=True)
                    runs = [r for r in runs if (r["seed"], r["threads"], r["kernels"], r["cpu"]) != key]
                    save(args.out, [*runs, rec])
                    runs.append(rec)
    print(summary(runs))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
