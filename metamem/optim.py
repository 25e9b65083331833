"""Optimizers and learning-rate schedulers by name (``train.optimizer`` / ``train.scheduler``).

Each registered name maps to a torch class; the config section's remaining keys are that
class's keyword arguments (``{name: adam, lr: 0.001, weight_decay: 0.0}``), so
``metamem validate`` can check them with ``inspect.signature(cls).bind``. Schedulers step
once per training step; ``cosine`` defaults ``T_max`` to ``train.steps``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from metamem.registry import Registry

__all__ = ["OPTIMIZERS", "SCHEDULERS", "build_optimizer", "build_scheduler"]

#: optimizer name -> torch optimizer class (called as ``cls(params, **kwargs)``).
OPTIMIZERS: Registry[Any] = Registry("optimizer")
OPTIMIZERS.register("adam")(torch.optim.Adam)
OPTIMIZERS.register("adamw")(torch.optim.AdamW)
OPTIMIZERS.register("sgd")(torch.optim.SGD)
OPTIMIZERS.register("rmsprop")(torch.optim.RMSprop)

#: scheduler name -> class (called as ``cls(optimizer, **kwargs)``); "none" keeps lr fixed.
SCHEDULERS: Registry[Any] = Registry("scheduler")
SCHEDULERS.register("step")(torch.optim.lr_scheduler.StepLR)
SCHEDULERS.register("cosine")(torch.optim.lr_scheduler.CosineAnnealingLR)
SCHEDULERS.register("exponential")(torch.optim.lr_scheduler.ExponentialLR)


@SCHEDULERS.register("none")
def constant_lr(optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LRScheduler:
    """Constant learning rate."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)


def build_optimizer(params: Iterable[torch.nn.Parameter], name: str, **kwargs: Any) -> torch.optim.Optimizer:
    """``OPTIMIZERS[name](params, **kwargs)``."""
    return OPTIMIZERS.get(name)(params, **kwargs)


def build_scheduler(
    optimizer: torch.optim.Optimizer, name: str, *, total_steps: int, **kwargs: Any
) -> torch.optim.lr_scheduler.LRScheduler:
    """``SCHEDULERS[name](optimizer, **kwargs)`` (``cosine`` gets ``T_max=total_steps`` by default)."""
    if name == "cosine":
        kwargs.setdefault("T_max", total_steps)
    return SCHEDULERS.get(name)(optimizer, **kwargs)
