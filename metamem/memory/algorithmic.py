"""More algorithmic tasks of the NTM paper: repeat copy, priority sort, dynamic N-grams.

Beside :func:`~metamem.memory.copy_task` and :func:`~metamem.memory.associative_recall_task`
(long copy is the copy task at longer lengths and a larger memory). Every task returns a
:class:`~metamem.memory.TaskBatch` (``inputs [B, T, C]``, 0/1 ``targets [B, T, bits]``,
``mask [B, T]`` of scored steps, ``write_steps``), drawn from an owned generator.
:func:`bit_errors` counts wrong bits per sequence, the NTM/NSM papers' figure.

Reference: A. Graves, G. Wayne, I. Danihelka, "Neural Turing Machines", arXiv:1410.5401
(2014), §4.2 (repeat copy), §4.4 (dynamic N-grams), §4.5 (priority sort); the NSM paper
(Le et al. 2020, papers.md §5.2) scores them by bit error per sequence.
"""

from __future__ import annotations

import torch
from typing_extensions import Unpack

from metamem.memory.state import check_positive
from metamem.memory.tasks import TaskBatch, TaskRandomness, _bits, _present, _scored_from, task_generator

__all__ = ["repeat_copy_task", "priority_sort_task", "ngram_task", "bit_errors"]


def repeat_copy_task(
    batch_size: int, length: int, repeats: int, bits: int, *, max_repeats: int = 10, **rng: Unpack[TaskRandomness]
) -> TaskBatch:
    """Repeat copy: show a sequence, then the repeat count, then output it ``repeats`` times and an end marker.

    Input channels: ``bits`` data, a delimiter, the repeat count (``repeats / max_repeats`` on
    the delimiter step). Target channels: ``bits`` data and an end marker (the last step).
    ``T = length + 1 + length·repeats + 1``; the last ``length·repeats + 1`` steps are scored.

    Raises:
        ValueError: on a size ≤ 0, ``repeats > max_repeats`` or no source of randomness.
    """
    check_positive("repeat_copy_task", batch_size=batch_size, length=length, repeats=repeats, bits=bits,
                   max_repeats=max_repeats)
    if repeats > max_repeats:
        raise ValueError(f"repeat_copy_task: repeats={repeats} exceeds max_repeats={max_repeats}")
    gen = task_generator("repeat_copy_task", rng)
    items = _bits((batch_size, length, bits), gen)
    out_steps = length * repeats + 1
    T = length + 1 + out_steps
    inputs = _present(items, T, bits + 2, delimiter=bits)
    inputs[:, length, bits + 1] = repeats / max_repeats
    targets = items.new_zeros(batch_size, T, bits + 1)
    targets[:, length + 1 : T - 1, :bits] = items.repeat(1, repeats, 1)
    targets[:, T - 1, bits] = 1.0
    return _scored_from(inputs, targets, length + 1, length + 1)


def priority_sort_task(
    batch_size: int, items: int, out_items: int, bits: int, **rng: Unpack[TaskRandomness]
) -> TaskBatch:
    """Priority sort: ``items`` vectors with priorities in [−1, 1]; output the ``out_items`` highest, highest first.

    Input channels: ``bits`` data, the priority, a delimiter (after the items). Targets: the
    sorted vectors on the last ``out_items`` steps. ``T = items + 1 + out_items``.

    Raises:
        ValueError: on a size ≤ 0 or ``out_items > items``.
    """
    check_positive("priority_sort_task", batch_size=batch_size, items=items, out_items=out_items, bits=bits)
    if out_items > items:
        raise ValueError(f"priority_sort_task: out_items={out_items} exceeds items={items}")
    gen = task_generator("priority_sort_task", rng)
    data = _bits((batch_size, items, bits), gen)
    priority = torch.rand(batch_size, items, generator=gen, device=gen.device) * 2 - 1
    T = items + 1 + out_items
    inputs = _present(data, T, bits + 2, delimiter=bits + 1)
    inputs[:, :items, bits] = priority
    order = torch.argsort(priority, dim=1, descending=True, stable=True)[:, :out_items]
    targets = data.new_zeros(batch_size, T, bits)
    targets[:, items + 1 :] = torch.gather(data, 1, order.unsqueeze(-1).expand(-1, -1, bits))
    return _scored_from(inputs, targets, items + 1, items + 1)


def ngram_task(batch_size: int, length: int, *, n: int = 6, **rng: Unpack[TaskRandomness]) -> TaskBatch:
    """Dynamic N-grams: binary sequences from a random N-gram table; predict every next bit.

    Per episode a table of ``2^(n−1)`` probabilities ``P(1 | previous n−1 bits)`` is drawn from
    Beta(½, ½); the first ``n−1`` bits are uniform, the rest follow the table. Input at step t is
    bit t (one channel); the target is bit t+1, scored from step ``n−2`` on (once a full
    context has been seen). ``T = length − 1``. Bit errors here include the irreducible noise
    of the table (the NTM paper reports the cost in bits instead).

    Raises:
        ValueError: on ``n < 2`` or ``length <= n``.
    """
    check_positive("ngram_task", batch_size=batch_size, length=length, n=n)
    if n < 2 or length <= n:
        raise ValueError(f"ngram_task: needs n >= 2 and length > n, got n={n}, length={length}")
    gen = task_generator("ngram_task", rng)
    # Beta(1/2, 1/2) by its inverse CDF, sin²(π u / 2) with u uniform (keeps to the owned generator)
    u = torch.rand(batch_size, 2 ** (n - 1), generator=gen, device=gen.device)
    table = torch.sin(torch.pi * u / 2).pow(2)
    seq = torch.zeros(batch_size, length, device=gen.device)
    seq[:, : n - 1] = torch.randint(0, 2, (batch_size, n - 1), generator=gen, device=gen.device).float()
    weights = 2 ** torch.arange(n - 2, -1, -1, device=gen.device)
    rows = torch.arange(batch_size, device=gen.device)
    draws = torch.rand(batch_size, length, generator=gen, device=gen.device)
    for t in range(n - 1, length):
        context = (seq[:, t - n + 1 : t].long() * weights).sum(1)
        seq[:, t] = (draws[:, t] < table[rows, context]).float()
    T = length - 1
    inputs = seq[:, :T].unsqueeze(-1)
    targets = seq[:, 1:].unsqueeze(-1)
    return _scored_from(inputs, targets, n - 2, T)


def bit_errors(logits: torch.Tensor, batch: TaskBatch) -> torch.Tensor:
    """Wrong bits per sequence on the scored steps (a bit is predicted 1 where its logit > 0).

    Args:
        logits: ``[B, T, bits]``.
        batch: the task batch.

    Returns:
        float ``[B]``.
    """
    wrong = ((logits > 0).float() != batch.targets).float().sum(-1)  # [B, T]
    return (wrong * batch.mask.float()).sum(1)
