"""Two scorings of the same episodes, for every learner, and :func:`evaluate`.

**Set scoring.** Accuracy on the query set given the support set:
``learner.predict(support_x, support_y, query_x, n_way=N)``; the prediction is the arg-max
label. What a learner can do is declared by it (:mod:`metamem.learners.capabilities`):
evaluation asks ``isinstance(learner, SetPrediction)`` and never probes attributes.

**Sequence scoring** (Santoro et al., 2016). The episode is read as the sequence
``batch.as_sequence()`` of ``T = N*(K+Q)`` steps whose labels arrive one step late;
accuracy is reported per step and by *presentation* (the 1st, 2nd, ... time a class is
shown).

* Sequence learners (:class:`~metamem.learners.capabilities.SequencePrediction`) give
  per-step logits ``[B, T, N]``; the prediction at step t is their arg-max.
* Set learners are scored on the same sequence with the items already labelled as their
  support: at step t the support is steps ``0..t-1`` (``support_mask[s] = s < t``) and the
  query is step t, all steps of all episodes batched into ``predict`` calls (the support is
  the steps before, masked). A set learner with
  :class:`~metamem.learners.capabilities.RunningSetPrediction` instead gives all T rows in
  one pass (row t uses steps ``0..t-1`` as the support). A class with no labelled item gets
  logit ``-inf``, so a set
  learner can only answer with a label it has seen. When the true label of step t has **not
  been presented yet** (presentation 1) no learner can know it; a set learner is then
  credited with the **expected accuracy of a uniform guess among the labels not presented
  yet**, ``1 / (N - u_t)``, where ``u_t`` is the number of distinct labels among steps
  ``0..t-1``. This is deterministic (no random draw) and is what a set learner that knows
  the item is new would score on average. Steps with presentation >= 2 are scored by the
  learner's arg-max.

The per-episode score of the sequence scoring is the mean over all T steps; the
per-presentation score is the mean over the N steps of each presentation.

Evaluation runs under ``torch.no_grad()`` (not ``inference_mode``), so a learner that needs
gradients inside (MAML's inner loop) can re-enable them with ``torch.enable_grad()``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from metamem._version import __version__
from metamem.config import DEFAULT_K_SHOT, DEFAULT_N_WAY, EVAL_DEFAULTS, PROTOCOL_NAMES, ConfigError, ProtocolName
from metamem.config import parse_memory_budget as _parse_budget
from metamem.data.base import ImageDataset
from metamem.data.two_view_sum import is_sequence_task
from metamem.device import resolve_device
from metamem.episodes.variable import VariableEpisodeBatch, VariableEpisodeSampler, VariableSpec
from metamem.evaluation.features import FeatureMemo, feature_memo_for, supports_feature_reuse
from metamem.evaluation.metrics import mean_ci95, presentation_accuracy
from metamem.evaluation.protocol import Fingerprint, Protocol, ProtocolError
from metamem.evaluation.variable import describe_spec, fingerprint_variable, variable_spec
from metamem.learners.capabilities import (
    MemoryInspection,
    RunningSetPrediction,
    SequencePrediction,
    SetPrediction,
)
from metamem.types import EpisodeBatch, SequenceBatch

__all__ = [
    "EvalResult",
    "Score",
    "evaluate",
    "learner_name",
    "memory_trace",
    "score_sequence",
    "score_set",
    "images_per_call",
    "parse_memory_budget",
    "sequence_path",
    "SCORINGS",
]

#: ``progress=None``: the bar appears on a terminal once an evaluation has run this long
PROGRESS_DELAY_S = 3.0

#: what ``protocol=`` accepts (defined once: :data:`metamem.config.PROTOCOL_NAMES`)
SCORINGS = PROTOCOL_NAMES
_EV = EVAL_DEFAULTS

#: upper bound on support images per ``predict`` call when a set learner scores a sequence
MAX_SUPPORT_IMAGES_PER_CALL = 65536
#: channels of the largest feature map a learner is assumed to hold per input image (the
#: first 64-channel full-resolution layer of the conv backbones): the memory model of
#: :func:`images_per_call`
ACTIVATION_CHANNELS = 64


def parse_memory_budget(value: int | str) -> int:
    """Bytes of a memory budget (see :func:`metamem.config.parse_memory_budget`).

    Raises:
        ProtocolError: for a value that is not a size of at least 1 MiB.
    """
    try:
        return _parse_budget(value)
    except ConfigError as e:
        raise ProtocolError(str(e)) from None


def images_per_call(image_shape: tuple[int, ...], memory_budget: int | str) -> int:
    """How many images one learner call may take within ``memory_budget``.

    Each image is counted as its float32 pixels plus one full-resolution feature map of
    :data:`ACTIVATION_CHANNELS` channels: ``4 * H * W * (C + 64)`` bytes (Omniglot 28x28:
    200 KiB; mini-ImageNet 84x84x3: 1.9 MiB). At least 1.
    """
    c, h, w = image_shape[-3:]
    per_image = 4 * int(h) * int(w) * (int(c) + ACTIVATION_CHANNELS)
    return max(1, parse_memory_budget(memory_budget) // per_image)


def sequence_path(learner: Any) -> str | None:
    """How ``learner`` is scored on sequences at a cost linear in T, or None (no such path).

    ``"native"``: a sequence learner (``forward_sequence``); ``"predict_sequence"``: a set
    learner's own fast path; ``"features"``: a set learner with per-image ``embed`` +
    ``predict_features`` (ProtoNet, the linear probe): each step's image is embedded once,
    and step t is predicted from the features of steps ``0..t-1``. Other set learners
    (MAML, Matching and Memory Matching Networks, Meta Networks) would need one ``predict``
    on ~T/2 support images per step, T²/2 image passes per episode.
    """
    if isinstance(learner, SequencePrediction):
        return "native"
    if isinstance(learner, RunningSetPrediction):
        return "predict_sequence"
    if supports_feature_reuse(learner):
        return "features"
    return None


def learner_name(learner: Any) -> str:
    """The learner's class name, for messages and progress bars."""
    return type(learner).__name__


