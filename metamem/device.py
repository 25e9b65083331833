"""The one device resolver: ``device="auto"|"cpu"|"cuda"|"cuda:N"`` -> a :class:`torch.device`."""

from __future__ import annotations

import torch

__all__ = ["resolve_device"]


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
