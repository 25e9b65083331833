"""Recorded memory access of an episode and a heatmap of it (steps × slots)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from metamem.files import atomic_write

__all__ = ["MemoryTrace", "plot_trace"]


@dataclass
class MemoryTrace:
    """Per-step addressing weights of B episodes.

    Attributes:
        read_weights: ``[B, T, R, S]``.
        write_weights: ``[B, T, Wh, S]`` (zero at steps that did not write).
    """

    read_weights: torch.Tensor
    write_weights: torch.Tensor

    @property
    def steps(self) -> int:
        return int(self.read_weights.shape[1])

    def write_steps(self, episode: int = 0) -> list[int]:
        """0-based steps at which episode ``episode`` wrote anything (syncs with the device)."""
        active = self.write_weights[episode].abs().sum(dim=(-2, -1)) > 0
        return [int(i) for i in torch.nonzero(active).flatten().tolist()]


def plot_trace(
    trace: MemoryTrace,
    path: str | os.PathLike[str],
    *,
    episode: int = 0,
    title: str | None = None,
) -> Path:
    """Draw the read and write weights of one episode as two heatmaps and save them.

    Rows are steps, columns are slots; the weights of all heads are summed. Uses matplotlib's
    Agg canvas (no display, global backend untouched); the file is written atomically and
    its format follows the suffix (``.png``, ``.pdf``, ``.svg``).

    Args:
        trace: from ``MemoryCore(..., trace=True)``.
        path: output file.
        episode: which episode of the batch to draw.
        title: figure title.

    Returns:
        The written path.

    Raises:
        ValueError: if ``episode`` is outside the batch or the suffix is missing.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    batch = int(trace.read_weights.shape[0])
    if not 0 <= episode < batch:
        raise ValueError(f"plot_trace: episode {episode} is outside the batch of {batch} episodes")
    path = Path(path)
    fmt = path.suffix.lstrip(".").lower()
    if not fmt:
        raise ValueError(f"plot_trace: {path} has no suffix; use e.g. .png or .pdf")
    reads = trace.read_weights[episode].detach().float().sum(1).cpu().numpy()  # [T, S]
    writes = trace.write_weights[episode].detach().float().sum(1).cpu().numpy()
    fig = Figure(figsize=(8, max(3.0, 0.12 * reads.shape[0] + 1.5)))
    FigureCanvasAgg(fig)
    for i, (name, data) in enumerate((("read weights", reads), ("write weights", writes))):
        ax = fig.add_subplot(1, 2, i + 1)
        image = ax.imshow(data, aspect="auto", interpolation="nearest", cmap="viridis")
        ax.set_title(name)
        ax.set_xlabel("slot")
        ax.set_ylabel("step")
        fig.colorbar(image, ax=ax)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return atomic_write(path, lambda fh: fig.savefig(fh, format=fmt))
