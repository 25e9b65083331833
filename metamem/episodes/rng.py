"""Counter-based random numbers computed with integer tensor ops on any device.

Why not ``torch.rand(..., generator=g)`` on the device? A CUDA generator and a CPU generator
seeded alike produce different streams, so episodes would depend on the device. Here every
random value is a hash of ``(episode key, stream, position)`` computed with 32-bit integer
arithmetic held in int64 tensors (no overflow: every product is below 2**60), which is
bit-identical on CPU and GPU. An episode is then a pure function of its 62-bit key, whatever
else is in the batch; the sampler draws the keys from its own ``torch.Generator`` and the
evaluation protocol derives them from ``(protocol seed, episode index)``.

The mixing function is the "lowbias32" integer hash (two xor-shift-multiply rounds), applied
per 32-bit word; keys are combined word by word.
"""

from __future__ import annotations

import torch

__all__ = ["KEY_BITS", "hash32", "episode_keys_from_seed", "random_keys", "split_key"]

KEY_BITS = 62
_M32 = 0xFFFFFFFF
_C1 = 0x7FEB352D
_C2 = 0x846CA68B


def hash32(x: torch.Tensor) -> torch.Tensor:
    """Mix 32-bit values held in an int64 tensor; returns values in ``[0, 2**32)``.

    Multiplications are split into 16-bit halves so no intermediate exceeds 2**49.
    """
    x = x & _M32
    x = x ^ (x >> 16)
    x = _mul32(x, _C1)
    x = x ^ (x >> 15)
    x = _mul32(x, _C2)
    x = x ^ (x >> 16)
    return x


def _mul32(x: torch.Tensor, c: int) -> torch.Tensor:
    """``(x * c) mod 2**32`` for ``x < 2**32`` without int64 overflow."""
    lo = (x & 0xFFFF) * c
    hi = ((x >> 16) * c) & 0xFFFF
    return (lo + (hi << 16)) & _M32


def split_key(key: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Split 62-bit keys into two 31-bit words."""
    return key & 0x7FFFFFFF, (key >> 31) & 0x7FFFFFFF


def random_keys(key: torch.Tensor, stream: int, shape: tuple[int, ...]) -> torch.Tensor:
    """Per-episode random 32-bit integers.

    Args:
        key: int64 ``[B]`` episode keys.
        stream: a small integer naming what the numbers are for (classes, samples, order...),
            so the streams of one episode are independent.
        shape: trailing shape of the numbers for each episode.

    Returns:
        int64 ``[B, *shape]`` values in ``[0, 2**32)``, a pure function of (key, stream, position).
    """
    n = 1
    for s in shape:
        n *= s
    lo, hi = split_key(key)
    base = hash32(hash32(lo ^ (stream * 0x9E3779B9 & _M32)) ^ hi)  # [B]
    pos = torch.arange(n, device=key.device, dtype=torch.int64)
    out = hash32(base[:, None] ^ hash32(pos + 0x632BE5AB)[None, :])
    out = hash32(out + base[:, None])
    return out.view(key.shape[0], *shape)


def episode_keys_from_seed(seed: int, episode_ids: torch.Tensor) -> torch.Tensor:
    """Episode keys for a fixed protocol: a pure function of ``(seed, episode index)``.

    Args:
        seed: the protocol seed (any Python int; reduced to 62 bits).
        episode_ids: int64 ``[B]`` episode indices.

    Returns:
        int64 ``[B]`` keys in ``[0, 2**62)``.
    """
    s = int(seed) & ((1 << KEY_BITS) - 1)
    s_lo, s_hi = s & 0x7FFFFFFF, (s >> 31) & 0x7FFFFFFF
    ids = episode_ids.to(torch.int64)
    a = hash32(hash32(ids & _M32 ^ s_lo) ^ (ids >> 32) ^ 0x5BD1E995)
    b = hash32(a ^ s_hi ^ 0x1B873593)
    return ((a & 0x7FFFFFFF) << 31) | (b & 0x7FFFFFFF)
