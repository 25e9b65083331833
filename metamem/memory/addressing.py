"""Content addressing and reading (Santoro et al. 2016, papers.md §1.2).

``K(k, m) = k·m / (‖k‖ ‖m‖)`` is the cosine similarity between a key and a slot; the read
weights of a head are ``softmax_i(β · K(k, M(i)))`` with a key strength ``β ≥ 1`` that
sharpens the distribution (β = 1 is the paper's plain softmax); the read vector is
``r = Σ_i w(i) M(i)``.

Sparse (hard) reads keep only the ``top_k`` largest weights of each head and renormalise them,
which equals a softmax over the kept logits. Gradients flow through the kept weights only;
``top_k=1`` is hard attention (a weight of exactly 1 on the best slot).

Norms use ``sqrt(‖x‖² + eps)``, so an all-zero memory or key gives a finite similarity of
0 and a finite gradient.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["cosine_similarity", "content_weights", "read_memory", "oneplus"]

#: Added under the square root of every norm.
NORM_EPS = 1e-8


def oneplus(x: torch.Tensor) -> torch.Tensor:
    """``1 + softplus(x)``: maps a raw controller output to a key strength in [1, inf)."""
    return 1.0 + F.softplus(x)


def cosine_similarity(keys: torch.Tensor, memory: torch.Tensor, eps: float = NORM_EPS) -> torch.Tensor:
    """Cosine similarity of every key with every slot.

    Args:
        keys: ``[B, R, D]``.
        memory: ``[B, S, D]``.
        eps: added to squared norms (keeps zero vectors finite, gradient included).

    Returns:
        ``[B, R, S]`` similarities in [-1, 1].

    Raises:
        ValueError: if the key width differs from the slot width D.
    """
    if keys.shape[-1] != memory.shape[-1]:
        raise ValueError(
            f"cosine_similarity: key width {keys.shape[-1]} does not match the slot width "
            f"D={memory.shape[-1]}; keys must be [B, R, D]"
        )
    dots = torch.bmm(keys, memory.transpose(1, 2))
    key_norm = torch.sqrt(keys.pow(2).sum(-1) + eps)  # [B, R]
    mem_norm = torch.sqrt(memory.pow(2).sum(-1) + eps)  # [B, S]
    return dots / (key_norm.unsqueeze(-1) * mem_norm.unsqueeze(1))


def content_weights(
    memory: torch.Tensor,
    keys: torch.Tensor,
    strength: torch.Tensor | None = None,
    *,
    top_k: int | None = None,
) -> torch.Tensor:
    """Content-based addressing weights ``softmax(β · cos(k, M))`` per head.

    Args:
        memory: ``[B, S, D]``.
        keys: ``[B, R, D]``.
        strength: ``[B, R]`` key strengths β (None: β = 1, the paper's rule).
        top_k: keep only the k largest weights of each head, renormalised (None: dense).

    Returns:
        ``[B, R, S]`` weights, each head summing to 1 (exactly ``top_k`` non-zeros when sparse).

    Raises:
        ValueError: on a key of the wrong width or ``top_k`` outside ``1..S``.
    """
    logits = cosine_similarity(keys, memory)
    if strength is not None:
        logits = logits * strength.unsqueeze(-1)
    if top_k is None:
        return torch.softmax(logits, dim=-1)
    slots = logits.shape[-1]
    if isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= slots:
        raise ValueError(f"content_weights: top_k must be an int in 1..S={slots}, got {top_k!r}")
    kept, index = torch.topk(logits, top_k, dim=-1)
    return torch.zeros_like(logits).scatter(-1, index, torch.softmax(kept, dim=-1))


def read_memory(memory: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Read vectors ``r = Σ_i w(i) M(i)``.

    Args:
        memory: ``[B, S, D]``.
        weights: ``[B, R, S]``.

    Returns:
        ``[B, R, D]``.
    """
    return torch.bmm(weights, memory)
