"""Hand-written learners and a coded dataset for the evaluation tests.

In :func:`coded_dataset` every image carries its own identity: pixel (0,0) is the class id,
pixels (0,1) and (0,2) the dataset sample index (high and low byte). The learners below
use that to be perfect, to guess, or to report what they were shown.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from metamem.data import ImageDataset
from metamem.types import LearnerOutput

NEG = float("-inf")


def coded_dataset(num_classes: int = 12, per_class: int = 7, size: int = 3) -> ImageDataset:
    m = num_classes * per_class
    labels = torch.arange(num_classes).repeat_interleave(per_class)
    images = torch.zeros(m, 1, size, size, dtype=torch.uint8)
    idx = torch.arange(m)
    images[:, 0, 0, 0] = labels.to(torch.uint8)
    images[:, 0, 0, 1] = (idx // 256).to(torch.uint8)
    images[:, 0, 0, 2] = (idx % 256).to(torch.uint8)
    return ImageDataset(
        images=images, labels=labels, class_names=[f"c{i}" for i in range(num_classes)],
        name="coded", split="test",
    )


def class_code(x: torch.Tensor) -> torch.Tensor:
    """``[..., C, H, W]`` -> int64 ``[...]`` the class id written in the image."""
    return (x[..., 0, 0, 0] * 255).round().to(torch.int64)


def sample_code(x: torch.Tensor) -> torch.Tensor:
    """``[..., C, H, W]`` -> int64 ``[...]`` the dataset sample index written in the image."""
    hi = (x[..., 0, 0, 1] * 255).round().to(torch.int64)
    lo = (x[..., 0, 0, 2] * 255).round().to(torch.int64)
    return hi * 256 + lo


def _present(support_y: torch.Tensor, n_way: int, mask: torch.Tensor | None) -> torch.Tensor:
    """bool ``[B, S, N]``: support item s is present and has label n."""
    onehot = torch.nn.functional.one_hot(support_y, n_way).bool()
    if mask is not None:
        onehot &= mask[..., None]
    return onehot


class _SetBase(nn.Module):

    def __init__(self) -> None:
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, batch):  # pragma: no cover - not used by the evaluator for set learners
        logits = self.predict(batch.support_x, batch.support_y, batch.query_x, n_way=batch.n_way)
        return LearnerOutput(logits, batch.query_y, logits.sum() * 0)

    # per-image features = the flattened pixels, so these learners take the evaluator's
    # feature paths (memo for the set scoring, linear-in-T sequence scoring) and decide
    # exactly as ``predict`` does: features viewed as [..., 1, 1, D] images keep pixel
    # (0,0,k) at index k, which is all the codes read
    def embed(self, x):
        return x.flatten(1)

    def predict_features(self, support, support_y, query, *, n_way, support_mask=None):
        return self.predict(support[..., None, None, :], support_y, query[..., None, None, :],
                            n_way=n_way, support_mask=support_mask)


class PredictOnly:
    """Mixin: hide ``embed``/``predict_features`` (a learner with ``predict`` alone, like
    MAML: no linear-in-T sequence path, no feature memo)."""

    embed = None
    predict_features = None


class OracleSetLearner(_SetBase):
    """Perfect whenever the query's class is in the (present) support."""

    def predict(self, support_x, support_y, query_x, *, n_way, support_mask=None):
        present = _present(support_y, n_way, support_mask)  # [B, S, N]
        same = class_code(query_x)[:, :, None] == class_code(support_x)[:, None, :]  # [B,Q,S]
        hit = (same[..., None] & present[:, None]).any(2)  # [B, Q, N]
        logits = hit.float()
        return logits.masked_fill(~present.any(1)[:, None, :], NEG)


class UniformLearner(_SetBase):
    """Equal logits for every present label (arg-max: the smallest present label)."""

    def predict(self, support_x, support_y, query_x, *, n_way, support_mask=None):
        present = _present(support_y, n_way, support_mask).any(1)  # [B, N]
        logits = torch.zeros(query_x.shape[0], query_x.shape[1], n_way, device=query_x.device)
        return logits.masked_fill(~present[:, None, :], NEG)


