"""Seeing a memory core at work: traces with program weights, and sequential-Jacobian saliency.

* :func:`trace_core` runs a :class:`~metamem.memory.MemoryCore` with ``trace=True`` and also
  records the program weights of any Neural Stored-program Memory in it
  (:func:`~metamem.memory.nsm.record_programs`).
* :func:`sequential_jacobian` is the "implicit attention" of Graves (2008, 2012; papers.md
  §11): how much the output at step t depends on the input at step τ,
  ``J[t, τ] = ‖∂ y_t / ∂ x_τ‖`` for a scalar ``y_t`` (the log-probability of the target, or of
  the predicted class, at step t), one backward pass per output step.
* :func:`plot_saliency` and :func:`plot_program_weights` draw them (Agg canvas, atomic write).
* :func:`decoder_read_maps` and :func:`plot_decoder_reads`: what the write-protected decoder of
  a two-view learner (DMNC, DCMAN) read at each step, over each memory's slots and mapped back
  to the encoder steps that wrote those slots.

Reference: A. Graves, "Supervised Sequence Labelling with Recurrent Neural Networks",
Springer 2012, §6.2 (the sequential Jacobian).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from metamem.files import make_readable
from metamem.memory.core import CoreOutput
from metamem.memory.nsm import record_programs

__all__ = ["trace_core", "sequential_jacobian", "plot_saliency", "plot_program_weights", "decoder_read_maps",
           "plot_decoder_reads"]


def trace_core(core: Any, inputs: torch.Tensor, **kwargs: Any) -> tuple[CoreOutput, dict[str, torch.Tensor]]:
    """Run ``core(inputs, trace=True, **kwargs)`` and record NSM program weights.

    Args:
        core: a :class:`~metamem.memory.MemoryCore` (any memory: slot, NTM, DNC, with or without programs).
        inputs: ``[B, T, in]``.

    Returns:
        The :class:`~metamem.memory.CoreOutput` (with its ``trace``) and
        ``{program memory name: weights [B, T, G, P]}`` (empty without programs).
    """
    with record_programs(core) as rec:
        out = core(inputs, trace=True, **kwargs)
    return out, {name: torch.stack(steps, 1) for name, steps in rec.items() if steps}


def sequential_jacobian(
    fn: Callable[[torch.Tensor], torch.Tensor],
    inputs: torch.Tensor,
    targets: torch.Tensor | None = None,
) -> torch.Tensor:
    """``J[t, τ] = ‖∂ log p_t(c_t) / ∂ x_τ‖₂`` for one episode.

    Args:
        fn: maps ``inputs [1, T, C]`` to logits ``[1, T, N]`` (e.g. a sequence learner's ``run``).
        inputs: ``[T, C]`` or ``[1, T, C]`` step inputs (for MANN: the image encoding and the
            previous label, not raw pixels).
        targets: int64 ``[T]`` classes ``c_t`` whose log-probability is differentiated
            (None: the predicted class at each step).

    Returns:
        float ``[T, T]`` (rows: output step t, columns: input step τ; zero for τ > t in a
        causal model).
    """
    x = (inputs if inputs.dim() == 3 else inputs.unsqueeze(0)).detach().clone().requires_grad_(True)
    if x.shape[0] != 1:
        raise ValueError(f"sequential_jacobian: one episode at a time, got a batch of {x.shape[0]}")
    logp = torch.log_softmax(fn(x)[0].float(), dim=-1)  # [T, N]
    T = logp.shape[0]
    chosen = logp.detach().argmax(-1) if targets is None else targets.to(logp.device).view(-1)
    if chosen.shape[0] != T:
        raise ValueError(f"sequential_jacobian: targets has {chosen.shape[0]} steps, the output has {T}")
    rows = []
    for t in range(T):
        (grad,) = torch.autograd.grad(logp[t, chosen[t]], x, retain_graph=t < T - 1)
        rows.append(grad[0].norm(dim=-1))
    return torch.stack(rows).detach()


def _save(fig: Any, path: str | os.PathLike[str]) -> Path:
    path = Path(path)
    fmt = path.suffix.lstrip(".").lower()
    if not fmt:
        raise ValueError(f"{path} has no suffix; use e.g. .png or .pdf")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    make_readable(fd)
    try:
        with os.fdopen(fd, "wb") as fh:
            fig.savefig(fh, format=fmt)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def plot_saliency(jacobian: torch.Tensor, path: str | os.PathLike[str], *, title: str | None = None) -> Path:
    """Draw a sequential Jacobian ``[T, T]`` as a heatmap (output step × input step), log colour scale."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.colors import LogNorm
    from matplotlib.figure import Figure

    data = jacobian.detach().float().cpu().numpy()
    positive = data[data > 0]
    fig = Figure(figsize=(6, 5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    norm = LogNorm(vmin=max(float(positive.max()) * 1e-4, float(positive.min())), vmax=float(positive.max())) \
        if positive.size else None
    image = ax.imshow(data.clip(min=positive.min() if positive.size else 0), aspect="auto",
                      interpolation="nearest", cmap="magma", norm=norm)
    ax.set_xlabel("input step τ")
    ax.set_ylabel("output step t")
    ax.set_title(title or "sequential Jacobian ‖∂ log p_t / ∂ x_τ‖")
    fig.colorbar(image, ax=ax)
    fig.tight_layout()
    return _save(fig, path)


def plot_program_weights(
    weights: torch.Tensor, path: str | os.PathLike[str], *, episode: int = 0, title: str | None = None
) -> Path:
    """Draw NSM program weights ``[B, T, G, P]`` of one episode: one steps × programs heatmap per head."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not 0 <= episode < weights.shape[0]:
        raise ValueError(f"plot_program_weights: episode {episode} is outside the batch of {weights.shape[0]}")
    data = weights[episode].detach().float().cpu().numpy()  # [T, G, P]
    heads = data.shape[1]
    fig = Figure(figsize=(2.2 * heads + 1.5, max(3.0, 0.1 * data.shape[0] + 1.5)))
    FigureCanvasAgg(fig)
    for g in range(heads):
        ax = fig.add_subplot(1, heads, g + 1)
        image = ax.imshow(data[:, g], aspect="auto", interpolation="nearest", cmap="viridis", vmin=0, vmax=1)
        ax.set_title(f"head {g}")
        ax.set_xlabel("program")
        if g == 0:
            ax.set_ylabel("step")
    fig.colorbar(image, ax=fig.axes)
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def decoder_read_maps(reads: dict[str, Any], episode: int = 0) -> list[dict[str, Any]]:
    """Per memory: the decoder's read weights and the encoder steps they fall on, for one episode.

    Args:
        reads: what ``decoder_reads`` of a two-view learner returns (see
            :class:`~metamem.learners.capabilities.DecoderInspection`); for episodes the last
            decoder step of every query is taken, so the rows are queries.
        episode: which episode of the batch.

    Returns:
        One dict per memory: ``name``; ``slots`` ``[rows, S]``, the read weights (mean over
        heads); ``steps`` ``[rows, T_m]`` or None, ``slots @ writesᵀ`` with ``writes [T_m, S]``
        the encoder's write weights (summed over write heads): how much each decoder row read
        of the slots that encoder step τ wrote (None without write weights, e.g. early fusion).
    """
    w = reads["read_weights"][episode].detach().float().cpu()
    if w.dim() == 5:  # episodes: [Qn, Td, M, R, S] -> the last decoder step of each query
        w = w[:, -1]
    w = w.mean(2)  # [rows, M, S]
    writes = reads.get("write_weights")
    out = []
    for m, name in enumerate(reads["memory_names"]):
        slots = w[:, m]
        steps = None
        if writes is not None and m < len(writes):
            steps = slots @ writes[m][episode].detach().float().cpu().sum(1).t()
        out.append({"name": name, "slots": slots, "steps": steps})
    return out


def plot_decoder_reads(reads: dict[str, Any], path: str | os.PathLike[str], *, episode: int = 0,
                       row_label: str = "decoder step", title: str | None = None) -> Path:
    """Draw :func:`decoder_read_maps`: one column per memory; read weights over slots on top,
    the same reads over the encoder steps that wrote them below."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not 0 <= episode < reads["read_weights"].shape[0]:
        raise ValueError(f"plot_decoder_reads: episode {episode} is outside the batch of "
                         f"{reads['read_weights'].shape[0]}")
    maps = decoder_read_maps(reads, episode)
    rows = 2 if any(m["steps"] is not None for m in maps) else 1
    fig = Figure(figsize=(4.2 * len(maps) + 1, 3.4 * rows + 0.8))
    FigureCanvasAgg(fig)
    for j, mp in enumerate(maps):
        panels = [("slots", "slot", mp["slots"])] + ([("steps", "encoder step (its view's order)", mp["steps"])]
                                                      if rows == 2 else [])
        for i, (_, xlabel, data) in enumerate(panels):
            ax = fig.add_subplot(rows, len(maps), i * len(maps) + j + 1)
            if data is None:
                ax.set_axis_off()
                continue
            image = ax.imshow(data.numpy(), aspect="auto", interpolation="nearest", cmap="viridis")
            ax.set_title(mp["name"] if i == 0 else "read of what each encoder step wrote", fontsize=9)
            ax.set_xlabel(xlabel)
            ax.set_ylabel(row_label)
            fig.colorbar(image, ax=ax)
    fig.suptitle(title or "decoder read weights (write-protected memories)")
    fig.tight_layout()
    return _save(fig, path)
