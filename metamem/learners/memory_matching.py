"""Memory Matching Networks (MM-Net).

Reference:
    Qi Cai, Yingwei Pan, Ting Yao, Chenggang Yan and Tao Mei. "Memory Matching Networks for
    One-Shot Image Recognition". CVPR 2018, arXiv:1804.08281. Notes: papers.md §3.2.

What this implementation does (legend of :mod:`metamem.types`; ``Sp`` support items, S
memory slots, F trunk width, D ``key_dim``):

1. **Embedding**: a CNN trunk ``e = f(x)`` ``[F]`` and a linear key ``k = A e`` ``[D]``.
2. **Memory writing**: the support items are presented in order, t = 0..Sp-1, to a
   :class:`~metamem.memory.SlotMemory` driven by ``h_t = k_t`` whose write policy (config
   ``policy``: ``lru``, ``usage``, ``uniform``, ``cached_uniform``) decides *where* to
   write: its write weights ``w_t [B, S]`` (summed over write heads, capped at 1). The
   key-value memory is written with them,
   ``K ← K ⊙ (1 − w_t) + w_t k_t`` and ``V ← V ⊙ (1 − w_t) + w_t onehot(y_t)``,
   so a slot value is a label distribution over the episode's N classes and its mass
   ``o = Σ_k V[:, k]`` is the slot's occupancy. The policy's own slot contents (written by its
   learned add/erase vectors) are its addressing state (LRU's last-read slot, DNC content
   writes), not the keys. ``uniform`` stores only the items at its write steps;
   ``cached_uniform`` writes the mean key and label distribution of the items seen since its
   last write step (a uniform average, where the policy's own write uses a learned attention
   over its cache). Only the write loop over the Sp items is a Python loop.
3. **Contextual learner**: a bidirectional LSTM runs over the S slots (input ``[K_i ; o_i]``),
   its outputs are pooled with the occupancies as weights, and a linear layer predicts a
   per-dimension scale and shift (FiLM) of the query's trunk features:
   ``e'_q = e_q ⊙ (1 + γ) + β``, ``k_q = A e'_q``. This is how "the contextual learner
   predicts the parameters of the CNN that embeds the query" is realised here (the
   paper's exact parameterisation is not reproduced).
4. **Matching against memory**: ``a_i ∝ o_i exp(s · cos(k_q, K_i))`` (s a learned sharpness) and
   ``P(y = k | x_q) = Σ_i a_i V_ik / o_i``; logits are ``log P``. Classes with no present
   support item get ``-inf``; a class whose items the memory dropped (fewer slots than items)
   gets a finite, very low logit.

Nothing depends on N or K beyond the value width, so one trained model serves any number of
ways and shots.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from metamem.learners._common import (
    mask_absent,
    present_classes,
    support_onehot,
)
from metamem.learners.backbones import build_trunk
from metamem.learners.base import LEARNERS
from metamem.learners.capabilities import AnyWay, EmbeddingLearner
from metamem.learners.metanet import check_set_inputs
from metamem.memory import WRITE_POLICIES, CachedUniformWrite, MemoryState, SlotMemory
from metamem.memory.state import check_positive
from metamem.registry import forwards_to, renamed_keys

__all__ = ["MemoryMatchingNet", "build_memory_matching", "write_key_value_memory", "memory_class_logits"]


def _blend(mask: torch.Tensor, new: torch.Tensor, old: torch.Tensor) -> torch.Tensor:
    """``new`` where the episode's item is present (mask ``[B]``), else ``old``."""
    return torch.where(mask.view(-1, *([1] * (new.dim() - 1))), new, old)