class NearestNeighbourLearner(_SetBase):
    """1-nearest-neighbour on raw pixels; logit = minus the distance to the nearest item."""

    def predict(self, support_x, support_y, query_x, *, n_way, support_mask=None):
        b = support_x.shape[0]
        d = torch.cdist(query_x.reshape(b, query_x.shape[1], -1), support_x.reshape(b, support_x.shape[1], -1))
        present = _present(support_y, n_way, support_mask)  # [B, S, N]
        d = d[..., None].expand(-1, -1, -1, n_way).masked_fill(~present[:, None], float("inf"))
        return -d.min(2).values


class RecordingLearner(UniformLearner):
    """Records the dataset sample indices of every support/query item it is shown."""

    def __init__(self) -> None:
        super().__init__()
        self.support: list[torch.Tensor] = []
        self.query: list[torch.Tensor] = []

    def predict(self, support_x, support_y, query_x, *, n_way, support_mask=None):
        if support_mask is None:
            self.support.append(sample_code(support_x))
            self.query.append(sample_code(query_x))
        return super().predict(support_x, support_y, query_x, n_way=n_way, support_mask=support_mask)


class OracleSequenceLearner(nn.Module):
    """A sequence learner that is perfect from the 2nd presentation and answers label 0 at
    the 1st (so its 1st-presentation accuracy is exactly 1/N)."""


    def __init__(self) -> None:
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward_sequence(self, seq):
        codes = class_code(seq.x)  # [B, T]
        b, t = codes.shape
        label_of = torch.cat([seq.prev_y[:, 1:], torch.full_like(seq.prev_y[:, :1], -1)], 1)
        before = torch.ones(t, t, dtype=torch.bool, device=codes.device).tril(-1)  # s < t
        match = (codes[:, :, None] == codes[:, None, :]) & before  # [B, T, S]
        seen = match.any(-1)
        lab = torch.where(match, label_of[:, None, :], torch.full_like(match, -1, dtype=torch.int64))
        pred = torch.where(seen, lab.max(-1).values, torch.zeros_like(codes))
        return torch.nn.functional.one_hot(pred, seq.n_way).float()

    def predict(self, support_x, support_y, query_x, *, n_way, support_mask=None):
        return OracleSetLearner.predict(self, support_x, support_y, query_x, n_way=n_way, support_mask=support_mask)

    def forward(self, batch):
        seq = batch.as_sequence()
        logits = self.forward_sequence(seq)
        return LearnerOutput(logits, seq.y, logits.sum() * 0)

    def memory_trace(self, seq):  # the MemoryInspection capability
        w = torch.linspace(0, 1, seq.steps * 4).view(1, seq.steps, 4)
        return {"read_weights": w, "write_weights": w}


class UniformSequenceLearner(OracleSequenceLearner):
    """All logits equal at every step (arg-max: label 0)."""

    def forward_sequence(self, seq):
        return torch.zeros(seq.batch_size, seq.steps, seq.n_way, device=seq.y.device)


def fake_run(path: Any, learner: nn.Module, config: dict[str, Any], device: Any = "cpu") -> Any:
    """A :class:`metamem.Run` of a hand-written learner and a plain config dict (what
    ``metamem.load_run`` would return for a checkpoint of it); the image shape is that of
    the config's own test split."""
    from pathlib import Path

    from metamem import Run
    from metamem.config import config_from_dict
    from metamem.runs import dataset_for

    cfg = config_from_dict(config)
    c, h, w = dataset_for(cfg, "test").image_shape
    return Run(Path(path), learner.to(device).eval(), cfg, (c, h, w), torch.device(device))


def patch_load_run(monkeypatch: Any, load: Any) -> None:
    """Make ``metamem eval`` and :func:`metamem.evaluation.sweep` load every run with
    ``load(path, device) -> (learner, config dict)`` instead of reading its checkpoint."""
    from metamem.evaluation import sweeps

    monkeypatch.setattr(sweeps, "load_run", lambda path, device, **_: fake_run(path, *load(path, device), device))
