"""Run directories and checkpoints: the format, the one place that finds and loads them.

This module sits below evaluation and training (``data -> episodes -> memory -> learners ->
runs -> evaluation -> training -> cli``): training writes run directories with it,
``metamem eval`` and :func:`metamem.evaluation.sweep` read them with it, and neither imports
the other.

A run directory holds ``config.yaml`` (the resolved config), ``metrics.jsonl``,
``checkpoints/last.pt`` (written every ``train.checkpoint_every`` steps and at the end) and
``checkpoints/best.pt`` (best validation accuracy). A checkpoint is a plain dict readable
with ``torch.load(..., weights_only=True)``: the config as a plain dict, tensors for every
RNG state, the state dicts of model/optimizer/scheduler/scaler, the step and the metric
accumulators. Every write goes through :func:`metamem.files.atomic_write`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
import yaml

from metamem.data import ImageDataset, load_dataset
from metamem.files import atomic_write, write_text
from metamem.learners import LEARNERS, build_learner
from metamem.registry import renames_of

__all__ = [
    "CheckpointError",
    "FORMAT",
    "WEIGHTS_NOT_INCLUDED",
    "save_checkpoint",
    "load_checkpoint",
    "checkpoint_path",
    "find_checkpoint",
    "load_run",
    "dataset_for",
    "config_differences",
    "check_compatible",
    "load_learner",
    "restore_global_rng",
    "read_metrics",
    "write_metrics",
    "save_config",
]

#: the value of a checkpoint's ``"format"`` key.
FORMAT = "metamem-checkpoint"
VERSION = 1
#: config keys that fix the learner's architecture (a checkpoint only loads into the same).
ARCH_KEYS = ("learner", "episodes.n_way", "data.name", "data.options")
#: a run directory's checkpoints (under ``checkpoints/``), in the order they are preferred.
CHECKPOINT_NAMES = ("best.pt", "last.pt")
#: config keys a resumed run may change without breaking an exact resume.
RESUMABLE_KEYS = (
    "device", "eval", "train.steps", "train.val_every", "train.val_episodes",
    "train.log_every", "train.checkpoint_every", "data.test_split",
)


class CheckpointError(ValueError):
    """Not a metamem checkpoint, or one that does not fit the config or learner."""


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> None:
    """Write ``payload`` (plus the format marker) atomically with ``torch.save``."""
    payload = {"format": FORMAT, "version": VERSION, **payload}
    atomic_write(path, lambda f: torch.save(payload, f))


#: the file an exported run holds in ``checkpoints/`` instead of weights too large to share
#: (:func:`metamem.training.export.export_run` with ``weights=False``); it says why.
WEIGHTS_NOT_INCLUDED = "WEIGHTS_NOT_INCLUDED.txt"


def checkpoint_path(path: str | os.PathLike[str], which: str = "best") -> Path:
    """The checkpoint file of ``path``: the file itself, or a run directory's
    ``checkpoints/best.pt`` (``which="best"``, falling back to ``checkpoints/last.pt``) or
    ``checkpoints/last.pt`` (``which="last"``).

    This is the only place that knows where a run keeps its checkpoints.

    Raises:
        FileNotFoundError: for a missing path, or a run directory without such a checkpoint
            (the message names the files looked for, or quotes the reason a shared run
            gives for leaving its weights out).
    """
    if which not in ("best", "last"):
        raise ValueError(f"which={which!r}: expected 'best' or 'last'")
    path = Path(path)
    if path.is_file():
        return path
    if not path.is_dir():
        raise FileNotFoundError(f"checkpoint or run directory {str(path)!r} not found (it does not exist)")
    names = CHECKPOINT_NAMES if which == "best" else ("last.pt",)
    for name in names:
        if (path / "checkpoints" / name).is_file():
            return path / "checkpoints" / name
    marker = path / "checkpoints" / WEIGHTS_NOT_INCLUDED
    if marker.is_file():
        reason = " ".join(marker.read_text(encoding="utf-8").split())
        raise FileNotFoundError(f"run directory {path} was shared without its weights: {reason}")
    looked = "checkpoints/last.pt" if which == "last" else (
        f"checkpoint (looked for {path / 'checkpoints' / 'best.pt'} and last.pt)")
    raise FileNotFoundError(
        f"run directory {path} has no {looked}; train it first with `metamem train` or pass a "
        "checkpoint .pt file"
    )


#: the name :func:`checkpoint_path` had in ``metamem.evaluation.runs``.
find_checkpoint = checkpoint_path


def load_checkpoint(path: str | Path, which: str = "best") -> dict[str, Any]:
    """Load a checkpoint with ``torch.load(weights_only=True)`` onto the CPU.

    Raises:
        CheckpointError: when the file is not a metamem checkpoint.
    """
    file = checkpoint_path(path, which)
    try:
        ckpt = torch.load(file, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as e:  # UnpicklingError, RuntimeError (zip), EOFError, MemoryError, ...
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(
            f"{file} is not a metamem checkpoint (torch.load with weights_only=True failed: "
            f"{first[:200]})"
        ) from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(
            f"{file} is not a metamem checkpoint (no format={FORMAT!r} marker); pass a file "
            "written by `metamem train` or its run directory"
        )
    if ckpt.get("version") != VERSION:
        raise CheckpointError(f"{file}: checkpoint version {ckpt.get('version')!r} is not supported (need {VERSION})")
    ckpt["path"] = str(file)
    return ckpt


def _get(d: dict[str, Any], dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(d, dict) or part not in d:
            return None
        d = d[part]
    return d


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix: d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def config_differences(a: dict[str, Any], b: dict[str, Any], keys: tuple[str, ...] | None = None,
                       ignore: tuple[str, ...] = ()) -> list[str]:
    """Dotted keys whose values differ, as ``"key: A vs B"`` lines.

    Args:
        a: a plain config dict.
        b: the plain config dict compared with ``a``.
        keys: only compare under these dotted prefixes (None: everything).
        ignore: skip keys under these dotted prefixes.
    """
    fa, fb = _flatten(a), _flatten(b)
    out = []
    for key in sorted(set(fa) | set(fb)):
        under = lambda prefixes: any(key == p or key.startswith(p + ".") for p in prefixes)  # noqa: E731
        if (keys is not None and not under(keys)) or under(ignore):
            continue
        if fa.get(key) != fb.get(key):
            out.append(f"{key}: {fa.get(key)!r} vs {fb.get(key)!r}")
    return out


def current_names(config: dict[str, Any]) -> dict[str, Any]:
    """``config`` with its learner keys under their current names (a run written before a
    learner keyword was renamed, ``memory_slots`` -> ``slots``, compares equal to its new
    spelling); silent: building the learner warns about old names."""
    learner = config.get("learner")
    if not isinstance(learner, dict) or learner.get("name") not in LEARNERS:
        return config
    renames = renames_of(LEARNERS.get(learner["name"]))
    if not renames.keys() & learner.keys():
        return config
    return {**config, "learner": {renames.get(k, k): v for k, v in learner.items()}}


def with_added_defaults(config: dict[str, Any]) -> dict[str, Any]:
    """``config`` (a run's saved config) with the section keys metamem added after it was
    written (``train.channels_last``, ``train.amp_dtype``, ...) set to their defaults, which
    are the behaviour of the version that wrote it; learner keywords are left alone."""
    from metamem.config import ExperimentCfg, config_to_dict

    defaults = config_to_dict(ExperimentCfg())
    out = dict(config)
    for section in ("data", "episodes", "train", "eval"):
        saved = out.get(section)
        if isinstance(saved, dict) and defaults[section].keys() - saved.keys():
            out[section] = {**{k: v for k, v in defaults[section].items() if k not in saved}, **saved}
    return out


def check_compatible(ckpt: dict[str, Any], config: dict[str, Any], *, resume: bool = False) -> None:
    """Raise if the checkpoint was written for another learner/config.

    Args:
        ckpt: a loaded checkpoint. Keys its config lacks because metamem added them later
            compare as their defaults (:func:`with_added_defaults`).
        config: the plain config dict of the run that wants it.
        resume: compare every key except :data:`RESUMABLE_KEYS` (an exact resume needs the
            same data, episodes, learner and optimizer); otherwise only :data:`ARCH_KEYS`.

    Raises:
        CheckpointError: listing each differing key as ``checkpoint value vs config value``.
    """
    diffs = config_differences(
        current_names(with_added_defaults(ckpt["config"])), current_names(config),
        keys=None if resume else ARCH_KEYS,
        ignore=RESUMABLE_KEYS if resume else (),
    )
    if diffs:
        what = "learner" if any(d.startswith("learner.name") for d in diffs) else "config"
        raise CheckpointError(
            f"checkpoint {ckpt.get('path', '?')} was written for another {what} "
            f"(checkpoint vs current): {'; '.join(diffs)}"
            + ("; only device, eval.*, train.steps and the train.*_every keys may change on resume"
               if resume else "")
        )


def load_learner(path: str | Path, *, device: str | torch.device = "cpu", which: str = "best") -> tuple[torch.nn.Module, dict[str, Any]]:
    """Rebuild a trained learner from a run directory or checkpoint file.

    Args:
        path: a run directory (``checkpoints/best.pt``, else ``last.pt``) or a ``.pt`` file.
        device: where to put the learner.
        which: ``"best"`` or ``"last"`` for a run directory.

    Returns:
        The learner in eval mode and the resolved config dict it was trained with.

    Raises:
        CheckpointError: for a file that is not a metamem checkpoint or whose weights do not
            fit the learner its config describes.
    """
    ckpt = load_checkpoint(path, which)
    return learner_from_checkpoint(ckpt).to(device).eval(), ckpt["config"]


def learner_from_checkpoint(ckpt: dict[str, Any]) -> torch.nn.Module:
    """Build the learner a loaded checkpoint describes and load its weights (on the CPU).

    Raises:
        CheckpointError: for weights that do not fit the learner of the checkpoint's config.
    """
    cfg = ckpt["config"]
    kwargs = {k: v for k, v in cfg["learner"].items() if k != "name"}
    model = build_learner(
        cfg["learner"]["name"], n_way=cfg["episodes"]["n_way"],
        image_shape=tuple(ckpt["image_shape"]), **kwargs,
    )
    load_weights(model, ckpt, cfg["learner"]["name"])
    return model


def load_weights(model: torch.nn.Module, ckpt: dict[str, Any], learner: str) -> None:
    """Load a loaded checkpoint's weights into ``model``, a ``learner`` (its registered
    name, for the message); strict: every tensor must fit.

    Raises:
        CheckpointError: naming the file, the learner and the first mismatches
            (missing/unexpected keys, size mismatches), on one line.
    """
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as e:
        lines = [line.strip() for line in str(e).strip().splitlines() if line.strip()]
        detail = "; ".join(lines[1:3]) or (lines[0] if lines else type(e).__name__)
        raise CheckpointError(
            f"{ckpt.get('path', '?')}: weights do not fit learner {learner!r}: {detail[:300]}"
        ) from None


def load_run(path: str | os.PathLike[str], device: torch.device | str = "cpu") -> tuple[torch.nn.Module, dict[str, Any]]:
    """A run directory (its best checkpoint, else the last) or checkpoint file -> ``(learner,
    config dict)``; the learner is in eval mode on ``device`` (see :func:`load_learner`)."""
    return load_learner(path, device=device)


def dataset_for(
    config: dict[str, Any], split: str, *, source: str = "the run",
    options: dict[str, Any] | None = None,
) -> ImageDataset:
    """The split ``split`` of a run's ``data:`` section.

    ``train``/``val``/``test`` map to ``data.train_split``/``val_split``/``test_split``;
    anything else is a split name of the dataset. ``options`` (``eval.data_options``) are
    merged over ``data.options``.

    Raises:
        ValueError: for a config without a ``data:`` section or without the named split.
    """
    data = config.get("data")
    if not isinstance(data, dict) or "name" not in data:
        raise ValueError(f"config of {source} has no data: section with a name; cannot pick a dataset")
    real = data.get(f"{split}_split", split) if split in ("train", "val", "test") else split
    if real is None:
        raise ValueError(f"config of {source} has no data.{split}_split; set eval.split to a split name")
    return load_dataset(data["name"], split=real, **{**(data.get("options") or {}), **(options or {})})


def restore_global_rng(ckpt: dict[str, Any]) -> None:
    """Restore the global torch RNG states saved in a checkpoint.

    Only the CLI entry calls this (library code never touches global RNGs); the learners of
    metamem draw no global random numbers while training, but third-party ones may.
    """
    rng = ckpt.get("rng", {})
    if "torch_cpu" in rng:
        torch.set_rng_state(rng["torch_cpu"])
    if rng.get("torch_cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(list(rng["torch_cuda"]))


def read_metrics(path: str | Path, *, drop_partial_tail: bool = False) -> list[dict[str, Any]]:
    """The records of a ``metrics.jsonl`` file (empty list when missing).

    Args:
        path: the file.
        drop_partial_tail: skip a last line that is cut short (no closing newline and not
            valid JSON): what a process killed while appending leaves behind. Resume uses
            this; such a line always lies past the last checkpoint, which is written after
            its step's metrics line.

    Raises:
        CheckpointError: naming the file and line of a record that is not a JSON object
            with an integer ``step``.
    """
    path = Path(path)
    if not path.is_file():
        return []
    try:
        text = path.read_bytes().decode("utf-8", errors="replace")
    except OSError as e:
        raise CheckpointError(f"cannot read {path}: {e.strerror or e}") from None
    lines = text.split("\n")
    out: list[dict[str, Any]] = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        partial_tail = i == len(lines) - 1  # no newline after it: the write was cut short
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            if partial_tail and drop_partial_tail:
                continue
            what = "cut short (the process was killed while writing it)" if partial_tail else "not valid JSON"
            raise CheckpointError(
                f"{path}:{i + 1}: line is {what} ({e.msg}); delete that line to continue"
            ) from None
        if not isinstance(rec, dict) or not isinstance(rec.get("step"), int):
            raise CheckpointError(
                f"{path}:{i + 1}: expected a JSON object with an integer 'step', got {line[:80]!r}; "
                "delete that line to continue"
            )
        out.append(rec)
    return out


def write_metrics(path: str | Path, records: list[dict[str, Any]]) -> None:
    """Atomically replace ``metrics.jsonl`` with ``records``."""
    write_text(path, "".join(json.dumps(r) + "\n" for r in records))


def save_config(path: str | Path, config: dict[str, Any]) -> None:
    """Atomically write the resolved config as YAML."""
    write_text(path, yaml.safe_dump(config, sort_keys=False))
