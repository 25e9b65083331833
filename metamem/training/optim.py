"""Deprecated location: the optimizer and scheduler registries live in :mod:`metamem.optim`
(below validation and training, so that ``metamem validate`` can check them without
importing the training loop)."""

from metamem.optim import OPTIMIZERS, SCHEDULERS, build_optimizer, build_scheduler, constant_lr

__all__ = ["OPTIMIZERS", "SCHEDULERS", "build_optimizer", "build_scheduler", "constant_lr"]
