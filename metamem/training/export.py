"""Exporting a run directory for sharing: config, metrics, eval files and final weights only.

:func:`export_run` turns a training run directory into a small, machine-independent copy
that anyone can re-score with ``metamem eval DEST eval.seed=...`` once the data root holds
the dataset (``metamem prepare``): the resolved ``config.yaml``, ``metrics.jsonl``,
``eval.json`` and one checkpoint ``checkpoints/last.pt`` that keeps the weights, the config,
the image shape and the step, without optimizer, scheduler, sampler or RNG state. Keys that
name folders of the machine it was trained on (``data.options.root``, ``cache_dir``,
``splits_dir``) are dropped (the data root then comes from ``METAMEM_DATA`` or the default);
any other absolute path left in the config is an error, as is a copy above the size limit.
The copy is written to a temporary folder next to ``dest`` and renamed into place.
"""

from __future__ import annotations

import copy
import os
import shutil
import tempfile
from pathlib import Path, PureWindowsPath
from typing import Any

import torch
import yaml

from metamem.evaluation.report import results_json_text
from metamem.results_check import read_checked_results
from metamem.runs import (
    WEIGHTS_NOT_INCLUDED,
    CheckpointError,
    load_checkpoint,
    read_metrics,
    save_checkpoint,
    write_metrics,
)

__all__ = ["export_run", "ExportError", "MACHINE_KEYS", "DEFAULT_MAX_BYTES"]

#: ``data.options`` keys that name folders of the training machine (dropped on export).
MACHINE_KEYS = ("root", "cache_dir", "splits_dir")
#: size limit of an exported run (the project's limit for committed run directories).
DEFAULT_MAX_BYTES = 5 * 1024 * 1024


class ExportError(ValueError):
    """A run that cannot be exported as is (machine path left in the config, too large...)."""


def _is_machine_path(value: str) -> bool:
    return value.startswith(("/", "~", "\\\\")) or PureWindowsPath(value).drive != ""


