"""Counter-based random numbers computed with integer tensor ops on any device.

Why not ``torch.rand(..., generator=g)`` on the device? A CUDA generator and a CPU generator
seeded alike produce different streams, so episodes would depend on the device. Here every
random value is a hash of ``(episode key, stream, position)`` computed with integer
arithmetic in int64 tensors, which is bit-identical on CPU and GPU. An episode is then a pure
function of its 62-bit key, whatever else is in the batch; the sampler draws the keys from its
own ``torch.Generator`` and the evaluation protocol derives them from
``(protocol seed, episode index)``.

The mixer :func:`hash31` is a xor-shift / multiply hash on 31-bit words. Every product stays
below 2**62, so nothing overflows int64. Each step is invertible on ``[0, 2**31)``, so the hash
is a bijection there: the values :func:`random_keys` gives one episode for distinct positions
are distinct, and ``topk`` over them never meets a tie (ties would make CPU and GPU choices
differ).
"""

from __future__ import annotations

import torch

__all__ = [
    "KEY_BITS",
    "episode_base",
    "episode_keys_from_seed",
    "hash31",
    "keys_from_mix",
    "keys_from_mix_into",
    "position_mix",
    "random_keys",
]

KEY_BITS = 62
M31 = 0x7FFFFFFF
_C1 = 0x45D9F3B  # odd multipliers below 2**31
_C2 = 0x2C1B3C6D


def hash31(x: torch.Tensor, *, inplace: bool = False) -> torch.Tensor:
    """Mix int64 values into ``[0, 2**31)`` (a bijection on that range).

    Args:
        x: int64 tensor (any shape, any device).
        inplace: overwrite ``x`` (saves allocations on hot paths).
    """
    x = x.bitwise_and_(M31) if inplace else x & M31
    x ^= x >> 16
    x *= _C1
    x &= M31
    x ^= x >> 15
    x *= _C2
    x &= M31
    x ^= x >> 16
    return x


def episode_base(key: torch.Tensor) -> torch.Tensor:
    """Fold int64 ``[B]`` episode keys (uniform 62-bit values) into 31-bit bases ``[B]``."""
    return (key ^ (key >> 31)) & M31


def position_mix(stream: int, n: int, device: torch.device | str | None = None) -> torch.Tensor:
    """int64 ``[n]`` distinct 31-bit values naming positions ``0..n-1`` of a stream.

    ``stream`` is a small integer naming what the numbers are for (classes, samples,
    order...), so the streams of one episode are independent.
    """
    pos = torch.arange(n, device=device, dtype=torch.int64)
    return hash31(hash31(pos, inplace=True) ^ hash31(torch.tensor(stream, device=device)))


def keys_from_mix(key: torch.Tensor, mix: torch.Tensor) -> torch.Tensor:
    """``hash31(base(key) ^ mix)``: int64 ``[B, n]`` from keys ``[B]`` and a mix ``[n]``.

    Distinct mix values give distinct outputs within an episode (both steps are bijections).
    """
    return hash31(episode_base(key)[:, None] ^ mix[None, :], inplace=True)


def keys_from_mix_into(
    key: torch.Tensor, mix: torch.Tensor, out: torch.Tensor, tmp: torch.Tensor
) -> torch.Tensor:
    """:func:`keys_from_mix` written into ``out`` with ``tmp`` as scratch (both int64 ``[B, n]``).

    The same values, with no allocation: the hot path of the episode sampler. The xor of two
    31-bit values is already below 2**31, so :func:`hash31`'s first mask is skipped.
    """
    torch.bitwise_xor(episode_base(key)[:, None], mix[None, :], out=out)
    torch.bitwise_right_shift(out, 16, out=tmp)
    out ^= tmp
    out *= _C1
    out &= M31
    torch.bitwise_right_shift(out, 15, out=tmp)
    out ^= tmp
    out *= _C2
    out &= M31
    torch.bitwise_right_shift(out, 16, out=tmp)
    out ^= tmp
    return out


def random_keys(key: torch.Tensor, stream: int, shape: tuple[int, ...]) -> torch.Tensor:
    """Per-episode random 31-bit integers, distinct across positions within an episode.

    Args:
        key: int64 ``[B]`` episode keys.
        stream: a small integer naming what the numbers are for (see :func:`position_mix`).
        shape: trailing shape of the numbers for each episode.

    Returns:
        int64 ``[B, *shape]`` values in ``[0, 2**31)``; a pure function of
        ``(key, stream, position)``.
    """
    n = 1
    for s in shape:
        n *= s
    return keys_from_mix(key, position_mix(stream, n, key.device)).view(key.shape[0], *shape)


def episode_keys_from_seed(seed: int, episode_ids: torch.Tensor) -> torch.Tensor:
    """Episode keys for a fixed protocol: a pure function of ``(seed, episode index)``.

    Args:
        seed: the protocol seed (any Python int; reduced to 62 bits).
        episode_ids: int64 ``[B]`` episode indices (below 2**62).

    Returns:
        int64 ``[B]`` keys in ``[0, 2**62)``.
    """
    s = int(seed) & ((1 << KEY_BITS) - 1)
    s_lo, s_hi = s & M31, (s >> 31) & M31
    ids = episode_ids.to(torch.int64)
    a = hash31(hash31(hash31(ids & M31) ^ s_lo) ^ (ids >> 31) ^ s_hi)
    b = hash31(a ^ 0x1B873593 ^ s_lo)
    return (a << 31) | b
