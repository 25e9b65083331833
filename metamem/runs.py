"""Run directories and checkpoints: the format, the one place that finds and loads them.

This module sits below evaluation and training (``data -> episodes -> memory -> learners ->
runs -> evaluation -> training -> cli``): training writes run directories with it, and
:func:`metamem.load_run` (evaluation) reads them with it; neither imports the other.

A run directory holds ``config.yaml`` (the resolved config), ``metrics.jsonl``,
``checkpoints/last.pt`` (written every ``train.checkpoint_every`` steps and at the end) and
``checkpoints/best.pt`` (best validation accuracy). A checkpoint is a plain dict readable
with ``torch.load(..., weights_only=True)``: the config as a plain dict, tensors for every
RNG state, the state dicts of model/optimizer/scheduler/scaler, the step and the metric
accumulators. Every write goes through :func:`metamem.files.atomic_write`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import torch
import yaml

from metamem.config import ExperimentCfg, config_to_dict
from metamem.data import ImageDataset, load_dataset
from metamem.files import atomic_write, write_text
from metamem.learners import LEARNERS, build_learner
from metamem.learners.base import execution_options, resolved_options
from metamem.registry import renames_of

__all__ = [
    "CheckpointError",
    "FORMAT",
    "WEIGHTS_NOT_INCLUDED",
    "WEIGHTS_ENTRY",
    "fetch_weights",
    "save_checkpoint",
    "load_checkpoint",
    "checkpoint_path",
    "dataset_for",
    "config_differences",
    "check_compatible",
    "learner_from_checkpoint",
    "half_precision",
    "restore_global_rng",
    "read_metrics",
    "recorded_evaluations",
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
#: the file of a run directory's ``checkpoints/`` that says where its weights are kept when
#: they are not in the folder: ``url:`` (an http(s) or file URL, or a path relative to the
#: run directory) and ``sha256:`` (the file's sha256, checked before it is used).
WEIGHTS_ENTRY = "weights.yaml"

_SHA256 = re.compile(r"[0-9a-fA-F]{64}")


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def fetch_weights(source: str | os.PathLike[str], sha256: str | None = None, *,
                  base: str | os.PathLike[str] | None = None, progress: bool = False) -> Path:
    """A local checkpoint file for weights kept elsewhere, checked against ``sha256``.

    Args:
        source: an ``http(s)://`` URL (downloaded once into ``$METAMEM_CACHE/weights/<sha256>/``,
            default ``~/.cache/metamem/weights/``: to a temporary file, checked, then renamed,
            so a failed or damaged download never leaves a file that is used), a
            ``file://`` URL, a checkpoint file, or a folder: a run directory, or a folder
            holding ``last.pt`` (or ``best.pt``).
        sha256: the file's sha256 (64 hex digits); required for an http(s) URL, checked for a
            local file when given.
        base: the folder a relative path is relative to (a run directory for its
            ``weights.yaml``; default: the working directory).
        progress: a download progress bar.

    Returns:
        The checkpoint file (verified when ``sha256`` is given).

    Raises:
        CheckpointError: a malformed or missing ``sha256`` for a URL, a missing file or a
            folder without a checkpoint, a local file whose sha256 differs (one line each).
        metamem.data.download.DownloadError: an unreachable URL, an HTTP error, an HTML page
            instead of the file, a truncated or corrupt body, a sha256 mismatch.
    """
    from metamem.data.download import download
    from metamem.data.paths import cache_root

    src = str(source)
    if sha256 is not None and not _SHA256.fullmatch(str(sha256)):
        raise CheckpointError(f"sha256 {sha256!r} of weights {src} is not 64 hex digits; give the "
                              "file's sha256 (`sha256sum FILE`)")
    if src.startswith(("http://", "https://")):
        if sha256 is None:
            raise CheckpointError(f"weights URL {src} needs its sha256 (--sha256 HEX, or sha256: in "
                                  f"{WEIGHTS_ENTRY}), so that a changed or damaged file is refused")
        name = Path(urllib.parse.urlparse(src).path).name or "weights.pt"
        dest = cache_root() / "weights" / sha256.lower() / name
        if not (dest.is_file() and _file_sha256(dest) == sha256.lower()):
            download(src, dest, sha256=sha256, expect_zip=True, progress=progress,
                     mirror_hint="download the file yourself and pass its path")
        return dest
    if src.startswith("file://"):
        src = urllib.request.url2pathname(urllib.parse.urlparse(src).path)
    path = Path(src).expanduser()
    if not path.is_absolute() and base is not None:
        path = Path(base) / path
    if path.is_dir():
        if (path / "checkpoints").is_dir():
            path = checkpoint_path(path, "last")
        else:
            found = [path / n for n in ("last.pt", "best.pt") if (path / n).is_file()]
            if not found:
                raise CheckpointError(f"weights folder {path} holds no last.pt or best.pt (nor a "
                                      "run directory's checkpoints/); pass the checkpoint file")
            path = found[0]
    elif not path.is_file():
        raise CheckpointError(f"weights {path} not found (no such file or folder)")
    if sha256 is not None and _file_sha256(path) != sha256.lower():
        raise CheckpointError(f"sha256 mismatch for weights {path}: expected {sha256.lower()}, got "
                              f"{_file_sha256(path)}; the file is not the one the sha256 names")
    return path


def _hosted(path: Path) -> Path | None:
    """The checkpoint a run directory's ``checkpoints/weights.yaml`` points at (fetched and
    checked), or None without one."""
    entry = path / "checkpoints" / WEIGHTS_ENTRY
    if not entry.is_file():
        return None
    try:
        doc = yaml.safe_load(entry.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise CheckpointError(f"{entry}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("url"), str) or not isinstance(doc.get("sha256"), str):
        raise CheckpointError(f"{entry}: expected a mapping with url: (URL or path) and sha256: (64 hex "
                              f"digits), got {doc!r:.80}")
    return fetch_weights(doc["url"], doc["sha256"], base=path)


def checkpoint_path(path: str | os.PathLike[str], which: str = "best") -> Path:
    """The checkpoint file of ``path``: the file itself, or a run directory's
    ``checkpoints/best.pt`` (``which="best"``, falling back to ``checkpoints/last.pt``) or
    ``checkpoints/last.pt`` (``which="last"``), else the weights its
    ``checkpoints/weights.yaml`` points at (fetched and checked by :func:`fetch_weights`).

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
    hosted = _hosted(path)
    if hosted is not None:
        return hosted
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


