"""Under AMP only the backbone runs in low precision: the metric heads score in float32.

A ProtoNet head computes ``||q||^2 - 2 q.c + ||c||^2``, a difference of large terms; in
bfloat16 it loses the units that separate the classes (a ProtoNet trained with bf16 AMP on an
H200 stayed at chance-level loss). CPU autocast shows the same arithmetic without a GPU.
"""
from __future__ import annotations

import pytest
import torch
from torch import nn

from metamem.learners import build_learner

B, S, QN, N = 2, 6, 5, 3  # odd sizes
H, W = 16, 17  # D = 272 features: the images, flattened


def _episode(seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    # features of norm ~30 with class offsets a few units apart, as a trained Conv-4 gives
    support = 1.0 + torch.randn(B, S, 1, H, W, generator=g)
    query = 1.0 + torch.randn(B, QN, 1, H, W, generator=g)
    support_y = torch.arange(S).remainder(N).expand(B, S)
    return support, support_y, query


@pytest.mark.parametrize("name", ["protonet", "matching"])
def test_head_scores_in_float32_under_autocast(name: str) -> None:
    model = build_learner(name, n_way=N, image_shape=(1, H, W)).eval()
    model.backbone = nn.Flatten(start_dim=-3)  # exact in any precision: isolates the head
    support, support_y, query = _episode(0)
    with torch.no_grad():
        ref = model.predict(support, support_y, query, n_way=N)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            amp = model.predict(support, support_y, query, n_way=N)
    assert amp.dtype == torch.float32
    torch.testing.assert_close(amp, ref, rtol=1e-5, atol=1e-4)


def test_bfloat16_distances_would_lose_the_margin() -> None:
    """The reason for the float32 head: the same distances in bfloat16 are off by whole units."""
    support, _, query = _episode(1)
    q, c = query.flatten(2), support.flatten(2)
    exact = torch.cdist(q.double(), c.double()).square()
    qb, cb = q.bfloat16(), c.bfloat16()
    low = ((qb**2).sum(-1, keepdim=True) - 2 * qb @ cb.transpose(1, 2) + (cb**2).sum(-1).unsqueeze(1)).double()
    assert (low - exact).abs().max() > 1.0
