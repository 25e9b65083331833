"""Embedding backbones registered in :data:`~metamem.learners.base.BACKBONES`.

A backbone maps images ``[*, C, H, W]`` to features ``[*, out_dim]`` and exposes ``out_dim``.

* ``conv4`` -- the standard few-shot "Conv-4-64" of Vinyals et al. (2016), used by
  Prototypical Networks and MAML: four blocks of [3x3 conv (``channels`` filters) ->
  BatchNorm -> ReLU -> 2x2 max-pool], flattened. 28x28 Omniglot gives 64-d features,
  84x84 mini-ImageNet gives 1600-d (64 x 5 x 5).
* ``conv4_stride`` -- the Conv-4 of MAML's Omniglot network (Finn et al. 2017, cbfinn/maml
  without ``--max_pool``): four blocks of [3x3 conv with stride 2 -> BatchNorm -> ReLU], then
  the mean over the remaining positions. 28x28 gives 64-d features (from 2x2 positions); it
  computes about a quarter of ``conv4``'s multiply-adds.
* ``resnet12`` -- the ResNet-12 of Oreshkin et al. (TADAM, 2018) / Lee et al. (MetaOptNet,
  2019): four residual blocks of three 3x3 conv-BN-LeakyReLU(0.1) layers with a 1x1 conv
  shortcut, each followed by a 2x2 max-pool, then global average pooling (640-d).

All take ``track_running_stats``: MAML builds its backbone with ``False`` so BatchNorm
always normalises with the statistics of the batch it sees (see :mod:`metamem.learners.maml`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from metamem.learners.base import BACKBONES

__all__ = [
    "BatchStatNorm2d",
    "WarmBatchNorm2d",
    "ConvBlock",
    "Conv4",
    "Conv4Stride",
    "ResNet12",
    "build_conv4",
    "build_conv4_stride",
    "build_resnet12",
    "build_trunk",
    "pooled_size",
]


def pooled_size(name: str, image_shape: Sequence[int], pools: int) -> tuple[int, int]:
    """Spatial size after ``pools`` 2x2 max-pools (floor), checking it stays >= 1.

    Args:
        name: backbone name used in the error message.
        image_shape: ``(C, H, W)``.
        pools: number of 2x2 max-pools.

    Returns:
        ``(H', W')`` after pooling.

    Raises:
        ValueError: if ``image_shape`` is not (C, H, W) or pooling reaches size 0.
    """
    if len(image_shape) != 3 or min(image_shape) < 1:
        raise ValueError(f"backbone {name!r}: image_shape must be (C, H, W) >= 1, got {tuple(image_shape)}")
    _, h, w = (int(v) for v in image_shape)
    need = 2**pools
    if h < need or w < need:
        raise ValueError(
            f"backbone {name!r} applies {pools} 2x2 max-pools and needs images of at least "
            f"{need}x{need}, got {h}x{w}; use a larger image_size or another backbone"
        )
    return h // need, w // need


class BatchStatNorm2d(nn.BatchNorm2d):
    """BatchNorm that always normalises with the current batch's statistics, in plain tensor ops.

    Same parameters (``weight``, ``bias``) and output as ``nn.BatchNorm2d(c,
    track_running_stats=False)``, but its second-order gradients are also right under
    :func:`torch.func.vmap`: the fused batch-norm kernel's batching rule gives wrong
    double-backward results there (torch 2.13; caught by ``tests/learners/test_maml.py``).
    """

    def __init__(self, num_features: int, eps: float = 1e-5) -> None:
        super().__init__(num_features, eps=eps, track_running_stats=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise ``[B*, C, H, W]`` over batch and space, then scale and shift per channel."""
        mean = x.mean(dim=(0, 2, 3), keepdim=True)
        var = x.var(dim=(0, 2, 3), unbiased=False, keepdim=True)
        z = (x - mean) * torch.rsqrt(var + self.eps)
        return z * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)


class WarmBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm whose running statistics start as the plain average of the first batches.

    ``nn.BatchNorm2d``'s running mean and variance start at 0 and 1 and move ``momentum``
    (0.1) of the way to each training batch's statistics, so after n batches a share
    ``0.9 ** n`` of that arbitrary start is left: 19 % after 16 steps. A model scored early
    in its training (eval mode normalises with the running statistics) is normalised with the
    wrong scale; that, not its learning, cost metamem's ProtoNet 3-12 points against
    easyfsl's in the first 16-32 training episodes (docs/benchmarks_training.md). Here the
    n-th batch enters with weight ``max(momentum, 1 / n)``: the running statistics are the
    average of the batches seen until ``1 / n`` falls to ``momentum`` (10 batches), and the
    usual moving average after. The trained weights are the same (running statistics do not
    enter training); after a few hundred steps the running statistics are the same too, to
    float precision.

    The count is read once from ``num_batches_tracked`` (a resumed run goes on where it
    stopped), then kept in Python. Parameters, buffers and state-dict keys are those of
    ``nn.BatchNorm2d``. Under ``torch.compile`` the warm-up is skipped (a changing momentum
    would recompile the graph): a compiled run keeps the plain moving average.
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1, warm_up: bool = True) -> None:
        super().__init__(num_features, eps=eps, momentum=momentum)
        self.base_momentum = momentum
        #: False: ``nn.BatchNorm2d``'s plain moving average from the start (an ablation)
        self.warm_up = warm_up
        self._seen: int | None = None  # training batches seen; None: read num_batches_tracked
        self._warm = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.warm_up and self._warm and self.training and not torch.compiler.is_compiling():
            if self._seen is None:
                tracked = self.num_batches_tracked  # a buffer: always kept, as track_running_stats=True
                self._seen = 0 if tracked is None else int(tracked)
            self._seen += 1
            self.momentum = max(self.base_momentum, 1.0 / self._seen)
            self._warm = 1.0 / self._seen > self.base_momentum
        return super().forward(x)

    def _load_from_state_dict(self, *args: Any, **kwargs: Any) -> None:
        super()._load_from_state_dict(*args, **kwargs)
        self._seen, self._warm = None, True  # the count is read again from the loaded buffers


