"""Rows of docs/results/mini_imagenet.md from finished run directories.

For each run: its learner and backbone, the 5-way 1-shot and 5-shot set-scoring accuracy on
the run's fixed test episodes (mean ± 95% CI, from the training run's ``eval.json`` and from
any ``metamem eval --out`` folder inside the run, ``<run>/*/results.json``), the episodes scored, the
training budget (steps x episode shape) and the wall / CPU time of training (the last
``metrics.jsonl`` line's ``elapsed_s`` / ``cpu_s``). Each run directory also holds the
learning curve training wrote (``learning_curve.png``).

Usage::

    python scripts/mini_imagenet_table.py results/mini_imagenet/protonet_conv4 results/mini_imagenet/probe_conv4
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import yaml

from metamem.results_check import read_checked_results


def row(run: Path) -> str:
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    results = read_checked_results(run / "eval.json") if (run / "eval.json").is_file() else []
    for extra in sorted(run.glob("*/results.json")):  # re-scorings written by `metamem eval --out`
        results += read_checked_results(extra)
    cells = {}
    for r in results:
        p, s = r["protocol"], r["scores"].get("set")
        if s is not None and p["n_way"] == 5:
            cells[p["k_shot"]] = f"{100 * s['mean']:.2f} ± {100 * s['ci95']:.2f} ({p['episodes']} ep.)"
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if x.strip()]
    timed = [x for x in lines if "elapsed_s" in x]
    last = timed[-1] if timed else {}
    ep, tr, lr = cfg["episodes"], cfg["train"], cfg["learner"]
    budget = (f"{tr['steps']} steps x {ep['batch_size']} x {ep['n_way']}-way {ep['k_shot']}-shot "
              f"{ep['n_query']}-query")
    time_s = (f"{last['elapsed_s'] / 60:.1f} min / {last['cpu_s'] / 60:.1f} min CPU"
              if "cpu_s" in last else "–")
    return (f"| {lr['name']} | {lr.get('backbone', '–')} | {cells.get(1, '–')} | {cells.get(5, '–')} | "
            f"{budget} | {time_s} |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", type=Path)
    args = p.parse_args()
    print("| learner | backbone | 5w1s | 5w5s | training budget | wall / CPU |")
    print("|---|---|---|---|---|---|")
    for run in args.runs:
        print(row(run))


if __name__ == "__main__":
    main()
