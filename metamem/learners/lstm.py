"""The LSTM sequence baseline and the parts every sequence learner shares.

Santoro et al. (2016), "Meta-Learning with Memory-Augmented Neural Networks" (ICML), Table 1
compare MANN with a plain LSTM that reads the same labelled-late stream: at step t the input
is ``[x_t ; onehot(y_{t-1})]`` and the output is the class of ``x_t``. :class:`LSTMLearner` is
that baseline; :class:`SequenceLearner` holds what it shares with MANN
(:mod:`metamem.learners.mann`): the image encoder, the input assembly, the loss over all
steps, and the set-protocol :meth:`~SequenceLearner.predict`.

Set protocol (``predict``): the present support items are run as a sequence, labels one step
late, in a fixed pseudo-random order (a permutation of the S positions from a local generator
seeded with 0, so the class-major order of a support set never reaches the learner, which was
trained on shuffled streams). Each query is then scored as ONE extra step from the state after
the support, with ``prev_y`` = the label of the last support item (its label arrives at that
step, as in training). All queries are scored in parallel by repeating the state ``Qn`` times;
queries never see each other. Classes with no present support item get logit ``-inf``.
"""

from __future__ import annotations

import math
from typing import Any, Generic, NamedTuple, TypeVar

import torch
import torch.nn.functional as F
from torch import nn

from metamem.learners.base import LEARNERS
from metamem.learners.capabilities import LimitedWays, SequencePrediction, SetPrediction, StepwiseSequence
from metamem.registry import forwards_to
from metamem.rng import random_keys
from metamem.types import NO_LABEL, EpisodeBatch, LearnerOutput, SequenceBatch

_LABEL_UNIT_STREAM = 21  # rng stream of the label units an episode is spread onto (spread_labels)

__all__ = ["ImageEncoder", "LSTMState", "RecurrentState", "SequenceLearner", "support_order", "LSTMLearner", "build_lstm"]


class ImageEncoder(nn.Module):
    """Images ``[*, C, H, W]`` -> features ``[*, out_dim]``.

    Args:
        image_shape: ``(C, H, W)``.
        kind: ``"flatten"`` (raw pixels, as in Santoro et al.) or ``"conv"`` (two 3x3
            stride-2 convolutions with ReLU, then flatten).
        channels: conv channels (``kind="conv"`` only).
    """

    def __init__(self, image_shape: tuple[int, int, int], kind: str = "flatten", channels: int = 32) -> None:
        super().__init__()
        c, h, w = image_shape
        if kind == "flatten":
            self.net: nn.Module = nn.Flatten(-3)
            self.out_dim = c * h * w
        elif kind == "conv":
            self.net = nn.Sequential(
                nn.Conv2d(c, channels, 3, stride=2, padding=1), nn.ReLU(),
                nn.Conv2d(channels, channels, 3, stride=2, padding=1), nn.ReLU(),
                nn.Flatten(-3),
            )
            self.out_dim = channels * math.ceil(math.ceil(h / 2) / 2) * math.ceil(math.ceil(w / 2) / 2)
        else:
            raise ValueError(f"unknown encoder {kind!r}; valid encoders: flatten, conv")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-3]
        return self.net(x.reshape(-1, *x.shape[-3:])).reshape(*lead, self.out_dim)


def support_order(size: int, device: torch.device | str | None = None) -> torch.Tensor:
    """The fixed order in which ``predict`` reads S support items: a permutation of
    ``0..S-1`` drawn from a local generator seeded with 0 (the same for every call)."""
    return torch.randperm(size, generator=torch.Generator().manual_seed(0)).to(device)


class LSTMState(NamedTuple):
    """The recurrent state of :class:`LSTMLearner`: ``h`` and ``c``, float ``[1, B, H]`` (one
    layer, H = ``controller_size``)."""

    h: torch.Tensor
    c: torch.Tensor


#: the recurrent state of a sequence learner: a NamedTuple of tensors (and counters) with its
#: shapes in its docstring (:class:`LSTMState`, :class:`metamem.learners.mann.MANNState`).
RecurrentState = TypeVar("RecurrentState", bound=tuple)