def _machine_paths(node: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose string value is an absolute or home-relative path."""
    if isinstance(node, dict):
        return [k for key, v in node.items() for k in _machine_paths(v, f"{prefix}{key}.")]
    if isinstance(node, (list, tuple)):
        return [k for i, v in enumerate(node) for k in _machine_paths(v, f"{prefix}{i}.")]
    return [prefix.rstrip(".")] if isinstance(node, str) and _is_machine_path(node) else []


def stopped_at(config: dict[str, Any], step: int) -> dict[str, Any]:
    """``config`` of a run whose training ended at ``step``, under its ``train.steps``
    (stopped early, e.g. a queued run given a lower target on resume): ``train.steps`` is
    ``step``, so its re-training command stops there too, and a cosine schedule that took
    its length from ``train.steps`` keeps it (``T_max``), so the re-training is the same.
    A config that trained to its ``train.steps`` is returned unchanged."""
    train = config.get("train")
    if not isinstance(train, dict) or not isinstance(train.get("steps"), int) or step >= train["steps"]:
        return config
    new_train = {**train, "steps": step}
    scheduler = train.get("scheduler")
    if isinstance(scheduler, dict) and scheduler.get("name") == "cosine" and "T_max" not in scheduler:
        new_train["scheduler"] = {**scheduler, "T_max": train["steps"]}
    return {**config, "train": new_train}


def portable_config(config: dict[str, Any], *, where: str = "config") -> dict[str, Any]:
    """``config`` without the machine keys of ``data.options``, and with an absolute
    ``train.init_from`` inside the working directory made relative to it (a run continued
    from a committed run names that run as ``results/...``, re-trainable from a checkout).

    Raises:
        ExportError: naming the first other key that still holds an absolute path.
    """
    out = copy.deepcopy(config)
    options = (out.get("data") or {}).get("options") or {}
    for key in MACHINE_KEYS:
        options.pop(key, None)
    train = out.get("train") or {}
    source = train.get("init_from")
    if isinstance(source, str) and _is_machine_path(source):
        try:
            train["init_from"] = Path(source).expanduser().resolve().relative_to(Path.cwd().resolve()).as_posix()
        except ValueError:
            pass  # outside the working directory: refused below
    bad = _machine_paths(out)
    if bad:
        raise ExportError(
            f"{where}: key {bad[0]} holds a path of this machine; a shared run must not name "
            "one (set it through an environment variable or drop it, then export again)"
        )
    return out


def _shown(dest: Path) -> str:
    """How ``dest`` is recorded as a result's source: as given when relative, else relative to
    the working directory when inside it, else its name (never a path of this machine)."""
    if not dest.is_absolute():
        return dest.as_posix()
    try:
        return dest.resolve().relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return dest.name


def _cast_weights(state: dict[str, Any], dtype: torch.dtype | None) -> dict[str, Any]:
    """``state`` with its floating tensors in ``dtype`` (all of it unchanged for None)."""
    if dtype is None:
        return state
    return {k: v.to(dtype) if isinstance(v, torch.Tensor) and v.is_floating_point() else v
            for k, v in state.items()}


def export_run(
    run_dir: str | os.PathLike[str],
    dest: str | os.PathLike[str],
    *,
    which: str = "last",
    max_bytes: int = DEFAULT_MAX_BYTES,
    overwrite: bool = False,
    weights: bool = True,
    weights_dtype: torch.dtype | None = None,
) -> Path:
    """Write the shareable copy of ``run_dir`` to ``dest`` (see the module docstring).

    Args:
        run_dir: a training run directory (``config.yaml``, ``metrics.jsonl``,
            ``checkpoints/``, optionally ``eval.json``).
        dest: the new run directory (e.g. ``results/omniglot_paper/protonet``); recorded as
            the ``source`` of the copied ``eval.json`` entries (as given when relative, else
            relative to the working directory, else its name: never an absolute path).
        which: ``"last"`` (final weights, default) or ``"best"`` (best validation accuracy).
        max_bytes: refuse a copy larger than this.
        overwrite: replace an existing ``dest``.
        weights: False leaves the weights out (a network too large to share, e.g. a
            ResNet-12): ``checkpoints/`` then holds only a ``WEIGHTS_NOT_INCLUDED.txt`` that
            gives their size and how to re-create them, and ``metamem eval`` on the copy
            quotes it. The config, metrics and eval files are exported as always.
        weights_dtype: store the floating weights in this dtype (``torch.float16`` halves
            the copy; loading casts them back to the learner's float32 parameters, so the
            copy scores as the rounded weights); integer buffers are kept as they are.

    Returns:
        ``dest`` as a :class:`~pathlib.Path`.

    Raises:
        FileNotFoundError: for a missing run directory or checkpoint.
        CheckpointError: for a file that is not a metamem checkpoint.
        ExportError: for an existing ``dest`` (without ``overwrite``), a machine path in the
            config, or a copy above ``max_bytes`` (naming the largest file).
    """
    run, out = Path(run_dir), Path(dest)
    if not run.is_dir():
        raise FileNotFoundError(f"run directory {run} does not exist")
    if out.exists() and not overwrite:
        raise ExportError(f"{out} already exists; pass overwrite=True (--overwrite) to replace it")
    ckpt = load_checkpoint(run, which)
    if "model" not in ckpt or "config" not in ckpt:
        raise CheckpointError(f"{ckpt['path']}: no model weights or config to export")
    config = portable_config(ckpt["config"], where=f"{ckpt['path']} config")
    if which == "last":
        config = stopped_at(config, int(ckpt["step"]))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        (tmp / "checkpoints").mkdir()
        payload = {
            "config": config, "learner": ckpt["learner"], "image_shape": ckpt["image_shape"],
            "step": ckpt["step"], "best_val": ckpt.get("best_val"),
            "model": _cast_weights(ckpt["model"], weights_dtype),
            "exported": {"which": which, "step": ckpt["step"],
                         **({"weights_dtype": str(weights_dtype).removeprefix("torch.")} if weights_dtype else {})},
        }
        save_checkpoint(tmp / "checkpoints" / "last.pt", payload)
        if not weights:
            size = (tmp / "checkpoints" / "last.pt").stat().st_size
            (tmp / "checkpoints" / "last.pt").unlink()
            (tmp / "checkpoints" / WEIGHTS_NOT_INCLUDED).write_text(
                f"the final weights (step {ckpt['step']}, {size / 2**20:.1f} MiB) are not included, "
                "to keep the repository small; re-create them with `metamem train` on this run's "
                "config.yaml (same seed and steps), then score that run.\n",
                encoding="utf-8",
            )
        (tmp / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
        # lines logged after the last checkpoint (a run stopped between checkpoints) go; the
        # best weights keep the curve after them, which shows what validation chose against
        last_step = ckpt["step"] if which == "last" else load_checkpoint(run, "last")["step"]
        write_metrics(tmp / "metrics.jsonl",
                      [r for r in read_metrics(run / "metrics.jsonl") if r["step"] <= last_step])
        # the final evaluation scored the final weights: it belongs to the copy only when the
        # copy holds them as they were (score best or rounded weights with `metamem eval`)
        if (run / "eval.json").is_file() and ckpt["step"] == last_step and weights_dtype is None:
            results = read_checked_results(run / "eval.json")  # an edited file is not shared
            for r in results:
                r["source"] = _shown(out)
                if isinstance(r.get("config"), dict):
                    r["config"] = portable_config(r["config"], where=f"{run / 'eval.json'}")
            (tmp / "eval.json").write_text(results_json_text(results), encoding="utf-8")
        files = [p for p in tmp.rglob("*") if p.is_file()]
        for p in [tmp, *tmp.rglob("*")]:  # shareable: not the 0600/0700 of temporary files
            p.chmod(0o755 if p.is_dir() else 0o644)
        total = sum(p.stat().st_size for p in files)
        if total > max_bytes:
            big = max(files, key=lambda p: p.stat().st_size)
            raise ExportError(
                f"export of {run} is {total / 2**20:.2f} MiB, above the limit of "
                f"{max_bytes / 2**20:.2f} MiB (largest: {big.relative_to(tmp)}, "
                f"{big.stat().st_size / 2**20:.2f} MiB)"
            )
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out