def _check_logits(learner: Any, logits: torch.Tensor, shape: tuple[int, ...], what: str) -> None:
    if tuple(logits.shape) != shape:
        raise RuntimeError(
            f"learner {learner_name(learner)} returned {what} logits of shape "
            f"{tuple(logits.shape)}, expected {shape}"
        )


def score_set(learner: Any, batch: EpisodeBatch, features: FeatureMemo | None = None) -> torch.Tensor:
    """Set scoring: per-episode query accuracy.

    Args:
        learner: a :class:`~metamem.learners.capabilities.SetPrediction` learner.
        batch: B episodes with ``n_query >= 1``.
        features: per-image features of the split to reuse (see
            :mod:`metamem.evaluation.features`); the learner then predicts from them.

    Returns:
        float ``[B]`` accuracy on the N*Q queries of each episode.
    """
    b, nq = batch.query_y.shape
    if features is not None:
        logits = features.predict(learner, batch)
    elif isinstance(learner, SetPrediction):
        logits = learner.predict(
            batch.support_x, batch.support_y, batch.query_x, n_way=batch.n_way
        )
    else:
        raise TypeError(
            f"learner {learner_name(learner)} has no set prediction (predict()); the set scoring "
            "needs one (use eval.protocol=sequence)"
        )
    _check_logits(learner, logits, (b, nq, batch.n_way), "query")
    return (logits.argmax(-1) == batch.query_y).to(torch.float64).mean(-1)


def score_variable(learner: Any, batch: VariableEpisodeBatch) -> torch.Tensor:
    """float64 ``[B]``: each episode's accuracy over its own queries."""
    if not isinstance(learner, SetPrediction):
        raise TypeError(f"learner {learner_name(learner)} has no set prediction (predict()); variable "
                        "episodes are scored with the set protocol only")
    logits = learner.predict(batch.support_x, batch.support_y, batch.query_x, n_way=batch.n_way,
                             support_mask=batch.support_mask)
    _check_logits(learner, logits, (*batch.query_y.shape, batch.n_way), "query")
    hit = (logits.argmax(-1) == batch.query_y) & batch.query_mask
    return hit.sum(-1).to(torch.float64) / batch.query_mask.sum(-1).to(torch.float64)


