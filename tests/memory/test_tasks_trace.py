"""Algorithmic tasks, bit accuracy, the trace heatmap and `metamem ls write-policies`."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from metamem.cli.main import main as cli_main
from metamem.memory import (
    MemoryCore,
    TaskRandomness,
    associative_recall_task,
    bit_accuracy,
    copy_task,
    ngram_task,
    plot_trace,
    priority_sort_task,
    repeat_copy_task,
    two_view_sum_task,
)

#: every task generator, called with its sizes and then the keywords of TaskRandomness
TASKS = {
    "copy_task": lambda **rng: copy_task(2, 3, 4, **rng),
    "associative_recall_task": lambda **rng: associative_recall_task(2, 3, 2, 4, **rng),
    "repeat_copy_task": lambda **rng: repeat_copy_task(2, 3, 2, 4, **rng),
    "priority_sort_task": lambda **rng: priority_sort_task(2, 4, 3, 4, **rng),
    "ngram_task": lambda **rng: ngram_task(2, 10, n=3, **rng),
    "two_view_sum_task": lambda **rng: two_view_sum_task(2, 3, 4, **rng),
}


@pytest.mark.parametrize("name", sorted(TASKS))
def test_every_task_takes_the_same_randomness_keywords(name: str) -> None:
    task = TASKS[name]
    rng: TaskRandomness = {"seed": 5, "device": "cpu"}
    first, again = task(**rng), task(generator=torch.Generator().manual_seed(5))
    assert all(torch.equal(a, b) for a, b in zip(_tensors(first), _tensors(again), strict=True))
    with pytest.raises(TypeError, match=rf"{name}\(\) got an unexpected keyword argument 'sead'"):
        task(sead=5)
    with pytest.raises(ValueError, match=rf"{name}: pass a torch.Generator \(generator=\) or an int seed"):
        task(device="cpu")
    with pytest.raises(ValueError, match=rf"{name}: generator is on cpu but device='meta'"):
        task(generator=torch.Generator(), device="meta")


def _tensors(batch: object) -> list[torch.Tensor]:
    views = getattr(batch, "views", ())
    return [*views, *(v for v in vars(batch).values() if isinstance(v, torch.Tensor))]


def test_copy_layout_and_seed() -> None:
    b = copy_task(3, 5, 4, seed=7)
    assert b.inputs.shape == (3, 11, 5) and b.targets.shape == (3, 11, 4) and b.write_steps == 6
    torch.testing.assert_close(b.targets[:, 6:], b.inputs[:, :5, :4])
    assert b.inputs[:, 5, 4].eq(1).all() and b.inputs[:, :5, 4].eq(0).all() and b.inputs[:, 6:].eq(0).all()
    assert b.mask.sum(1).eq(5).all() and b.mask[:, 6:].all()
    again = copy_task(3, 5, 4, generator=torch.Generator().manual_seed(7))
    assert torch.equal(again.inputs, b.inputs)
    assert not torch.equal(copy_task(3, 5, 4, seed=8).inputs, b.inputs)


def test_associative_recall_layout() -> None:
    n, il, bits = 4, 2, 3
    b = associative_recall_task(5, n, il, bits, seed=3)
    T = n * (il + 1) + 2 * il + 2
    assert b.inputs.shape == (5, T, bits + 2) and b.write_steps == n * (il + 1)
    for e in range(5):
        x = b.inputs[e]
        items = [x[k * (il + 1) + 1 : (k + 1) * (il + 1), :bits] for k in range(n)]
        assert all(x[k * (il + 1), bits] == 1 for k in range(n))
        s = b.write_steps
        assert x[s, bits + 1] == 1 and x[s + il + 1, bits + 1] == 1
        query = x[s + 1 : s + 1 + il, :bits]
        q = next(k for k in range(n - 1) if torch.equal(items[k], query))
        torch.testing.assert_close(b.targets[e, T - il :], items[q + 1])
    assert b.mask.sum(1).eq(il).all()
    with pytest.raises(ValueError, match=r"items must be >= 2"):
        associative_recall_task(1, 1, 2, 3, seed=0)


def test_bit_accuracy() -> None:
    b = copy_task(2, 4, 3, seed=0)
    perfect = b.targets * 2 - 1
    torch.testing.assert_close(bit_accuracy(perfect, b), torch.ones(2))
    torch.testing.assert_close(bit_accuracy(-perfect, b), torch.zeros(2))
    half = perfect.clone()
    half[0, 5:, 0] *= -1  # 1 of 3 bits wrong on every scored step of episode 0
    torch.testing.assert_close(bit_accuracy(half, b), torch.tensor([2 / 3, 1.0]))


def test_plot_trace_writes_png(tmp_path: Path) -> None:
    torch.manual_seed(0)
    b = copy_task(2, 6, 4, seed=0)
    core = MemoryCore(5, hidden_size=6, slots=4, width=5, read_heads=2, policy="uniform")
    out = core(b.inputs, write_steps=b.write_steps, trace=True)
    assert out.trace is not None and out.trace.write_steps(1) == [0, 1, 2, 3]  # ⌊7/5⌋ = 1
    path = plot_trace(out.trace, tmp_path / "sub" / "trace.png", episode=1, title="copy")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in path.parent.iterdir()] == ["trace.png"]  # no temp file left
    with pytest.raises(ValueError, match=r"episode 2 is outside the batch of 2 episodes"):
        plot_trace(out.trace, tmp_path / "x.png", episode=2)


def test_cli_lists_write_policies(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["ls", "write-policies"]) == 0
    names = [line.split()[0] for line in capsys.readouterr().out.splitlines()]
    assert names == ["cached_uniform", "lru", "uniform", "usage"]
