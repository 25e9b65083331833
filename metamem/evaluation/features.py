"""Per-image features computed once per evaluation split (a large speed-up, same episodes).

A learner whose prediction is ``predict_features(embed(support_x), support_y, embed(query_x))``
and whose ``embed`` maps each image on its own in eval mode (BatchNorm with running
statistics: ProtoNet, the linear probe) need not embed an image again each time an episode
draws it. Over 1,000 5-way 1-shot 15-query episodes of the 12,000-image mini-ImageNet test
split, each image is drawn about 6.7 times; over the 5-shot protocol too, about 15 times.

:class:`FeatureMemo` holds a float ``[M, D]`` table of the split's features, filled lazily
for the sample indices the episodes draw (``batch.support_index``/``query_index``). The
memo of a learner is kept between :func:`~metamem.evaluation.evaluate` calls on the same
split as long as no parameter or buffer of the learner changed (tracked by their version
counters, which every in-place update such as an optimizer step bumps), so a sweep over
shots and ways embeds the split once.

Only an evaluation detail: the episodes, their fingerprint and the predictions are those of
``learner.predict`` (up to float rounding of batched convolutions).
"""

from __future__ import annotations

import weakref
from typing import Any

import torch
from torch import nn

from metamem.learners.capabilities import FeaturePrediction
from metamem.types import EpisodeBatch

__all__ = ["FeatureMemo", "supports_feature_reuse", "feature_memo_for"]

#: images per ``embed`` call when filling the memo
CHUNK = 256


def supports_feature_reuse(learner: Any) -> bool:
    """Whether ``learner`` offers ``embed`` + ``predict_features`` and its eval-mode features
    are per-image (no BatchNorm that normalises with the statistics of the batch it sees)."""
    if not isinstance(learner, FeaturePrediction):
        return False
    if isinstance(learner, nn.Module):
        for m in learner.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and not m.track_running_stats:
                return False
    return True


class FeatureMemo:
    """Lazily filled per-image features of one split.

    Args:
        embed: maps float images ``[n, C, H, W]`` to features ``[n, D]``.
        images: the split's uint8 store ``[M, C, H, W]`` (the sampler's, on its device).
        dtype: float dtype of the images fed to ``embed`` (values in ``[0, 1]``, as the sampler).
    """

    def __init__(self, embed: Any, images: torch.Tensor, dtype: torch.dtype = torch.float32) -> None:
        self.embed, self.images, self.dtype = embed, images, dtype
        self.table: torch.Tensor | None = None  # [M, D]
        self.done = torch.zeros(images.shape[0], dtype=torch.bool, device=images.device)
        self.embedded = 0  # images embedded so far (for tests and figures)

    def features(self, index: torch.Tensor) -> torch.Tensor:
        """Features ``[*index.shape, D]`` of the sample indices ``index`` (int64, any shape)."""
        flat = index.reshape(-1)
        todo = torch.unique(flat[~self.done[flat]])
        for start in range(0, todo.numel(), CHUNK):
            idx = todo[start : start + CHUNK]
            x = self.images.index_select(0, idx).to(self.dtype).mul_(1.0 / 255.0)
            f = self.embed(x)
            if self.table is None:
                self.table = torch.empty((self.images.shape[0], f.shape[-1]), dtype=f.dtype, device=f.device)
            self.table[idx] = f
            self.done[idx] = True
            self.embedded += idx.numel()
        if self.table is None:  # nothing asked for yet (an empty index): no feature width known
            return torch.empty((*index.shape, 0), dtype=self.dtype, device=self.images.device)
        return self.table[flat].view(*index.shape, -1)

    def predict(self, learner: FeaturePrediction, batch: EpisodeBatch) -> torch.Tensor:
        """Query logits ``[B, N*Q, N]`` of ``batch`` via ``learner.predict_features``."""
        return learner.predict_features(
            self.features(batch.support_index), batch.support_y, self.features(batch.query_index),
            n_way=batch.n_way,
        )


_MEMOS: weakref.WeakKeyDictionary[Any, tuple[tuple, FeatureMemo]] = weakref.WeakKeyDictionary()


def _state_key(learner: Any, split: torch.Tensor, device: torch.device, dtype: torch.dtype) -> tuple:
    versions: tuple = ()
    training = None
    if isinstance(learner, nn.Module):
        versions = tuple((t.data_ptr(), t._version) for t in (*learner.parameters(), *learner.buffers()))
        training = learner.training
    return (split.data_ptr(), tuple(split.shape), str(device), dtype, training, versions)


def feature_memo_for(
    learner: Any, split: torch.Tensor, images: torch.Tensor, dtype: torch.dtype = torch.float32
) -> FeatureMemo:
    """The learner's memo for a split, reused while the learner and the split are unchanged.

    Args:
        learner: has ``embed`` and ``predict_features``.
        split: the dataset's own uint8 images ``[M, C, H, W]`` (identifies the split).
        images: the same images on the evaluation device (the sampler's store).
        dtype: float dtype of the images fed to ``embed``.
    """
    key = _state_key(learner, split, images.device, dtype)
    try:
        hit = _MEMOS.get(learner)
    except TypeError:  # not weak-referenceable: no reuse across calls
        return FeatureMemo(learner.embed, images, dtype)
    if hit is not None and hit[0] == key:
        return hit[1]
    memo = FeatureMemo(learner.embed, images, dtype)
    _MEMOS[learner] = (key, memo)
    return memo
