"""Sweeps: several trained runs scored on one common protocol, over every combination of
``key=value`` overrides.

This is the engine of ``metamem eval``. A run directory (``config.yaml``,
``checkpoints/best.pt`` or ``last.pt``) or a checkpoint file is loaded with
:func:`metamem.load_run` (evaluation never imports training); the dataset is the run's
``data:`` section with the split chosen by ``eval.split`` (``train``/``val``/``test`` name
the run's ``data.<x>_split``; anything else is a split name of the dataset). Overrides whose
value is a list sweep: every run is evaluated on every combination
(:func:`metamem.config.eval_protocols`).
"""

from __future__ import annotations

import json
import os
import types
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union, get_args, get_origin, get_type_hints

from metamem.config import (
    EVAL_DEFAULTS,
    EvalCfg,
    ExperimentCfg,
    check_value,
    config_to_dict,
    eval_protocols,
    parse_overrides,
    type_name,
)
from metamem.data.base import ImageDataset
from metamem.data.two_view_sum import SEQUENCE_TASKS
from metamem.device import resolve_device
from metamem.evaluation.scoring import EvalResult, evaluate
from metamem.evaluation.trained_run import Run, check_loader_options, load_run
from metamem.learners.capabilities import LimitedWays
from metamem.runs import checkpoint_path, dataset_for

__all__ = [
    "DEFAULT_EVAL",
    "OVERRIDE_KEYS",
    "SweepPlan",
    "parse_data_spec",
    "parse_sweep",
    "plan_sweep",
    "sweep",
]

#: evaluation settings used where a run's ``eval:`` section does not give them: the
#: defaults of :class:`metamem.config.EvalCfg`, the one source of them
DEFAULT_EVAL: dict[str, Any] = config_to_dict(EVAL_DEFAULTS)

#: what ``metamem eval`` accepts as ``key=value`` (lists sweep, except for ``device`` and
#: ``data``); ``data.options.KEY=VALUE`` sets an option of the ``data=`` loader
OVERRIDE_KEYS = tuple(f"eval.{k}" for k in DEFAULT_EVAL) + ("device", "data")

_HINTS = {**{f"eval.{k}": v for k, v in get_type_hints(EvalCfg).items()}, "device": str}
_WORDS = {int: "an integer", bool: "true or false", str: "a string"}


def parse_sweep(items: Sequence[str]) -> dict[str, list[Any]]:
    """Parse the ``key=value`` overrides of ``metamem eval``; a list value sweeps.

    Items are split and read as YAML by :func:`metamem.config.parse_overrides` (the one
    override parser; ``data=`` keeps its text). The keys are ``eval.<EvalCfg field>``,
    ``device``, ``data`` and ``data.options.KEY``; an ``eval.*`` value is checked against
    the :class:`~metamem.config.EvalCfg` annotation.

    Returns:
        ``{key: [values...]}`` in the order given.

    Raises:
        ValueError: for a malformed item, an unknown key (listing the valid ones), an
            empty list, a value of the wrong type, or a swept ``device`` or ``data``.
    """
    out: dict[str, list[Any]] = {}
    for item, (parts, value) in zip(items, parse_overrides(list(items)), strict=True):
        key = ".".join(parts)
        if key not in OVERRIDE_KEYS and not (key.startswith("data.options.") and len(parts) == 3):
            raise ValueError(
                f"unknown override key {key!r}; valid keys: {', '.join(OVERRIDE_KEYS)}, data.options.KEY"
            )
        if key == "data":
            value = item.partition("=")[2].strip()  # a name or folder:PATH, not YAML
        values = value if isinstance(value, list) else [value]
        if not values:
            raise ValueError(f"override {item!r} sweeps an empty list; give at least one value")
        if key.startswith("data.options."):
            values = [value]  # a list is an option value here, not a sweep
        elif key in ("device", "data") and len(values) > 1:
            raise ValueError(f"override {item!r}: {key} cannot be swept; give one value")
        for v in values if key in _HINTS else ():
            _check_value(key, v, item)
        out[key] = values
    return out


def _check_value(key: str, v: Any, item: str) -> None:
    tp = _HINTS[key]
    if get_origin(tp) in (Union, types.UnionType) and any(get_origin(a) is list for a in get_args(tp)):
        tp = next(a for a in get_args(tp) if get_origin(a) is not list)  # int | list[int]: a list is a sweep
    if not check_value(v, tp)[0]:
        what = (_WORDS.get(tp) if isinstance(tp, type) else None) or (
            "a mapping such as {rotations: false}" if get_origin(tp) is dict else type_name(tp))
        raise ValueError(f"override {item!r}: {key} must be {what}, got {v!r}")


