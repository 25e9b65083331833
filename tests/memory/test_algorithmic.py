"""Layouts of the NTM paper's algorithmic tasks, checked element by element."""

from __future__ import annotations

import pytest
import torch

from metamem.memory.algorithmic import bit_errors, ngram_task, priority_sort_task, repeat_copy_task


def test_repeat_copy_layout() -> None:
    b = repeat_copy_task(3, 4, 3, 5, max_repeats=6, seed=0)
    T = 4 + 1 + 4 * 3 + 1
    assert b.inputs.shape == (3, T, 7) and b.targets.shape == (3, T, 6) and b.write_steps == 5
    for e in range(3):
        items = b.inputs[e, :4, :5]
        assert float(b.inputs[e, 4, 5]) == 1.0 and float(b.inputs[e, 4, 6]) == 0.5
        assert b.inputs[e, 5:].abs().sum() == 0
        for r in range(3):
            assert torch.equal(b.targets[e, 5 + 4 * r : 9 + 4 * r, :5], items)
        assert float(b.targets[e, T - 1, 5]) == 1.0 and b.targets[e, : T - 1, 5].sum() == 0
        assert b.mask[e].tolist() == [False] * 5 + [True] * (T - 5)
    with pytest.raises(ValueError, match="max_repeats"):
        repeat_copy_task(1, 2, 11, 3, seed=0)


def test_priority_sort_layout() -> None:
    b = priority_sort_task(4, 7, 5, 3, seed=1)
    for e in range(4):
        prio = b.inputs[e, :7, 3].tolist()
        order = sorted(range(7), key=lambda i: -prio[i])[:5]
        for k, i in enumerate(order):
            assert torch.equal(b.targets[e, 8 + k], b.inputs[e, i, :3])
        assert all(-1 <= p <= 1 for p in prio) and float(b.inputs[e, 7, 4]) == 1.0
    assert b.mask[:, 8:].all() and not b.mask[:, :8].any()
    with pytest.raises(ValueError, match="out_items"):
        priority_sort_task(1, 3, 4, 2, seed=0)


def test_ngram_targets_are_next_bits_and_follow_a_table() -> None:
    b = ngram_task(2, 400, n=3, seed=2)
    assert torch.equal(b.inputs[:, 1:, 0], b.targets[:, :-1, 0])
    assert not b.mask[:, 0].any() and b.mask[:, 1:].all()
    # each episode's next bit depends on its 2-bit context only: frequencies differ by context
    seq = torch.cat((b.inputs[0, :, 0], b.targets[0, -1:, 0]))
    ctx = [(int(seq[t - 2]) * 2 + int(seq[t - 1])) for t in range(2, len(seq))]
    assert len(set(ctx)) > 1
    with pytest.raises(ValueError, match="length > n"):
        ngram_task(1, 3, n=3, seed=0)


def test_bit_errors_counts_masked_wrong_bits() -> None:
    b = repeat_copy_task(2, 3, 2, 4, seed=3)
    logits = torch.randn(b.targets.shape, generator=torch.Generator().manual_seed(0))
    ref = torch.zeros(2)
    for e in range(2):
        for t in range(b.steps):
            if b.mask[e, t]:
                for k in range(b.targets.shape[-1]):
                    ref[e] += float((logits[e, t, k] > 0) != (b.targets[e, t, k] > 0.5))
    torch.testing.assert_close(bit_errors(logits, b), ref)
    assert bit_errors(b.targets * 20 - 10, b).sum() == 0
