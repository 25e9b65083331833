"""Training: the loop behind ``metamem train``, checkpoints, optimizers, DDP plumbing.

Public entry point: :func:`train` (a resolved :class:`~metamem.config.ExperimentCfg` -> a
run directory). A run directory is loaded back with :func:`metamem.load_run`.
"""

from metamem.runs import CheckpointError, load_checkpoint
from metamem.training.loop import TrainingError, TrainResult, train

__all__ = ["CheckpointError", "TrainResult", "TrainingError", "load_checkpoint", "train"]
