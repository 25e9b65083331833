"""Prototypical Networks (Snell, Swersky & Zemel, NIPS 2017, arXiv:1703.05175).

Each class is represented by the mean embedding of its support items,
``c_k = mean_{(x_i, y_i) in S, y_i = k} f(x_i)``, and a query is classified by a softmax over
negative squared Euclidean distances, ``p(y = k | x) = softmax_k(-||f(x) - c_k||^2)``. The loss
is the cross-entropy of the query labels. metamem's default, ``distance="euclidean"``, uses
``||f(x) - c_k||`` instead: the same predictions, a softer softmax while training, and fewer
CPU-minutes to each accuracy on Omniglot (docs/benchmarks_training.md); the paper configs set
``distance: sqeuclidean``. Settings of the paper: Conv-4-64, Adam 1e-3 halved every 2000
episodes, 60-way training episodes on Omniglot (30/20-way on mini-ImageNet).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from metamem.learners._common import class_means, mask_absent, present_classes, support_onehot
from metamem.learners.base import BACKBONES, LEARNERS
from metamem.learners.capabilities import AnyWay, EmbeddingLearner

__all__ = ["ProtoNet", "build_protonet"]


class ProtoNet(EmbeddingLearner, AnyWay):
    """Prototypical Networks: logits are minus the distance to each class mean.

    Args:
        backbone: embedding network ``[*, C, H, W] -> [*, D]``.
        distance: ``"euclidean"`` (``||f(x) - c_k||``, the default) or ``"sqeuclidean"``
            (the paper's ``||f(x) - c_k||^2``). Both rank the classes alike, so they predict the same
            labels; they train differently: the plain distance gives a softer softmax early
            on and reaches a given accuracy in fewer episodes on Omniglot
            (docs/benchmarks_training.md).
    """

    DISTANCES = ("sqeuclidean", "euclidean")

    def __init__(self, backbone: nn.Module, distance: str = "euclidean") -> None:
        super().__init__()
        if distance not in self.DISTANCES:
            raise ValueError(f"learner.distance: unknown distance {distance!r}; valid: {', '.join(self.DISTANCES)}")
        self.backbone = backbone
        self.distance = distance

    def predict_features(self, support: torch.Tensor, support_y: torch.Tensor, query: torch.Tensor, *,
                         n_way: int, support_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Logits ``-||f(x) - c_k||`` (or its square) ``[B, Qn, N]``; ``-inf`` for classes with no present support."""
        onehot = support_onehot(support_y, n_way, support_mask)
        protos = class_means(support, onehot)  # [B, N, D]
        # ||q - c||^2 = ||q||^2 - 2 q.c + ||c||^2, one batched matmul
        sq = (query**2).sum(-1, keepdim=True) - 2 * query @ protos.transpose(1, 2) + (protos**2).sum(-1).unsqueeze(1)
        if self.distance == "euclidean":  # clamped: rounding can make sq slightly negative
            sq = sq.clamp_min(1e-12).sqrt()
        return mask_absent(-sq, present_classes(onehot))


@LEARNERS.register("protonet")
def build_protonet(*, n_way: int, image_shape: tuple[int, int, int], backbone: str = "conv4",
                   distance: Literal["sqeuclidean", "euclidean"] = "euclidean") -> ProtoNet:
    """Prototypical Networks (Snell et al. 2017): (squared) Euclidean distance to class means."""
    del n_way  # any number of ways works at predict time
    return ProtoNet(BACKBONES.build(backbone, image_shape=image_shape), distance=distance)
