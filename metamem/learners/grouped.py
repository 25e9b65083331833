"""Run E copies of a network, each with its own weights and images, in one call per layer.

MAML (Finn et al. 2017) adapts one copy of the network per episode, so after the first
inner step the B episodes of a meta-batch run B different networks. One episode at a time
pays the per-call cost of every small operator (and of its autograd node) B times; this
module runs the copies side by side instead, layer by layer:

* images ``[E, M, C, H, W]`` (M images per copy) become ``[M, E*C, H, W]``: copy ``e`` owns
  channels ``e*C .. (e+1)*C - 1``; the batch dimension holds one copy's M images;
* a convolution is one grouped convolution, weights ``[E*C_out, C_in, kh, kw]`` with
  ``groups=E`` (times the layer's own groups);
* BatchNorm with batch statistics (:class:`~metamem.learners.backbones.BatchStatNorm2d`) is
  plain batch-statistics BatchNorm over the E*C channels (each copy's channels normalised
  over that copy's M images and space), with the copies' affine parameters stacked
  (:func:`episode_batch_norm`);
* ReLU, max-pool and the other per-channel, parameter-free layers run once on all of it;
* after flattening, features are ``[E, M, F]`` and a linear layer is one batched matmul.

The activations are kept channels-last: the CPU's NCHW max-pool is about 10x slower than
its channels-last one on these many small planes (``[M, E*C, 28, 28]``), and grouped
convolutions cost the same in either layout.

Each copy computes what ``functional_call(net, params_e, (x_e,))`` computes, up to float
rounding (BatchNorm's statistics come from another formula of the same function, and the
convolutions may accumulate in another order). The copies do not interact, so the gradient of the sum of their losses with respect to copy ``e``'s
weights is copy ``e``'s own.

Only networks built from the layers above are supported (:func:`supports_grouped`), e.g.
the ``conv4`` backbone (:class:`~metamem.learners.backbones.Conv4`) followed by a linear
head; callers fall back to one copy at a time otherwise.

Shapes: E copies (episodes), M images per copy, C/H/W image, F features.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeGuard, TypeVar

import torch
import torch.nn.functional as F
from torch import nn

from metamem.learners.backbones import BatchStatNorm2d, Conv4, Conv4Stride, ConvBlock

__all__ = ["episode_batch_norm", "grouped_forward", "supports_grouped"]

# parameter-free layers that act on each element (any layout)
_ELEMENTWISE = (nn.ReLU, nn.LeakyReLU, nn.Tanh, nn.Sigmoid, nn.ELU, nn.GELU, nn.Identity)
# parameter-free layers that act on each channel of an image batch separately
_PER_CHANNEL = (nn.MaxPool2d, nn.AvgPool2d)

_IMAGES, _FEATURES = "images", "features"
_M = TypeVar("_M", bound=nn.Module)


def _is(module: nn.Module, cls: type[_M]) -> TypeGuard[_M]:
    """``module`` is exactly a ``cls`` (a subclass may compute something else in ``forward``)."""
    return type(module) is cls


def _layout_after(module: nn.Module, layout: str) -> str | None:
    """The layout after ``module`` given the layout before it; None: not supported."""
    if _is(module, nn.Sequential):
        for child in module.children():
            nxt = _layout_after(child, layout)
            if nxt is None:
                return None
            layout = nxt
        return layout
    if _is(module, Conv4):
        inner = _layout_after(module.blocks, layout) if layout == _IMAGES else None
        return _FEATURES if inner == _IMAGES else None
    if _is(module, Conv4Stride):
        inner = _layout_after(module.blocks, layout) if layout == _IMAGES else None
        return _FEATURES if inner == _IMAGES else None
    if _is(module, ConvBlock):
        ok = all(_layout_after(m, _IMAGES) == _IMAGES for m in module.children())
        return _IMAGES if ok and layout == _IMAGES else None
    if _is(module, nn.Conv2d):
        ok = module.padding_mode == "zeros" and not isinstance(module.padding, str)
        return _IMAGES if ok and layout == _IMAGES else None
    if _is(module, BatchStatNorm2d):
        return _IMAGES if layout == _IMAGES and module.affine else None
    if type(module) in _PER_CHANNEL:
        return _IMAGES if layout == _IMAGES and not getattr(module, "return_indices", False) else None
    if type(module) in _ELEMENTWISE:
        return layout
    if _is(module, nn.Flatten):
        return _FEATURES if layout == _IMAGES and module.start_dim == 1 and module.end_dim == -1 else None
    if _is(module, nn.Linear):
        return _FEATURES if layout == _FEATURES else None
    return None


def supports_grouped(net: nn.Module) -> bool:
    """Whether :func:`grouped_forward` can run ``net``: images ``[*, C, H, W]`` in, features
    ``[*, F]`` out, built only from ``nn.Sequential``, :class:`Conv4` / :class:`ConvBlock` /
    :class:`~metamem.learners.backbones.Conv4Stride`,
    ``nn.Conv2d`` (zero padding), :class:`BatchStatNorm2d`, ``nn.Linear``, ``nn.Flatten``,
    max/average pooling and parameter-free activations."""
    return _layout_after(net, _IMAGES) == _FEATURES and not list(net.buffers())


def grouped_forward(net: nn.Module, params: Mapping[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """``E`` copies of ``net``, copy ``e`` with weights ``params[name][e]``, each on its own images.

    Args:
        net: a network that :func:`supports_grouped` (only its structure is used).
        params: every parameter of ``net`` by name, each stacked ``[E, *shape]``.
        x: images ``[E, M, C, H, W]``.

    Returns:
        ``[E, M, F]``: row ``e`` is ``functional_call(net, {n: p[e]}, (x[e],))``.
    """
    e, m = x.shape[:2]
    z = x.transpose(0, 1).reshape(m, e * x.shape[2], *x.shape[3:])  # [M, E*C, H, W]
    z = z.contiguous(memory_format=torch.channels_last)
    out = _run(net, "", params, z, e)
    if out.dim() != 3:
        raise ValueError(f"grouped_forward: the network must end with [*, F] features, got {tuple(out.shape)}")
    return out


def _run(module: nn.Module, prefix: str, params: Mapping[str, torch.Tensor], z: torch.Tensor,
         e: int) -> torch.Tensor:
    """One module on ``z``: images ``[M, E*C, H, W]`` or features ``[E, M, F]``."""
    if _is(module, nn.Sequential):
        for name, child in module.named_children():
            z = _run(child, f"{prefix}{name}.", params, z, e)
        return z
    if _is(module, Conv4):
        z = _run(module.blocks, f"{prefix}blocks.", params, z, e)
        return _flatten(z, e)
    if _is(module, Conv4Stride):  # the mean over positions is per channel, so per copy
        z = _run(module.blocks, f"{prefix}blocks.", params, z, e)
        return _flatten(z.mean(dim=(2, 3), keepdim=True), e)
    if _is(module, ConvBlock):  # same order as ConvBlock.forward: conv -> norm -> pool -> activation
        conv, norm, act, pool = module.children()
        z = _run(conv, f"{prefix}0.", params, z, e)
        z = _run(norm, f"{prefix}1.", params, z, e)
        return act(pool(z))
    if _is(module, nn.Conv2d):
        w = params[f"{prefix}weight"]
        b = params.get(f"{prefix}bias") if module.bias is not None else None
        padding = module.padding
        assert not isinstance(padding, str)  # supports_grouped refuses padding="same"/"valid"
        out = F.conv2d(z, w.reshape(-1, *w.shape[2:]), None if b is None else b.reshape(-1),
                       module.stride, padding, module.dilation, module.groups * e)
        # one input channel (the first layer of one copy) leaves the layout ambiguous and the
        # convolution answers in NCHW; keep channels-last for the layers after it
        return out.contiguous(memory_format=torch.channels_last)
    if _is(module, BatchStatNorm2d):
        return episode_batch_norm(z, params[f"{prefix}weight"].reshape(-1), params[f"{prefix}bias"].reshape(-1),
                                  module.eps)
    if _is(module, nn.Flatten):
        return _flatten(z, e)
    if _is(module, nn.Linear):  # [E, M, F] @ [E, F, N] (+ [E, 1, N])
        wt = params[f"{prefix}weight"].transpose(1, 2)
        bias = params.get(f"{prefix}bias") if module.bias is not None else None
        return torch.bmm(z, wt) if bias is None else torch.baddbmm(bias.unsqueeze(1), z, wt)
    if type(module) in _PER_CHANNEL or type(module) in _ELEMENTWISE:
        out = module(z)
        assert isinstance(out, torch.Tensor)
        return out
    raise TypeError(f"grouped_forward: unsupported module {type(module).__name__} at {prefix or 'the top'}")


def _flatten(z: torch.Tensor, e: int) -> torch.Tensor:
    """Images ``[M, E*C, h, w]`` -> features ``[E, M, C*h*w]`` (each image flattened C-major)."""
    m = z.shape[0]
    return z.reshape(m, e, -1).transpose(0, 1)


def episode_batch_norm(z: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float) -> torch.Tensor:
    """:class:`~metamem.learners.backbones.BatchStatNorm2d` on ``z`` ``[M, C', H, W]``: each of
    the C' channels normalised with its own mean and biased variance over the M images and
    space, then scaled by ``weight`` ``[C']`` and shifted by ``bias`` ``[C']``.

    The same function as ``BatchStatNorm2d`` (``mean``, ``var``), written with sums times
    ``1/n`` and a two-pass variance: on the CPU ``var`` over dims (0, 2, 3) runs about ten
    times slower than a sum, and ``mean``'s backward materialises a contiguous (NCHW)
    gradient that, mixed with the channels-last activations, sends the element-wise ops of
    the (second-order) backward down slow strided paths.
    """
    n = z.shape[0] * z.shape[2] * z.shape[3]
    d = z + z.sum(dim=(0, 2, 3), keepdim=True) * (-1.0 / n)
    var = (d * d).sum(dim=(0, 2, 3), keepdim=True) * (1.0 / n)
    return d * (torch.rsqrt(var + eps) * weight.view(1, -1, 1, 1)) + bias.view(1, -1, 1, 1)
