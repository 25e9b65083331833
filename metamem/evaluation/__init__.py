"""Evaluation: one fixed protocol of episodes, two scorings (set and sequence) for every
learner, reports, plots, sweeps over checkpoints, and scoring of user-provided episodes.

Example::

    from metamem.evaluation import evaluate
    res = evaluate(learner, ds, n_way=5, k_shot=1, n_query=15, episodes=1000, seed=1234)
    print(res.mean, res.ci95, res.per_presentation, res.fingerprint)
"""

from metamem.evaluation.compare import (
    OverRuns,
    PairedDifference,
    over_runs,
    paired_difference,
    paired_markdown,
)
from metamem.evaluation.metrics import mean_ci95, mean_t95, presentation_accuracy
from metamem.evaluation.protocol import Fingerprint, Protocol, ProtocolError
from metamem.evaluation.report import read_results, to_csv, to_markdown, write_results
from metamem.evaluation.scoring import EvalResult, Score, evaluate, score_sequence, score_set
from metamem.evaluation.sweeps import parse_sweep, sweep
from metamem.evaluation.user_episodes import (
    EpisodeInputError,
    Predictions,
    Preprocess,
    UserEpisode,
    episode_from_tensors,
    load_image_folders,
    predict_episode,
)

__all__ = [
    "EpisodeInputError",
    "EvalResult",
    "Fingerprint",
    "OverRuns",
    "PairedDifference",
    "Predictions",
    "Preprocess",
    "Protocol",
    "ProtocolError",
    "Score",
    "UserEpisode",
    "episode_from_tensors",
    "evaluate",
    "load_image_folders",
    "mean_ci95",
    "mean_t95",
    "over_runs",
    "paired_difference",
    "paired_markdown",
    "parse_sweep",
    "predict_episode",
    "presentation_accuracy",
    "read_results",
    "score_sequence",
    "score_set",
    "sweep",
    "to_csv",
    "to_markdown",
    "write_results",
]