def _norm(channels: int, track_running_stats: bool) -> nn.BatchNorm2d:
    return WarmBatchNorm2d(channels) if track_running_stats else BatchStatNorm2d(channels)


class ConvBlock(nn.Sequential):
    """3x3 conv -> BatchNorm -> ReLU -> 2x2 max-pool, computed as conv -> BatchNorm -> pool -> ReLU.

    ReLU is monotone, so it commutes with max-pooling: ``relu(maxpool(z)) == maxpool(relu(z))``
    exactly, values and gradients alike. Pooling first applies the ReLU (and its backward) to a
    quarter of the elements; on CPU that element-wise work costs as much as the convolutions.
    The children (``0`` conv, ``1`` norm, ``2`` ReLU, ``3`` pool) keep the layout and the
    state-dict keys of the plain ``nn.Sequential`` block.
    """

    def __init__(self, c_in: int, c_out: int, track_running_stats: bool) -> None:
        super().__init__(
            nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),  # bias is cancelled by BatchNorm
            _norm(c_out, track_running_stats),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[M, C_in, H, W] -> [M, C_out, H // 2, W // 2]``."""
        conv, norm, relu, pool = self
        return relu(pool(norm(conv(x))))


def _conv_block(c_in: int, c_out: int, track_running_stats: bool) -> nn.Sequential:
    return ConvBlock(c_in, c_out, track_running_stats)


class Conv4(nn.Module):
    """Conv-4: [3x3 conv -> BatchNorm -> ReLU -> 2x2 max-pool] x 4, then flatten.

    Args:
        image_shape: ``(C, H, W)``; H and W must be >= 16.
        channels: filters per block (64 in the papers).
        track_running_stats: keep BatchNorm running statistics for eval mode (``False``:
            always normalise with the current batch, with :class:`BatchStatNorm2d`).

    Attributes:
        out_dim: ``channels * (H // 16) * (W // 16)``.
    """

    def __init__(self, image_shape: Sequence[int], channels: int = 64, track_running_stats: bool = True) -> None:
        super().__init__()
        h, w = pooled_size("conv4", image_shape, 4)
        c = int(image_shape[0])
        self.blocks = nn.Sequential(
            *[_conv_block(c if i == 0 else channels, channels, track_running_stats) for i in range(4)]
        )
        self.out_dim = channels * h * w

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map ``[*, C, H, W]`` images to ``[*, out_dim]`` features."""
        lead = x.shape[:-3]
        z = self.blocks(x.reshape(-1, *x.shape[-3:]))
        return z.reshape(*lead, self.out_dim)


class Conv4Stride(nn.Module):
    """MAML's Omniglot Conv-4 (Finn et al. 2017): [3x3 conv, stride 2 -> BatchNorm -> ReLU] x 4,
    then the mean over the remaining positions.

    Each convolution pads by 1, so a side of H becomes ``ceil(H / 2)``: 28 -> 14 -> 7 -> 4 -> 2.
    The reference implementation (cbfinn/maml, TensorFlow ``SAME`` padding) gives the same
    sizes; it pads an even side at the bottom/right only where this pads both sides.

    Args:
        image_shape: ``(C, H, W)``; any H, W >= 1.
        channels: filters per block (64 in the paper).
        track_running_stats: as in :class:`Conv4`.

    Attributes:
        out_dim: ``channels``.
    """

    def __init__(self, image_shape: Sequence[int], channels: int = 64, track_running_stats: bool = True) -> None:
        super().__init__()
        if len(image_shape) != 3 or min(image_shape) < 1:
            raise ValueError(f"backbone 'conv4_stride': image_shape must be (C, H, W) >= 1, got {tuple(image_shape)}")
        c = int(image_shape[0])
        self.blocks = nn.Sequential(*[
            nn.Sequential(nn.Conv2d(c if i == 0 else channels, channels, 3, stride=2, padding=1, bias=False),
                          _norm(channels, track_running_stats), nn.ReLU())
            for i in range(4)
        ])
        self.out_dim = int(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map ``[*, C, H, W]`` images to ``[*, out_dim]`` features."""
        lead = x.shape[:-3]
        z = self.blocks(x.reshape(-1, *x.shape[-3:])).mean(dim=(-2, -1))
        return z.reshape(*lead, self.out_dim)


class _ResBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, track_running_stats: bool) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for i in range(3):
            layers += [
                nn.Conv2d(c_in if i == 0 else c_out, c_out, 3, padding=1, bias=False),
                _norm(c_out, track_running_stats),
            ]
            if i < 2:
                layers.append(nn.LeakyReLU(0.1))
        self.body = nn.Sequential(*layers)
        self.shortcut = nn.Sequential(
            nn.Conv2d(c_in, c_out, 1, bias=False),
            _norm(c_out, track_running_stats),
        )
        self.out = nn.Sequential(nn.LeakyReLU(0.1), nn.MaxPool2d(2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # LeakyReLU is monotone, so pooling first gives the same values and gradients on a
        # quarter of the elements (see ConvBlock)
        act, pool = self.out
        return act(pool(self.body(x) + self.shortcut(x)))


class ResNet12(nn.Module):
    """ResNet-12: four residual blocks (each followed by a 2x2 max-pool) and global average pooling.

    Args:
        image_shape: ``(C, H, W)``; H and W must be >= 16.
        channels: widths of the four blocks (64, 160, 320, 640 in MetaOptNet).
        track_running_stats: as in :class:`Conv4`.

    Attributes:
        out_dim: ``channels[-1]``.
    """

    def __init__(
        self,
        image_shape: Sequence[int],
        channels: Sequence[int] = (64, 160, 320, 640),
        track_running_stats: bool = True,
    ) -> None:
        super().__init__()
        pooled_size("resnet12", image_shape, 4)
        if len(channels) != 4:
            raise ValueError(f"backbone 'resnet12': channels needs 4 widths, got {list(channels)}")
        widths = [int(image_shape[0]), *map(int, channels)]
        self.blocks = nn.Sequential(
            *[_ResBlock(widths[i], widths[i + 1], track_running_stats) for i in range(4)]
        )
        self.out_dim = widths[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map ``[*, C, H, W]`` images to ``[*, out_dim]`` features."""
        lead = x.shape[:-3]
        z = self.blocks(x.reshape(-1, *x.shape[-3:])).mean(dim=(-2, -1))
        return z.reshape(*lead, self.out_dim)


@BACKBONES.register("conv4")
def build_conv4(
    *, image_shape: tuple[int, int, int], channels: int = 64, track_running_stats: bool = True
) -> Conv4:
    """Conv-4-64 (Vinyals et al. 2016): 64-d on 28x28, 1600-d on 84x84."""
    return Conv4(image_shape, channels=channels, track_running_stats=track_running_stats)


@BACKBONES.register("conv4_stride")
def build_conv4_stride(
    *, image_shape: tuple[int, int, int], channels: int = 64, track_running_stats: bool = True
) -> Conv4Stride:
    """MAML's Omniglot Conv-4 (Finn et al. 2017): stride-2 convolutions, mean-pooled, 64-d."""
    return Conv4Stride(image_shape, channels=channels, track_running_stats=track_running_stats)


@BACKBONES.register("resnet12")
def build_resnet12(
    *,
    image_shape: tuple[int, int, int],
    channels: tuple[int, int, int, int] = (64, 160, 320, 640),
    track_running_stats: bool = True,
) -> ResNet12:
    """ResNet-12 (Oreshkin et al. 2018; Lee et al. 2019): 640-d, global average pooled."""
    return ResNet12(image_shape, channels=channels, track_running_stats=track_running_stats)


def build_trunk(
    backbone: str,
    image_shape: tuple[int, int, int],
    channels: int | None,
    *,
    owner: str,
    track_running_stats: bool = True,
) -> nn.Module:
    """Build a BACKBONES trunk, passing ``channels`` (the conv4 width) when given.

    Args:
        backbone: a registered backbone name.
        image_shape: ``(C, H, W)``.
        channels: filters per ``conv4`` / ``conv4_stride`` block; None keeps the backbone's default.
        owner: the learner's name, for the error message.
        track_running_stats: False gives BatchNorm that always uses the batch's statistics (MAML).

    Raises:
        ValueError: if ``channels`` is given for a backbone other than ``conv4`` / ``conv4_stride``.
    """
    builder = BACKBONES.get(backbone)
    kwargs: dict[str, object] = {"image_shape": tuple(image_shape), "track_running_stats": track_running_stats}
    if channels is None:
        return builder(**kwargs)
    if backbone not in ("conv4", "conv4_stride"):
        raise ValueError(
            f"{owner}: backbone_channels={channels} applies to backbones 'conv4' and 'conv4_stride' only, not {backbone!r}; "
            "drop backbone_channels"
        )
    return builder(channels=int(channels), **kwargs)
