"""The CPU policy of the commands that run models (``train``, ``eval``): torch threads and the
host allocator (:func:`metamem.device.keep_freed_memory`)."""

from __future__ import annotations

import argparse
import os

HELP = (
    "torch intra-op CPU threads (default 1, or $OMP_NUM_THREADS when set): small episodic "
    "models run fastest on one thread, and several threads spin-wait badly on a busy CPU"
)


def add_threads_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--threads", type=int, metavar="N", default=None, help=HELP)


def apply_threads(n: int | None) -> int:
    """Set torch's intra-op threads: ``n``, else ``$OMP_NUM_THREADS``, else 1. Returns it.

    Also keeps freed large blocks in the process (:func:`metamem.device.keep_freed_memory`)
    unless ``METAMEM_MALLOC=system``.

    Measured here: a MANN training step (batch 16, T=50) took 0.14 s on one thread and about
    20 s with torch's default two threads on a 2-core machine running other jobs.
    """
    if n is None:
        env = os.environ.get("OMP_NUM_THREADS", "")
        n = int(env) if env.isdigit() and int(env) > 0 else 1
    if n < 1:
        raise ValueError(f"--threads must be >= 1, got {n}")
    import torch  # lazily: the CLI starts without torch

    from metamem.device import keep_freed_memory

    torch.set_num_threads(n)
    keep_freed_memory()
    return n
