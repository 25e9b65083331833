"""The training loop behind ``metamem train``.

One step = one batch of B episodes from the GPU-batched sampler, ``learner(batch).loss``,
backward, (clip), optimizer and scheduler step. Loss, accuracy and a non-finite-loss flag are
accumulated **on the device**; the host syncs only every ``train.log_every`` steps (metrics
line, progress bar), at validation and at checkpoints. Validation is :func:`metamem.evaluate`
on a fixed, fingerprinted protocol of the val split (:func:`validation_protocol`): training has
no scorer of its own, so ``val_acc`` is what ``metamem eval`` reports on the same episodes.

The loop is five named steps, each a short function: :func:`setup`, :func:`train_step`,
:func:`log`, :func:`validate` and :func:`checkpoint` (every step), :func:`finish`.

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

import json
import math
import os
import shutil
import time
import warnings
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from metamem import runs as ck
from metamem.config import ExperimentCfg, config_to_dict, eval_protocols
from metamem.data.two_view_sum import is_sequence_task
from metamem.device import resolve_device
from metamem.episodes import EpisodeSampler, build_augment
from metamem.evaluation import evaluate
from metamem.evaluation.report import results_json_text
from metamem.files import (
    LOCK_NAME,
    WriteError,
    kill_point,
    lock_directory,
    remove_orphan_temps,
    write_text,
)
from metamem.learners import build_learner
from metamem.learners.base import resolved_options
from metamem.learners.capabilities import SequencePrediction
from metamem.optim import build_optimizer, build_scheduler
from metamem.training.distributed import (
    DistInfo,
    all_reduce_,
    barrier,
    init_distributed,
    rank_seed,
    shutdown,
)
from metamem.validate import check_experiment

__all__ = [
    "train", "setup", "train_step", "log", "validate", "checkpoint", "finish", "TrainState",
    "Validator", "validation_protocol", "TrainResult", "TrainingError", "TIMING_KEYS",
]

#: metrics keys that hold wall-clock figures (excluded when comparing runs).
TIMING_KEYS = ("elapsed_s", "cpu_s", "episodes_per_s")
#: files of a run directory that ``overwrite=True`` removes.
RUN_FILES = ("config.yaml", "metrics.jsonl", "eval.json", "eval.md", "learning_curve.png",
             "per_presentation.png", "checkpoints", "tensorboard")
_NO_BAD_STEP = 1 << 62


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

    The loop is five named steps: :func:`setup`, then for every step :func:`train_step`,
    :func:`log`, :func:`validate` and :func:`checkpoint`, then :func:`finish`.

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
    if is_sequence_task(splits["train"]) and cfg.learner is not None:
        # a sequence task sets the learner's layout keys; recorded in the run's config.yaml
        cfg.learner.kwargs = {**splits["train"].learner_kwargs(), **cfg.learner.kwargs}
    if not resume and cfg.learner is not None:
        # every option the learner is built with, defaults included, goes into config.yaml and
        # the checkpoints: a later change of a default does not change what this run means
        cfg.learner.kwargs = resolved_options(cfg.learner.name, cfg.learner.kwargs)
    device = resolve_device(cfg.device, local_rank=int(os.environ.get("LOCAL_RANK", "0")))
    info = init_distributed(device)
    run_dir = Path(out_dir) if out_dir is not None else None
    try:
        with _writer_lock(run_dir, info, resume):
            return _train(cfg, run_dir, device, info, splits, resume=resume,
                          overwrite=overwrite, progress=progress, final_eval=final_eval)
    finally:
        shutdown(info)


def _writer_lock(run_dir: Path | None, info: DistInfo, resume: bool) -> Any:
    """One writer per run directory: rank 0 holds its lock (:func:`metamem.files.lock_directory`)
    for the whole run; a second ``metamem train`` on it (``--resume``, ``--overwrite``) is
    refused with the holder's pid. Nothing is created for a resume of a missing directory."""
    if run_dir is None or not info.is_main or (resume and not run_dir.is_dir()):
        return nullcontext()
    return lock_directory(run_dir)


