"""Run directories and checkpoints: atomic writes, safe loads, compatibility checks.

A run directory holds ``config.yaml`` (the resolved config), ``metrics.jsonl``,
``checkpoints/last.pt`` (written every ``train.checkpoint_every`` steps and at the end) and
``checkpoints/best.pt`` (best validation accuracy). A checkpoint is a plain dict readable
with ``torch.load(..., weights_only=True)``: the config as a plain dict, tensors for every
RNG state, the state dicts of model/optimizer/scheduler/scaler, the step and the metric
accumulators. Every write goes to a temporary file in the same folder, then ``os.replace``.
"""

from __future__ import annotations

import json
import os
import pickle
import tempfile
from pathlib import Path
from typing import Any, Callable

import torch
import yaml

__all__ = [
    "CheckpointError",
    "FORMAT",
    "atomic_write",
    "save_checkpoint",
    "load_checkpoint",
    "checkpoint_path",
    "config_differences",
    "check_compatible",
    "load_learner",
    "restore_global_rng",
    "read_metrics",
    "write_metrics",
]

#: the value of a checkpoint's ``"format"`` key.
FORMAT = "metamem-checkpoint"
VERSION = 1
#: config keys that fix the learner's architecture (a checkpoint only loads into the same).
ARCH_KEYS = ("learner", "episodes.n_way", "data.name", "data.options")
#: config keys a resumed run may change without breaking an exact resume.
RESUMABLE_KEYS = (
    "device", "eval", "train.steps", "train.val_every", "train.val_episodes",
    "train.log_every", "train.checkpoint_every", "data.test_split",
)


class CheckpointError(ValueError):
    """Not a metamem checkpoint, or one that does not fit the config or learner."""


def atomic_write(path: str | Path, write: Callable[[str], None]) -> None:
    """Call ``write(tmp_path)`` for a temp file next to ``path``, then ``os.replace`` it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_text(path: str | Path, text: str) -> None:
    """Atomically replace ``path`` with ``text``."""
    atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> None:
    """Write ``payload`` (plus the format marker) atomically with ``torch.save``."""
    payload = {"format": FORMAT, "version": VERSION, **payload}
    atomic_write(path, lambda tmp: torch.save(payload, tmp))


def checkpoint_path(path: str | Path, which: str = "best") -> Path:
    """A checkpoint file for ``path``: the file itself, or a run directory's ``best.pt``
    (``which="best"``, falling back to ``last.pt``) or ``last.pt`` (``which="last"``).

    Raises:
        FileNotFoundError: when there is no such file or run directory.
    """
    path = Path(path)
    if path.is_file():
        return path
    if not path.is_dir():
        raise FileNotFoundError(f"checkpoint or run directory {str(path)!r} not found")
    names = ["best.pt", "last.pt"] if which == "best" else ["last.pt"]
    for name in names:
        if (path / "checkpoints" / name).is_file():
            return path / "checkpoints" / name
    raise FileNotFoundError(
        f"run directory {str(path)!r} has no checkpoints/{names[-1]}; is it a metamem run directory?"
    )


def load_checkpoint(path: str | Path, which: str = "best") -> dict[str, Any]:
    """Load a checkpoint with ``torch.load(weights_only=True)`` onto the CPU.

    Raises:
        CheckpointError: when the file is not a metamem checkpoint.
    """
    file = checkpoint_path(path, which)
    try:
        ckpt = torch.load(file, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, AttributeError) as e:
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
        a, b: plain config dicts.
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


def check_compatible(ckpt: dict[str, Any], config: dict[str, Any], *, resume: bool = False) -> None:
    """Raise if the checkpoint was written for another learner/config.

    Args:
        ckpt: a loaded checkpoint.
        config: the plain config dict of the run that wants it.
        resume: compare every key except :data:`RESUMABLE_KEYS` (an exact resume needs the
            same data, episodes, learner and optimizer); otherwise only :data:`ARCH_KEYS`.

    Raises:
        CheckpointError: listing each differing key as ``checkpoint value vs config value``.
    """
    diffs = config_differences(
        ckpt["config"], config,
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
    from metamem.learners import build_learner

    ckpt = load_checkpoint(path, which)
    cfg = ckpt["config"]
    kwargs = {k: v for k, v in cfg["learner"].items() if k != "name"}
    model = build_learner(
        cfg["learner"]["name"], n_way=cfg["episodes"]["n_way"],
        image_shape=tuple(ckpt["image_shape"]), **kwargs,
    )
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as e:
        raise CheckpointError(
            f"{ckpt['path']}: weights do not fit learner {cfg['learner']['name']!r}: "
            f"{str(e).splitlines()[0]}"
        ) from None
    return model.to(device).eval(), cfg


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


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """The records of a ``metrics.jsonl`` file (empty list when missing)."""
    path = Path(path)
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def write_metrics(path: str | Path, records: list[dict[str, Any]]) -> None:
    """Atomically replace ``metrics.jsonl`` with ``records``."""
    write_text(path, "".join(json.dumps(r) + "\n" for r in records))


def save_config(path: str | Path, config: dict[str, Any]) -> None:
    """Atomically write the resolved config as YAML."""
    write_text(path, yaml.safe_dump(config, sort_keys=False))
