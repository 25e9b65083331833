"""A training queue that outlives a working day: list, resume and export long runs.

A queue file (YAML) names the runs to train, in order. Each job is an experiment config with
overrides, a run directory and, optionally, where its finished copy goes and how it is
re-scored::

    runs_dir: runs/queue            # run directories: <runs_dir>/<name> (relative to the file's folder's cwd)
    threads: 1
    jobs:
      - name: protonet_background
        config: experiments/omniglot/paper/protonet_background.yaml
        overrides: [train.steps=8000]
        export: results/omniglot_paper/background_only      # optional: the committed copy
        rescore:                                            # optional: `metamem eval` runs on it
          eval_within_alphabet: [eval.seed=2026, eval.n_way=20, eval.k_shot=1, eval.n_query=1,
                                 eval.within_group=true, "eval.data_options={rotations: false}"]

Commands::

    python scripts/train_queue.py status QUEUE.yaml      # one line per job: where it stands
    python scripts/train_queue.py run QUEUE.yaml         # train what is left, in order
    python scripts/train_queue.py run QUEUE.yaml --only protonet_background --dry-run

``status`` shows a job that another process is training (the run directory's lock is held) as
``running``; ``run`` leaves such a job to that process and goes on with the next, so two
runners (one per core) can work through one queue.

``run`` starts a job that has no run directory, resumes one that stopped (``metamem train
--resume DIR train.steps=N``, exact: the checkpoint holds the optimizer, schedule, sampler and
RNG states), and after a job's final evaluation exports it (``export``) and re-scores the copy
(``rescore``, each into ``<export>/<key>``). Stop it at any time (Ctrl-C, ``kill``, the end of a
session): at most ``train.checkpoint_every`` steps are lost, and the next ``run`` resumes.
Each job's output goes to ``<runs_dir>/<name>.log``.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import yaml

from metamem.config import load_config
from metamem.files import directory_holder
from metamem.runs import read_metrics


class QueueError(ValueError):
    """A queue file that cannot be read (names the file and the key)."""


@dataclass
class Job:
    """One queued run: ``metamem train CONFIG OVERRIDES --out RUN_DIR`` (+ export and re-scores)."""

    name: str
    config: Path
    run_dir: Path
    overrides: list[str] = field(default_factory=list)
    export: Path | None = None
    rescore: dict[str, list[str]] = field(default_factory=dict)

    @cached_property
    def steps(self) -> int:
        """Target step count: the config's ``train.steps`` after the job's overrides (read once)."""
        cfg = load_config(self.config, self.overrides)
        return int(cfg.train.steps)


@dataclass
class State:
    """Where a job stands: ``queued``, ``running`` (another process holds its run directory),
    ``stopped`` (at ``step``), ``trained`` or ``exported``."""

    kind: str
    step: int = 0
    detail: str = ""


def read_queue(path: Path) -> tuple[list[Job], int, Path]:
    """Parse a queue file into jobs, the thread count and the runs folder (one-line errors)."""
    try:
        doc = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise QueueError(f"{path}: cannot read the queue file ({err})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("jobs"), list):
        raise QueueError(f"{path}: a queue file is a mapping with a 'jobs' list")
    unknown = set(doc) - {"runs_dir", "threads", "jobs"}
    if unknown:
        raise QueueError(f"{path}: unknown key(s) {sorted(unknown)}; expected runs_dir, threads, jobs")
    runs_dir = Path(doc.get("runs_dir", "runs/queue"))
    threads = doc.get("threads", 1)
    if not isinstance(threads, int) or threads < 1:
        raise QueueError(f"{path}: threads must be a positive integer, got {threads!r}")
    jobs: list[Job] = []
    for i, item in enumerate(doc["jobs"]):
        where = f"{path}: jobs[{i}]"
        if not isinstance(item, dict) or not {"name", "config"} <= set(item):
            raise QueueError(f"{where} needs at least 'name' and 'config'")
        bad = set(item) - {"name", "config", "overrides", "export", "rescore"}
        if bad:
            raise QueueError(f"{where}: unknown key(s) {sorted(bad)}")
        name = str(item["name"])
        if not name.replace("_", "").replace("-", "").isalnum():
            raise QueueError(f"{where}: name {name!r} must be letters, digits, '_' or '-'")
        if any(j.name == name for j in jobs):
            raise QueueError(f"{where}: duplicate job name {name!r}")
        overrides = item.get("overrides") or []
        rescore = item.get("rescore") or {}
        if not isinstance(overrides, list) or not all(isinstance(o, str) for o in overrides):
            raise QueueError(f"{where}.overrides must be a list of KEY=VALUE strings")
        if not isinstance(rescore, dict) or not all(
                isinstance(v, list) and all(isinstance(o, str) for o in v) for v in rescore.values()):
            raise QueueError(f"{where}.rescore must map a folder name to a list of KEY=VALUE strings")
        config = Path(item["config"])
        if not config.is_file():
            raise QueueError(f"{where}.config: {config} not found")
        jobs.append(Job(name=name, config=config, run_dir=runs_dir / name, overrides=overrides,
                        export=Path(item["export"]) if item.get("export") else None,
                        rescore={str(k): v for k, v in rescore.items()}))
    return jobs, threads, runs_dir


def _last_step(run_dir: Path) -> int:
    metrics = run_dir / "metrics.jsonl"
    if not metrics.is_file():
        return 0
    steps = [int(r["step"]) for r in read_metrics(metrics) if "step" in r]
    return max(steps, default=0)


def _exported_step(dest: Path) -> int | None:
    if not (dest / "metrics.jsonl").is_file():
        return None
    return _last_step(dest)


def state_of(job: Job) -> State:
    """Read a job's state from its run directory (and its exported copy)."""
    if not job.run_dir.exists():
        return State("queued")
    step, target = _last_step(job.run_dir), job.steps
    holder = directory_holder(job.run_dir)
    if holder is not None:
        return State("running", step, f"step {step:,} of {target:,} (pid {holder})")
    done = step >= target and (job.run_dir / "eval.json").is_file()
    if not done:
        has_ckpt = (job.run_dir / "checkpoints" / "last.pt").is_file()
        return State("stopped", step, f"step {step:,} of {target:,}" + ("" if has_ckpt else ", no checkpoint yet"))
    if job.export is not None and _exported_step(job.export) == step:
        return State("exported", step, f"at {job.export}")
    return State("trained", step, "not exported yet" if job.export else "")