def load_checkpoint(path: str | os.PathLike[str], which: str = "best", *, weights: str | os.PathLike[str] | None = None,
                    sha256: str | None = None) -> dict[str, Any]:
    """Load a checkpoint with ``torch.load(weights_only=True)`` onto the CPU.

    Args:
        path: a checkpoint file or a run directory.
        which: ``"best"`` or ``"last"`` for a run directory.
        weights: take the weights from here instead (a URL, file or folder, see
            :func:`fetch_weights`); for a run directory they must fit its ``config.yaml``.
        sha256: the sha256 of ``weights`` (required for an http(s) URL).

    Raises:
        CheckpointError: when the file is not a metamem checkpoint, or ``weights`` were
            written for another learner or data than the run directory's config.
    """
    if weights is not None:
        ckpt = _read_checkpoint(fetch_weights(weights, sha256))
        config_file = Path(path) / "config.yaml"
        if config_file.is_file():
            check_compatible(ckpt, yaml.safe_load(config_file.read_text(encoding="utf-8")))
        return ckpt
    return _read_checkpoint(checkpoint_path(path, which))


def _read_checkpoint(file: Path) -> dict[str, Any]:
    try:
        ckpt = torch.load(file, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as e:  # UnpicklingError, RuntimeError (zip), EOFError, MemoryError, ...
        raise CheckpointError(
            f"{file} is not a metamem checkpoint (torch.load with weights_only=True failed: "
            f"{_load_failure(e)})"
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


def _load_failure(e: BaseException) -> str:
    """Why ``torch.load(weights_only=True)`` failed, in a few words, without torch's advice to
    load the file with ``weights_only=False`` or to allowlist its globals: that would run
    whatever code the file holds."""
    import re

    text = " ".join(str(e).split())
    found = re.search(r"Unsupported global: GLOBAL (\S+)", text)
    if found:
        return (f"it holds a Python object ({found.group(1)}), not only tensors and plain "
                "values; metamem never loads code from a checkpoint")
    if "weights_only" in text or "safe_globals" in text:
        found = re.search(r"WeightsUnpickler error: (.*?)(?: Please| Check the documentation|$)", text)
        return found.group(1)[:200] if found else "it holds something other than tensors and plain values"
    return (text or type(e).__name__)[:200]


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
        if (keys is not None and not _under(key, keys)) or _under(key, ignore):
            continue
        if fa.get(key) != fb.get(key):
            out.append(f"{key}: {fa.get(key)!r} vs {fb.get(key)!r}")
    return out


def _under(key: str, prefixes: tuple[str, ...]) -> bool:
    """Whether the dotted ``key`` is one of ``prefixes`` or lies below one."""
    return any(key == p or key.startswith(p + ".") for p in prefixes)


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


def resolved_learner(config: dict[str, Any]) -> dict[str, Any]:
    """``config`` with its learner section as metamem builds it: keys under their current
    names (:func:`current_names`) and every scalar option it leaves out set to the builder's
    default (:func:`~metamem.learners.base.resolved_options`). A run written before training
    recorded its defaults compares equal to the same run written after; a run whose recorded
    value differs from today's default keeps its own value."""
    config = current_names(config)
    learner = config.get("learner")
    if not isinstance(learner, dict) or learner.get("name") not in LEARNERS:
        return config
    options = resolved_options(learner["name"], {k: v for k, v in learner.items() if k != "name"})
    return {**config, "learner": {"name": learner["name"], **options}}


def with_added_defaults(config: dict[str, Any]) -> dict[str, Any]:
    """``config`` (a run's saved config) with the section keys metamem added after it was
    written (``train.channels_last``, ``train.amp_dtype``, ...) set to their defaults, which
    are the behaviour of the version that wrote it; learner keywords are left alone."""
    defaults = config_to_dict(ExperimentCfg())
    out = dict(config)
    for section in ("data", "episodes", "train", "eval"):
        saved = out.get(section)
        if isinstance(saved, dict) and defaults[section].keys() - saved.keys():
            out[section] = {**{k: v for k, v in defaults[section].items() if k not in saved}, **saved}
    return out


def _execution_keys(config: dict[str, Any]) -> tuple[str, ...]:
    """The dotted keys (``learner.<option>``) of the config's learner's execution options:
    settings that change how a step runs, never its results, so they may differ between a
    checkpoint and the run that loads it (:func:`metamem.learners.base.execution_options`)."""
    name = (config.get("learner") or {}).get("name")
    return tuple(f"learner.{k}" for k in execution_options(name)) if isinstance(name, str) else ()


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
    same = _execution_keys(config)
    diffs = config_differences(
        resolved_learner(with_added_defaults(ckpt["config"])), resolved_learner(config),
        keys=None if resume else ARCH_KEYS,
        ignore=(*RESUMABLE_KEYS, *same) if resume else same,
    )
    if diffs:
        what = "learner" if any(d.startswith("learner.name") for d in diffs) else "config"
        raise CheckpointError(
            f"checkpoint {ckpt.get('path', '?')} was written for another {what} "
            f"(checkpoint vs current): {'; '.join(diffs)}"
            + ("; only device, eval.*, train.steps, the train.*_every keys and the learner's "
               "execution options (metamem.learners.base.same_results) may change on resume"
               if resume else "")
        )


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
    _check_learner_fields(ckpt)  # the weights fit the config's learner: the other fields must agree
    return model


def load_weights(model: torch.nn.Module, ckpt: dict[str, Any], learner: str) -> None:
    """Load a loaded checkpoint's weights into ``model``, a ``learner`` (its registered
    name, for the message); strict: every tensor must fit.

    Floating-point tensors are cast to the dtype of the model's own tensor of that name, so
    weights stored in half precision (a shared run, :func:`half_precision`) load into a
    float32 learner, which then computes in float32 as before.

    Raises:
        CheckpointError: naming the file, the learner and the first mismatches
            (missing/unexpected keys, size mismatches), on one line.
    """
    _check_finite_weights(ckpt)
    own = model.state_dict()
    state = {
        k: v.to(own[k].dtype) if (k in own and torch.is_tensor(v) and v.is_floating_point()
                                  and own[k].is_floating_point() and v.dtype != own[k].dtype) else v
        for k, v in ckpt["model"].items()
    }
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        lines = [line.strip() for line in str(e).strip().splitlines() if line.strip()]
        detail = "; ".join(lines[1:3]) or (lines[0] if lines else type(e).__name__)
        raise CheckpointError(
            f"{ckpt.get('path', '?')}: weights do not fit learner {learner!r}: {detail[:300]}"
        ) from None


def _check_finite_weights(ckpt: dict[str, Any]) -> None:
    """Refuse weights holding NaN or Inf: they score every episode as one class (20.00% on
    5-way episodes) and say nothing."""
    for name, value in (ckpt.get("model") or {}).items():
        if isinstance(value, torch.Tensor) and value.is_floating_point():
            bad = int((~torch.isfinite(value)).sum())
            if bad:
                raise CheckpointError(
                    f"{ckpt.get('path', '?')}: weights hold NaN/Inf values ({bad} of "
                    f"{value.numel()} in {name!r}); the checkpoint is damaged or its training "
                    "diverged: use another checkpoint (checkpoints/last.pt or best.pt) or retrain"
                )


def _check_learner_fields(ckpt: dict[str, Any]) -> None:
    """The learner of the weights (the checkpoint's ``config``) must be the one its
    ``learner`` field and, for a checkpoint in a run directory, that run's ``config.yaml``
    name: an edited field or file is named, never silently ignored."""
    path = Path(ckpt.get("path", "?"))
    learner = ckpt["config"].get("learner") or {}
    field = ckpt.get("learner")
    if field is not None and field != learner.get("name"):
        raise CheckpointError(
            f"{path}: its 'learner' field says {field!r} but its weights are of learner "
            f"{learner.get('name')!r} (its config's, which they fit); the file was edited: use an "
            "unedited checkpoint"
        )
    run_config = path.parent.parent / "config.yaml"
    if path.parent.name != "checkpoints" or not run_config.is_file():
        return
    from metamem import safe_yaml

    try:
        saved = safe_yaml.safe_load(run_config.read_text(encoding="utf-8"))
    except (OSError, ValueError, yaml.YAMLError) as e:
        raise CheckpointError(safe_yaml.shorten(f"{run_config}: cannot read it ({e})")) from None
    # a resumed run may have changed an execution option since this snapshot (same results)
    diffs = config_differences(resolved_learner(saved if isinstance(saved, dict) else {}),
                               resolved_learner(ckpt["config"]), keys=("learner",),
                               ignore=_execution_keys(ckpt["config"]))
    if diffs:
        raise CheckpointError(safe_yaml.shorten(
            f"{run_config} disagrees with the weights in {path} ({'; '.join(diffs)}, "
            "config.yaml vs checkpoint); the weights are of the checkpoint's learner: put its "
            "learner section back into config.yaml", 400))


def half_precision(state: dict[str, Any]) -> dict[str, Any]:
    """``state`` (a state dict) with every float32/float64 tensor stored as float16; other
    tensors (integer buffers, counters) unchanged. Halves the size of a shared run's weights;
    :func:`load_weights` casts them back to the learner's dtype."""
    return {k: v.half() if torch.is_tensor(v) and v.dtype in (torch.float32, torch.float64) else v
            for k, v in state.items()}


def dataset_for(
    config: ExperimentCfg, split: str, *, source: str = "the run",
    options: dict[str, Any] | None = None,
) -> ImageDataset:
    """The split ``split`` of a config's dataset (:meth:`~metamem.config.DataCfg.split_name`:
    ``train``/``val``/``test`` mean ``data.<x>_split``, anything else is a split name of the
    dataset); ``options`` (``eval.data_options``) are merged over ``data.options``.

    Raises:
        ValueError: when ``split`` names a split the config sets to null.
    """
    real = config.data.split_name(split)
    if real is None:
        raise ValueError(f"config of {source} has no data.{split}_split; set eval.split to a split name")
    return load_dataset(config.data.name, split=real, **{**config.data.options, **(options or {})})


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


def recorded_evaluations(run_dir: str | Path) -> list[tuple[Path, dict[str, Any]]]:
    """``(file, result dict)`` of every evaluation a run directory holds: its training run's
    ``eval.json`` and the ``results.json`` of each ``metamem eval --out`` folder inside it
    (``eval/``, ``eval_set/``...), files in sorted order, each checked
    (:func:`metamem.results_check.read_checked_results`)."""
    from metamem.results_check import read_checked_results

    run = Path(run_dir)
    out = []
    for f in sorted([run / "eval.json", *run.glob("*/results.json")]):
        if f.is_file():
            out += [(f, r) for r in read_checked_results(f)]
    return out


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
