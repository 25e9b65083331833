"""Per-episode memory inspection of a sequence learner (``metamem eval RUN --inspect``).

For episode 0 of a run's fixed evaluation protocol (the same episode the evaluation scores
first), :func:`inspect_episode` writes:

* ``memory_trace.png`` — read and write weights, steps × slots (any memory core: slot,
  NTM, DNC), via :func:`metamem.memory.plot_trace`;
* ``program_weights.png`` — NSM program weights, steps × programs per control head (only
  for learners with ``programs > 0``);
* ``saliency.png`` and ``saliency.pt`` — the sequential Jacobian of Graves (papers.md §11):
  ``‖∂ log p_t(y_t) / ∂ x_τ‖`` over the step inputs (image encoding + previous label);
* ``decoder_reads.png`` — for the two-view learners (DMNC, DCMAN: :class:`~metamem.learners.
  capabilities.DecoderInspection`), what the write-protected decoder read: per memory, the
  read weights over slots and over the encoder steps that wrote them, one row per decoder step
  (sequence task, episode 0 of the protocol) or per query (few-shot episodes).

Learners declare what can be inspected (:mod:`metamem.learners.capabilities`): the saliency
needs :class:`~metamem.learners.capabilities.StepwiseSequence` (every sequence learner); the
trace and program plots need :class:`~metamem.learners.capabilities.MemoryInspection` (MANN,
any core).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from metamem.data.two_view_sum import is_sequence_task
from metamem.evaluation.protocol import Protocol
from metamem.evaluation.trained_run import load_run
from metamem.learners.capabilities import DecoderInspection, MemoryInspection, ProgramInspection, StepwiseSequence
from metamem.memory import plot_trace
from metamem.memory.inspection import plot_decoder_reads, plot_program_weights, plot_saliency, sequential_jacobian
from metamem.types import EpisodeBatch

__all__ = ["inspect_episode", "inspect_decoder", "inspect_run"]


def inspect_episode(learner: Any, batch: EpisodeBatch, out: str | os.PathLike[str], *, title: str = "") -> dict[str, Path]:
    """Write the inspection plots of episode 0 of ``batch`` into ``out``.

    Raises:
        ValueError: for a learner that is not a sequence learner.
    """
    if not isinstance(learner, StepwiseSequence):
        raise ValueError(
            f"--inspect: {type(learner).__name__} is not a sequence learner (it does not declare "
            "StepwiseSequence: step_inputs and run)"
        )
    out = Path(out)
    seq = batch.select(slice(0, 1)).as_sequence()  # episode 0
    module: Any = learner  # (an nn.Module: its mode is set for the call and restored)
    was_training = module.training
    module.eval()
    written: dict[str, Path] = {}
    try:
        with torch.no_grad():
            inputs = learner.step_inputs(seq.x, seq.prev_y)  # [1, T, input_dim]
            if isinstance(learner, MemoryInspection):
                written["memory_trace"] = plot_trace(learner.memory_trace(seq), out / "memory_trace.png",
                                                     title=f"{title} read/write weights, episode 0")
            if isinstance(learner, ProgramInspection):
                for name, weights in learner.program_weights(seq).items():
                    written["program_weights"] = plot_program_weights(
                        weights, out / "program_weights.png", title=f"{title} NSM program weights ({name})")
        jac = sequential_jacobian(lambda x: learner.run(x)[0], inputs, seq.y[0])
        tmp = out / ".saliency.pt.tmp"
        torch.save(jac, tmp)
        os.replace(tmp, out / "saliency.pt")
        written["saliency_tensor"] = out / "saliency.pt"
        written["saliency"] = plot_saliency(jac, out / "saliency.png",
                                            title=f"{title} sequential Jacobian ‖∂ log p_t(y_t) / ∂ x_τ‖")
    finally:
        module.train(was_training)
    return written


def inspect_decoder(learner: Any, batch: Any, out: str | os.PathLike[str], *, title: str = "") -> dict[str, Path]:
    """Write ``decoder_reads.png`` for episode 0 of ``batch`` (an episode batch or a two-view
    sequence-task batch) of a :class:`DecoderInspection` learner."""
    was_training = learner.training
    learner.eval()
    try:
        reads = learner.decoder_reads(batch)
    finally:
        learner.train(was_training)
    rows = "query" if reads["read_weights"].dim() == 6 else "decoder step"
    return {"decoder_reads": plot_decoder_reads(reads, Path(out) / "decoder_reads.png", row_label=rows,
                                                title=f"{title} decoder reads, episode 0")}


def inspect_run(path: str | os.PathLike[str], out: str | os.PathLike[str], *, device: str = "cpu",
                weights: str | os.PathLike[str] | None = None, sha256: str | None = None) -> dict[str, Path]:
    """:func:`inspect_episode` on episode 0 of the run's ``eval:`` protocol (its split and seed);
    ``weights``/``sha256``: its weights from elsewhere (:func:`metamem.runs.fetch_weights`)."""
    run = load_run(path, device, weights=weights, sha256=sha256)
    learner, config, ev = run.learner, run.config, run.config.eval
    dataset = run.dataset(None, ev.split)
    title = config.learner.name if config.learner else ""
    if is_sequence_task(dataset):  # the first sequence pair of the protocol
        task: Any = dataset
        lengths, a, b = task.protocol_sequences(1, ev.seed)
        batch = task.pair_batch(a[:, : int(lengths[0, 0])], b[:, : int(lengths[0, 1])])
        return inspect_decoder(learner, batch, out, title=title)
    k_shot = ev.k_shot[0] if isinstance(ev.k_shot, list) else ev.k_shot
    protocol = Protocol(
        dataset=config.data.name, split=ev.split, n_way=config.episodes.n_way, k_shot=k_shot,
        n_query=ev.n_query, episodes=1, seed=ev.seed, within_group=ev.within_group,
    )
    batch = next(iter(protocol.batches(dataset, 1, device)))
    if isinstance(learner, DecoderInspection):
        return inspect_decoder(learner, batch, out, title=title)
    return inspect_episode(learner, batch, out, title=title)