def write_key_value_memory(
    memory: SlotMemory,
    keys: torch.Tensor,
    values: torch.Tensor,
    mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, MemoryState]:
    """Write ``Sp`` (key, value) pairs into a fresh key-value memory, where ``memory``'s policy says.

    Args:
        memory: the :class:`SlotMemory` (its ``hidden_size`` and ``width`` equal D).
        keys: ``[B, Sp, D]`` support keys, presented in order.
        values: ``[B, Sp, N]`` label distributions (one-hot labels).
        mask: bool ``[B, Sp]``; False items are skipped (the memory is left untouched).

    Returns:
        ``(K [B, S, D], V [B, S, N], final policy state)``.
    """
    b, steps, _ = keys.shape
    state = memory.init_state(b, keys.device, keys.dtype)
    big_k = keys.new_zeros(b, memory.slots, keys.shape[-1])
    big_v = values.new_zeros(b, memory.slots, values.shape[-1])
    present = torch.ones(b, steps, dtype=torch.bool, device=keys.device) if mask is None else mask
    summarise = isinstance(memory.policy, CachedUniformWrite)
    pend_k, pend_v = torch.zeros_like(keys[:, 0]), torch.zeros_like(values[:, 0])
    pend_n = keys.new_zeros(b, 1)
    for t in range(steps):  # the write steps of the memory (not episodes)
        m_t = present[:, t]
        _, new_state = memory.step(keys[:, t], state, t, steps)
        state = MemoryState(*(_blend(m_t, n, o) for n, o in zip(new_state, state, strict=True)))
        w = new_state.write_weights.sum(1).clamp(max=1.0) * m_t.unsqueeze(-1).to(keys.dtype)  # [B, S]
        if summarise:
            gate = m_t.unsqueeze(-1).to(keys.dtype)
            pend_k, pend_v, pend_n = pend_k + gate * keys[:, t], pend_v + gate * values[:, t], pend_n + gate
            if not memory.policy.is_write_step(t, steps):
                continue
            k_t, v_t = pend_k / pend_n.clamp_min(1.0), pend_v / pend_n.clamp_min(1.0)
            w = w * (pend_n > 0).to(keys.dtype)  # an absent item at a write step writes nothing
            keep = (~m_t).unsqueeze(-1).to(keys.dtype)  # ... and its episode's pending items wait
            pend_k, pend_v, pend_n = pend_k * keep, pend_v * keep, pend_n * keep
        else:
            k_t, v_t = keys[:, t], values[:, t]
        w = w.unsqueeze(-1)
        big_k = big_k * (1.0 - w) + w * k_t.unsqueeze(1)
        big_v = big_v * (1.0 - w) + w * v_t.unsqueeze(1)
    return big_k, big_v, state


def memory_class_logits(
    query_keys: torch.Tensor, mem_keys: torch.Tensor, mem_values: torch.Tensor, sharpness: torch.Tensor | float
) -> torch.Tensor:
    """``log P(y | q)`` from a cosine attention over the slots, weighted by slot occupancy.

    ``P(y = k | q) = Σ_i e_i V_ik / Σ_i e_i o_i`` with ``e_i = exp(s · cos(q, K_i))`` and
    ``o_i = Σ_k V_ik`` (empty slots get no weight).

    Args:
        query_keys: ``[B, Qn, D]``.
        mem_keys: ``[B, S, D]``.
        mem_values: ``[B, S, N]`` non-negative label mass per slot.
        sharpness: s.

    Returns:
        ``[B, Qn, N]``, finite (a class with no mass gets ``log(tiny)``, about -87 in float32).
    """
    cos = F.normalize(query_keys, dim=-1, eps=1e-8) @ F.normalize(mem_keys, dim=-1, eps=1e-8).transpose(1, 2)
    scores = cos * sharpness
    e = torch.exp(scores - scores.amax(-1, keepdim=True).detach())  # [B, Qn, S]
    tiny = torch.finfo(e.dtype).tiny
    total = (e @ mem_values.sum(-1, keepdim=True)).clamp_min(tiny)
    return ((e @ mem_values) / total).clamp_min(tiny).log()


