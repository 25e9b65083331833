"""Linear-probe baseline: pre-trained backbone + per-episode logistic regression.

The "baseline classifier" of Vinyals et al. (2016) and the transfer baselines of Chen et al.
("A Closer Look at Few-shot Classification", ICLR 2019) and Tian et al. (RFS, ECCV 2020):

* **Training** (``train()`` mode): ordinary classification over all meta-train classes. The
  module holds a linear head with ``num_train_classes`` outputs; ``forward(batch)`` maps the
  episode labels to dataset class ids through ``batch.classes`` (``global = classes[b, y]``)
  and minimises the cross-entropy of *every* image of the episode (support and query) over
  all training classes. So it trains on the episodes the framework samples, but the
  episode structure is not used. The returned logits are the head's logits of the episode's
  N classes for the queries (``[B, N*Q, N]``), for monitoring.
* **Evaluation** (``eval()`` mode and :meth:`LinearProbe.predict`): the head is dropped; the
  backbone's features (L2-normalised by default) of each episode's present support items
  are fitted with scikit-learn's multinomial ``LogisticRegression``, and the queries get its
  decision scores as logits (``-inf`` for classes with no present support; if only one
  class is present every query predicts it). The sklearn fit loops over episodes -- the
  one place in metamem where that is allowed; the features are computed batched.

The head's class ids are those of the training split, so ``forward`` in train mode must
only see training-split batches (ids ``< num_train_classes``).
"""

from __future__ import annotations

import warnings
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.linear_model import LogisticRegression
from torch import nn

from metamem.learners._common import (
    class_means,
    embed_support_query,
    mask_absent,
    present_classes,
    query_cross_entropy,
    support_onehot,
)
from metamem.learners.base import BACKBONES, LEARNERS
from metamem.learners.capabilities import AnyWay, EmbeddingLearner
from metamem.types import EpisodeBatch, LearnerOutput

__all__ = ["LinearProbe", "PROBES", "build_linear_probe", "fit_logistic"]

PROBES = ("logistic", "centroid")


def fit_logistic(features: np.ndarray, labels: np.ndarray, *, c: float = 1.0, max_iter: int = 1000) -> LogisticRegression:
    """Fit a multinomial logistic regression on one support set.

    Args:
        features: float ``[S, D]``.
        labels: int ``[S]``.
        c: inverse L2 regularisation strength (sklearn's ``C``).
        max_iter: L-BFGS iterations.

    Returns:
        The fitted classifier (deterministic: L-BFGS, no random state involved).

    Raises:
        ValueError: if the support set has fewer than two classes.
    """
    classes = np.unique(labels)
    if classes.size < 2:
        raise ValueError(
            f"linear_probe: cannot fit a logistic regression on a support set with one class "
            f"(labels {classes.tolist()}); it needs items of at least 2 classes "
            "(predict() with a support_mask handles this case itself)"
        )
    with warnings.catch_warnings():  # 1-shot support sets always trip this sklearn heuristic
        warnings.filterwarnings("ignore", message="The number of unique classes is greater than 50%")
        return LogisticRegression(C=c, max_iter=max_iter).fit(features, labels)