def parse_data_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """``folder:PATH`` -> ``("folder", {"root": PATH})``; ``NAME`` -> ``(NAME, {})``."""
    name, sep, root = spec.partition(":")
    if not name or (sep and not root):
        raise ValueError(f"data={spec!r}: expected data=NAME or data=folder:PATH (a folder of class sub-folders)")
    return name, ({"root": root} if sep else {})


def _display_name(path: str, config: ExperimentCfg) -> str:
    learner = config.learner.name if config.learner else "learner"
    p = Path(path)
    run = p.parent.parent.name if p.is_file() and p.parent.name == "checkpoints" else p.name
    if p.is_file() and p.parent.name != "checkpoints":
        run = p.stem
    return f"{learner} [{run}]"


def _data_identity(config: ExperimentCfg, split: str) -> tuple[Any, ...]:
    """What fixes the episodes of a run's own data (image size and channels do not)."""
    opts = {k: v for k, v in config.data.options.items()
            if k not in ("image_size", "channels", "resample", "cache", "cache_dir")}
    return config.data.name, config.data.split_name(split), json.dumps(opts, sort_keys=True, default=str)


@dataclass
class SweepPlan:
    """What :func:`sweep` scores: the runs, the common settings and what it noted."""

    runs: list[Run]
    names: list[str]
    settings: list[dict[str, Any]]
    notes: list[str]
    data: tuple[str, dict[str, Any]] | None

    def describe(self) -> str:
        """The common protocol as one line (printed above the table)."""
        s0 = self.settings[0]

        def vals(k: str) -> str:  # the values in the order asked ([5, 20] stays [5, 20])
            v = list(dict.fromkeys(s[k] for s in self.settings))
            return str(v[0]) if len(v) == 1 else "[" + ", ".join(map(str, v)) + "]"

        if self.data is not None:
            name, opts = self.data
            where = f"{name} {opts.get('root', '')}".strip()
            split = s0.get("split") or "all"
        else:
            where = self.runs[0].config.data.name
            split = vals("split")
        if where in SEQUENCE_TASKS:  # fixed sequence pairs, scored per pair; no ways or shots
            return (f"protocol (all rows, same sequences): {where} split {split}, {vals('episodes')} sequence "
                    f"pairs, seed {vals('seed')}, accuracy over decoder steps")
        shape = (f"{vals('n_way')}-way {vals('k_shot')}-shot, {vals('n_query')} queries per class"
                 if not any(s.get("variable") for s in self.settings)
                 else f"variable ways and shots {vals('variable')}")
        return (
            f"protocol (all rows, same episodes): {where} split {split}, {shape}, {vals('episodes')} episodes, "
            f"seed {vals('seed')}, within_group {vals('within_group')}, scoring {vals('protocol')}"
        )


def _as_override(key: str, value: Any) -> str:
    """``override 'KEY=VALUE'``, the value written as YAML on one line (as typed, mostly)."""
    import yaml

    text = yaml.safe_dump(value, default_flow_style=True, width=10**6).strip()
    return f"override '{key}={text.removesuffix('...').strip()}'"