def _train(cfg: ExperimentCfg, run_dir: Path | None, device: torch.device, info: DistInfo,
           splits: dict[str, Any], *, resume: bool, overwrite: bool, progress: bool,
           final_eval: bool) -> TrainResult:
    """The body of :func:`train`, under the run directory's lock."""
    run = setup(cfg, run_dir, device, info, splits, resume=resume, overwrite=overwrite)
    bar = tqdm(total=cfg.train.steps, initial=run.start, unit="step", dynamic_ncols=True,
               disable=not (progress and info.is_main))
    try:
        for step in range(run.start + 1, cfg.train.steps + 1):
            train_step(run, step)
            log(run, step, bar)
            validate(run, step)
            checkpoint(run, step)
            bar.update(1)
    finally:
        bar.close()
    return finish(run, final_eval)


AMP_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16}


def amp_dtype_of(name: str) -> torch.dtype:
    """The autocast dtype named by ``train.amp_dtype`` (``float16`` or ``bfloat16``)."""
    if name not in AMP_DTYPES:
        raise ValueError(f"train.amp_dtype: unknown dtype {name!r}; valid: {', '.join(AMP_DTYPES)}")
    return AMP_DTYPES[name]


@dataclass
class TrainState:
    """A training in progress: built by :func:`setup`, advanced by the step functions (a
    trained run loaded back is a :class:`metamem.Run`).

    ``learner`` is the module whose weights are saved; ``model`` is what the step calls (the
    learner, wrapped in DDP under torchrun and in ``torch.compile`` when asked). ``writer``
    is the run directory on rank 0 and None elsewhere.
    """

    cfg: ExperimentCfg
    device: torch.device
    info: DistInfo
    conf: dict[str, Any]
    writer: Path | None
    learner: nn.Module
    model: nn.Module
    opt: torch.optim.Optimizer
    sched: Any
    scaler: torch.amp.GradScaler
    sampler: EpisodeSampler
    acc: _Accum
    validator: Validator | None
    sink: _Sink
    image_shape: list[int]
    splits: dict[str, Any]
    start: int = 0
    best: float | None = None
    last: dict[str, Any] = field(default_factory=dict)
    clock: tuple[float, float] = (0.0, 0.0)

    @property
    def amp(self) -> bool:
        return self.cfg.train.amp and self.device.type == "cuda"

    def last_good(self) -> str:
        """Where the last good checkpoint is (for the non-finite-loss message)."""
        return _last_good(self.writer)


def setup(cfg: ExperimentCfg, run_dir: Path | None, device: torch.device, info: DistInfo,
          splits: dict[str, Any], *, resume: bool, overwrite: bool) -> TrainState:
    """Prepare the run directory and build learner, optimizer and sampler on the checked
    ``splits`` (restored from ``last.pt`` on resume)."""
    conf = config_to_dict(cfg)
    ckpt = _prepare_run_dir(run_dir, conf, resume, overwrite, info)
    tr, ep = cfg.train, cfg.episodes
    train_ds = splits["train"]
    # the initial weights draw from the global RNG (seeded by the CLI); fork it so that
    # building consumes nothing and a resumed run continues the saved global stream
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        learner = build_learner(cfg.learner.name, n_way=ep.n_way, image_shape=train_ds.image_shape,
                                **cfg.learner.kwargs).to(device)
    if tr.channels_last:
        learner.to(memory_format=torch.channels_last)  # 4-d weights only; others are unchanged
    opt = build_optimizer(learner.parameters(), tr.optimizer.name, **tr.optimizer.kwargs)
    do_val = info.is_main and bool(cfg.data.val_split) and tr.val_every > 0
    run = TrainState(
        cfg=cfg, device=device, info=info, conf=conf, writer=run_dir if info.is_main else None,
        learner=learner, model=learner, opt=opt,
        sched=build_scheduler(opt, tr.scheduler.name, total_steps=tr.steps, **tr.scheduler.kwargs),
        scaler=torch.amp.GradScaler("cuda", enabled=(tr.amp and device.type == "cuda"
                                                     and amp_dtype_of(tr.amp_dtype) == torch.float16)),
        sampler=(train_ds.sampler(batch_size=ep.batch_size, seed=rank_seed(cfg.seed, info.rank), device=device)
                 if is_sequence_task(train_ds) else
                 EpisodeSampler(train_ds, n_way=ep.n_way, k_shot=ep.k_shot, n_query=ep.n_query,
                                batch_size=ep.batch_size, device=device,
                                seed=rank_seed(cfg.seed, info.rank), within_group=ep.within_group,
                                augment=build_augment(ep.augment), reuse_buffers=True,
                                fused=ep.fused)),
        acc=_Accum(device), validator=Validator(cfg, device, splits["val"]) if do_val else None,
        sink=_Sink(run_dir if info.is_main else None), image_shape=list(train_ds.image_shape),
        splits=splits,
    )
    if ckpt is None and tr.init_from:
        _init_weights(learner, cfg.learner.name, tr.init_from)
    if ckpt is not None:
        run.learner.load_state_dict(ckpt["model"])
        run.opt.load_state_dict(ckpt["optimizer"])
        run.sched.load_state_dict(ckpt["scheduler"])
        run.scaler.load_state_dict(ckpt["scaler"])
        run.sampler.load_state_dict(ckpt["sampler"][min(info.rank, len(ckpt["sampler"]) - 1)])
        run.acc.load(ckpt["accum"], device)
        run.start, run.best = int(ckpt["step"]), ckpt.get("best_val")
        _warn_threads(ckpt)
    if info.enabled:
        run.model = nn.parallel.DistributedDataParallel(
            learner, device_ids=[device.index] if device.type == "cuda" else None)
    if tr.compile:
        run.model = torch.compile(run.model)  # type: ignore[assignment]
    run.model.train()
    run.clock = (time.perf_counter(), time.process_time())
    return run


