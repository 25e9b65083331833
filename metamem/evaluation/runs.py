"""Evaluating trained runs: checkpoint lookup, ``key=value`` overrides and sweeps.

This is the engine of ``metamem eval``. A run directory (``config.yaml``,
``checkpoints/best.pt`` or ``last.pt``) or a checkpoint file is loaded with
:func:`metamem.runs.load_run` (evaluation never imports training); the dataset is the run's ``data:`` section with the
split chosen by ``eval.split`` (``train``/``val``/``test`` name the run's
``data.<x>_split``; anything else is a split name of the dataset). Overrides whose value is
a list sweep: every checkpoint is evaluated on every combination.
"""

from __future__ import annotations

import itertools
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch
import yaml

from metamem.data.base import ImageDataset
from metamem.device import resolve_device
from metamem.evaluation.scoring import SCORINGS, EvalResult, evaluate
from metamem.runs import dataset_for, find_checkpoint, load_run

__all__ = [
    "DEFAULT_EVAL",
    "OVERRIDE_KEYS",
    "EvalJob",
    "dataset_for",
    "find_checkpoint",
    "load_run",
    "parse_overrides",
    "resolve_device",
    "sweep",
]

#: evaluation settings used where a run's ``eval:`` section does not give them
DEFAULT_EVAL: dict[str, Any] = {
    "split": "test",
    "n_way": 5,
    "k_shot": 1,
    "n_query": 15,
    "episodes": 1000,
    "seed": 1234,
    "protocol": "both",
    "batch_size": 32,
    "within_group": False,
    "data_options": {},
}

#: what ``metamem eval`` accepts as ``key=value`` (lists sweep, except for ``device``)
OVERRIDE_KEYS = tuple(f"eval.{k}" for k in DEFAULT_EVAL) + ("device",)

_INT_KEYS = ("n_way", "k_shot", "n_query", "episodes", "seed", "batch_size")


def parse_overrides(items: Sequence[str]) -> dict[str, list[Any]]:
    """Parse ``key=value`` overrides; each value is YAML, a list sweeps.

    Returns:
        ``{key: [values...]}`` in the order given.

    Raises:
        ValueError: for a malformed item, an unknown key (listing the valid ones), an
            empty list, or a swept ``device``.
    """
    out: dict[str, list[Any]] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValueError(f"override {item!r} is not key=value (e.g. eval.n_way=[5,20])")
        if key not in OVERRIDE_KEYS:
            raise ValueError(f"unknown override key {key!r}; valid keys: {', '.join(OVERRIDE_KEYS)}")
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError as e:
            raise ValueError(f"override {item!r}: value is not valid YAML ({e})") from None
        values = value if isinstance(value, list) else [value]
        if not values:
            raise ValueError(f"override {item!r} sweeps an empty list; give at least one value")
        if key == "device" and len(values) > 1:
            raise ValueError(f"override {item!r}: device cannot be swept; give one device")
        for v in values:
            _check_value(key, v, item)
        out[key] = values
    return out


def _check_value(key: str, v: Any, item: str) -> None:
    name = key.removeprefix("eval.")
    if name in _INT_KEYS and (isinstance(v, bool) or not isinstance(v, int)):
        raise ValueError(f"override {item!r}: {key} must be an integer, got {v!r}")
    if name == "protocol" and v not in SCORINGS:
        raise ValueError(f"override {item!r}: {key} must be one of {', '.join(SCORINGS)}, got {v!r}")
    if name == "within_group" and not isinstance(v, bool):
        raise ValueError(f"override {item!r}: {key} must be true or false, got {v!r}")
    if name == "data_options" and not isinstance(v, dict):
        raise ValueError(
            f"override {item!r}: {key} must be a mapping such as {{rotations: false}}, got {v!r}"
        )
    if name in ("split", "device") and not isinstance(v, str):
        raise ValueError(f"override {item!r}: {key} must be a string, got {v!r}")


