"""Learners and backbones. Each learner is one module that registers itself on import."""

from metamem.learners.base import BACKBONES, LEARNERS, Learner, build_learner
from metamem.learners import backbones  # noqa: F401  (registers conv4, resnet12)
from metamem.learners import linear_probe, maml, matching, protonet  # noqa: F401
from metamem.learners import lstm, mann  # noqa: F401  (sequence learners: LSTM baseline, MANN)
from metamem.learners.lstm import SequenceLearner
from metamem.learners import memory_matching, metanet  # noqa: F401  (Memory Matching Networks, Meta Networks)
from metamem.learners import multi_memory  # noqa: F401  (two-view learners: DMNC, DCMAN)

__all__ = ["BACKBONES", "LEARNERS", "Learner", "SequenceLearner", "build_learner"]
