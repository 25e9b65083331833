"""The training loop behind ``metamem train``.

One step = one batch of B episodes from the GPU-batched sampler, ``learner(batch).loss``,
backward, (clip), optimizer and scheduler step. Loss, accuracy and a non-finite-loss flag are
accumulated **on the device**; the host syncs only every ``train.log_every`` steps (metrics
line, progress bar), at validation and at checkpoints. Validation scores fixed episodes of the
val split (keys derived from the experiment seed, so they never touch the training sampler).

Exact resume: ``last.pt`` holds model, optimizer, scheduler, AMP scaler, step, sampler
generator state, metric accumulators and the global RNG states, so a run of 40 steps and a
run of 20 steps resumed to 40 write bitwise identical metrics on CPU (apart from the timing
keys :data:`TIMING_KEYS`). A run that ends off the ``log_every``/``val_every`` schedule
still logs and validates its last step, in lines marked ``"final": true`` that leave the
accumulators alone and that a resume removes. Library code never seeds a global RNG: :mod:`metamem.cli.train`
seeds ``torch`` from ``seed`` before the learner is built (its initial weights) and restores
the saved global states on resume.

Under torchrun every rank samples its own episodes (:func:`~.distributed.rank_seed`), DDP
averages gradients, metrics are averaged over ranks, and only rank 0 writes files.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import shutil
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn
from tqdm import tqdm

from metamem import runs as ck
from metamem.config import ExperimentCfg, config_to_dict
from metamem.data import load_dataset
from metamem.device import resolve_device
from metamem.episodes import EpisodeSampler, build_augment
from metamem.episodes.rng import episode_keys_from_seed
from metamem.evaluation import evaluate
from metamem.files import remove_orphan_temps, write_text
from metamem.learners import build_learner
from metamem.optim import build_optimizer, build_scheduler
from metamem.training.distributed import (
    DistInfo, all_reduce_, barrier, init_distributed, rank_seed, shutdown,
)
from metamem.validate import check_experiment, eval_split

__all__ = ["train", "TrainResult", "TrainingError", "TIMING_KEYS", "evaluate_split"]

#: metrics keys that hold wall-clock figures (excluded when comparing runs).
TIMING_KEYS = ("elapsed_s", "cpu_s", "episodes_per_s")
#: files of a run directory that ``overwrite=True`` removes.
RUN_FILES = ("config.yaml", "metrics.jsonl", "eval.json", "eval.md", "learning_curve.png",
             "per_presentation.png", "checkpoints", "tensorboard")
_NO_BAD_STEP = 1 << 62
_VAL_KEY_OFFSET = 1 << 40  # validation episode ids, disjoint from the rank-seed ids


class TrainingError(RuntimeError):
    """Training cannot go on (non-finite loss, bad run directory)."""


@dataclass
class TrainResult:
    """What :func:`train` returns (``run_dir`` and the final evaluation: rank 0 only)."""

    learner: nn.Module
    step: int
    run_dir: Path | None
    best_val: float | None
    last_metrics: dict[str, Any]
    evaluation: list[dict[str, Any]] | None
    sampler_state: dict[str, Any]


def train(
    cfg: ExperimentCfg,
    out_dir: str | Path | None,
    *,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    final_eval: bool = True,
    source: str = "config",
) -> TrainResult:
    """Train ``cfg.learner`` on episodes of ``cfg.data`` and write a run directory.

    Args:
        cfg: the resolved experiment.
        out_dir: run directory (None: write nothing, e.g. for tests or benchmarks).
        resume: continue from ``out_dir/checkpoints/last.pt`` (exact resume).
        overwrite: replace an existing run directory's files.
        progress: show a tqdm progress bar (rank 0).
        final_eval: evaluate on ``cfg.data.test_split`` with ``cfg.eval`` at the end.
        source: the config file, for messages.

    Returns:
        A :class:`TrainResult`.

    Raises:
        TrainingError: for an existing run directory without ``resume``/``overwrite``, a
            missing checkpoint on resume, or a non-finite loss (naming the step).
        CheckpointError: resuming from a checkpoint of another learner or config.
        ConfigError: for a config that does not fit the builders or its data splits
            (checked by :func:`metamem.validate.check_experiment` before anything is
            written, as ``metamem validate`` does).
    """
    splits = check_experiment(cfg, source=source, final_eval=final_eval)
    assert splits is not None
    device = resolve_device(cfg.device, local_rank=int(os.environ.get("LOCAL_RANK", "0")))
    info = init_distributed(device)
    try:
        return _train(cfg, Path(out_dir) if out_dir is not None else None, device, info,
                      resume, overwrite, progress, final_eval, splits)
    finally:
        shutdown(info)


AMP_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16}


def amp_dtype_of(name: str) -> torch.dtype:
    """The autocast dtype named by ``train.amp_dtype`` (``float16`` or ``bfloat16``)."""
    if name not in AMP_DTYPES:
        raise ValueError(f"train.amp_dtype: unknown dtype {name!r}; valid: {', '.join(AMP_DTYPES)}")
    return AMP_DTYPES[name]


def _train(cfg: ExperimentCfg, run_dir: Path | None, device: torch.device, info: DistInfo,
           resume: bool, overwrite: bool, progress: bool, final_eval: bool,
           splits: dict[str, Any]) -> TrainResult:
    conf = config_to_dict(cfg)
    writer = run_dir if info.is_main else None
    ckpt = _prepare_run_dir(run_dir, conf, resume, overwrite, info)
    tr, ep = cfg.train, cfg.episodes
    train_ds = splits["train"]
    # the initial weights draw from the global RNG (seeded by the CLI); fork it so that
    # building consumes nothing and a resumed run continues the saved global stream
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        learner = build_learner(cfg.learner.name, n_way=ep.n_way, image_shape=train_ds.image_shape,
                                **cfg.learner.kwargs).to(device)
    opt = build_optimizer(learner.parameters(), tr.optimizer.name, **tr.optimizer.kwargs)
    sched = build_scheduler(opt, tr.scheduler.name, total_steps=tr.steps, **tr.scheduler.kwargs)
    use_amp = tr.amp and device.type == "cuda"
    amp_dtype = amp_dtype_of(tr.amp_dtype)
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and amp_dtype == torch.float16)
    if tr.channels_last:
        learner.to(memory_format=torch.channels_last)  # 4-d weights only; others are unchanged
    sampler = EpisodeSampler(train_ds, n_way=ep.n_way, k_shot=ep.k_shot, n_query=ep.n_query,
                             batch_size=ep.batch_size, device=device, seed=rank_seed(cfg.seed, info.rank),
                             within_group=ep.within_group, augment=build_augment(ep.augment),
                             reuse_buffers=True)
    acc = _Accum(device)
    start, best = 0, None
    if ckpt is not None:
        learner.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        sched.load_state_dict(ckpt["scheduler"])
        scaler.load_state_dict(ckpt["scaler"])
        sampler.load_state_dict(ckpt["sampler"][min(info.rank, len(ckpt["sampler"]) - 1)])
        acc.load(ckpt["accum"], device)
        start, best = int(ckpt["step"]), ckpt.get("best_val")
    model: nn.Module = learner
    if info.enabled:
        model = nn.parallel.DistributedDataParallel(
            learner, device_ids=[device.index] if device.type == "cuda" else None)
    if tr.compile:
        model = torch.compile(model)  # type: ignore[assignment]
    do_val = bool(cfg.data.val_split) and tr.val_every > 0
    val = _Validator(cfg, device, splits["val"]) if info.is_main and do_val else None
    image_shape = list(train_ds.image_shape)

    def save(name: str, step: int) -> None:
        # last.pt holds every rank's sampler state (a collective: all ranks call it);
        # best.pt is written by rank 0 alone and only ever loads weights.
        states = _gather_sampler_states(sampler, info) if name == "last.pt" else [sampler.state_dict()]
        if writer is None:
            return
        ck.save_checkpoint(writer / "checkpoints" / name, {
            "config": conf, "learner": cfg.learner.name, "image_shape": image_shape,
            "step": step, "best_val": best, "model": learner.state_dict(),
            "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
            "scaler": scaler.state_dict(), "sampler": states, "accum": acc.state(),
            "rng": _global_rng_state(),
        })

    bar = tqdm(total=tr.steps, initial=start, disable=not (progress and info.is_main),
               unit="step", dynamic_ncols=True)
    last: dict[str, Any] = {}
    append = _Sink(writer)
    good = lambda: _last_good(writer)  # noqa: E731  (read only when the loss went bad)
    t0, c0, n0 = time.perf_counter(), time.process_time(), start
    autocast = (lambda: torch.autocast("cuda", dtype=amp_dtype)) if use_amp else nullcontext
    model.train()
    for step in range(start + 1, tr.steps + 1):
        batch = sampler.sample()
        with autocast():
            out = model(batch)
        opt.zero_grad(set_to_none=True)
        scaler.scale(out.loss).backward()
        if tr.grad_clip is not None:
            scaler.unscale_(opt)
            nn.utils.clip_grad_norm_(learner.parameters(), tr.grad_clip)
        scaler.step(opt)
        scaler.update()
        sched.step()
        acc.add(out, step)
        is_last = step == tr.steps
        on_log = step % tr.log_every == 0
        if on_log or is_last:  # off schedule at the end: a "final" line, accumulators kept
            last = acc.flush(step, info, good, reset=on_log)
            last.update(lr=opt.param_groups[0]["lr"],
                        **_timing(t0, c0, n0, step, ep.batch_size * info.world_size))
            append(last if on_log else {**last, "final": True})
            bar.set_postfix(loss=f"{last['loss']:.4f}", acc=f"{last['acc']:.3f}")
        on_val = do_val and step % tr.val_every == 0
        if on_val or (do_val and is_last):
            acc.check(step, info, good)  # every rank: a collective under torchrun
            if val is not None:  # rank 0 validates; the others wait in the next all-reduce
                rec = val.run(learner, step)
                rec = rec if on_val else {**rec, "final": True}
                append(rec)
                if best is None or rec["val_acc"] > best:
                    best = rec["val_acc"]
                    save("best.pt", step)
        if (tr.checkpoint_every and step % tr.checkpoint_every == 0) or is_last:
            acc.check(step, info, good)
            save("last.pt", step)
        bar.update(1)
        batch = out = None  # nothing holds this batch: the sampler reuses its buffer, cache-warm
    bar.close()
    evaluation = None
    # a run resumed at its last step (killed during the final evaluation) evaluates when
    # its eval.json is missing; a finished run with eval.json has nothing left to do
    eval_missing = writer is None or not (writer / "eval.json").is_file()
    if final_eval and info.is_main and cfg.data.test_split and (tr.steps > start or eval_missing):
        evaluation = final_evaluation(learner, cfg, device, conf, writer, dataset=splits["test"])
    elif writer is not None:  # no test evaluation: the learning curve still
        _report(writer, [])
    return TrainResult(learner, tr.steps, writer, best, last, evaluation, sampler.state_dict())


# ------------------------------------------------------------------------- helpers
class _Accum:
    """Device-side sums of loss and accuracy and the first step with a non-finite loss."""

    def __init__(self, device: torch.device) -> None:
        self.loss = torch.zeros((), dtype=torch.float64, device=device)
        self.acc = torch.zeros((), dtype=torch.float64, device=device)
        self.count = 0
        self.bad = torch.full((), _NO_BAD_STEP, dtype=torch.int64, device=device)

    def add(self, out: Any, step: int) -> None:
        loss = out.loss.detach()
        finite = torch.isfinite(loss)
        self.bad = torch.where(finite | (self.bad < _NO_BAD_STEP), self.bad, step)
        self.loss += loss.double()
        self.acc += out.accuracy().detach().double().mean()
        self.count += 1

    def check(self, step: int, info: DistInfo, good: Callable[[], str]) -> None:
        bad = int(all_reduce_(self.bad.clone(), info, "min"))
        if bad < _NO_BAD_STEP:
            raise TrainingError(
                f"loss is not finite (nan or inf) at step {bad}; training stopped at step {step}. "
                f"{good()} Lower train.optimizer.lr or set train.grad_clip."
            )

    def flush(self, step: int, info: DistInfo, good: Callable[[], str], reset: bool = True) -> dict[str, Any]:
        """Check, then the mean loss/accuracy since the last reset (averaged over ranks)."""
        self.check(step, info, good)
        sums = all_reduce_(torch.stack([self.loss, self.acc]), info, "sum") / info.world_size
        n = max(self.count, 1)
        rec = {"step": step, "loss": float(sums[0]) / n, "acc": float(sums[1]) / n}
        if reset:
            self.loss.zero_()
            self.acc.zero_()
            self.count = 0
        return rec

    def state(self) -> dict[str, Any]:
        return {"loss": self.loss.cpu(), "acc": self.acc.cpu(), "count": self.count, "bad": self.bad.cpu()}

    def load(self, state: dict[str, Any], device: torch.device) -> None:
        self.loss, self.acc = state["loss"].to(device), state["acc"].to(device)
        self.count, self.bad = int(state["count"]), state["bad"].to(device)


def _last_good(run_dir: Path | None) -> str:
    if run_dir is None:
        return "No checkpoint is written (no run directory)."
    path = run_dir / "checkpoints" / "last.pt"
    if not path.is_file():
        return "No checkpoint was written yet."
    step = torch.load(path, map_location="cpu", weights_only=True)["step"]
    return f"The last good checkpoint is {path} (step {step})."


def _timing(t0: float, c0: float, n0: int, step: int, episodes_per_step: int) -> dict[str, float]:
    """Wall seconds, this process's CPU seconds (all its threads) and episodes/s since start."""
    elapsed = time.perf_counter() - t0
    return {"elapsed_s": round(elapsed, 3), "cpu_s": round(time.process_time() - c0, 3),
            "episodes_per_s": round((step - n0) * episodes_per_step / max(elapsed, 1e-9), 2)}