class ThreadsChanged(UserWarning):
    """A run resumed with another torch thread count than it was trained with."""


def _warn_threads(ckpt: dict[str, Any]) -> None:
    """Say once when a resume runs on another thread count than the checkpoint was written
    with: CPU reductions may then sum in another order, so the resumed run is no longer
    bitwise equal to an uninterrupted one (checkpoints before the count was recorded: no word)."""
    saved, now = ckpt.get("threads"), torch.get_num_threads()
    if isinstance(saved, int) and saved != now:
        warnings.warn(
            f"resuming with {now} torch thread(s); the run was trained with {saved}: the results "
            f"are no longer bitwise equal to an uninterrupted run (pass --threads {saved} to keep them)",
            ThreadsChanged, stacklevel=2,
        )


def _init_weights(learner: nn.Module, name: str, source: str) -> None:
    """Load ``train.init_from``'s weights into ``learner`` (strict: every tensor must fit).

    Raises:
        TrainingError: naming ``train.init_from`` and the file when it is missing, not a
            metamem checkpoint, or holds weights of another shape or learner.
    """
    path = Path(source).expanduser()
    try:
        init = ck.load_checkpoint(path, which="best")
    except FileNotFoundError:
        raise TrainingError(
            f"train.init_from: {source} is neither a run directory with checkpoints/best.pt or "
            "last.pt nor a checkpoint file; give a trained run's directory or .pt file"
        ) from None
    except ck.CheckpointError as e:
        raise TrainingError(f"train.init_from: {e}") from None
    try:
        ck.load_weights(learner, init, name)
    except ck.CheckpointError as e:
        raise TrainingError(
            f"train.init_from: {e}; use a run of the same learner and learner keys (for "
            "MANN/LSTM the same max_way)"
        ) from None


def train_step(run: TrainState, step: int) -> None:
    """One optimizer step on one batch of B episodes; loss and accuracy stay on the device.

    Nothing outlives the call that holds the batch, so the sampler reuses its buffers."""
    batch = run.sampler.sample()
    amp = torch.autocast("cuda", dtype=amp_dtype_of(run.cfg.train.amp_dtype)) if run.amp else nullcontext()
    with amp:
        out = run.model(batch)
    run.opt.zero_grad(set_to_none=True)
    run.scaler.scale(out.loss).backward()
    if run.cfg.train.grad_clip is not None:
        run.scaler.unscale_(run.opt)
        nn.utils.clip_grad_norm_(run.learner.parameters(), run.cfg.train.grad_clip)
    run.scaler.step(run.opt)
    run.scaler.update()
    run.sched.step()
    run.acc.add(out, step)
    kill_point("step")  # crash-safety tests (tests/training/test_kill_resume.py)


