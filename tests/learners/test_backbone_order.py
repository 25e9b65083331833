"""The backbones pool before their activation: same values and gradients as the plain order."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from metamem.learners.backbones import Conv4, ConvBlock, ResNet12, WarmBatchNorm2d


def _naive_conv4(model: Conv4, x: torch.Tensor) -> torch.Tensor:
    """The textbook order conv -> norm -> ReLU -> pool, block by block, on the same modules."""
    z = x
    for block in model.blocks:
        conv, norm, relu, pool = block
        z = pool(relu(norm(conv(z))))
    return z.flatten(1)


@pytest.mark.parametrize("shape", [(3, 1, 17, 19), (5, 3, 21, 16)])
@pytest.mark.parametrize("train", [True, False])
def test_conv4_matches_the_plain_order(shape: tuple[int, ...], train: bool) -> None:
    torch.manual_seed(0)
    model = Conv4(shape[1:], channels=7).double().train(train)
    x = torch.randn(*shape, dtype=torch.double, requires_grad=True)
    assert_same_values_and_gradients(model, x, model, lambda x: _naive_conv4(model, x))


def assert_same_values_and_gradients(model: nn.Module, x: torch.Tensor, fn, ref_fn) -> torch.Tensor:
    """``fn(x)`` and ``ref_fn(x)`` agree, and so do their gradients for ``x`` and ``model``'s parameters."""
    grads = []
    outs = []
    for f in (fn, ref_fn):
        x.grad = None
        model.zero_grad()
        out = f(x)
        out.sum().backward()
        outs.append(out)
        grads.append([x.grad.clone()] + [p.grad.clone() for p in model.parameters()])
    torch.testing.assert_close(outs[0], outs[1])
    for g, w in zip(*grads, strict=True):
        torch.testing.assert_close(g, w)
    return outs[0]


def test_conv_block_keeps_the_sequential_layout() -> None:
    block = ConvBlock(2, 4, track_running_stats=True)
    assert [type(m) for m in block] == [nn.Conv2d, WarmBatchNorm2d, nn.ReLU, nn.MaxPool2d]
    assert set(block.state_dict()) >= {"0.weight", "1.weight", "1.bias", "1.running_mean"}


def test_resnet12_pool_first_matches_the_plain_order() -> None:
    torch.manual_seed(1)
    model = ResNet12((3, 16, 16), channels=(4, 5, 6, 7)).double().train()
    block = model.blocks[1]
    x = torch.randn(2, 4, 8, 8, dtype=torch.double)
    act, pool = block.out
    z = block.body(x) + block.shortcut(x)
    torch.testing.assert_close(block(x), pool(act(z)))


def _naive_conv4_stride(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """MAML's Omniglot net written out: per block a stride-2 convolution (pad 1), batch-statistics
    normalisation with the block's scale and shift, ReLU; then the mean over positions."""
    z = x
    for block in model.blocks:
        conv, norm = block[0], block[1]
        z = torch.nn.functional.conv2d(z, conv.weight, None, stride=2, padding=1)
        mean = z.mean(dim=(0, 2, 3), keepdim=True)
        var = ((z - mean) ** 2).mean(dim=(0, 2, 3), keepdim=True)
        z = (z - mean) / torch.sqrt(var + norm.eps) * norm.weight.view(1, -1, 1, 1) + norm.bias.view(1, -1, 1, 1)
        z = torch.relu(z)
    return z.mean(dim=(2, 3))


@pytest.mark.parametrize("shape", [(3, 1, 28, 28), (4, 2, 13, 11)])
def test_conv4_stride_matches_the_written_out_network(shape: tuple[int, ...]) -> None:
    from metamem.learners.backbones import Conv4Stride, build_trunk

    torch.manual_seed(0)
    model = Conv4Stride(shape[1:], channels=5, track_running_stats=False).double()
    x = torch.randn(*shape, dtype=torch.double, requires_grad=True)
    # a leading dimension passes through
    out = assert_same_values_and_gradients(model, x, lambda x: model(x[None])[0],
                                           lambda x: _naive_conv4_stride(model, x))
    assert out.shape == (shape[0], 5) and model.out_dim == 5
    # 28 -> 14 -> 7 -> 4 -> 2 positions, as with TensorFlow's SAME padding
    sizes, z = [], torch.zeros(1, 1, 28, 28)
    for block in Conv4Stride((1, 28, 28), channels=2).blocks:
        z = block[0](z)
        sizes.append(z.shape[-1])
    assert sizes == [14, 7, 4, 2]
    assert build_trunk("conv4_stride", (1, 28, 28), 32, owner="maml").out_dim == 32
