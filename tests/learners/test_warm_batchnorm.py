"""WarmBatchNorm2d: running statistics that average the first batches, then move by momentum."""

from __future__ import annotations

import torch
from torch import nn

from metamem.learners.backbones import Conv4, Conv4Stride, WarmBatchNorm2d


def _batches(n: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    # odd shapes, and a scale and shift that change from batch to batch
    return [torch.randn(5, 3, 4, 7, generator=g, dtype=torch.double) * (1 + i) + i for i in range(n)]


def _reference(batches: list[torch.Tensor], momentum: float = 0.1) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The running mean/variance after each batch, written out: weight max(momentum, 1/n)."""
    mean, var, out = torch.zeros(3, dtype=torch.double), torch.ones(3, dtype=torch.double), []
    for n, x in enumerate(batches, start=1):
        w = max(momentum, 1.0 / n)
        mean = (1 - w) * mean + w * x.mean(dim=(0, 2, 3))
        var = (1 - w) * var + w * x.var(dim=(0, 2, 3), unbiased=True)
        out.append((mean, var))
    return out


def test_running_statistics_average_the_first_batches_then_move_by_momentum() -> None:
    batches = _batches(14)
    bn = WarmBatchNorm2d(3).double().train()
    plain = nn.BatchNorm2d(3).double().train()
    for x, (mean, var) in zip(batches, _reference(batches), strict=True):
        torch.testing.assert_close(bn(x), plain(x))  # training outputs: the batch's own statistics
        torch.testing.assert_close(bn.running_mean, mean)
        torch.testing.assert_close(bn.running_var, var)
    ten = torch.stack([x.mean(dim=(0, 2, 3)) for x in batches[:10]]).mean(0)
    assert torch.allclose(_reference(batches)[9][0], ten)  # after 10 batches: their plain average
    assert bn.momentum == 0.1 and int(bn.num_batches_tracked) == 14
    # the plain module keeps 0.9 ** 14 = 23 % of its start (0, 1) in its running statistics
    assert not torch.allclose(plain.running_mean, bn.running_mean, rtol=0.05)


def test_without_warm_up_it_keeps_batchnorms_moving_average() -> None:
    batches = _batches(5)
    cold, plain = WarmBatchNorm2d(3, warm_up=False).double().train(), nn.BatchNorm2d(3).double().train()
    for x in batches:
        cold(x)
        plain(x)
    torch.testing.assert_close(cold.running_mean, plain.running_mean)
    torch.testing.assert_close(cold.running_var, plain.running_var)
    assert not torch.allclose(cold.running_mean, _reference(batches)[-1][0])


def test_eval_mode_leaves_the_statistics_and_the_count_alone() -> None:
    bn = WarmBatchNorm2d(3).double()
    x = _batches(1)[0]
    bn.eval()(x)
    assert int(bn.num_batches_tracked) == 0 and torch.equal(bn.running_mean, torch.zeros(3, dtype=torch.double))
    bn.train()(x)
    torch.testing.assert_close(bn.running_mean, x.mean(dim=(0, 2, 3)))  # the first batch, all of it


def test_a_module_loaded_mid_warm_up_goes_on_where_it_stopped() -> None:
    batches = _batches(13)
    whole = WarmBatchNorm2d(3).double().train()
    first = WarmBatchNorm2d(3).double().train()
    for x in batches[:4]:
        whole(x)
        first(x)
    resumed = WarmBatchNorm2d(3).double().train()
    resumed(batches[0])  # a module that has seen something else before the checkpoint is loaded
    resumed.load_state_dict(first.state_dict())
    for x in batches[4:]:
        whole(x)
        resumed(x)
    want = _reference(batches)[-1]
    torch.testing.assert_close(resumed.running_mean, want[0])
    torch.testing.assert_close(resumed.running_var, want[1])
    torch.testing.assert_close(whole.running_mean, want[0])


def test_same_state_dict_as_batchnorm_and_the_backbones_use_it() -> None:
    assert WarmBatchNorm2d(4).state_dict().keys() == nn.BatchNorm2d(4).state_dict().keys()
    nn.BatchNorm2d(4).load_state_dict(WarmBatchNorm2d(4).state_dict())
    for net in (Conv4((1, 28, 28)), Conv4Stride((1, 28, 28))):
        norms = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
        assert len(norms) == 4 and all(type(m) is WarmBatchNorm2d for m in norms)
    no_stats = Conv4((1, 28, 28), track_running_stats=False)
    assert not any(type(m) is WarmBatchNorm2d for m in no_stats.modules())


def test_conv4_stride_names_a_bad_image_shape() -> None:
    import pytest

    with pytest.raises(ValueError, match=r"backbone 'conv4_stride': image_shape must be \(C, H, W\) >= 1, got \(28, 28\)"):
        Conv4Stride((28, 28))