def log(run: TrainState, step: int, bar: tqdm) -> None:
    """Every ``log_every`` steps (and at the last): a metrics line (one host sync)."""
    on_log, is_last = step % run.cfg.train.log_every == 0, step == run.cfg.train.steps
    if not (on_log or is_last):
        return
    # off schedule at the end: a "final" line that leaves the accumulators alone
    rec = run.acc.flush(step, run.info, run.last_good, reset=on_log)
    t0, c0 = run.clock
    rec.update(lr=run.opt.param_groups[0]["lr"], threads=torch.get_num_threads(),
               **_timing(t0, c0, run.start, step, run.cfg.episodes.batch_size * run.info.world_size))
    run.sink(rec if on_log else {**rec, "final": True})
    run.last = rec
    bar.set_postfix(loss=f"{rec['loss']:.4f}", acc=f"{rec['acc']:.3f}")


def validate(run: TrainState, step: int) -> None:
    """Every ``val_every`` steps (and at the last): score the validation protocol with
    :func:`metamem.evaluate`; a new best accuracy writes ``best.pt``."""
    tr = run.cfg.train
    if not (run.cfg.data.val_split and tr.val_every > 0):
        return
    on_val = step % tr.val_every == 0
    if not (on_val or step == tr.steps):
        return
    run.acc.check(step, run.info, run.last_good)  # every rank: a collective under torchrun
    if run.validator is None:  # rank 0 validates; the others wait in the next all-reduce
        return
    rec = run.validator(run.learner, step)
    run.sink(rec if on_val else {**rec, "final": True})
    if run.best is None or rec["val_acc"] > run.best:
        run.best = rec["val_acc"]
        save(run, "best.pt", step)


def checkpoint(run: TrainState, step: int) -> None:
    """Every ``checkpoint_every`` steps (and at the last): write ``last.pt``; every
    ``snapshot_every`` steps: keep the weights in ``step_<step>.pt``."""
    every, snap = run.cfg.train.checkpoint_every, run.cfg.train.snapshot_every
    if (every and step % every == 0) or step == run.cfg.train.steps:
        run.acc.check(step, run.info, run.last_good)
        save(run, "last.pt", step)
    if snap and step % snap == 0 and run.writer is not None and run.info.is_main:
        ck.save_checkpoint(run.writer / "checkpoints" / f"step_{step:06d}.pt", _weights(run, step))


def finish(run: TrainState, final_eval: bool) -> TrainResult:
    """The final test-split evaluation (rank 0, when the run trained any step or its
    ``eval.json`` is missing) and the result."""
    cfg, evaluation = run.cfg, None
    # a run resumed at its last step (killed during the final evaluation) evaluates when
    # its eval.json is missing; a finished run with eval.json has nothing left to do
    eval_missing = run.writer is None or not (run.writer / "eval.json").is_file()
    if (final_eval and run.info.is_main and cfg.data.test_split
            and (cfg.train.steps > run.start or eval_missing)):
        evaluation = final_evaluation(run.learner, cfg, run.device, run.conf, run.writer,
                                      dataset=run.splits["test"])
    elif run.writer is not None:  # no test evaluation: the learning curve still
        _report(run.writer, [])
    return TrainResult(run.learner, cfg.train.steps, run.writer, run.best, run.last, evaluation,
                       run.sampler.state_dict())


def save(run: TrainState, name: str, step: int) -> None:
    """Write ``checkpoints/<name>``. ``last.pt`` holds every rank's sampler state (a
    collective: all ranks call it); ``best.pt`` is written by rank 0 alone and only ever
    loads weights."""
    states = (_gather_sampler_states(run.sampler, run.info) if name == "last.pt"
              else [run.sampler.state_dict()])
    if run.writer is None:
        return
    ck.save_checkpoint(run.writer / "checkpoints" / name, {
        **_weights(run, step), "optimizer": run.opt.state_dict(), "scheduler": run.sched.state_dict(),
        "scaler": run.scaler.state_dict(), "sampler": states, "accum": run.acc.state(),
        "rng": _global_rng_state(), "threads": torch.get_num_threads(),
    })


