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

import torch

from metamem.episodes.variable import VariableEpisodeBatch, VariableSpec
from metamem.evaluation.protocol import Fingerprint, ProtocolError

__all__ = ["variable_spec", "describe_spec", "fingerprint_variable"]


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


def fingerprint_variable(fp: Fingerprint, batch: VariableEpisodeBatch) -> None:
    """Add each episode without its padding: ``[S_e, Q_e, support..., ]``, ``[query...]``,
    ``[key]`` (so the fingerprint does not depend on the batch size)."""
    for e in range(batch.batch_size):
        s, q = int(batch.support_mask[e].sum()), int(batch.query_mask[e].sum())
        head = torch.tensor([s, q], dtype=torch.int64, device=batch.support_index.device)
        fp.update(torch.cat([head, batch.support_index[e, :s]])[None], batch.query_index[e:e + 1, :q],
                  batch.episode_keys[e:e + 1])