@dataclass
class EvalJob:
    """One evaluation of a sweep: a checkpoint and one combination of settings."""

    source: str
    settings: dict[str, Any]


def _combinations(config: dict[str, Any], overrides: dict[str, list[Any]]) -> Iterator[dict[str, Any]]:
    """Every combination of settings: the run's ``eval:`` section (a list there sweeps too,
    e.g. ``n_way: [5, 20]``), then the overrides, over :data:`DEFAULT_EVAL`."""
    axes = {k: [v] for k, v in DEFAULT_EVAL.items()}
    for k, v in (config.get("eval") or {}).items():
        if k in DEFAULT_EVAL:
            axes[k] = list(v) if isinstance(v, list) else [v]
    for k, v in overrides.items():
        if k.startswith("eval."):
            axes[k.removeprefix("eval.")] = v
    keys = list(axes)
    for combo in itertools.product(*(axes[k] for k in keys)):
        yield dict(zip(keys, combo))


def _display_name(path: str, config: dict[str, Any]) -> str:
    learner = (config.get("learner") or {}).get("name", "learner")
    p = Path(path)
    run = p.parent.parent.name if p.is_file() and p.parent.name == "checkpoints" else p.name
    if p.is_file() and p.parent.name != "checkpoints":
        run = p.stem
    return f"{learner} [{run}]"


def sweep(
    paths: Sequence[str | os.PathLike[str]],
    overrides: dict[str, list[Any]] | None = None,
    *,
    progress: bool = False,
    keep_trace: bool = False,
    loader: Callable[[str, torch.device], tuple[Any, dict[str, Any]]] | None = None,
) -> list[EvalResult]:
    """Evaluate every checkpoint on every combination of the overrides.

    Args:
        paths: run directories or checkpoint files.
        overrides: from :func:`parse_overrides`.
        progress: tqdm progress bars.
        keep_trace: keep a memory trace of episode 0 of each checkpoint's first evaluation.
        loader: ``(path, device) -> (learner, config)`` (default :func:`load_run`).

    Returns:
        One :class:`EvalResult` per checkpoint x combination, checkpoints in the order given.
    """
    overrides = overrides or {}
    loader = loader or load_run
    device = resolve_device(overrides.get("device", ["auto"])[0])
    # load and check everything first, so a bad combination fails before hours of scoring
    jobs = []
    for path in paths:
        src = str(path)
        find_checkpoint(src)
        learner, config = loader(src, device)
        name = _display_name(src, config)
        combos = list(_combinations(config, overrides))
        built = getattr(learner, "n_way", None)
        if isinstance(built, int) and getattr(learner, "episode_format", "set") == "sequence":
            bad = sorted({c["n_way"] for c in combos if c["n_way"] != built})
            if bad:
                raise ValueError(
                    f"{name} ({src}) was built for n_way={built} and cannot score "
                    f"n_way={bad} episodes; drop {bad} from eval.n_way or evaluate this run "
                    "on its own"
                )
        jobs.append((src, name, learner, config, combos))
    datasets: dict[str, ImageDataset] = {}
    results: list[EvalResult] = []
    for src, name, learner, config, combos in jobs:
        for i, s in enumerate(combos):
            dkey = json.dumps([config.get("data"), s["split"], s["data_options"]], sort_keys=True,
                              default=str)
            if dkey not in datasets:
                datasets[dkey] = dataset_for(config, s["split"], source=src,
                                             options=s["data_options"])
            results.append(
                evaluate(
                    learner,
                    datasets[dkey],
                    n_way=s["n_way"], k_shot=s["k_shot"], n_query=s["n_query"],
                    episodes=s["episodes"], seed=s["seed"], within_group=s["within_group"],
                    protocol=s["protocol"], batch_size=s["batch_size"],
                    device=device, progress=progress, name=name,
                    config=config, source=src, keep_trace=keep_trace and i == 0,
                    data_options=s["data_options"] or None,
                )
            )
    return results