class MemoryMatchingNet(EmbeddingLearner, AnyWay):
    """Memory Matching Networks (Cai et al., CVPR 2018); see the module docstring.

    Args:
        trunk: CNN ``[*, C, H, W] -> [*, F]`` exposing ``out_dim``.
        key_dim: D, width of keys and of the policy's slots.
        slots: S.
        policy: a :data:`~metamem.memory.WRITE_POLICIES` name.
        policy_options: keyword options of the write policy.
        context_hidden: units per direction of the contextual bi-LSTM.
        read_sharpness: initial sharpness of the cosine matching.
        new_slot_bias: initial bias of the ``lru`` policy's gate logit ``α``. ``0`` starts each
            write half in the last-read slot and half in the least-used one, which blends
            support items of different classes into one slot; a negative value (``-4``:
            ``σ(α) ≈ 0.02``) starts with every item in a slot of its own, the paper's write for
            an item whose class is not yet in memory. Training still learns the gate.
    """

    def __init__(
        self,
        trunk: nn.Module,
        *,
        key_dim: int = 64,
        slots: int = 32,
        policy: str = "lru",
        policy_options: dict[str, Any] | None = None,
        context_hidden: int = 64,
        read_sharpness: float = 10.0,
        new_slot_bias: float = 0.0,
    ) -> None:
        super().__init__()
        check_positive("memory_matching", key_dim=key_dim, slots=slots, context_hidden=context_hidden)
        if read_sharpness <= 0:
            raise ValueError(f"memory_matching: read_sharpness must be > 0, got {read_sharpness!r}")
        if policy not in WRITE_POLICIES:
            raise ValueError(f"memory_matching: {WRITE_POLICIES.unknown_message(policy)}")
        feat = int(trunk.out_dim)
        self.trunk = trunk
        self.key = nn.Linear(feat, key_dim)
        self.memory = SlotMemory(
            key_dim, slots=slots, width=key_dim, read_heads=1, policy=policy,
            policy_options=policy_options,
        )
        if new_slot_bias:
            if policy != "lru":
                raise ValueError(
                    f"memory_matching: new_slot_bias applies to policy 'lru' only, got policy {policy!r}; "
                    f"drop new_slot_bias or use policy: lru"
                )
            with torch.no_grad():  # the gate logits come first in the policy's interface outputs
                gates = slice(self.memory.read_size, self.memory.read_size + self.memory.read_heads)
                self.memory.interface.bias[gates] = float(new_slot_bias)
        self.context = nn.LSTM(key_dim + 1, context_hidden, batch_first=True, bidirectional=True)
        self.film = nn.Linear(2 * context_hidden, 2 * feat)
        nn.init.normal_(self.film.weight, std=1e-3)  # FiLM starts near the identity
        nn.init.zeros_(self.film.bias)
        self.log_sharpness = nn.Parameter(torch.tensor(math.log(read_sharpness)))

    def film_params(self, mem_keys: torch.Tensor, mem_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Contextual learner: bi-LSTM over the slots -> ``(γ [B, F], β [B, F])``."""
        occ = mem_values.sum(-1, keepdim=True)  # [B, S, 1]
        out, _ = self.context(torch.cat([mem_keys, occ], dim=-1))  # [B, S, 2h]
        pooled = (out * occ).sum(1) / occ.sum(1).clamp_min(1e-6)
        gamma, beta = self.film(pooled).chunk(2, dim=-1)
        return gamma, beta

    def predict(self, support_x: torch.Tensor, support_y: torch.Tensor, query_x: torch.Tensor, *,
                n_way: int, support_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Query logits ``[B, Qn, N]`` from the memory the support is written to (any N, any K)."""
        check_set_inputs("MemoryMatchingNet", support_x, support_y, query_x, support_mask)
        return super().predict(support_x, support_y, query_x, n_way=n_way, support_mask=support_mask)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Trunk features ``[*, F]`` of images ``[*, C, H, W]`` (per image)."""
        return self.trunk(x)

    def predict_features(self, e_s: torch.Tensor, support_y: torch.Tensor, e_q: torch.Tensor, *,
                         n_way: int, support_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Query logits ``[B, Qn, N]`` from trunk features ``[B, S, F]`` and ``[B, Qn, F]``: the
        support is written to a fresh memory per episode, then the queries read it."""
        onehot = support_onehot(support_y, n_way, support_mask).to(e_s.dtype)
        mem_k, mem_v, _ = write_key_value_memory(self.memory, self.key(e_s), onehot, support_mask)
        gamma, beta = self.film_params(mem_k, mem_v)
        q_keys = self.key(e_q * (1.0 + gamma.unsqueeze(1)) + beta.unsqueeze(1))
        logits = memory_class_logits(q_keys, mem_k, mem_v, self.log_sharpness.exp())
        return mask_absent(logits, present_classes(onehot))



@LEARNERS.register("memory_matching")
@renamed_keys(memory_slots="slots", write_policy="policy")
@forwards_to(MemoryMatchingNet, drop=("trunk",))
def build_memory_matching(
    *,
    n_way: int,
    image_shape: tuple[int, int, int],
    backbone: str = "conv4",
    backbone_channels: int | None = None,
    **options: Any,
) -> MemoryMatchingNet:
    """Memory Matching Networks (Cai et al. 2018): support written to a slot memory, FiLM'd query matched against it.

    Args:
        n_way: N of the training episodes (the model itself serves any N).
        image_shape: (C, H, W) of the data.
        backbone: BACKBONES key of the embedding CNN.
        backbone_channels: filters per block of ``conv4`` (None: the backbone default).
        **options: :class:`MemoryMatchingNet`'s (``key_dim``, ``slots``, ``policy``,
            ``policy_options``, ``context_hidden``, ``read_sharpness``, ``new_slot_bias``).

    The old names ``memory_slots`` and ``write_policy`` still load, with a warning.

    Raises:
        ValueError: on a non-positive size or an unknown write policy (listing the valid ones).
    """
    check_positive("memory_matching", n_way=n_way)
    trunk = build_trunk(backbone, image_shape, backbone_channels, owner="memory_matching")
    return MemoryMatchingNet(trunk, **options)