class SequenceLearner(nn.Module, SetPrediction, SequencePrediction, StepwiseSequence, LimitedWays, Generic[RecurrentState]):
    """The base of metamem's sequence learners (they declare :class:`SequencePrediction`).

    Subclasses implement :meth:`run` (and :meth:`repeat_state`); everything else, the
    training forward, the loss and the set protocol, lives here.

    **Any way up to ``max_way``.** The label input (one-hot of the previous label) and the
    output layer have ``max_way`` units (the builders' ``max_way``, default the training
    ``n_way``; :attr:`n_way` here is that width). An episode of N <= ``max_way`` ways uses the
    first N units; the others are masked (their logits dropped before the softmax, their
    inputs never set). So a learner built with ``max_way=20`` and trained on 5-way episodes
    can be scored on 20-way episodes: units 5..19 were never trained (their weights are the
    initial ones) and the score shows it -- a documented choice, not a refusal. Training
    at the largest way of interest, or on a mix of ways, trains every unit; so does
    ``spread_labels``.

    **Spread labels** (:attr:`spread_labels`, the builders' ``spread_labels=True``): in
    training mode, an episode of N < ``max_way`` ways has its labels put on N distinct units
    drawn from all ``max_way``, a pure function of its episode key (so the same batch gets
    the same units on any device); the label inputs and the output logits use those units,
    and the loss is the cross-entropy over them (the other units masked, as in scoring). Every
    unit is then trained although each episode has N ways. Eval mode and scoring use units
    0..N-1 as before.

    Args:
        n_way: N, the label units (``max_way``).
        image_shape: ``(C, H, W)``.
        encoder: ``"flatten"`` or ``"conv"`` (see :class:`ImageEncoder`).
        conv_channels: channels of the conv encoder.
    """

    def __init__(self, n_way: int, image_shape: tuple[int, int, int], encoder: str, conv_channels: int,
                 spread_labels: bool = False) -> None:
        super().__init__()
        self.n_way = int(n_way)
        self.spread_labels = bool(spread_labels)
        self.encoder = ImageEncoder(image_shape, encoder, conv_channels)
        self.input_dim = self.encoder.out_dim + self.n_way

    # -------------------------------------------------------------- to implement
    def run(
        self, inputs: torch.Tensor, state: RecurrentState | None = None, lengths: torch.Tensor | None = None,
        total_steps: int | None = None,
    ) -> tuple[torch.Tensor, RecurrentState]:
        """Run ``inputs [B, T, input_dim]`` from ``state`` (None: fresh episode, memory wiped).

        Args:
            inputs: per-step inputs ``[x_t features ; onehot(y_{t-1})]``.
            state: the recurrent state to start from, or None.
            lengths: int64 ``[B]``; when given, the returned state is the one after
                ``lengths[b]`` steps of episode b (later steps are padding).
            total_steps: length of the whole sequence these steps belong to (the write
                horizon of scheduled memories; default: the steps run so far).

        Returns:
            logits ``[B, T, N]`` and the final state.
        """
        raise NotImplementedError

    def repeat_state(self, state: RecurrentState, repeats: int) -> RecurrentState:
        """Repeat each episode's state ``repeats`` times along B (``repeat_interleave``)."""
        raise NotImplementedError

    # -------------------------------------------------------------- shared
    def step_inputs(self, x: torch.Tensor, prev_y: torch.Tensor) -> torch.Tensor:
        """``[encoder(x_t) ; onehot(prev_y_t)]`` -> ``[B, T, input_dim]`` (NO_LABEL -> zeros)."""
        feats = self.encoder(x)
        onehot = F.one_hot(prev_y.clamp(min=0), self.n_way).to(feats.dtype)
        onehot = onehot * (prev_y != NO_LABEL).unsqueeze(-1).to(feats.dtype)
        return torch.cat([feats, onehot], dim=-1)

    @property
    def max_way(self) -> int:  # LimitedWays
        """The most ways an episode may have (the label units)."""
        return self.n_way

    def check_way(self, n_way: int) -> None:
        """Raise a ValueError naming ``max_way`` unless ``1 <= n_way <= max_way``."""
        if not 1 <= n_way <= self.n_way:
            raise ValueError(
                f"{type(self).__name__} has {self.n_way} label units (max_way), got an episode with "
                f"n_way={n_way}; build it with learner.max_way >= {n_way}"
            )

    def forward_sequence(self, seq: SequenceBatch) -> torch.Tensor:
        """Per-step logits ``[B, T, N]`` of a sequence batch (memory wiped per episode); the
        label units past the episode's N are dropped."""
        self.check_way(seq.n_way)
        logits, _ = self.run(self.step_inputs(seq.x, seq.prev_y))
        return logits[..., : seq.n_way]

    def episode_units(self, episode_keys: torch.Tensor, n_way: int) -> torch.Tensor:
        """int64 ``[B, N]``: the distinct label units (of ``max_way``) that labels 0..N-1 of
        each episode use under :attr:`spread_labels`; a pure function of the episode keys."""
        self.check_way(n_way)
        return random_keys(episode_keys, _LABEL_UNIT_STREAM, (self.n_way,)).topk(n_way, dim=1).indices

    def forward(self, batch: EpisodeBatch) -> LearnerOutput:
        """Run ``batch.as_sequence()``; loss = cross-entropy averaged over all B*T steps
        (with :attr:`spread_labels` in training mode, on each episode's drawn units)."""
        seq = batch.as_sequence()
        if self.training and self.spread_labels and seq.n_way < self.n_way:
            units = self.episode_units(batch.episode_keys.to(seq.y.device), seq.n_way)  # [B, N]
            prev = units.gather(1, seq.prev_y.clamp(min=0))
            prev = prev.masked_fill(seq.prev_y == NO_LABEL, NO_LABEL)
            every, _ = self.run(self.step_inputs(seq.x, prev))  # [B, T, max_way]
            logits = every.gather(2, units[:, None, :].expand(-1, every.shape[1], -1))
        else:
            logits = self.forward_sequence(seq)
        wide = logits if logits.dtype == torch.float64 else logits.float()  # fp32 loss under AMP
        loss = F.cross_entropy(wide.flatten(0, 1), seq.y.flatten())
        return LearnerOutput(logits, seq.y, loss, {"presentation": seq.presentation})

    def predict(self, support_x: torch.Tensor, support_y: torch.Tensor, query_x: torch.Tensor, *,
                n_way: int, support_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Query logits ``[B, Qn, N]`` after reading the support as a labelled-late sequence
        (see the module docstring)."""
        self.check_way(n_way)
        b, s = support_y.shape
        dev = support_y.device
        mask = torch.ones_like(support_y, dtype=torch.bool) if support_mask is None else support_mask.bool()
        # the fixed pseudo-random order, present items first, absent ones padded at the end
        perm = support_order(s, dev)
        rank = torch.empty_like(perm)
        rank[perm] = torch.arange(s, device=dev)
        order = torch.argsort((~mask).long() * s + rank[None, :], dim=1)
        xs = torch.gather(support_x, 1, order.view(b, s, 1, 1, 1).expand_as(support_x))
        ys = torch.gather(support_y, 1, order)
        n_present = mask.sum(1)
        prev = torch.full_like(ys, NO_LABEL)
        prev[:, 1:] = ys[:, :-1]
        lengths = None if support_mask is None else n_present
        _, state = self.run(self.step_inputs(xs, prev), None, lengths, total_steps=s + 1)
        last = torch.gather(ys, 1, (n_present - 1).clamp(min=0)[:, None])[:, 0]
        last = torch.where(n_present > 0, last, torch.full_like(last, NO_LABEL))
        qn = query_x.shape[1]
        q_prev = last.repeat_interleave(qn)[:, None]
        q_in = self.step_inputs(query_x.reshape(b * qn, 1, *query_x.shape[2:]), q_prev)
        logits, _ = self.run(q_in, self.repeat_state(state, qn), total_steps=s + 1)
        logits = logits.view(b, qn, self.n_way)[..., :n_way]
        present = F.one_hot(support_y.clamp(min=0), n_way).mul(mask[..., None]).sum(1) > 0
        return logits.masked_fill(~present[:, None, :], float("-inf"))


class LSTMLearner(SequenceLearner[LSTMState]):
    """LSTM baseline of Santoro et al. (2016): the MANN controller without memory.

    Args:
        n_way: N, the label units.
        image_shape: ``(C, H, W)``.
        controller_size: LSTM hidden units (200 in the paper's reference code).
        encoder: ``"flatten"`` or ``"conv"``.
        conv_channels: channels of the conv encoder.
        spread_labels: train every label unit on N-way episodes (see :class:`SequenceLearner`).
    """

    def __init__(
        self, n_way: int, image_shape: tuple[int, int, int], controller_size: int = 200,
        encoder: str = "flatten", conv_channels: int = 32, spread_labels: bool = False,
    ) -> None:
        super().__init__(n_way, image_shape, encoder, conv_channels, spread_labels)
        self.lstm = nn.LSTM(self.input_dim, controller_size, batch_first=True)
        self.head = nn.Linear(controller_size, n_way)

    def run(
        self, inputs: torch.Tensor, state: LSTMState | None = None, lengths: torch.Tensor | None = None,
        total_steps: int | None = None,
    ) -> tuple[torch.Tensor, LSTMState]:
        if lengths is None:
            out, (h, c) = self.lstm(inputs, state)
            return self.head(out), LSTMState(h, c)
        packed = nn.utils.rnn.pack_padded_sequence(
            inputs, lengths.clamp(min=1).cpu(), batch_first=True, enforce_sorted=False
        )
        out, (h, c) = self.lstm(packed, state)
        out, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=inputs.shape[1])
        empty = (lengths == 0).view(1, -1, 1)  # no support at all: the fresh state
        h, c = h.masked_fill(empty, 0.0), c.masked_fill(empty, 0.0)
        return self.head(out), LSTMState(h, c)

    def repeat_state(self, state: LSTMState, repeats: int) -> LSTMState:
        return LSTMState(state.h.repeat_interleave(repeats, dim=1), state.c.repeat_interleave(repeats, dim=1))


def label_units(owner: str, n_way: int, max_way: int | None) -> int:
    """The label units of a sequence learner: ``max_way`` (>= ``n_way``), default ``n_way``."""
    if max_way is None:
        return int(n_way)
    if isinstance(max_way, bool) or not isinstance(max_way, int) or max_way < n_way:
        raise ValueError(f"{owner}: max_way must be an int >= n_way={n_way}, got {max_way!r}")
    return max_way


@LEARNERS.register("lstm")
@forwards_to(LSTMLearner)
def build_lstm(
    *, n_way: int, image_shape: tuple[int, int, int], max_way: int | None = None, **options: Any,
) -> LSTMLearner:
    """LSTM sequence baseline (Santoro et al. 2016): the MANN controller with no memory.

    ``max_way``: label units (default ``n_way``); episodes of any N <= ``max_way`` ways.
    The other options are :class:`LSTMLearner`'s.
    """
    return LSTMLearner(label_units("lstm", n_way, max_way), image_shape, **options)
