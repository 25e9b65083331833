"""Scoring variable-way, variable-shot episodes (Meta-Dataset, Triantafillou et al., 2020).

``evaluate(..., variable=True)`` (``eval.variable: true``, ``metamem eval ...
eval.variable=true``) scores a learner on the protocol's episodes drawn by
:class:`~metamem.episodes.variable.VariableEpisodeSampler` instead of N-way K-shot ones:
episode ``i`` still has the key ``episode_keys_from_seed(seed, i)``, so every learner sees
the same episodes whatever the batch size. ``variable`` may also be a dict of
:class:`~metamem.episodes.variable.VariableSpec` fields (``{max_ways: 20}``).

Only the set scoring applies: one ``predict(support_x, support_y, query_x, n_way=N,
support_mask=...)`` per batch, N the batch's largest number of ways (a learner gives ``-inf``
to the labels an episode lacks), and an episode's accuracy is the mean over its own queries
(padding excluded).
"""

from __future__ import annotations

import time
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from metamem._version import __version__
from metamem.data.base import ImageDataset
from metamem.episodes.variable import VariableEpisodeBatch, VariableEpisodeSampler, VariableSpec
from metamem.evaluation.protocol import Fingerprint, Protocol, ProtocolError
from metamem.learners.capabilities import SetPrediction

__all__ = ["variable_spec", "score_variable", "evaluate_variable"]


def variable_spec(value: bool | dict[str, int] | None) -> VariableSpec | None:
    """``eval.variable`` as a spec: ``False``/``None`` -> None, ``True`` -> Meta-Dataset's
    defaults, a dict -> those fields changed.

    Raises:
        ProtocolError: naming the bad key or value.
    """
    if value is None or value is False:
        return None
    if value is True:
        return VariableSpec()
    if not isinstance(value, dict):
        raise ProtocolError(f"eval.variable must be true, false or a dict of episode limits, got {value!r}")
    known = set(VariableSpec.__dataclass_fields__)
    bad = sorted(set(value) - known)
    if bad:
        raise ProtocolError(f"unknown eval.variable key {bad[0]!r}; valid: {', '.join(sorted(known))}")
    try:
        return VariableSpec(**value)
    except ValueError as e:
        raise ProtocolError(str(e)) from None


def describe_spec(spec: VariableSpec) -> str:
    """The spec as the text a :class:`Protocol` records (``min_ways=5 max_ways=50 ...``)."""
    return " ".join(f"{k}={getattr(spec, k)}" for k in VariableSpec.__dataclass_fields__)


def score_variable(learner: Any, batch: VariableEpisodeBatch) -> torch.Tensor:
    """float64 ``[B]``: each episode's accuracy over its own queries."""
    from metamem.evaluation.scoring import _check_logits, learner_name

    if not isinstance(learner, SetPrediction):
        raise TypeError(f"learner {learner_name(learner)} has no set prediction (predict()); variable "
                        "episodes are scored with the set protocol only")
    logits = learner.predict(batch.support_x, batch.support_y, batch.query_x, n_way=batch.n_way,
                             support_mask=batch.support_mask)
    _check_logits(learner, logits, (*batch.query_y.shape, batch.n_way), "query")
    hit = (logits.argmax(-1) == batch.query_y) & batch.query_mask
    return hit.sum(-1).to(torch.float64) / batch.query_mask.sum(-1).to(torch.float64)


def _fingerprint(fp: Fingerprint, batch: VariableEpisodeBatch) -> None:
    """Add each episode without its padding: ``[S_e, Q_e, support..., ]``, ``[query...]``,
    ``[key]`` (so the fingerprint does not depend on the batch size)."""
    for e in range(batch.batch_size):
        s, q = int(batch.support_mask[e].sum()), int(batch.query_mask[e].sum())
        head = torch.tensor([s, q], dtype=torch.int64, device=batch.support_index.device)
        fp.update(torch.cat([head, batch.support_index[e, :s]])[None], batch.query_index[e:e + 1, :q],
                  batch.episode_keys[e:e + 1])


def evaluate_variable(
    learner: Any, dataset: ImageDataset, spec: VariableSpec, *, episodes: int, seed: int, protocol: str,
    batch_size: int, device: torch.device, progress: bool, name: str | None, config: dict[str, Any] | None,
    source: str | None, data_options: dict[str, Any] | None,
) -> Any:
    """:func:`metamem.evaluation.scoring.evaluate` on variable episodes (see the module docstring)."""
    from metamem.evaluation.scoring import EvalResult, Score, learner_name

    if protocol == "sequence":
        raise ProtocolError("variable episodes are scored with the set protocol only; use eval.protocol=set")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ProtocolError(f"eval batch_size must be >= 1, got {batch_size!r}")
    proto = Protocol.for_dataset(dataset, n_way=spec.min_ways, k_shot=1, n_query=1, episodes=episodes, seed=seed,
                                 variable_limits=describe_spec(spec))
    declined = {"sequence": "variable episodes have no sequence scoring"} if protocol == "both" else None
    try:
        sampler = VariableEpisodeSampler(dataset, spec, batch_size=batch_size, device=device)
    except ValueError as e:
        raise ProtocolError(f"evaluation protocol ({proto.describe()}): {e}") from None
    if isinstance(learner, nn.Module):
        learner.to(device)
        was_training = learner.training
        learner.eval()
    fp = Fingerprint(proto)
    acc: list[torch.Tensor] = []
    start = time.perf_counter()
    bar = tqdm(total=episodes, unit="episode", disable=not progress, desc=name or learner_name(learner))
    try:
        with torch.no_grad():
            for lo in range(0, episodes, batch_size):
                batch = sampler.sample_keys(proto.keys(lo, min(lo + batch_size, episodes), device))
                _fingerprint(fp, batch)
                acc.append(score_variable(learner, batch))
                bar.update(batch.batch_size)
    finally:
        bar.close()
        if isinstance(learner, nn.Module):
            learner.train(was_training)
    return EvalResult(
        protocol=proto, fingerprint=fp.hexdigest(),
        scores={"set": Score("set", torch.cat(acc).to("cpu", torch.float64))},
        learner=name or learner_name(learner), device=str(device), seconds=time.perf_counter() - start,
        version=__version__, config=config, source=source,
        data_options=dict(data_options) if data_options else None, trace=None, declined=declined,
    )
