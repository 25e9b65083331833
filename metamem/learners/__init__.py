"""Learners and backbones. Each learner is one module that registers itself on import."""

from metamem.learners.base import BACKBONES, LEARNERS, Learner, SequenceLearner, build_learner

__all__ = ["BACKBONES", "LEARNERS", "Learner", "SequenceLearner", "build_learner"]
