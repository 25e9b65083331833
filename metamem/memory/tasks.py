"""Algorithmic tasks that exercise a memory: copy and associative recall (Graves et al. 2014).

Each generator draws a whole batch on the device with the caller's ``torch.Generator`` (or a
seed), so the same seed gives the same batch. A :class:`TaskBatch` holds float inputs
``[B, T, C]``, binary targets ``[B, T, bits]``, a mask ``[B, T]`` of the steps that are scored
and ``write_steps``, the length of the presentation phase (pass it to
``MemoryCore(..., write_steps=...)`` so uniform writing spreads its S writes over it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypedDict

import torch
from typing_extensions import Unpack

from metamem.memory.state import check_positive
from metamem.types import StepBatch

__all__ = ["TaskBatch", "TaskRandomness", "copy_task", "associative_recall_task", "bit_accuracy"]


@dataclass
class TaskBatch(StepBatch):
    """A batch of an algorithmic task (``batch_size``, ``steps``, ``to`` and ``select`` from
    :class:`~metamem.types.StepBatch`).

    Attributes:
        inputs: float ``[B, T, C]``.
        targets: float ``[B, T, bits]`` of 0/1 (zero where ``mask`` is False).
        mask: bool ``[B, T]``, True at the steps whose output is scored.
        write_steps: number of leading steps that present the data to be stored.
    """

    inputs: torch.Tensor
    targets: torch.Tensor
    mask: torch.Tensor
    write_steps: int


class TaskRandomness(TypedDict, total=False):
    """Where a task draws its batch from: the keywords every task generator takes.

    Attributes:
        generator: source of randomness (its device is the batch's device).
        seed: used to make a generator on ``device`` when ``generator`` is None.
        device: device of the batch (default: the generator's, else CPU).
    """

    generator: torch.Generator | None
    seed: int | None
    device: torch.device | str | None


def task_generator(name: str, rng: TaskRandomness) -> torch.Generator:
    """The generator task ``name`` draws from: ``rng["generator"]``, else a new one seeded
    with ``rng["seed"]`` on ``rng["device"]``.

    Raises:
        TypeError: for a keyword that is not one of :class:`TaskRandomness` (as a misspelt
            keyword argument of the task would).
        ValueError: for a generator on another device than ``device``, or neither a
            generator nor a seed.
    """
    unknown = next((k for k in rng if k not in TaskRandomness.__annotations__), None)
    if unknown is not None:
        raise TypeError(f"{name}() got an unexpected keyword argument {unknown!r}")
    generator, seed, device = rng.get("generator"), rng.get("seed"), rng.get("device")
    if generator is not None:
        if device is not None and torch.device(device).type != generator.device.type:
            raise ValueError(
                f"{name}: generator is on {generator.device} but device={device!r}; "
                f"pass a generator created on the target device"
            )
        return generator
    if seed is None:
        raise ValueError(f"{name}: pass a torch.Generator (generator=) or an int seed (seed=)")
    gen = torch.Generator(device=device if device is not None else "cpu")
    gen.manual_seed(int(seed))
    return gen


def _bits(shape: tuple[int, ...], gen: torch.Generator) -> torch.Tensor:
    return torch.randint(0, 2, shape, generator=gen, device=gen.device).float()


def _present(data: torch.Tensor, steps: int, channels: int, delimiter: int) -> torch.Tensor:
    """Inputs ``[B, T=steps, channels]`` showing ``data [B, L, bits]`` on steps ``0..L-1``
    (channels ``0..bits-1``), then a 1 on channel ``delimiter`` at step L; zeros elsewhere."""
    b, length, bits = data.shape
    inputs = data.new_zeros(b, steps, channels)
    inputs[:, :length, :bits] = data
    inputs[:, length, delimiter] = 1.0
    return inputs


def _scored_from(inputs: torch.Tensor, targets: torch.Tensor, first: int, write_steps: int) -> TaskBatch:
    """The :class:`TaskBatch` whose outputs are scored from step ``first`` to the end."""
    mask = torch.zeros(inputs.shape[:2], dtype=torch.bool, device=inputs.device)
    mask[:, first:] = True
    return TaskBatch(inputs, targets, mask, write_steps)


def copy_task(batch_size: int, length: int, bits: int, **rng: Unpack[TaskRandomness]) -> TaskBatch:
    """Copy: present ``length`` random bit vectors, a delimiter, then reproduce them.

    Channels: ``bits`` data bits plus one delimiter channel; ``T = 2·length + 1``. Steps
    ``0..length-1`` show the items, step ``length`` the delimiter, and the last ``length``
    steps (inputs all zero) must output the items in order.

    Args:
        batch_size: B.
        length: items per sequence.
        bits: width of an item.
        **rng: ``generator``, ``seed``, ``device``: where the batch is drawn from
            (:class:`TaskRandomness`).

    Returns:
        :class:`TaskBatch` with ``write_steps = length + 1``.

    Raises:
        ValueError: on a size ≤ 0 or no source of randomness.
    """
    check_positive("copy_task", batch_size=batch_size, length=length, bits=bits)
    gen = task_generator("copy_task", rng)
    items = _bits((batch_size, length, bits), gen)
    T = 2 * length + 1
    inputs = _present(items, T, bits + 1, delimiter=bits)
    targets = items.new_zeros(batch_size, T, bits)
    targets[:, length + 1 :] = items
    return _scored_from(inputs, targets, length + 1, length + 1)


def associative_recall_task(
    batch_size: int, items: int, item_length: int, bits: int, **rng: Unpack[TaskRandomness]
) -> TaskBatch:
    """Associative recall: after a list of items and a query item, output the item that followed it.

    Channels: ``bits`` data bits, an item delimiter and a query delimiter. Each of the
    ``items`` items is a delimiter step followed by ``item_length`` bit vectors. Then come a
    query delimiter, a copy of item ``q`` (q uniform in ``0..items-2``), a second query
    delimiter, and ``item_length`` blank steps that must output item ``q + 1``.
    ``T = items·(item_length + 1) + 2·item_length + 2``.

    Args:
        batch_size: B.
        items: items per list (at least 2).
        item_length: bit vectors per item.
        bits: width of a vector.
        **rng: as :func:`copy_task`'s.

    Returns:
        :class:`TaskBatch` with ``write_steps = items·(item_length + 1)``.

    Raises:
        ValueError: on a size ≤ 0, ``items < 2`` or no source of randomness.
    """
    check_positive(
        "associative_recall_task", batch_size=batch_size, items=items, item_length=item_length, bits=bits
    )
    if items < 2:
        raise ValueError(f"associative_recall_task: items must be >= 2 to have a successor, got {items}")
    gen = task_generator("associative_recall_task", rng)
    data = _bits((batch_size, items, item_length, bits), gen)
    query = torch.randint(0, items - 1, (batch_size,), generator=gen, device=gen.device)
    span = item_length + 1
    store = data.new_zeros(batch_size, items, span, bits + 2)
    store[:, :, 0, bits] = 1.0
    store[:, :, 1:, :bits] = data
    store_steps = items * span
    T = store_steps + 2 * item_length + 2
    inputs = data.new_zeros(batch_size, T, bits + 2)
    inputs[:, :store_steps] = store.view(batch_size, store_steps, bits + 2)
    rows = torch.arange(batch_size, device=data.device)
    inputs[:, store_steps, bits + 1] = 1.0
    inputs[:, store_steps + 1 : store_steps + 1 + item_length, :bits] = data[rows, query]
    inputs[:, store_steps + 1 + item_length, bits + 1] = 1.0
    targets = data.new_zeros(batch_size, T, bits)
    targets[:, T - item_length :] = data[rows, query + 1]
    return _scored_from(inputs, targets, T - item_length, store_steps)


def bit_accuracy(logits: torch.Tensor, batch: TaskBatch) -> torch.Tensor:
    """Fraction of correctly predicted bits on the scored steps, per episode.

    Args:
        logits: ``[B, T, bits]`` (a bit is predicted 1 where its logit is > 0).
        batch: the task batch.

    Returns:
        float ``[B]`` in [0, 1].
    """
    correct = ((logits > 0).float() == batch.targets).float().mean(-1)  # [B, T]
    mask = batch.mask.float()
    return (correct * mask).sum(1) / mask.sum(1)
