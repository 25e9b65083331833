"""Learners and backbones. Each learner is one module that registers itself on import."""

from metamem.learners import (  # noqa: F401  # noqa: F401  (sequence learners: LSTM baseline, MANN)  # noqa: F401  (Memory Matching Networks, Meta Networks)
    backbones,  # noqa: F401  (registers conv4, resnet12)
    linear_probe,
    lstm,
    maml,
    mann,
    matching,
    memory_matching,
    metanet,
    multi_memory,  # noqa: F401  (two-view learners: DMNC, DCMAN)
    protonet,
)
from metamem.learners.base import BACKBONES, LEARNERS, Learner, build_learner
from metamem.learners.lstm import SequenceLearner

__all__ = ["BACKBONES", "LEARNERS", "Learner", "SequenceLearner", "build_learner"]
