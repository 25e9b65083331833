"""MANN: an LSTM controller with an external slot memory, for labelled-late sequences.

Reference: A. Santoro, S. Bartunov, M. Botvinick, D. Wierstra, T. Lillicrap, "Meta-Learning
with Memory-Augmented Neural Networks", ICML 2016 (arXiv:1605.06065); settings of the
reference code (papers.md §1.4): LSTM with 200 units, memory 128 × 40, 4 read heads, usage
decay γ = 0.95, Adam 1e-3, batch 16, 5 classes × 10 presentations, 20×20 images.

At step t the controller reads ``[x_t ; onehot(y_{t-1}) ; r_{t-1}]`` (``x_t`` the flattened
image, or a small conv encoding with ``encoder="conv"``), the memory writes with the chosen
write policy (``lru``: Least Recently Used Access, the paper's rule; ``usage``, ``uniform``,
``cached_uniform``: see ``metamem ls write-policies``), then reads R vectors ``r_t`` by cosine
content addressing, and the output is ``W_o [h_t ; r_t]``: class logits at every step. The
memory is wiped at the start of every episode. The controller and memory are
:class:`metamem.memory.MemoryCore`; the shared sequence machinery (loss over all steps, the
set-protocol ``predict``: support as a sequence, then each query as one extra step from the
repeated state) is :class:`~metamem.learners.lstm.SequenceLearner`.

Other cores (``core: ntm | dnc``, see ``metamem ls cores``) swap the slot memory for an NTM
or DNC memory under the same controller. ``programs: P`` stores the memory's interface
network as P programs per control head (Neural Stored-program Memory, Le et al. ICLR 2020,
papers.md §5.2): with the ``lru`` slot core this is the paper's NUTM (LRUA); the training
loss gains the annealed key-orthogonality term ``η_t l_p``.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import torch
from torch import nn

from metamem.learners.base import LEARNERS
from metamem.learners.capabilities import MemoryInspection, ProgramInspection
from metamem.learners.lstm import SequenceLearner, label_units
from metamem.memory import build_core
from metamem.memory.inspection import trace_core
from metamem.memory.nsm import annealed_weight, attach_programs, program_regulariser
from metamem.registry import forwards_to, renamed_keys
from metamem.types import EpisodeBatch, LearnerOutput, SequenceBatch

__all__ = ["MANN", "MANNState", "build_mann"]


def _tree_map(fn: Any, *trees: Any) -> Any:
    """Apply ``fn`` leaf-wise over nested NamedTuples of tensors."""
    first = trees[0]
    if isinstance(first, tuple):
        return type(first)(*(_tree_map(fn, *parts) for parts in zip(*trees, strict=True)))
    return fn(*trees)


def _keep_where(keep: torch.Tensor, new: torch.Tensor, old: torch.Tensor) -> torch.Tensor:
    """``new`` where ``keep [B]`` (episodes still reading), else ``old``; any trailing dims."""
    return torch.where(keep.view(-1, *([1] * (new.dim() - 1))), new, old)


class MANNState(NamedTuple):
    """The recurrent state of :class:`MANN`.

    Attributes:
        core: the controller and memory state of the core (:class:`metamem.memory.CoreState`
            for the slot core: LSTM ``h``/``c`` ``[B, H]``, memory ``[B, S, D]``, read vectors
            ``[B, R, D]``, the write policy's usage/weights ``[B, S]``/``[B, R, S]``).
        start: steps already run (the write schedules of uniform writing count from it).
    """

    core: Any
    start: int


class MANN(SequenceLearner[MANNState], MemoryInspection, ProgramInspection):
    """Memory-augmented LSTM of Santoro et al. (2016) (see the module docstring).

    Args:
        n_way: N.
        image_shape: ``(C, H, W)``.
        controller_size: LSTM units H.
        slots: S.
        width: D.
        read_heads: R.
        policy: a :data:`~metamem.memory.WRITE_POLICIES` name.
        policy_options: options of the write policy (``{gamma: 0.95}`` for ``lru``...).
        key_strength: learn a read-key strength β ≥ 1 (False: the paper's plain softmax).
        top_k: sparse reads keeping the k best slots per head (None: dense).
        encoder: ``"flatten"`` or ``"conv"``.
        conv_channels: channels of the conv encoder.
        core: a :data:`~metamem.memory.MEMORY_CORES` name (``lstm_slot``: the slot memory
            with ``policy``; ``ntm``; ``dnc``).
        core_options: extra options of a non-slot core (``{shifts: 1}`` for ``ntm``...).
        programs: P > 0 attaches a program memory of P programs per control head (NUTM).
        program_options: ``key_size`` (2), the regulariser weight ``reg`` (0.1), its
            ``decay`` (0.9) applied every ``every`` training batches (1000).
        spread_labels: train every label unit on N-way episodes (see
            :class:`~metamem.learners.lstm.SequenceLearner`).
    """

    def __init__(
        self, n_way: int, image_shape: tuple[int, int, int], *, controller_size: int = 200,
        slots: int = 128, width: int = 40, read_heads: int = 4,
        policy: str = "lru", policy_options: dict[str, Any] | None = None,
        key_strength: bool = True, top_k: int | None = None, encoder: str = "flatten",
        conv_channels: int = 32, core: str = "lstm_slot", core_options: dict[str, Any] | None = None,
        programs: int = 0, program_options: dict[str, Any] | None = None, spread_labels: bool = False,
    ) -> None:
        super().__init__(n_way, image_shape, encoder, conv_channels, spread_labels)
        sizes: dict[str, Any] = dict(input_size=self.input_dim, hidden_size=controller_size, slots=slots,
                                     width=width, read_heads=read_heads)
        if core == "lstm_slot":
            sizes.update(policy=policy, policy_options=policy_options, top_k=top_k, key_strength=key_strength)
        elif policy != "lru" or policy_options or top_k is not None:
            raise ValueError(
                f"MANN: policy/policy_options/top_k apply to core 'lstm_slot' only, not {core!r}"
            )
        self.core = build_core(core, **{**sizes, **dict(core_options or {})})
        self.head = nn.Linear(self.core.out_features, n_way)
        opts = {"key_size": 2, "reg": 0.1, "decay": 0.9, "every": 1000}
        unknown = sorted(set(program_options or {}) - set(opts))
        if unknown:
            raise ValueError(f"MANN: unknown program option {unknown[0]!r}; valid: {', '.join(opts)}")
        opts.update(program_options or {})
        self.programs, self.program_options = int(programs), opts
        if self.programs:
            attach_programs(self.core.memory, self.programs, key_size=int(opts["key_size"]))
            # training batches seen (anneals η); only with programs, so plain MANN checkpoints keep their keys
            self.register_buffer("program_step", torch.zeros((), dtype=torch.long))

    def forward(self, batch: EpisodeBatch) -> LearnerOutput:
        """The sequence loss, plus ``η_t l_p`` (annealed NSM key regulariser) in training mode when ``programs > 0``."""
        out = super().forward(batch)
        reg = program_regulariser(self) if self.programs and self.training else None
        if reg is None:
            return out
        o = self.program_options
        # the step counter stays a tensor: no host sync, and a compiled step stays one graph
        eta = annealed_weight(o["reg"], o["decay"], o["every"], self.program_step).to(reg.dtype)
        if torch.is_grad_enabled():
            self.program_step += 1
        out.extras["program_reg"] = reg.detach()
        out.loss = out.loss + eta * reg
        return out

    def run(
        self, inputs: torch.Tensor, state: MANNState | None = None, lengths: torch.Tensor | None = None,
        total_steps: int | None = None,
    ) -> tuple[torch.Tensor, MANNState]:
        core_state, start = (None, 0) if state is None else state
        t = inputs.shape[1]
        horizon = total_steps if total_steps is not None else start + t
        if lengths is None:
            out = self.core(inputs, core_state, start=start, write_steps=horizon)
            return self.head(out.features), MANNState(out.state, start + t)
        # ragged support (predict with a mask): step by step, freezing finished episodes
        if core_state is None:
            core_state = self.core.init_state(inputs.shape[0], inputs.device, inputs.dtype)
        feats = []
        for i in range(t):
            out = self.core(inputs[:, i : i + 1], core_state, start=start + i, write_steps=horizon)
            core_state = _tree_map(functools.partial(_keep_where, i < lengths), out.state, core_state)
            feats.append(out.features)
        return self.head(torch.cat(feats, 1)), MANNState(core_state, start + t)

    def repeat_state(self, state: MANNState, repeats: int) -> MANNState:
        return MANNState(_tree_map(lambda x: x.repeat_interleave(repeats, dim=0), state.core), state.start)

    def memory_trace(self, seq: SequenceBatch) -> Any:
        """The read/write weights of every step of ``seq`` (the core re-run with ``trace=True``)."""
        return self.core(self.step_inputs(seq.x, seq.prev_y), write_steps=seq.steps, trace=True).trace

    def program_weights(self, seq: SequenceBatch) -> dict[str, torch.Tensor]:
        """NSM program weights ``{name: [B, T, G, P]}`` of every step of ``seq`` (``{}`` when ``programs == 0``)."""
        return trace_core(self.core, self.step_inputs(seq.x, seq.prev_y), write_steps=seq.steps)[1]


@LEARNERS.register("mann")
@renamed_keys(memory_slots="slots", memory_width="width", write_policy="policy")
@forwards_to(MANN)
def build_mann(
    *, n_way: int, image_shape: tuple[int, int, int], max_way: int | None = None, **options: Any,
) -> MANN:
    """MANN (Santoro et al. 2016): LSTM controller + a memory core (slot/NTM/DNC), optional NSM programs.

    ``max_way``: label units (default ``n_way``); episodes of any N <= ``max_way`` ways
    (see :class:`~metamem.learners.lstm.SequenceLearner`). ``slots``, ``width``,
    ``policy`` are the memory's words; the old ``memory_slots``, ``memory_width``,
    ``write_policy`` still load, with a warning. The other options are :class:`MANN`'s.
    """
    return MANN(label_units("mann", n_way, max_way), image_shape, **options)
