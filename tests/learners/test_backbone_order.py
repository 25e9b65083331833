"""The backbones pool before their activation: same values and gradients as the plain order."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from metamem.learners.backbones import Conv4, ConvBlock, ResNet12


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
    out = model(x)
    out.sum().backward()
    got = [x.grad.clone()] + [p.grad.clone() for p in model.parameters()]
    x.grad = None
    model.zero_grad()
    ref = _naive_conv4(model, x)
    ref.sum().backward()
    want = [x.grad] + [p.grad for p in model.parameters()]
    torch.testing.assert_close(out, ref)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w)


def test_conv_block_keeps_the_sequential_layout() -> None:
    block = ConvBlock(2, 4, track_running_stats=True)
    assert [type(m) for m in block] == [nn.Conv2d, nn.BatchNorm2d, nn.ReLU, nn.MaxPool2d]
    assert set(block.state_dict()) >= {"0.weight", "1.weight", "1.bias", "1.running_mean"}


def test_resnet12_pool_first_matches_the_plain_order() -> None:
    torch.manual_seed(1)
    model = ResNet12((3, 16, 16), channels=(4, 5, 6, 7)).double().train()
    block = model.blocks[1]
    x = torch.randn(2, 4, 8, 8, dtype=torch.double)
    act, pool = block.out
    z = block.body(x) + block.shortcut(x)
    torch.testing.assert_close(block(x), pool(act(z)))