def score_sequence(
    learner: Any, seq: SequenceBatch, max_support_images: int = MAX_SUPPORT_IMAGES_PER_CALL
) -> torch.Tensor:
    """Sequence scoring: the score of every step (see the module docstring).

    Args:
        learner: a sequence learner (``forward_sequence``) or a set learner (``predict``
            with ``support_mask``).
        seq: B sequences of T steps.
        max_support_images: cap on the images per learner call (set learners: B'·T support
            images per ``predict``, or images per ``embed`` on the features path).

    Returns:
        float ``[B, T]``: 1/0 per step, or the expected uniform-guess accuracy for a set
        learner at a label's first presentation.
    """
    b, t = seq.y.shape
    if isinstance(learner, SequencePrediction):
        logits = learner.forward_sequence(seq)
        _check_logits(learner, logits, (b, t, seq.n_way), "sequence")
        return (logits.argmax(-1) == seq.y).to(torch.float64)
    if not isinstance(learner, SetPrediction):
        raise TypeError(
            f"learner {learner_name(learner)} has neither sequence nor set prediction "
            "(forward_sequence() or predict()); it cannot be scored on sequences"
        )
    return _score_set_learner_on_sequence(learner, seq, max_support_images)


def first_presentation_guess(seq: SequenceBatch) -> torch.Tensor:
    """float64 ``[B, T]``: ``1 / (N - u_t)``, u_t = distinct labels among steps ``0..t-1``."""
    onehot = torch.nn.functional.one_hot(seq.y, seq.n_way)  # [B, T, N]
    seen_before = (onehot.cumsum(1) - onehot) > 0
    distinct = seen_before.sum(-1)  # [B, T]
    return 1.0 / (seq.n_way - distinct).clamp(min=1).to(torch.float64)


