"""Score a run's weight snapshots on the test protocol: accuracy against training CPU time.

A run trained with ``train.snapshot_every=N`` keeps its weights every N steps in
``checkpoints/step_<step>.pt``. This script scores each snapshot on fixed test episodes
(the same episodes for every snapshot: ``--seed``), puts it against the training CPU time
spent up to its step (``cpu_s`` of ``metrics.jsonl``, summed over resumed segments, plus the
CPU time of the runs it was initialised from: ``--cpu-offset-min``), and reports the first
snapshot that reaches each target::

    python scripts/time_to_accuracy.py runs/matching_60way --settings 5w1s 20w1s \
        --targets 5w1s=96.6 20w1s=92.3 --episodes 1000 --seed 2026

It writes ``<run>/time_to_accuracy.json`` (atomically) and ``time_to_accuracy.png``:
``{"points": [{"step", "cpu_min", "acc": {"5w1s": [mean %, ci95 %]}}], "reached":
{"5w1s": {"target", "step", "cpu_min"} or null}}``. Snapshots already scored with the same
protocol are kept, so the script can be re-run while the run trains. ``--stop-when-reached``
scores no snapshot after the first that meets every target (the CPU-minutes column needs only
that one).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

import torch

from metamem.files import write_text

SETTING = re.compile(r"^(\d+)w(\d+)s$")


def parse_setting(text: str) -> tuple[int, int]:
    """``"5w1s"`` -> ``(5, 1)``."""
    m = SETTING.match(text)
    if not m:
        raise SystemExit(f"--settings: {text!r} is not of the form <ways>w<shots>s, e.g. 5w1s")
    return int(m[1]), int(m[2])


def cumulative_cpu(metrics: Path) -> list[tuple[int, float]]:
    """``(step, CPU-seconds since the run's first step)`` for each logged step.

    ``cpu_s`` restarts at 0 in a resumed process; the segments are chained.
    """
    out: list[tuple[int, float]] = []
    offset = last = 0.0
    for line in metrics.read_text(encoding="utf-8").splitlines():
        rec = json.loads(line)
        if "cpu_s" not in rec or "step" not in rec:
            continue
        cpu = float(rec["cpu_s"])
        if cpu < last:  # a new process: its clock started again
            offset += last
        last = cpu
        out.append((int(rec["step"]), offset + cpu))
    return out


def cpu_at(curve: list[tuple[int, float]], step: int) -> float:
    """CPU-seconds at ``step``: the last logged step at or before it (linear between logs)."""
    before = [(s, c) for s, c in curve if s <= step]
    after = [(s, c) for s, c in curve if s > step]
    if not before:
        return 0.0
    s0, c0 = before[-1]
    if s0 == step or not after:
        return c0
    s1, c1 = after[0]
    return c0 + (c1 - c0) * (step - s0) / (s1 - s0)


def snapshots(folder: Path) -> list[tuple[int, Path]]:
    """``(step, file)`` of every snapshot in ``folder``, by step (the step read from the file)."""
    found = {}
    for f in sorted(folder.glob("step_*.pt")):
        step = int(torch.load(f, map_location="cpu", weights_only=True)["step"])
        found.setdefault(step, f)
    return sorted(found.items())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", type=Path, help="the run directory (its metrics.jsonl gives the CPU time)")
    ap.add_argument("--snapshots", type=Path, help="folder of step_*.pt (default: RUN/checkpoints)")
    ap.add_argument("--settings", nargs="+", default=["5w1s"], help="e.g. 5w1s 20w1s")
    ap.add_argument("--targets", nargs="*", default=[], help="SETTING=ACC, e.g. 5w1s=96.6")
    ap.add_argument("--episodes", type=int, default=1000)
    ap.add_argument("--n-query", type=int, default=15)
    ap.add_argument("--seed", type=int, default=2026)
    ap.add_argument("--cpu-offset-min", type=float, default=0.0,
                    help="CPU-minutes spent before this run (the run its train.init_from names)")
    ap.add_argument("--every", type=int, default=1, help="score every k-th snapshot only (and the last)")
    ap.add_argument("--stop-when-reached", action="store_true",
                    help="score no later snapshot once every --targets setting has reached its target")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, help="default: RUN/time_to_accuracy.json")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    import metamem  # after the thread count
    from metamem.device import keep_freed_memory

    keep_freed_memory()  # as `metamem eval` does: no page faults per episode's activations

    settings = [parse_setting(s) for s in args.settings]
    targets = {}
    for t in args.targets:
        key, _, value = t.partition("=")
        parse_setting(key)
        targets[key] = float(value)
    folder = args.snapshots or args.run / "checkpoints"
    found = snapshots(folder)
    snaps = found[:: args.every] + ([found[-1]] if found and (len(found) - 1) % args.every else [])  # the last always
    if not snaps:
        raise SystemExit(f"{folder}: no step_*.pt snapshots; train with train.snapshot_every=N")
    curve = cumulative_cpu(args.run / "metrics.jsonl")
    out = args.out or args.run / "time_to_accuracy.json"
    protocol = {"episodes": args.episodes, "n_query": args.n_query, "seed": args.seed, "protocol": "set"}
    old: dict[str, Any] = json.loads(out.read_text()) if out.exists() else {}
    points = {p["step"]: p for p in old.get("points", []) if old.get("protocol") == protocol}
    for step, file in snaps:
        point = points.setdefault(step, {"step": step, "acc": {}})
        point["cpu_s"] = round(60 * args.cpu_offset_min + cpu_at(curve, step), 2)
        point["cpu_min"] = round(point["cpu_s"] / 60, 2)
        missing = [(n, k) for n, k in settings if f"{n}w{k}s" not in point["acc"]]
        if not missing:
            continue
        run = metamem.load_run(file, device="cpu")
        for n, k in missing:
            res = run.evaluate(n_way=n, k_shot=k, progress=False, **protocol)
            point["acc"][f"{n}w{k}s"] = [round(100 * res.mean, 2), round(100 * res.ci95, 2)]
        print(f"step {step:6d}  {point['cpu_min']:7.2f} CPU-min  "
              + "  ".join(f"{s} {a[0]:.2f}" for s, a in point["acc"].items()), flush=True)
        save(out, args, protocol, points, targets)  # an interrupted run keeps what it scored
        if args.stop_when_reached and targets and all(
                any(key in p["acc"] and p["acc"][key][0] >= t for p in points.values()) for key, t in targets.items()):
            break
    data = save(out, args, protocol, points, targets)
    for key, hit in data["reached"].items():
        print(f"{key} >= {targets[key]}: " + (f"step {hit['step']}, {hit['cpu_min']} CPU-min" if hit else "not reached"))
    plot(data, targets, out.with_suffix(".png"))
    return 0


def save(out: Path, args: argparse.Namespace, protocol: dict[str, Any], points: dict[int, dict[str, Any]],
         targets: dict[str, float]) -> dict[str, Any]:
    """Write the scored points (by step) and the first that reaches each target, atomically."""
    ordered = [points[s] for s in sorted(points) if points[s]["acc"]]
    reached: dict[str, Any] = {}
    for key, target in targets.items():
        hit = next((p for p in ordered if key in p["acc"] and p["acc"][key][0] >= target), None)
        reached[key] = hit and {"target": target, "step": hit["step"], "cpu_min": hit["cpu_min"]}
    data = {"run": str(args.run), "protocol": protocol, "cpu_offset_min": args.cpu_offset_min,
            "points": ordered, "reached": reached}
    write_text(out, json.dumps(data, indent=1))
    return data


def plot(data: dict[str, Any], targets: dict[str, float], path: Path) -> None:
    """Accuracy against CPU-minutes, one line per setting, dashed targets."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    keys = sorted({k for p in data["points"] for k in p["acc"]})
    for i, key in enumerate(keys):
        xs = [p["cpu_min"] for p in data["points"] if key in p["acc"]]
        ys = [p["acc"][key][0] for p in data["points"] if key in p["acc"]]
        ax.plot(xs, ys, marker="o", ms=3, color=f"C{i}", label=key)
        if key in targets:
            ax.axhline(targets[key], ls="--", lw=0.8, color=f"C{i}")
    ax.set_xlabel("training CPU-minutes (one thread)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(Path(data["run"]).name)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
