"""Training: the loop behind ``metamem train``, checkpoints, optimizers, DDP plumbing.

Public entry points: :func:`train` (a resolved :class:`~metamem.config.ExperimentCfg` -> a
run directory) and :func:`load_learner` (a run directory or checkpoint -> the trained
learner in eval mode and its resolved config dict).
"""

from metamem.runs import CheckpointError, load_checkpoint, load_learner
from metamem.training.loop import TrainingError, TrainResult, train

__all__ = ["CheckpointError", "TrainResult", "TrainingError", "load_checkpoint", "load_learner", "train"]