class LinearProbe(EmbeddingLearner, AnyWay):
    """Backbone pre-trained over all training classes, logistic regression per episode.

    Args:
        backbone: embedding network ``[*, C, H, W] -> [*, D]``.
        num_train_classes: classes of the training split (the head's outputs).
        c: sklearn ``C`` for the per-episode logistic regression.
        normalize: L2-normalise features before the fit.
        max_iter: L-BFGS iterations of the fit.
        probe: ``"logistic"`` (the per-episode logistic regression) or ``"centroid"``
            (nearest class mean of the, optionally normalised, support features: logits are
            negative squared distances; no fit, batched over episodes). Tian et al. (2020)
            report both; the run can be re-scored with either (``learner.probe=...``).
    """

    def __init__(
        self, backbone: nn.Module, *, num_train_classes: int, c: float = 1.0, normalize: bool = True,
        max_iter: int = 1000, probe: Literal["logistic", "centroid"] = "logistic",
    ) -> None:
        super().__init__()
        if probe not in PROBES:
            raise ValueError(f"linear_probe: unknown probe {probe!r}; valid: {', '.join(PROBES)}")
        self.probe = probe
        if num_train_classes < 2:
            raise ValueError(f"linear_probe: num_train_classes must be >= 2, got {num_train_classes}")
        self.backbone = backbone
        self.head = nn.Linear(int(backbone.out_dim), num_train_classes)  # type: ignore[arg-type]
        self.c, self.normalize, self.max_iter = c, normalize, max_iter

    def forward(self, batch: EpisodeBatch) -> LearnerOutput:
        """Train mode: cross-entropy over all training classes; eval mode: per-episode probe.

        Returns:
            Query logits ``[B, N*Q, N]`` (train: head logits of the episode's classes; eval:
            logistic-regression scores), targets ``query_y`` and the loss (train: mean CE of all
            support and query images over the training classes; eval: query CE of the logits).
        """
        if not self.training:
            logits = self.predict(batch.support_x, batch.support_y, batch.query_x, n_way=batch.n_way)
            return LearnerOutput(logits=logits, targets=batch.query_y, loss=query_cross_entropy(logits, batch.query_y))
        support, query = embed_support_query(self.backbone, batch.support_x, batch.query_x)
        feats = torch.cat([support, query], dim=1)  # [B, N*(K+Q), D]
        labels = torch.cat([batch.support_y, batch.query_y], dim=1)
        global_labels = batch.classes.gather(1, labels)  # episode label -> dataset class id
        all_logits = self.head(feats)  # [B, N*(K+Q), num_train_classes]
        loss = F.cross_entropy(all_logits.flatten(0, 1), global_labels.flatten())
        s = support.shape[1]
        episode_cols = batch.classes.unsqueeze(1).expand(-1, all_logits.shape[1] - s, -1)
        logits = all_logits[:, s:].gather(2, episode_cols)
        return LearnerOutput(logits=logits, targets=batch.query_y, loss=loss)

    @torch.no_grad()
    def predict_features(self, support: torch.Tensor, support_y: torch.Tensor, query: torch.Tensor, *,
                         n_way: int, support_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Scores ``[B, Qn, N]`` of the probe fitted on each episode's present support features."""
        if self.normalize:
            support, query = F.normalize(support, dim=-1), F.normalize(query, dim=-1)
        if self.probe == "centroid":
            onehot = support_onehot(support_y, n_way, support_mask)
            protos = class_means(support, onehot)  # [B, N, D]
            sq = torch.cdist(query.float(), protos.float()).square()
            return mask_absent(-sq, present_classes(onehot)).to(query.dtype)
        sf, qf = support.double().cpu().numpy(), query.double().cpu().numpy()
        sy = support_y.cpu().numpy()
        keep = np.ones(sy.shape, bool) if support_mask is None else support_mask.cpu().numpy()
        out = np.full((qf.shape[0], qf.shape[1], n_way), -np.inf)
        for b in range(sf.shape[0]):  # sklearn fits one episode at a time
            labels = sy[b][keep[b]]
            present = np.unique(labels)
            if present.size == 1:
                out[b, :, present[0]] = 0.0
            elif present.size > 1:
                clf = fit_logistic(sf[b][keep[b]], labels, c=self.c, max_iter=self.max_iter)
                scores = clf.decision_function(qf[b])
                out[b][:, clf.classes_] = np.stack([-scores / 2, scores / 2], 1) if scores.ndim == 1 else scores
        return torch.from_numpy(out).to(device=query.device, dtype=query.dtype)


@LEARNERS.register("linear_probe")
def build_linear_probe(
    *,
    n_way: int,
    image_shape: tuple[int, int, int],
    num_train_classes: int,
    backbone: str = "conv4",
    c: float = 1.0,
    normalize: bool = True,
    max_iter: int = 1000,
    probe: Literal["logistic", "centroid"] = "logistic",
) -> LinearProbe:
    """Linear probe: backbone pre-trained on all training classes + per-episode logistic regression."""
    del n_way  # any number of ways works at predict time
    return LinearProbe(
        BACKBONES.build(backbone, image_shape=image_shape),
        num_train_classes=num_train_classes,
        c=c,
        normalize=normalize,
        max_iter=max_iter,
        probe=probe,
    )