def _run(cmd: list[str], log: Path, dry: bool) -> int:
    line = " ".join(shlex.quote(c) for c in cmd)
    print(f"  $ {line}", flush=True)
    if dry:
        return 0
    with log.open("a") as fh:
        fh.write(f"$ {line}\n")
        fh.flush()
        return subprocess.call(cmd, stdout=fh, stderr=subprocess.STDOUT)


def run_job(job: Job, threads: int, dry: bool = False) -> State:
    """Train (or resume) one job to its target, then export and re-score it."""
    metamem = [sys.executable, "-m", "metamem"]
    log = job.run_dir.parent / f"{job.name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    st = state_of(job)
    if st.kind == "running":
        print(f"{job.name}: another process is training it ({st.detail}); left to it", flush=True)
        return st
    if st.kind == "queued":
        cmd = [*metamem, "train", str(job.config), *job.overrides, "--out", str(job.run_dir)]
    elif st.kind == "stopped" and (job.run_dir / "checkpoints" / "last.pt").is_file():
        cmd = [*metamem, "train", "--resume", str(job.run_dir), f"train.steps={job.steps}"]
    elif st.kind == "stopped":  # killed before its first checkpoint: start again
        cmd = [*metamem, "train", str(job.config), *job.overrides, "--out", str(job.run_dir), "--overwrite"]
    else:
        cmd = []
    if cmd:
        rc = _run([*cmd, "--threads", str(threads), "--no-progress"], log, dry)
        if rc != 0:
            raise SystemExit(f"{job.name}: training exited with {rc}; see {log}")
    if job.export is not None and (dry or state_of(job).kind == "trained"):
        export = [sys.executable, str(Path(__file__).with_name("omniglot_paper.py")), "export",
                  str(job.run_dir), str(job.export), "--overwrite"]
        if _run(export, log, dry) != 0:
            raise SystemExit(f"{job.name}: export failed; see {log}")
        for key, overrides in job.rescore.items():
            cmd = [*metamem, "eval", str(job.export), *overrides, "--out", str(job.export / key), "--overwrite"]
            if _run(cmd, log, dry) != 0:
                raise SystemExit(f"{job.name}: re-score {key} failed; see {log}")
    return st if dry else state_of(job)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("status", help="one line per job: queued, stopped at step S, trained, exported")
    s.add_argument("queue", type=Path)
    s.add_argument("--json", action="store_true", help="machine-readable lines")
    r = sub.add_parser("run", help="train, resume, export and re-score the jobs still to do, in order")
    r.add_argument("queue", type=Path)
    r.add_argument("--only", nargs="+", metavar="NAME", help="just these jobs")
    r.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    args = p.parse_args(argv)
    try:
        jobs, threads, _ = read_queue(args.queue)
    except QueueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.cmd == "status":
        for job in jobs:
            st = state_of(job)
            if args.json:
                print(json.dumps({"name": job.name, "state": st.kind, "step": st.step, "target": job.steps}))
            else:
                print(f"{job.name:<28} {st.kind:<9} {st.detail}")
        return 0
    names = set(args.only or [j.name for j in jobs])
    missing = names - {j.name for j in jobs}
    if missing:
        print(f"error: {args.queue}: no job named {sorted(missing)}", file=sys.stderr)
        return 2
    for job in jobs:
        if job.name not in names:
            continue
        print(f"{job.name}: {state_of(job).kind}", flush=True)
        final = run_job(job, threads, dry=args.dry_run)
        print(f"{job.name}: {final.kind} {final.detail}", flush=True)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    raise SystemExit(main())
