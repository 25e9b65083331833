"""The one device resolver: ``device="auto"|"cpu"|"cuda"|"cuda:N"`` -> a :class:`torch.device`,
and the host allocator setting the commands apply (:func:`keep_freed_memory`)."""

from __future__ import annotations

import ctypes
import os
import platform
import sys

import torch

__all__ = ["keep_freed_memory", "resolve_device"]

# glibc's mallopt(3) parameters
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def resolve_device(spec: str | torch.device | None = "auto", *, local_rank: int = 0) -> torch.device:
    """Resolve a device setting.

    Args:
        spec: ``"auto"`` (or ``None``: CUDA when available, else CPU), ``"cpu"``, ``"cuda"``,
            ``"cuda:N"`` or a :class:`torch.device`.
        local_rank: the CUDA index a bare ``"cuda"`` means (``LOCAL_RANK`` under torchrun).

    Raises:
        ValueError: for a string that is not a torch device.
        RuntimeError: for a CUDA device on a machine without CUDA.
    """
    if spec is None or spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(spec)
    except (RuntimeError, TypeError) as e:
        raise ValueError(f"device={spec!r} is not a torch device ({e}); use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError(f"device={str(spec)!r} but CUDA is not available; use device=cpu or device=auto")
        if dev.index is None:
            dev = torch.device("cuda", local_rank)
    return dev


def keep_freed_memory(mmap_threshold: int = 1 << 30, trim_threshold: int = (1 << 31) - 1) -> bool:
    """Let glibc's ``malloc`` reuse freed large blocks instead of handing them back to the OS.

    By default glibc serves every allocation above its mmap threshold (at most 32 MiB) with a
    fresh ``mmap`` and unmaps it on free, and trims the heap top beyond a threshold; each new
    CPU tensor of that size is then zero-filled by the kernel page by page. An episode's
    activations are such tensors, allocated and freed every step: evaluating MAML on 20-way
    5-shot episodes took 4.75 s of system time per episode (1.3 M page faults) against 3 s
    of user time; after this call, 0.45 s (docs/benchmarks.md, "Host allocator").

    This raises the mmap threshold to ``mmap_threshold`` and the trim threshold to
    ``trim_threshold`` with ``mallopt(3)`` (each at most 2 GiB - 1, a C int), for the whole
    process. The cost: a process keeps its peak heap (plus at most ``trim_threshold`` free at
    the top) until it exits. The ``train`` and ``eval`` commands call it unless
    ``METAMEM_MALLOC=system``; library code never does, so a Python user opts in by calling it.

    Returns:
        True where it took effect (Linux with glibc); False elsewhere, or when
        ``METAMEM_MALLOC=system`` is set.
    """
    if os.environ.get("METAMEM_MALLOC", "") == "system":
        return False
    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    limit = 2**31 - 1  # mallopt takes a C int
    ok = mallopt(_M_MMAP_THRESHOLD, min(mmap_threshold, limit)) == 1
    return mallopt(_M_TRIM_THRESHOLD, min(trim_threshold, limit)) == 1 and ok