def _score_set_learner_on_sequence(
    learner: Any, seq: SequenceBatch, max_support_images: int
) -> torch.Tensor:
    b, t = seq.y.shape
    first = seq.presentation == 1
    correct = torch.where(first, first_presentation_guess(seq), 0.0)
    if isinstance(learner, RunningSetPrediction):  # the fast path (see the module docstring)
        logits = learner.predict_sequence(seq.x, seq.y, n_way=seq.n_way)
        _check_logits(learner, logits, (b, t, seq.n_way), "sequence")
        return torch.where(first, correct, (logits.argmax(-1) == seq.y).to(torch.float64))
    feats = None
    if supports_feature_reuse(learner):  # linear in T: every step's image embedded once
        flat = seq.x.reshape(b * t, *seq.x.shape[2:])
        feats = torch.cat([learner.embed(flat[i : i + max_support_images])
                           for i in range(0, b * t, max_support_images)]).view(b, t, -1)
    rows = (~first).nonzero()  # [R, 2] (episode, step) pairs scored by the learner
    # sorted by step: a chunk's support is only the steps before its largest step (~T/2 items)
    rows = rows[torch.argsort(rows[:, 1], stable=True)]
    last_step = rows[:, 1].cpu()  # one host copy per batch, to size the support slices
    steps = torch.arange(t, device=seq.y.device)
    chunk = max(1, max_support_images // t)
    if feats is not None:  # rows of t support features [t, D] in the same memory budget
        c, h, w = seq.x.shape[-3:]
        chunk = max(1, max_support_images * h * w * (c + ACTIVATION_CHANNELS) // (t * feats.shape[-1]))
    for lo in range(0, rows.shape[0], chunk):  # chunks of rows, not a loop over samples
        bi, ti = rows[lo : lo + chunk].unbind(1)
        span = int(last_step[min(lo + chunk, rows.shape[0]) - 1])  # steps 0..span-1 suffice
        mask = steps[None, :span] < ti[:, None]
        if feats is not None:
            logits = learner.predict_features(
                feats[bi, :span], seq.y[bi, :span], feats[bi, ti].unsqueeze(1),
                n_way=seq.n_way, support_mask=mask,
            )
        else:
            logits = learner.predict(
                seq.x[bi, :span],
                seq.y[bi, :span],
                seq.x[bi, ti].unsqueeze(1),
                n_way=seq.n_way,
                support_mask=mask,
            )
        _check_logits(learner, logits, (bi.shape[0], 1, seq.n_way), "step")
        correct[bi, ti] = (logits[:, 0].argmax(-1) == seq.y[bi, ti]).to(torch.float64)
    return correct


def memory_trace(learner: Any, batch: EpisodeBatch) -> Any:
    """The memory trace of ``batch`` read as a sequence (a learner with
    :class:`~metamem.learners.capabilities.MemoryInspection`), else ``None``."""
    if isinstance(learner, MemoryInspection):
        return learner.memory_trace(batch.as_sequence())
    return None


@dataclass
class Score:
    """One scoring (``"set"`` or ``"sequence"``) of a protocol's episodes.

    Attributes:
        scoring: ``"set"`` or ``"sequence"``.
        per_episode: float64 ``[E]`` accuracy of each episode (CPU).
        per_presentation_episode: float64 ``[E, P]`` per-episode accuracy at the p-th
            presentation (sequence scoring only, ``P = K + Q``), else ``None``.
    """

    scoring: str
    per_episode: torch.Tensor
    per_presentation_episode: torch.Tensor | None = None

    @property
    def mean(self) -> float:
        return mean_ci95(self.per_episode)[0]

    @property
    def ci95(self) -> float:
        """``1.96 * std(ddof=1) / sqrt(E)`` over episodes (see :mod:`.metrics`)."""
        return mean_ci95(self.per_episode)[1]

    @property
    def per_presentation(self) -> list[float] | None:
        """Mean accuracy at the 1st, 2nd, ... presentation (sequence scoring)."""
        if self.per_presentation_episode is None:
            return None
        return [float(v) for v in self.per_presentation_episode.mean(0)]

    @property
    def per_presentation_ci95(self) -> list[float] | None:
        if self.per_presentation_episode is None:
            return None
        return [mean_ci95(col)[1] for col in self.per_presentation_episode.T]

    def to_dict(self) -> dict[str, Any]:
        return {
            "scoring": self.scoring,
            "mean": _json_float(self.mean),
            "ci95": _json_float(self.ci95),
            "episodes": int(self.per_episode.numel()),
            "per_presentation": _json_list(self.per_presentation),
            "per_presentation_ci95": _json_list(self.per_presentation_ci95),
            "per_episode": [float(v) for v in self.per_episode],
            **({} if self.per_presentation_episode is None else {
                "per_presentation_episode": [
                    _json_list([float(v) for v in row]) for row in self.per_presentation_episode
                ],
            }),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Score:
        pe = torch.tensor(d["per_episode"], dtype=torch.float64)
        ppe = None
        if d.get("per_presentation_episode") is not None:  # [E, P], null where no such step
            rows = d["per_presentation_episode"]
            ppe = torch.tensor([_floats(row) for row in rows], dtype=torch.float64)
        elif d.get("per_presentation") is not None:  # results written before: only the means
            ppe = torch.tensor([_floats(d["per_presentation"])], dtype=torch.float64)
        return cls(scoring=d["scoring"], per_episode=pe, per_presentation_episode=ppe)


def _floats(values: list[float | None]) -> list[float]:
    """A JSON list back to floats (``null`` -> ``nan``)."""
    return [math.nan if v is None else float(v) for v in values]


def _json_float(v: float) -> float | None:
    return None if math.isnan(v) else float(v)


def _json_list(vs: list[float] | None) -> list[float | None] | None:
    return None if vs is None else [_json_float(v) for v in vs]


@dataclass
class EvalResult:
    """The result of :func:`evaluate`: one or two scorings of one protocol.

    ``mean``, ``ci95`` and ``per_episode`` are those of the set scoring when it was run
    (else the sequence scoring); ``per_presentation`` is that of the sequence scoring.

    Attributes:
        protocol: the :class:`Protocol`.
        fingerprint: SHA-256 of the episodes' sample indices (see :mod:`.protocol`).
        scores: ``{"set": Score, "sequence": Score}`` (those that were run).
        learner: a display name of the learner.
        device: where it ran.
        seconds: wall time of the evaluation.
        version: metamem version.
        config: the run's resolved config, when evaluating a run.
        source: the run directory or checkpoint, when evaluating a run.
        data_options: dataset options that differ from the run's ``data.options`` for this
            evaluation (``eval.data_options``, e.g. ``{"rotations": False}``), or None.
        trace: the memory trace of episode 0 (``keep_trace=True``, see
            :func:`memory_trace`); not serialised.
    """

    protocol: Protocol
    fingerprint: str
    scores: dict[str, Score]
    learner: str
    device: str
    seconds: float
    version: str
    config: dict[str, Any] | None = None
    source: str | None = None
    data_options: dict[str, Any] | None = None
    trace: Any = field(default=None, repr=False)
    declined: dict[str, str] | None = None

    @property
    def primary(self) -> Score:
        return self.scores.get("set") or self.scores["sequence"]

    def protocol_line(self) -> str:
        """The protocol, the scorings run and the fingerprint, on one line."""
        p = self.protocol
        return (f"{p.dataset} split {p.split}, {p.n_way}-way {p.k_shot}-shot, {p.n_query} queries "
                f"per class, {p.episodes} episodes, seed {p.seed}, scoring {'+'.join(self.scores)}, "
                f"fingerprint {self.fingerprint[:12]}")

    def __str__(self) -> str:
        """Every scoring that was run, one line each, under the protocol line::

            protonet: omniglot split minimal/test, 5-way 1-shot, ... fingerprint 1a2b3c4d5e6f
              set       34.12% ± 0.45
              sequence  40.20% ± 0.31, by presentation 45.7% 36.0%
        """
        lines = [f"{self.learner}: {self.protocol_line()}"]
        for key, score in self.scores.items():
            line = f"  {key:<9} {100 * score.mean:.2f}% ± {100 * score.ci95:.2f}"
            if score.per_presentation:
                line += ", by presentation " + " ".join(f"{100 * v:.1f}%" for v in score.per_presentation)
            lines.append(line)
        for key, why in (self.declined or {}).items():
            lines.append(f"  {key:<9} not scored: {why}")
        return "\n".join(lines)

    @property
    def mean(self) -> float:
        return self.primary.mean

    @property
    def ci95(self) -> float:
        return self.primary.ci95

    @property
    def per_episode(self) -> torch.Tensor:
        return self.primary.per_episode

    @property
    def per_presentation(self) -> list[float] | None:
        seq = self.scores.get("sequence")
        return seq.per_presentation if seq is not None else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "learner": self.learner,
            "source": self.source,
            "protocol": self.protocol.to_dict(),
            "fingerprint": self.fingerprint,
            "version": self.version,
            "device": self.device,
            "seconds": self.seconds,
            "scores": {k: s.to_dict() for k, s in self.scores.items()},
            "config": self.config,
            "data_options": self.data_options,
            **({"declined": self.declined} if self.declined else {}),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> EvalResult:
        return cls(
            protocol=Protocol.from_dict(d["protocol"]),
            fingerprint=d["fingerprint"],
            scores={k: Score.from_dict(v) for k, v in d["scores"].items()},
            learner=d["learner"],
            device=d["device"],
            seconds=float(d["seconds"]),
            version=d["version"],
            config=d.get("config"),
            source=d.get("source"),
            data_options=d.get("data_options"),
            declined=d.get("declined"),
        )


def _learner_device(learner: Any) -> torch.device:
    if isinstance(learner, nn.Module):
        for p in learner.parameters():
            return p.device
        for b in learner.buffers():
            return b.device
    return torch.device("cpu")


def _evaluate_task(learner: Any, task: Any, *, episodes: int, seed: int, batch_size: int,
                   device: torch.device | str | None, name: str | None, config: dict[str, Any] | None,
                   source: str | None) -> EvalResult:
    """:func:`evaluate` on a sequence task (``two_view_sum``): one "episode" per fixed sequence
    pair, scored as the fraction of its decoder steps that are right (a ``"set"`` score, so
    ``metamem compare`` pairs the rows of runs scored on the same sequences)."""
    t0 = time.perf_counter()
    dev = resolve_device(device) if device is not None else _learner_device(learner)
    if isinstance(learner, nn.Module):
        learner.to(dev)
    per_episode = task.per_episode_accuracy(learner, episodes=episodes, seed=seed, batch_size=batch_size, device=dev)
    protocol = Protocol(dataset=task.name, split=task.split, n_way=task.classes, k_shot=1, n_query=0,
                        episodes=episodes, seed=seed)
    return EvalResult(protocol=protocol, fingerprint=task.fingerprint(episodes, seed),
                      scores={"set": Score("set", per_episode)}, learner=name or learner_name(learner),
                      device=str(dev), seconds=time.perf_counter() - t0, version=__version__, config=config,
                      source=source)


def evaluate(
    learner: Any,
    dataset: ImageDataset,
    *,
    n_way: int = DEFAULT_N_WAY,
    k_shot: int = DEFAULT_K_SHOT,
    n_query: int = _EV.n_query,
    episodes: int = _EV.episodes,
    seed: int = _EV.seed,
    within_group: bool = _EV.within_group,
    protocol: ProtocolName = _EV.protocol,
    batch_size: int = _EV.batch_size,
    device: torch.device | str | None = None,
    progress: bool | None = None,
    name: str | None = None,
    config: dict[str, Any] | None = None,
    source: str | None = None,
    keep_trace: bool = False,
    reuse_features: bool = True,
    memory_budget: int | str = _EV.memory_budget,
    data_options: dict[str, Any] | None = None,
    variable: bool | dict[str, int] = _EV.variable,
) -> EvalResult:
    """Score a learner on a fixed protocol of episodes.

    Args:
        learner: a learner (``metamem.learners``) or any object with ``predict`` and/or
            ``forward_sequence``; an ``nn.Module`` is put in eval mode for the call (its
            mode is restored afterwards) and moved to ``device`` if one is given.
        dataset: the split to draw episodes from.
        n_way: N of the :class:`Protocol` (the defaults of all six protocol fields are
            those of :class:`metamem.config.EvalCfg`, as everywhere).
        k_shot: K of the protocol.
        n_query: Q of the protocol.
        episodes: number of episodes.
        seed: protocol seed: episode ``i`` depends only on ``(seed, i)``.
        within_group: draw all classes of an episode from one group (Omniglot: alphabet).
        protocol: which scorings to run: ``"set"``, ``"sequence"`` or ``"both"``.
        batch_size: episodes per batch (the episodes do not depend on it).
        device: where to run: ``"auto"`` (CUDA when available, else CPU), ``"cpu"``,
            ``"cuda"``...; default: where the learner's parameters are, else CPU. A CUDA
            device on a machine without CUDA is a one-line error.
        progress: show a tqdm progress bar; ``None`` (default): on a terminal (stderr is a
            TTY), once the evaluation has taken :data:`PROGRESS_DELAY_S` seconds.
        name: display name of the learner (default: its ``name`` attribute or class name).
        config: recorded in the result.
        source: recorded in the result.
        keep_trace: keep the memory trace of episode 0 in ``result.trace`` (see
            :func:`memory_trace`; ``None`` for learners without memory).
        reuse_features: for learners with per-image features (``embed`` +
            ``predict_features``: ProtoNet, the linear probe), embed each image of the split
            once and reuse its features in every episode and later calls while the learner
            is unchanged (:mod:`metamem.evaluation.features`); same episodes, same scores
            up to float rounding. ``False`` embeds every episode's images again.
        data_options: dataset options this evaluation changed from the run's (recorded).
        memory_budget: working memory of one learner call, bytes or ``"1GiB"``-style
            (default :class:`metamem.config.EvalCfg`). It caps the images per call
            (:func:`images_per_call`): the batch of episodes shrinks to fit (the episodes
            and scores do not depend on it) and the sequence scoring of set learners is
            chunked to it, whatever the learner and protocol.
        variable: score variable-way, variable-shot episodes (Meta-Dataset's sampler) instead
            of N-way K-shot ones: ``True`` for its defaults or a dict of limits
            (:mod:`metamem.evaluation.variable`); set scoring only.

    Sequence scoring is linear in T for every learner :func:`sequence_path` finds a path
    for. Other set learners (MAML, Matching, Memory Matching, Meta Networks) are declined
    with ``protocol="both"``: the set scoring runs and ``result.declined["sequence"]`` says
    why. Asked for explicitly (``protocol="sequence"``) they are scored, one ``predict`` per
    step, in memory-bounded chunks.

    Returns:
        An :class:`EvalResult` (``.mean``, ``.ci95``, ``.per_episode``,
        ``.per_presentation``, ``.fingerprint``).

    Raises:
        ProtocolError: for a protocol the split cannot provide (the message names the
            numbers) or an unknown ``protocol``.
    """
    if is_sequence_task(dataset):  # a sequence task (two_view_sum) scores its own fixed sequences
        return _evaluate_task(learner, dataset, episodes=episodes, seed=seed, batch_size=batch_size,
                              device=device, name=name, config=config, source=source)
    if protocol not in SCORINGS:
        raise ProtocolError(
            f"unknown eval.protocol {protocol!r}; valid: {', '.join(SCORINGS)}"
        )
    spec = variable_spec(variable)
    if spec is not None:
        return _evaluate_variable(
            learner, dataset, spec, episodes=episodes, seed=seed, protocol=protocol, batch_size=batch_size,
            device=resolve_device(device) if device is not None else _learner_device(learner),
            progress=progress, name=name, config=config, source=source, data_options=data_options,
        )
    shown = name or learner_name(learner)
    scorings, declined = _scorings(learner, protocol, shown)
    proto = Protocol.for_dataset(
        dataset, n_way=n_way, k_shot=k_shot, n_query=n_query, episodes=episodes, seed=seed,
        within_group=within_group,
    )
    if "set" in scorings and n_query < 1:
        raise ProtocolError(
            f"the set scoring needs n_query >= 1 (got {n_query}); raise eval.n_query or use "
            "eval.protocol=sequence"
        )
    per_call = images_per_call(dataset.image_shape, memory_budget)
    # the episodes do not depend on the batch size: shrink it to fit the memory budget
    if isinstance(batch_size, int) and batch_size >= 1:  # (a bad one is refused by the sampler)
        batch_size = min(batch_size, max(1, per_call // max(1, n_way * (k_shot + n_query))))
    dev = resolve_device(device) if device is not None else _learner_device(learner)
    start = time.perf_counter()
    with _eval_mode(learner, dev), torch.no_grad():
        episodes_run = _EpisodeScorer(learner, dataset, proto, scorings, dev, per_call, reuse_features)
        bar = tqdm(total=episodes, unit="episode", desc=shown,
                   disable=None if progress is None else not progress,  # None: a terminal only
                   delay=PROGRESS_DELAY_S if progress is None else 0.0)
        try:
            trace = episodes_run.run(batch_size, bar, keep_trace)
        finally:
            bar.close()
    return EvalResult(
        protocol=proto,
        fingerprint=episodes_run.fingerprint.hexdigest(),
        scores=episodes_run.scores(),
        learner=shown,
        device=str(dev),
        seconds=time.perf_counter() - start,
        version=__version__,
        config=config,
        source=source,
        data_options=dict(data_options) if data_options else None,
        trace=trace,
        declined=declined or None,
    )


def _evaluate_variable(
    learner: Any, dataset: ImageDataset, spec: VariableSpec, *, episodes: int, seed: int, protocol: str,
    batch_size: int, device: torch.device, progress: bool | None, name: str | None, config: dict[str, Any] | None,
    source: str | None, data_options: dict[str, Any] | None,
) -> EvalResult:
    """:func:`evaluate` on variable episodes (:mod:`metamem.evaluation.variable`)."""
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
    fp = Fingerprint(proto)
    acc: list[torch.Tensor] = []
    start = time.perf_counter()
    bar = tqdm(total=episodes, unit="episode", disable=not progress, desc=name or learner_name(learner))
    try:
        with _eval_mode(learner, device), torch.no_grad():
            for lo in range(0, episodes, batch_size):
                batch = sampler.sample_keys(proto.keys(lo, min(lo + batch_size, episodes), device))
                fingerprint_variable(fp, batch)
                acc.append(score_variable(learner, batch))
                bar.update(batch.batch_size)
    finally:
        bar.close()
    return EvalResult(
        protocol=proto, fingerprint=fp.hexdigest(),
        scores={"set": Score("set", torch.cat(acc).to("cpu", torch.float64))},
        learner=name or learner_name(learner), device=str(device), seconds=time.perf_counter() - start,
        version=__version__, config=config, source=source,
        data_options=dict(data_options) if data_options else None, trace=None, declined=declined,
    )


def _scorings(learner: Any, protocol: str, name: str) -> tuple[tuple[str, ...], dict[str, str]]:
    """The scorings ``protocol`` (a valid name) asks of ``learner`` and those declined (with why)."""
    if protocol != "both":
        return (protocol,), {}
    if sequence_path(learner) is None:
        return ("set",), {"sequence": (
            f"learner {name} has no linear-in-T sequence path "
            "(forward_sequence, predict_sequence, or embed + predict_features): scoring "
            "sequences would take one predict per step (T^2/2 image passes per episode); "
            "use protocol='sequence' to score it anyway"
        )}
    return ("set", "sequence"), {}


@contextmanager
def _eval_mode(learner: Any, device: torch.device) -> Iterator[None]:
    """An ``nn.Module`` learner on ``device`` in eval mode; its mode restored after."""
    if not isinstance(learner, nn.Module):
        yield
        return
    learner.to(device)
    was_training = learner.training
    learner.eval()
    try:
        yield
    finally:
        learner.train(was_training)


class _EpisodeScorer:
    """Scores a protocol's episodes batch by batch and collects the per-episode scores."""

    def __init__(self, learner: Any, dataset: ImageDataset, proto: Protocol, scorings: tuple[str, ...],
                 device: torch.device, per_call: int, reuse_features: bool) -> None:
        self.learner, self.dataset, self.proto, self.device = learner, dataset, proto, device
        self.scorings, self.per_call = scorings, per_call
        self.sampler = proto.sampler(dataset, device)
        self.memo = None
        if reuse_features and "set" in scorings and supports_feature_reuse(learner):
            self.memo = feature_memo_for(learner, dataset.images, self.sampler.images, self.sampler.dtype)
        self.fingerprint = Fingerprint(proto)
        self.set_acc: list[torch.Tensor] = []
        self.seq_acc: list[torch.Tensor] = []
        self.seq_pres: list[torch.Tensor] = []

    def run(self, batch_size: int, bar: Any, keep_trace: bool) -> Any:
        """Score every batch; returns the memory trace of episode 0 (``keep_trace``) or None."""
        trace = None
        p_max = self.proto.k_shot + self.proto.n_query
        for batch in self.proto.batches(self.dataset, batch_size, self.device, sampler=self.sampler):
            self.fingerprint.update_batch(batch)
            if "set" in self.scorings:
                self.set_acc.append(score_set(self.learner, batch, self.memo))
            if "sequence" in self.scorings:
                seq = batch.as_sequence()
                correct = score_sequence(self.learner, seq, max_support_images=self.per_call)
                self.seq_acc.append(correct.mean(-1))
                self.seq_pres.append(presentation_accuracy(correct, seq.presentation, p_max))
            if keep_trace:  # episode 0 only
                trace = memory_trace(self.learner, batch.select(slice(0, 1)))
                keep_trace = False
            bar.update(batch.batch_size)
        return trace

    def scores(self) -> dict[str, Score]:
        out: dict[str, Score] = {}
        if self.set_acc:
            out["set"] = Score("set", torch.cat(self.set_acc).to("cpu", torch.float64))
        if self.seq_acc:
            out["sequence"] = Score("sequence", torch.cat(self.seq_acc).to("cpu", torch.float64),
                                    torch.cat(self.seq_pres).to("cpu", torch.float64))
        return out
