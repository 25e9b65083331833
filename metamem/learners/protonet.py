"""Prototypical Networks (Snell, Swersky & Zemel, NIPS 2017, arXiv:1703.05175).

Each class is represented by the mean embedding of its support items,
``c_k = mean_{(x_i, y_i) in S, y_i = k} f(x_i)``, and a query is classified by a softmax over
negative squared Euclidean distances, ``p(y = k | x) = softmax_k(-||f(x) - c_k||^2)``. The loss
is the cross-entropy of the query labels. Settings of the paper: Conv-4-64, Adam 1e-3
halved every 2000 episodes, 60-way training episodes on Omniglot (30/20-way on mini-ImageNet).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from metamem.learners._common import (
    class_means,
    embed_support_query,
    forward_via_predict,
    mask_absent,
    present_classes,
    support_onehot,
)
from metamem.learners.base import BACKBONES, LEARNERS
from metamem.types import EpisodeBatch, LearnerOutput

__all__ = ["ProtoNet", "build_protonet"]


class ProtoNet(nn.Module):
    """Prototypical Networks with squared Euclidean distance.

    Args:
        backbone: embedding network ``[*, C, H, W] -> [*, D]``.
    """

    episode_format: Literal["set", "sequence"] = "set"

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone

    def forward(self, batch: EpisodeBatch) -> LearnerOutput:
        """Query logits ``[B, N*Q, N]`` and the mean query cross-entropy."""
        return forward_via_predict(self, batch)

    def predict(
        self,
        support_x: torch.Tensor,
        support_y: torch.Tensor,
        query_x: torch.Tensor,
        *,
        n_way: int,
        support_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Logits ``-||f(x) - c_k||^2`` ``[B, Qn, N]``; ``-inf`` for classes with no present support.

        Arguments and shapes as in :meth:`metamem.learners.base.Learner.predict`.
        """
        support, query = embed_support_query(self.backbone, support_x, query_x)
        return self.predict_features(support, support_y, query, n_way=n_way, support_mask=support_mask)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Per-image features ``[*, D]`` of images ``[*, C, H, W]`` (in eval mode an image's
        feature does not depend on the other images, so evaluation may reuse them)."""
        return self.backbone(x)

    def predict_features(
        self,
        support: torch.Tensor,
        support_y: torch.Tensor,
        query: torch.Tensor,
        *,
        n_way: int,
        support_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """:meth:`predict` from features: support ``[B, S, D]``, query ``[B, Qn, D]`` -> ``[B, Qn, N]``."""
        onehot = support_onehot(support_y, n_way, support_mask)
        protos = class_means(support, onehot)  # [B, N, D]
        # ||q - c||^2 = ||q||^2 - 2 q.c + ||c||^2, one batched matmul
        sq = (query**2).sum(-1, keepdim=True) - 2 * query @ protos.transpose(1, 2) + (protos**2).sum(-1).unsqueeze(1)
        return mask_absent(-sq, present_classes(onehot))


@LEARNERS.register("protonet")
def build_protonet(*, n_way: int, image_shape: tuple[int, int, int], backbone: str = "conv4") -> ProtoNet:
    """Prototypical Networks (Snell et al. 2017): squared Euclidean distance to class means."""
    del n_way  # any number of ways works at predict time
    return ProtoNet(BACKBONES.build(backbone, image_shape=image_shape))