def plan_sweep(
    paths: Sequence[str | os.PathLike[str]],
    overrides: dict[str, list[Any]] | None = None,
    *,
    weights: str | os.PathLike[str] | None = None,
    sha256: str | None = None,
) -> SweepPlan:
    """Load the runs and fix one common protocol, or refuse with the rows at fault.

    The protocol is the first run's ``eval:`` section changed by the overrides (see
    :func:`metamem.config.eval_protocols`); every run is scored on it. Refused, before anything is scored:
    a sequence learner asked for another ``n_way`` than it was built for, and runs on
    different data (dataset, split or class-defining options) without a ``data=`` override.
    ``weights``/``sha256`` take the (one) run's weights from a URL, file or folder
    (:func:`metamem.runs.fetch_weights`).
    """
    overrides = dict(overrides or {})
    device = resolve_device(overrides.pop("device", ["auto"])[0])
    data_spec = overrides.pop("data", [None])[0]
    data_opts = {k.removeprefix("data.options."): v[0] for k, v in list(overrides.items())
                 if k.startswith("data.options.")}
    for k in list(overrides):
        if k.startswith("data."):
            overrides.pop(k)
    if data_opts and data_spec is None:
        raise ValueError("data.options.* overrides need data=NAME or data=folder:PATH")
    data = None
    if data_spec is not None:
        name, opts = parse_data_spec(str(data_spec))
        for key, value in data_opts.items():
            check_loader_options(name, {key: value}, section="data.options",
                                 source=_as_override(f"data.options.{key}", value))
        data = (name, {**opts, **data_opts})
    if weights is not None and len(paths) != 1:
        raise ValueError(f"--weights replaces the weights of one run; got {len(paths)} runs "
                         "(score the others in a separate call)")
    runs, names = [], []
    for path in paths:
        src = str(path)
        if weights is None:
            checkpoint_path(src)  # a missing run fails before any is loaded onto the device
        run = load_run(src, device, weights=weights, sha256=sha256)
        runs.append(run)
        names.append(_display_name(src, run.config))
    eval_over = {k.removeprefix("eval."): v for k, v in overrides.items()}
    for value in eval_over.get("data_options", []):  # options of the runs' own loader
        for run in runs:
            check_loader_options(data[0] if data else run.data_name, value or {},
                                 section="eval.data_options",
                                 source=_as_override("eval.data_options", value))
    if data is not None and "split" not in eval_over:
        eval_over["split"] = [None]  # a new dataset: every class unless eval.split is given
    settings, notes = eval_protocols(runs[0].eval_settings, eval_over)
    for run, name in zip(runs, names, strict=True):
        if isinstance(run.learner, LimitedWays):  # label units of MANN/LSTM/MetaNet
            limit = run.learner.max_way
            bad = sorted({s["n_way"] for s in settings if s["n_way"] > limit})
            if bad:
                raise ValueError(
                    f"row {name} ({run.path}) has {limit} label units (learner.max_way) and cannot "
                    f"score n_way={bad} episodes; train it with learner.max_way >= {bad[-1]}, or "
                    f"drop {bad} from eval.n_way"
                )
    if data is None and len(runs) > 1:
        for s in settings:
            ids = [_data_identity(r.config, s["split"]) for r in runs]
            for run, name, ident in zip(runs[1:], names[1:], ids[1:], strict=True):
                if ident != ids[0]:
                    raise ValueError(
                        f"cannot score these runs on one protocol: row {name} ({run.path}) uses "
                        f"{ident[0]} split {ident[1]} but row {names[0]} ({runs[0].path}) uses "
                        f"{ids[0][0]} split {ids[0][1]}; evaluate them separately or give one "
                        "dataset with data=NAME or data=folder:PATH"
                    )
    return SweepPlan(runs, names, settings, notes, data)


def sweep(
    paths: Sequence[str | os.PathLike[str]],
    overrides: dict[str, list[Any]] | None = None,
    *,
    progress: bool = False,
    keep_trace: bool = False,
    plan: SweepPlan | None = None,
) -> list[EvalResult]:
    """Evaluate every run on every combination of one common protocol.

    Args:
        paths: run directories or checkpoint files.
        overrides: from :func:`parse_sweep` (``eval.*``, ``device``, ``data``,
            ``data.options.*``).
        progress: tqdm progress bars.
        keep_trace: keep a memory trace of episode 0 of each run's first evaluation.
        plan: a plan from :func:`plan_sweep` (made from the arguments above if not given).

    Returns:
        One :class:`EvalResult` per run x combination, runs in the order given.
    """
    plan = plan or plan_sweep(paths, overrides)
    datasets: dict[str, ImageDataset] = {}
    results: list[EvalResult] = []
    for run, name in zip(plan.runs, plan.names, strict=True):
        for i, s in enumerate(plan.settings):
            s = dict(s)
            split = s.pop("split")
            data_options = s.pop("data_options", None) or {}
            if plan.data is not None:
                dname, opts = plan.data
                opts = {**opts, **data_options}
                dkey = json.dumps([dname, opts, split, list(run.image_shape)], sort_keys=True, default=str)
                if dkey not in datasets:
                    datasets[dkey] = run.dataset(dname, split, **opts)
            else:
                dkey = json.dumps([config_to_dict(run.config.data), split, data_options], sort_keys=True, default=str)
                if dkey not in datasets:
                    datasets[dkey] = dataset_for(run.config, split, source=str(run.path),
                                                 options=data_options)
            results.append(
                evaluate(
                    run.learner, datasets[dkey], **s,
                    device=run.device, progress=progress, name=name,
                    config=config_to_dict(run.config), source=str(run.path), keep_trace=keep_trace and i == 0,
                    data_options=data_options or None,
                )
            )
    return results
