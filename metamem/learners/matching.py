"""Matching Networks (Vinyals, Blundell, Lillicrap, Kavukcuoglu & Wierstra, NIPS 2016,
arXiv:1606.04080).

A query is labelled by attention over the support set,
``P(y = k | x, S) = sum_{i: y_i = k} a(x, x_i)`` with ``a(x, x_i) = softmax_i(c(f(x), g(x_i)))``
and ``c`` the cosine similarity; the logits returned are these log-probabilities.

With ``fce=True`` (Full Context Embeddings):

* support side ``g(x_i, S)``: a bidirectional LSTM reads the base embeddings ``g'(x_i)`` of
  the support set in its given order; ``g = h_fwd + h_bwd + g'(x_i)``.
* query side ``f(x, S)``: K processing steps of an attention LSTM ("process" block of
  Vinyals et al. 2015, Order Matters). With ``h_0 = r_0 = 0``, at step k:
  ``h^_k, c_k = LSTM(f'(x), [h_{k-1}, r_{k-1}], c_{k-1})`` (implemented as an LSTM cell whose
  input is ``[f'(x), r_{k-1}]``, which is the same gate function), ``h_k = h^_k + f'(x)`` and
  ``r_k = sum_i softmax_i(h_k . g(x_i)) g(x_i)``. The output is ``f = h_K``.

f' and g' share one backbone. The paper found FCE helps on mini-ImageNet, not Omniglot.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from metamem.learners._common import attention_class_logits, support_onehot
from metamem.learners.base import BACKBONES, LEARNERS
from metamem.learners.capabilities import AnyWay, EmbeddingLearner

__all__ = ["MatchingNet", "build_matching"]


class MatchingNet(EmbeddingLearner, AnyWay):
    """Matching Networks with cosine attention and optional full context embeddings.

    Args:
        backbone: embedding network ``[*, C, H, W] -> [*, D]``.
        fce: use full context embeddings (bidirectional support LSTM + attention LSTM).
        fce_steps: K, processing steps of the query attention LSTM.
        scale: multiplies the cosine similarities before the softmax (1.0 = the paper).
        learn_scale: learn the scale, starting from ``scale`` (kept positive as the exp of a
            learned log). The backbone's features follow a ReLU, so their cosines lie in
            [0, 1] and a fixed scale caps how sharp the attention can get.
    """

    def __init__(self, backbone: nn.Module, *, fce: bool = False, fce_steps: int = 5, scale: float = 1.0,
                 learn_scale: bool = False) -> None:
        super().__init__()
        if fce_steps < 1:
            raise ValueError(f"matching: fce_steps must be >= 1, got {fce_steps}")
        if not scale > 0:
            raise ValueError(f"matching: scale must be > 0, got {scale}")
        self.backbone = backbone
        self.fce = fce
        self.fce_steps = fce_steps
        self.scale = scale
        self.log_scale = nn.Parameter(torch.tensor(math.log(scale))) if learn_scale else None
        d = int(backbone.out_dim)  # type: ignore[arg-type]
        if fce:
            self.support_lstm = nn.LSTM(d, d, batch_first=True, bidirectional=True)
            self.query_cell = nn.LSTMCell(2 * d, d)

    def predict_features(self, support: torch.Tensor, support_y: torch.Tensor, query: torch.Tensor, *,
                         n_way: int, support_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Log attention mass per class ``[B, Qn, N]`` from backbone features ``[B, S, D]`` and
        ``[B, Qn, D]`` (the full context embeddings, when on, are computed here, per episode);
        ``-inf`` for classes with no present support."""
        if self.fce:
            support = self._context_support(support, support_mask)
            query = self._context_query(query, support, support_mask)
        cos = F.normalize(query, dim=-1) @ F.normalize(support, dim=-1).transpose(1, 2)  # [B, Qn, S]
        scale = self.scale if self.log_scale is None else self.log_scale.exp()
        return attention_class_logits(scale * cos, support_onehot(support_y, n_way, support_mask))

    def _context_support(self, g0: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """``g(x_i, S)`` ``[B, S, D]``: bidirectional LSTM over the present support items, in order."""
        b, s, d = g0.shape
        if mask is None:
            h, _ = self.support_lstm(g0)
        else:  # move present items to the front (order kept) and pack; eval-time path
            order = torch.argsort((~mask).to(torch.int8), dim=1, stable=True)
            packed = pack_padded_sequence(
                g0.gather(1, order.unsqueeze(-1).expand(-1, -1, d)),
                mask.sum(1).clamp_min(1).cpu(),
                batch_first=True,
                enforce_sorted=False,
            )
            h_sorted, _ = pad_packed_sequence(self.support_lstm(packed)[0], batch_first=True, total_length=s)
            h = torch.empty_like(h_sorted).scatter_(1, order.unsqueeze(-1).expand(-1, -1, 2 * d), h_sorted)
        return h[..., :d] + h[..., d:] + g0

    def _context_query(self, f0: torch.Tensor, g: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """``f(x, S)`` ``[B, Qn, D]``: K steps of the attention LSTM reading the support set."""
        b, qn, d = f0.shape
        x = f0.reshape(b * qn, d)
        h = torch.zeros_like(x)
        c = torch.zeros_like(x)
        r = torch.zeros_like(x)
        absent = None if mask is None else ~mask.unsqueeze(1)  # [B, 1, S]
        for _ in range(self.fce_steps):
            h_hat, c = self.query_cell(torch.cat([x, r], dim=-1), (h, c))
            h = h_hat + x
            att = h.view(b, qn, d) @ g.transpose(1, 2)  # [B, Qn, S]
            if absent is not None:  # no present item at all -> NaN softmax -> zero read
                att = att.masked_fill(absent, float("-inf"))
            r = (torch.softmax(att, -1).nan_to_num(0.0) @ g).reshape(b * qn, d)
        return h.view(b, qn, d)


@LEARNERS.register("matching")
def build_matching(
    *,
    n_way: int,
    image_shape: tuple[int, int, int],
    backbone: str = "conv4",
    fce: bool = False,
    fce_steps: int = 5,
    scale: float = 1.0,
    learn_scale: bool = False,
) -> MatchingNet:
    """Matching Networks (Vinyals et al. 2016): cosine attention over the support set, optional FCE."""
    del n_way  # any number of ways works at predict time
    return MatchingNet(BACKBONES.build(backbone, image_shape=image_shape), fce=fce, fce_steps=fce_steps, scale=scale,
                       learn_scale=learn_scale)