def _weights(run: TrainState, step: int) -> dict[str, Any]:
    """What every checkpoint holds: the weights and what is needed to rebuild the learner."""
    return {"config": run.conf, "learner": run.conf["learner"]["name"], "image_shape": run.image_shape,
            "step": step, "best_val": run.best, "model": run.learner.state_dict()}


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
        line = json.dumps(record) + "\n"
        path = self.run_dir / "metrics.jsonl"
        try:
            with open(path, "a", encoding="utf-8") as f:
                # one write per line; a kill mid-line leaves a cut-short last line that resume drops
                kill_point("metrics_partial", before=lambda: (f.write(line[: len(line) // 2]), f.flush()))
                f.write(line)
        except OSError as e:  # disk full...: one line naming the file, not a traceback
            raise WriteError(path, e) from None
        kill_point("metrics_line")  # the line is written, its checkpoint not yet
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
    elif run_dir.exists() and any(p.name != LOCK_NAME for p in run_dir.iterdir()) and not overwrite:
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


def validation_protocol(cfg: ExperimentCfg) -> dict[str, Any]:
    """The fixed validation protocol of a run, as :func:`metamem.evaluate` keywords.

    Episodes shaped like the training episodes on ``data.val_split``, ``train.val_episodes``
    of them, protocol seed = the experiment ``seed``; the set scoring for set learners, the
    sequence scoring for sequence learners (chosen by :class:`Validator`). The same numbers
    come from ``metamem eval RUN eval.split=val eval.seed=SEED eval.n_way=N eval.k_shot=K
    eval.n_query=Q eval.episodes=E eval.protocol=set`` (or ``sequence``).
    """
    ep = cfg.episodes
    return {"n_way": ep.n_way, "k_shot": ep.k_shot, "n_query": ep.n_query,
            "episodes": cfg.train.val_episodes, "seed": cfg.seed, "within_group": ep.within_group,
            "batch_size": ep.batch_size}


class Validator:
    """Scores the fixed validation protocol with :func:`metamem.evaluate`: training has no
    scorer of its own, so ``val_acc`` is the number ``metamem eval`` reports on the same
    episodes (the record carries their fingerprint)."""

    def __init__(self, cfg: ExperimentCfg, device: torch.device, dataset: Any = None) -> None:
        if dataset is None:
            dataset = ck.dataset_for(cfg, "val")
        self.dataset = dataset
        self.settings = validation_protocol(cfg)
        self.device = device
        self.memory_budget = cfg.eval.memory_budget

    def __call__(self, learner: nn.Module, step: int) -> dict[str, Any]:
        scoring = "sequence" if isinstance(learner, SequencePrediction) else "set"
        res = evaluate(learner, self.dataset, protocol=scoring, device=self.device, progress=False,
                       memory_budget=self.memory_budget, **self.settings)
        rec: dict[str, Any] = {"step": step, "val_acc": res.mean, "val_ci95": _finite(res.ci95),
                               "val_scoring": scoring, "val_fingerprint": res.fingerprint}
        if res.per_presentation is not None:
            rec["val_acc_by_presentation"] = [_finite(v) for v in res.per_presentation]
        return rec


def _finite(v: float) -> float | None:
    return None if math.isnan(v) else v


def final_evaluation(learner: nn.Module, cfg: ExperimentCfg, device: torch.device,
                     conf: dict[str, Any], run_dir: Path | None,
                     dataset: Any = None) -> list[dict[str, Any]]:
    """Evaluate with ``metamem.evaluate`` for every (n_way, k_shot) of ``cfg.eval``.

    The protocols are those of :func:`metamem.config.eval_protocols` (as ``metamem eval``
    scores them); ``eval.split`` ``train``/``val``/``test`` means the split named in ``data``
    (:func:`metamem.runs.dataset_for`); ``dataset`` is that split when already loaded. The
    results are written to ``eval.json`` in the run directory, with ``eval.md``,
    ``learning_curve.png`` and ``per_presentation.png``.
    """
    ev = cfg.eval
    ds = dataset if dataset is not None else ck.dataset_for(cfg, ev.split, options=ev.data_options)
    results, objs = [], []
    for settings in eval_protocols(ev)[0]:
        settings.pop("split")
        data_options = settings.pop("data_options") or None
        res = evaluate(learner, ds, **settings, device=device, progress=False, config=conf,
                       source=str(run_dir) if run_dir else None, data_options=data_options)
        results.append(res.to_dict())
        objs.append(res)
        kill_point("eval")  # crash-safety tests: killed during the final evaluation
    if run_dir is not None:
        # eval.json last: its presence marks a finished run (resume re-evaluates without it)
        _report(run_dir, objs)
        write_text(run_dir / "eval.json", results_json_text(results))
    return results


def _report(run_dir: Path, results: list[Any]) -> None:
    """``eval.md`` and the figures of a finished run (:mod:`metamem.evaluation.run_report`)."""
    from metamem.evaluation.run_report import write_run_report

    write_run_report(run_dir, results, ck.read_metrics(run_dir / "metrics.jsonl"))