class _Sink:
    """Appends metric records to ``metrics.jsonl`` (and TensorBoard when it is installed)."""

    def __init__(self, run_dir: Path | None) -> None:
        self.run_dir, self.tb = run_dir, None
        if run_dir is not None:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard is optional
                pass
            else:
                self.tb = SummaryWriter(str(run_dir / "tensorboard"))

    def __call__(self, record: dict[str, Any]) -> None:
        if self.run_dir is None:
            return
        with open(self.run_dir / "metrics.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        if self.tb is not None:
            for key, value in record.items():
                if key != "step" and isinstance(value, (int, float)) and not isinstance(value, bool):
                    self.tb.add_scalar(key, value, record["step"])
            self.tb.flush()


def _global_rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["torch_cuda"] = torch.cuda.get_rng_state_all()
    return state


def _gather_sampler_states(sampler: EpisodeSampler, info: DistInfo) -> list[dict[str, Any]]:
    """Every rank's sampler state (rank order); a collective under torchrun."""
    mine = sampler.state_dict()
    if not info.enabled:
        return [mine]
    import torch.distributed as dist

    states: list[Any] = [None] * info.world_size
    dist.all_gather_object(states, mine)
    return states


def _prepare_run_dir(run_dir: Path | None, conf: dict[str, Any], resume: bool,
                     overwrite: bool, info: DistInfo) -> dict[str, Any] | None:
    """Check/create the run directory; on resume load ``last.pt`` and trim ``metrics.jsonl``.

    Every rank checks before rank 0 writes anything (a barrier in between), so all ranks
    agree on whether the directory already existed.
    """
    if run_dir is None:
        if resume:
            raise TrainingError("resume needs a run directory")
        return None
    ckpt = None
    if resume:
        if not (run_dir / "checkpoints" / "last.pt").is_file():
            raise TrainingError(f"cannot resume: {run_dir}/checkpoints/last.pt does not exist")
        ckpt = ck.load_checkpoint(run_dir, which="last")
        ck.check_compatible(ckpt, conf, resume=True)
    elif run_dir.exists() and any(run_dir.iterdir()) and not overwrite:
        raise TrainingError(
            f"run directory {run_dir} already exists; pass --resume to continue it, "
            "--overwrite to replace it, or another --out"
        )
    barrier(info)
    if not info.is_main:
        return ckpt
    # temp files of writes cut short by a kill (a 1 MB .last.pt.*.tmp each)
    for folder in (run_dir, run_dir / "checkpoints"):
        remove_orphan_temps(folder)
    if ckpt is not None:
        # drop lines past the checkpoint (a crash; a line cut short by a kill is one of
        # them) and the "final" lines of a run that stopped off the log/val schedule: the
        # resumed run goes on as if never stopped. A checkpoint at the last step keeps its
        # final lines (they were written before it) since no step will write them again.
        done = ckpt["step"] >= conf["train"]["steps"]
        kept = [r for r in ck.read_metrics(run_dir / "metrics.jsonl", drop_partial_tail=True)
                if r["step"] <= ckpt["step"] and (not r.get("final") or (done and r["step"] == ckpt["step"]))]
        ck.write_metrics(run_dir / "metrics.jsonl", kept)
        if not done:  # an eval.json of an earlier, shorter run: the new end rewrites it
            (run_dir / "eval.json").unlink(missing_ok=True)
    else:
        for name in RUN_FILES if run_dir.exists() else ():
            target = run_dir / name
            shutil.rmtree(target) if target.is_dir() else target.unlink(missing_ok=True)
        (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    ck.save_config(run_dir / "config.yaml", conf)
    return ckpt


class _Validator:
    """Scores fixed val-split episodes (same shape as training) with the learner's forward."""

    def __init__(self, cfg: ExperimentCfg, device: torch.device, ds: Any = None) -> None:
        ep = cfg.episodes
        if ds is None:
            ds = load_dataset(cfg.data.name, split=cfg.data.val_split, **cfg.data.options)
        self.sampler = EpisodeSampler(ds, n_way=ep.n_way, k_shot=ep.k_shot, n_query=ep.n_query,
                                      device=device, within_group=ep.within_group, reuse_buffers=True)
        ids = torch.arange(cfg.train.val_episodes, dtype=torch.int64) + _VAL_KEY_OFFSET
        self.keys = episode_keys_from_seed(cfg.seed, ids)
        self.batch_size = ep.batch_size
        self.max_pres = ep.k_shot + ep.n_query

    def run(self, learner: nn.Module, step: int) -> dict[str, Any]:
        scores = evaluate_split(learner, self.sampler, self.keys, self.batch_size, self.max_pres)
        learner.train()
        return {"step": step, "val_loss": scores["loss"], "val_acc": scores["acc"],
                "val_acc_by_presentation": scores["by_presentation"]}


def evaluate_split(learner: nn.Module, sampler: EpisodeSampler, keys: torch.Tensor,
                   batch_size: int, max_presentation: int) -> dict[str, Any]:
    """Mean loss/accuracy of ``learner(batch)`` over the episodes ``keys`` (eval mode, no grad).

    Sequence learners (whose output carries ``extras["presentation"]``) also get the
    accuracy by presentation (1st, 2nd, ... time a class is shown).

    Returns:
        ``{"loss", "acc", "by_presentation": list or None}`` as Python floats.
    """
    learner.eval()
    loss = torch.zeros((), dtype=torch.float64, device=sampler.device)
    acc = torch.zeros_like(loss)
    pres_hit = torch.zeros(max_presentation, dtype=torch.float64, device=sampler.device)
    pres_n = torch.zeros_like(pres_hit)
    with torch.no_grad():
        for chunk in keys.split(batch_size):
            out = learner(sampler.sample_keys(chunk))
            loss += out.loss.double() * chunk.numel()
            acc += out.accuracy().double().sum()
            pres = out.extras.get("presentation")
            if pres is not None:
                hit = (out.logits.argmax(-1) == out.targets).double().flatten()
                idx = (pres.flatten() - 1).clamp(0, max_presentation - 1)
                pres_hit.index_add_(0, idx, hit)
                pres_n.index_add_(0, idx, torch.ones_like(hit))
    n = keys.numel()
    by_pres = None
    if bool(pres_n.sum() > 0):
        by_pres = [float(v) if not math.isnan(v) else None for v in (pres_hit / pres_n).tolist()]
    return {"loss": float(loss) / n, "acc": float(acc) / n, "by_presentation": by_pres}


def final_evaluation(learner: nn.Module, cfg: ExperimentCfg, device: torch.device,
                     conf: dict[str, Any], run_dir: Path | None,
                     dataset: Any = None) -> list[dict[str, Any]]:
    """Evaluate with ``metamem.evaluate`` for every (n_way, k_shot) of ``cfg.eval``.

    ``eval.split`` ``train``/``val``/``test`` means the split named in ``data``; any other
    value is a split name (:func:`metamem.validate.eval_split`); ``dataset`` is that split
    when already loaded. The results are written to ``eval.json`` in the run directory,
    with ``eval.md``, ``learning_curve.png`` and ``per_presentation.png``.
    """
    ev = cfg.eval
    ds = dataset
    if ds is None:
        ds = load_dataset(cfg.data.name, split=eval_split(cfg) or ev.split,
                          **{**cfg.data.options, **ev.data_options})
    ways = ev.n_way if isinstance(ev.n_way, list) else [ev.n_way]
    shots = ev.k_shot if isinstance(ev.k_shot, list) else [ev.k_shot]
    results, objs = [], []
    for n_way, k_shot in itertools.product(ways, shots):
        res = evaluate(learner, ds, n_way=n_way, k_shot=k_shot, n_query=ev.n_query,
                       episodes=ev.episodes, seed=ev.seed, within_group=ev.within_group,
                       protocol=ev.protocol, batch_size=ev.batch_size, device=device,
                       config=conf, source=str(run_dir) if run_dir else None,
                       data_options=ev.data_options or None)
        results.append(res.to_dict())
        objs.append(res)
    if run_dir is not None:
        write_text(run_dir / "eval.json", json.dumps(results, indent=1))
        _report(run_dir, objs)
    return results


def _report(run_dir: Path, results: list[Any]) -> None:
    """``eval.md`` and the figures of a finished run (:mod:`metamem.evaluation.run_report`)."""
    from metamem.evaluation.run_report import write_run_report

    write_run_report(run_dir, results, ck.read_metrics(run_dir / "metrics.jsonl"))
