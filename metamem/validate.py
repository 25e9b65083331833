"""Check an experiment config against the builders and its data, before anything is written.

``metamem validate FILE...`` and ``metamem train`` run the same checks
(:func:`check_experiment`), so a config that validates does not fail later for a reason that
could be known up front:

1. :func:`validate_config` (no data): the learner, dataset, optimizer and scheduler names
   must be registered; their keyword arguments must bind to the builder's signature
   (``inspect.signature(builder).bind``) and match its type annotations; the optimizer and
   scheduler are built once on a dummy parameter (so ``lr=fast`` or ``betas=[2, 0]`` fail
   here, not at step 0) unless their values are among those torch surely accepts
   (:func:`surely_builds`); the numeric settings must make sense. This step imports no torch
   for the usual settings: the builders are read from the registry manifest
   (:mod:`metamem.manifest`), so ``metamem validate --no-data`` starts in a fraction of a second.
2. :func:`validate_data`: the train, val and test splits are loaded and each must provide the
   episodes asked of it (``episodes.*`` for train and val, every ``eval.n_way`` x
   ``eval.k_shot`` with ``eval.n_query`` for the evaluation split).

Every message names the file or the ``override 'KEY=VALUE'`` that set the key at fault.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from metamem.config import (
    PROTOCOL_NAMES,
    ConfigError,
    ExperimentCfg,
    augment_kwargs,
    check_value,
    eval_protocols,
    origin_of,
    parse_memory_budget,
    type_name,
)
from metamem.manifest import BuilderSpec, limited_ways_of
from metamem.manifest import registry as manifest_registry
from metamem.registry import Registry, RenamedKeyError, UnknownNameError, builder_hints, rename_keys, renames_of

if TYPE_CHECKING:
    from metamem.data.base import ImageDataset

__all__ = ["validate_config", "validate_data", "check_experiment", "check_builder_kwargs"]

#: the scorings of :func:`metamem.evaluate` (defined once, in :mod:`metamem.config`).
EVAL_PROTOCOLS = PROTOCOL_NAMES
#: keyword arguments the framework passes to learner builders itself.
INJECTED_LEARNER_KWARGS = {"n_way": "episodes.n_way", "image_shape": "the dataset's images"}


def check_builder_kwargs(
    builder: Callable[..., Any],
    kwargs: dict[str, Any],
    *,
    section: str,
    source: str,
    injected: dict[str, Any] | None = None,
    skip_first: int = 0,
    origin: Callable[[str], str] | None = None,
) -> None:
    """Bind ``kwargs`` (plus ``injected``) to ``builder``'s signature and check their types.

    Args:
        builder: the registered class or function, or its :class:`~metamem.manifest.BuilderSpec`.
        kwargs: the config section's keyword arguments.
        section: dotted config path of the section (for messages).
        source: the config file (for messages).
        injected: keyword arguments the framework adds itself.
        skip_first: leading positional parameters the framework passes (params, optimizer).
        origin: maps a dotted key to where it was set (file or override); default ``source``.

    Raises:
        ConfigError: naming the key and the builder's accepted keys.
    """
    where = origin or (lambda _key: source)
    name = getattr(builder, "__name__", str(builder))
    try:  # old names of renamed keys still load, with a warning naming the new one
        kwargs = rename_keys(kwargs, renames_of(builder), owner=name, prefix=f"{section}.", where=where)
    except RenamedKeyError as e:
        raise ConfigError(str(e)) from None
    spec = builder if isinstance(builder, BuilderSpec) else None
    sig = spec.signature if spec is not None else inspect.signature(builder)
    params = list(sig.parameters.values())[skip_first:]
    accepted = [
        p.name for p in params
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name not in (injected or {})
    ]
    has_var_kw = any(p.kind == p.VAR_KEYWORD for p in params)
    for key in kwargs:
        if key not in accepted and not has_var_kw:
            raise ConfigError(
                f"{where(f'{section}.{key}')}: {section}.{key}: unknown key for {name}; allowed keys: "
                f"{', '.join(accepted) or '(none)'}"
            )
    try:
        sig.replace(parameters=params).bind(**(injected or {}), **kwargs)
    except TypeError as e:
        raise ConfigError(f"{where(f'{section}.name')}: {section}: {e}") from None
    hints = spec.hints if spec is not None else builder_hints(builder)
    for key, value in kwargs.items():
        tp = hints.get(key)
        if tp is not None and not check_value(value, tp)[0]:
            raise ConfigError(
                f"{where(f'{section}.{key}')}: {section}.{key}: expected {type_name(tp)}, got {value!r} "
                f"({type(value).__name__})"
            )


def _lookup(registry: Registry[Any], name: str, key: str, source: str) -> Any:
    try:
        return registry.get(name)
    except UnknownNameError as e:
        raise ConfigError(f"{source}: {key}: {e}") from None


def validate_config(cfg: ExperimentCfg, *, source: str = "config", require_learner: bool = True) -> None:
    """Check ``cfg`` against the registries and builders (learners, datasets, optimizers).

    Args:
        cfg: the loaded config.
        source: the config file, for messages.
        require_learner: reject a config without a ``learner`` section (False for base
            files, whose other sections are still checked).

    Raises:
        ConfigError: for the first problem, naming ``source`` and the key path.
    """
    # the live registries once imported, else the cached manifest (no learner imports)
    DATASETS, OPTIMIZERS, SCHEDULERS = (
        manifest_registry(w) for w in ("datasets", "optimizers", "schedulers")
    )
    if cfg.learner is None:
        if require_learner:
            raise ConfigError(f"{source}: learner: missing section (needs at least learner.name)")
    else:
        _check_learner(cfg, source)
    origin = lambda key: origin_of(cfg, key, source)  # noqa: E731
    loader = _lookup(DATASETS, cfg.data.name, "data.name", origin("data.name"))
    check_builder_kwargs(
        loader, cfg.data.options, section="data.options", source=source,
        injected={"split": cfg.data.train_split}, origin=origin,
    )
    if cfg.eval.data_options:  # merged over data.options to load the evaluated split
        check_builder_kwargs(
            loader, {**cfg.data.options, **cfg.eval.data_options}, section="eval.data_options",
            source=source, injected={"split": cfg.data.test_split}, origin=origin,
        )
    for section, registry, first in (
        (cfg.train.optimizer, OPTIMIZERS, 1),
        (cfg.train.scheduler, SCHEDULERS, 1),
    ):
        path = "train.optimizer" if registry is OPTIMIZERS else "train.scheduler"
        cls = _lookup(registry, section.name, f"{path}.name", origin(f"{path}.name"))
        # cosine's T_max defaults to train.steps (metamem.optim.build_scheduler)
        length = ({"T_max": cfg.train.steps} if registry is SCHEDULERS and section.name == "cosine"
                  and "T_max" not in section.kwargs else None)
        check_builder_kwargs(cls, section.kwargs, section=path, source=source, skip_first=first,
                             origin=origin, injected=length)
    _check_numbers(cfg, source)
    _check_finite(cfg, source)
    _check_device(cfg, source)
    _check_fixed_ways(cfg, source)
    _dry_build_optimizer(cfg, origin)
    if cfg.train.amp_dtype not in ("float16", "bfloat16"):
        raise ConfigError(
            f"{origin('train.amp_dtype')}: train.amp_dtype: unknown dtype {cfg.train.amp_dtype!r}; "
            "valid: float16, bfloat16"
        )


def _section_origin(cfg: ExperimentCfg, path: str, keys: list[str], source: str) -> str:
    """The origins of a section's keys (overrides first), for a message about the section."""
    found = [origin_of(cfg, f"{path}.{k}", source) for k in keys] or [origin_of(cfg, path, source)]
    found.sort(key=lambda o: not o.startswith("override"))
    return ", ".join(dict.fromkeys(found))


def _finite(lo: float = -math.inf) -> Callable[[Any], bool]:
    return lambda v: (isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                      and v >= lo)


def _whole(lo: int) -> Callable[[Any], bool]:
    return lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= lo


def _flag(v: Any) -> bool:
    return isinstance(v, bool)


def _betas(v: Any) -> bool:
    return (isinstance(v, (list, tuple)) and len(v) == 2
            and all(isinstance(b, float) and 0.0 <= b < 1.0 for b in v))


_ADAM = {"lr": _finite(0), "betas": _betas, "eps": _finite(0), "weight_decay": _finite(0),
         "amsgrad": _flag, "maximize": _flag, "foreach": lambda v: v is None or _flag(v),
         "capturable": _flag, "differentiable": _flag}
#: Values the built-in optimizers and schedulers surely accept, per registered name: the
#: builder's ``__name__`` and a test per keyword argument (a subset of what the torch
#: constructors accept; ``tests/test_cli_startup.py`` checks each accepted draw against the
#: real constructor). A config within them needs no dry build, so ``metamem validate``
#: does not import torch; anything else (other values or keys, ``fused``, plugins' builders)
#: is dry-built and reported in torch's own words.
SURE_OPTIMIZERS: dict[str, tuple[str, dict[str, Callable[[Any], bool]]]] = {
    "adam": ("Adam", {**_ADAM, "decoupled_weight_decay": _flag}),
    "adamw": ("AdamW", _ADAM),
    "sgd": ("SGD", {"lr": _finite(0), "momentum": _finite(0), "dampening": _finite(),
                    "weight_decay": _finite(0), "nesterov": _flag, "maximize": _flag,
                    "foreach": _ADAM["foreach"], "differentiable": _flag}),
    "rmsprop": ("RMSprop", {"lr": _finite(0), "alpha": _finite(0), "eps": _finite(0),
                            "weight_decay": _finite(0), "momentum": _finite(0), "centered": _flag,
                            "capturable": _flag, "foreach": _ADAM["foreach"], "maximize": _flag,
                            "differentiable": _flag}),
}
_LAST_EPOCH = {"last_epoch": lambda v: v == -1 and not isinstance(v, bool)}
SURE_SCHEDULERS: dict[str, tuple[str, dict[str, Callable[[Any], bool]]]] = {
    "step": ("StepLR", {"step_size": _whole(1), "gamma": _finite(), **_LAST_EPOCH}),
    "cosine": ("CosineAnnealingLR", {"T_max": _whole(1), "eta_min": _finite(), **_LAST_EPOCH}),
    "exponential": ("ExponentialLR", {"gamma": _finite(), **_LAST_EPOCH}),
    "none": ("constant_lr", {}),
}


def surely_builds(cfg: ExperimentCfg) -> bool:
    """Whether the optimizer and scheduler of ``cfg`` surely build (see :data:`SURE_OPTIMIZERS`),
    so that the dry build can be skipped. False means "not known": build them to find out."""
    tr = cfg.train
    for section, table, what in ((tr.optimizer, SURE_OPTIMIZERS, "optimizers"),
                                 (tr.scheduler, SURE_SCHEDULERS, "schedulers")):
        if section.name not in table:
            return False
        builder_name, tests = table[section.name]
        builder = manifest_registry(what).get(section.name)
        if getattr(builder, "__name__", None) != builder_name:  # another builder by that name
            return False
        if not all(k in tests and tests[k](v) for k, v in section.kwargs.items()):
            return False
        try:  # every required argument given (validate_config has checked this already)
            check_builder_kwargs(builder, section.kwargs, section=what, source="", skip_first=1,
                                 injected={"T_max": tr.steps} if section.name == "cosine"
                                 and "T_max" not in section.kwargs else None)
        except ConfigError:
            return False
    kw = tr.optimizer.kwargs
    if tr.optimizer.name == "sgd" and kw.get("nesterov") and (
        kw.get("momentum", 0) <= 0 or kw.get("dampening", 0) != 0
    ):
        return False
    return True


def _dry_build_optimizer(cfg: ExperimentCfg, origin: Callable[[str], str]) -> None:
    """Build the optimizer and scheduler once on a dummy parameter (what ``train`` does at
    step 0), turning their own argument checks into :class:`ConfigError`. Skipped when the
    settings surely build (:func:`surely_builds`): the first optimizer built in a process
    imports ``torch._dynamo``, seconds of start-up."""
    if surely_builds(cfg):
        return
    import torch

    from metamem.optim import build_optimizer, build_scheduler

    source = origin("")
    tr = cfg.train
    param = torch.nn.Parameter(torch.zeros(2))
    try:
        opt = build_optimizer([param], tr.optimizer.name, **tr.optimizer.kwargs)
    except Exception as e:  # torch's checks raise ValueError/TypeError/KeyError...
        where = _section_origin(cfg, "train.optimizer", list(tr.optimizer.kwargs), source)
        raise ConfigError(
            f"{where}: train.optimizer: {tr.optimizer.name} refuses "
            f"{tr.optimizer.kwargs!r}: {_one_line(e)}"
        ) from None
    try:
        build_scheduler(opt, tr.scheduler.name, total_steps=tr.steps, **tr.scheduler.kwargs)
    except Exception as e:
        where = _section_origin(cfg, "train.scheduler", list(tr.scheduler.kwargs), source)
        raise ConfigError(
            f"{where}: train.scheduler: {tr.scheduler.name} refuses "
            f"{tr.scheduler.kwargs!r}: {_one_line(e)}"
        ) from None


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return (text[0] if text else type(e).__name__)[:300]


def validate_data(
    cfg: ExperimentCfg, *, source: str = "config", final_eval: bool = True
) -> dict[str, ImageDataset | None]:
    """Load the splits ``train`` will use and check each can provide its episodes.

    Args:
        cfg: the loaded config.
        source: the config file, for messages.
        final_eval: also check the evaluation split against every ``eval.n_way`` x
            ``eval.k_shot`` (as ``train`` does unless ``--no-eval``).

    Returns:
        ``{"train": ds, "val": ds or None, "test": ds or None}`` (``test`` is the split
        ``eval.split`` names, loaded with ``eval.data_options`` over ``data.options``), for
        the caller to reuse.

    Raises:
        ConfigError: naming the file or override of the episode setting that does not fit
            the split, and the numbers (classes, images per class).
        DatasetError: for data that cannot be loaded (naming the file at fault).
    """
    from metamem.data import load_dataset
    from metamem.data.two_view_sum import is_sequence_task
    from metamem.episodes.sampler import EpisodeSampler, EpisodeSpecError

    ep, ev = cfg.episodes, cfg.eval
    origin = lambda key: origin_of(cfg, key, source)  # noqa: E731
    loaded: dict[tuple[str, str], Any] = {}

    def load(split: str, extra: dict[str, Any] | None = None) -> ImageDataset:
        key = (split, repr(sorted((extra or {}).items())))
        if key not in loaded:
            loaded[key] = load_dataset(cfg.data.name, split=split, **{**cfg.data.options, **(extra or {})})
        return loaded[key]

    def check(ds: ImageDataset, role: str, keys: str, n_way: int, k_shot: int, n_query: int,
              within_group: bool) -> None:
        if is_sequence_task(ds):  # a sequence task (two_view_sum) has no episodes to check
            return
        try:
            EpisodeSampler(ds, n_way=n_way, k_shot=k_shot, n_query=n_query, device="cpu",
                           within_group=within_group)
        except EpisodeSpecError as e:
            found = sorted((origin(k) for k in keys.split()), key=lambda o: not o.startswith("override"))
            where = ", ".join(dict.fromkeys(found))
            raise ConfigError(
                f"{where}: {keys.split()[0].rsplit('.', 1)[0]}: the {role} split cannot provide "
                f"{n_way}-way {k_shot}-shot episodes with {n_query} queries per class: {e}"
            ) from None

    out: dict[str, Any] = {"train": None, "val": None, "test": None}
    keys = "episodes.n_way episodes.k_shot episodes.n_query"
    out["train"] = load(cfg.data.train_split)
    if is_sequence_task(out["train"]):
        _check_task_learner(cfg, out["train"], source)
    check(out["train"], f"train ({cfg.data.train_split!r})", keys, ep.n_way, ep.k_shot,
          ep.n_query, ep.within_group)
    if cfg.data.val_split and cfg.train.val_every > 0:
        out["val"] = load(cfg.data.val_split)
        check(out["val"], f"val ({cfg.data.val_split!r})", keys, ep.n_way, ep.k_shot, ep.n_query,
              ep.within_group)
    if final_eval and cfg.data.test_split:  # a null test_split: no final evaluation
        split = cfg.data.split_name(ev.split)
        if split is None:
            raise ConfigError(f"{origin('eval.split')}: eval.split: {ev.split} names data.{ev.split}_split, "
                              "which is null; set eval.split to a split name")
        out["test"] = load(split, ev.data_options)  # eval.data_options: this split only
        if ev.variable:  # variable-way episodes: their limits must fit the split instead
            _check_variable(out["test"], ev.variable, origin("eval.variable"), split)
            return out
        try:
            protocols = eval_protocols(ev)[0]
        except ValueError as e:
            raise ConfigError(f"{origin('eval.n_query')}: {e}") from None
        for p in protocols:
            check(out["test"], f"evaluation ({split!r})", "eval.n_way eval.k_shot eval.n_query",
                  p["n_way"], p["k_shot"], p["n_query"], p["within_group"])
    return out


def _check_variable(ds: Any, value: Any, where: str, split: str) -> None:
    """``eval.variable`` (true or a dict of limits) must give episodes the split can provide."""
    from metamem.episodes.variable import VariableEpisodeSampler, VariableSpec

    fields = VariableSpec.__dataclass_fields__
    bad = sorted(set(value) - set(fields)) if isinstance(value, dict) else []
    if bad:
        raise ConfigError(f"{where}: eval.variable: unknown key {bad[0]!r}; valid: {', '.join(fields)}")
    try:
        VariableEpisodeSampler(ds, VariableSpec(**value) if isinstance(value, dict) else VariableSpec())
    except ValueError as e:
        raise ConfigError(f"{where}: eval.variable: the evaluation ({split!r}) split cannot provide "
                          f"variable episodes: {e}") from None


def _check_task_learner(cfg: ExperimentCfg, task: Any, source: str) -> None:
    """A sequence task (``data.name: two_view_sum``) needs a learner that takes its layout keys."""
    if cfg.learner is None:
        return
    builder = manifest_registry("learners").get(cfg.learner.name)
    params = (builder.signature if isinstance(builder, BuilderSpec) else inspect.signature(builder)).parameters
    missing = [k for k in task.learner_kwargs() if k not in params]
    if missing:
        raise ConfigError(
            f"{origin_of(cfg, 'data.name', source)}: data.name: {cfg.data.name} is a two-view sequence task; "
            f"learner {cfg.learner.name} cannot read it (no {missing[0]!r} key); use learner.name: dmnc or dcman"
        )


def check_experiment(
    cfg: ExperimentCfg, *, source: str = "config", data: bool = True, final_eval: bool = True,
    require_learner: bool = True,
) -> dict[str, ImageDataset | None] | None:
    """Everything ``metamem train`` checks before it writes anything (also ``metamem validate``).

    Returns:
        The loaded splits (see :func:`validate_data`), or None with ``data=False``.
    """
    validate_config(cfg, source=source, require_learner=require_learner)
    return validate_data(cfg, source=source, final_eval=final_eval) if data else None


def _check_learner(cfg: ExperimentCfg, source: str) -> None:
    LEARNERS = manifest_registry("learners")
    assert cfg.learner is not None
    origin = lambda key: origin_of(cfg, key, source)  # noqa: E731
    for key, what in INJECTED_LEARNER_KWARGS.items():
        if key in cfg.learner.kwargs:
            raise ConfigError(
                f"{origin(f'learner.{key}')}: learner.{key}: set by the framework from {what}; remove it"
            )
    builder = _lookup(LEARNERS, cfg.learner.name, "learner.name", origin("learner.name"))
    check_builder_kwargs(
        builder, cfg.learner.kwargs, section="learner", source=source,
        injected={"n_way": cfg.episodes.n_way, "image_shape": (1, 1, 1)}, origin=origin,
    )


def _check_fixed_ways(cfg: ExperimentCfg, source: str) -> None:
    """Learners that declare :class:`~metamem.learners.capabilities.LimitedWays` (MANN, LSTM,
    MetaNet) have ``learner.max_way`` label units (default ``episodes.n_way``): the final
    evaluation cannot score more ways with them. Every other learner scores any way (MAML
    re-initialises its head per episode). Read from the registry manifest (no torch import)."""
    if cfg.learner is None:
        return
    origin = lambda key: origin_of(cfg, key, source)  # noqa: E731
    if limited_ways_of(manifest_registry("learners").get(cfg.learner.name)):
        limit = cfg.learner.kwargs.get("max_way") or cfg.episodes.n_way
        ways = cfg.eval.n_way if isinstance(cfg.eval.n_way, list) else [cfg.eval.n_way]
        bad = sorted({w for w in ways if w > limit})
        if bad:
            raise ConfigError(
                f"{origin('eval.n_way')}: eval.n_way: learner {cfg.learner.name} has {limit} label "
                f"units (learner.max_way, default episodes.n_way) and cannot score {bad}-way "
                f"episodes; set learner.max_way >= {bad[-1]} or drop {bad} from eval.n_way"
            )


def _check_numbers(cfg: ExperimentCfg, source: str) -> None:
    ep, tr, ev = cfg.episodes, cfg.train, cfg.eval
    rules: list[tuple[str, Any, int]] = [
        ("episodes.n_way", ep.n_way, 1), ("episodes.k_shot", ep.k_shot, 1),
        ("episodes.n_query", ep.n_query, 0), ("episodes.batch_size", ep.batch_size, 1),
        ("train.steps", tr.steps, 1), ("train.log_every", tr.log_every, 1),
        ("train.val_every", tr.val_every, 0), ("train.val_episodes", tr.val_episodes, 1),
        ("train.checkpoint_every", tr.checkpoint_every, 0),
        ("train.snapshot_every", tr.snapshot_every, 0),
        ("eval.n_query", ev.n_query, 0), ("eval.episodes", ev.episodes, 1),
        ("eval.batch_size", ev.batch_size, 1),
    ]
    for name, values in (("eval.n_way", ev.n_way), ("eval.k_shot", ev.k_shot)):
        for v in values if isinstance(values, list) else [values]:
            rules.append((name, v, 1))
    at = lambda key: origin_of(cfg, key, source)  # noqa: E731
    for key, value, low in rules:
        if value < low:
            raise ConfigError(f"{at(key)}: {key}: must be >= {low}, got {value}")
    try:
        augment_kwargs(ep.augment)  # what build_augment checks, without importing torch
    except ValueError as e:
        raise ConfigError(f"{at('episodes.augment')}: episodes.{e}") from None
    if tr.grad_clip is not None and tr.grad_clip <= 0:
        raise ConfigError(f"{at('train.grad_clip')}: train.grad_clip: must be > 0 or null, got {tr.grad_clip}")
    if isinstance(ev.n_way, list) and not ev.n_way or isinstance(ev.k_shot, list) and not ev.k_shot:
        raise ConfigError(f"{source}: eval.n_way/eval.k_shot: a sweep list must not be empty")
    try:
        parse_memory_budget(ev.memory_budget)
    except ConfigError as e:
        raise ConfigError(f"{at('eval.memory_budget')}: {e}") from None


def _check_finite(cfg: ExperimentCfg, source: str) -> None:
    """Every number of the config is finite: ``lr=.inf`` or ``gamma=.nan`` pass torch's own
    checks (``0 <= inf``) and only show up as a NaN loss or a crash mid-run."""
    from metamem.config import config_to_dict

    def walk(value: Any, key: str) -> None:
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{origin_of(cfg, key, source)}: {key}: must be a finite number, got {value}")
        if isinstance(value, dict):
            for k, v in value.items():
                walk(v, f"{key}.{k}" if key else str(k))
        elif isinstance(value, (list, tuple)):
            for v in value:
                walk(v, key)

    walk(config_to_dict(cfg), "")


def _check_device(cfg: ExperimentCfg, source: str) -> None:
    """``device: cuda`` on a machine without CUDA (or ``cuda:N`` past its GPUs) is refused
    here, before ``train`` creates a run directory. torch is imported only for a CUDA device."""
    device = str(cfg.device)
    if not device.startswith("cuda"):
        return
    import torch

    where = f"{origin_of(cfg, 'device', source)}: device"
    if not torch.cuda.is_available():
        raise ConfigError(f"{where}: {device!r} but CUDA is not available here; use device=cpu or device=auto")
    _, _, index = device.partition(":")
    if index and int(index) >= torch.cuda.device_count():
        raise ConfigError(
            f"{where}: {device!r} but this machine has {torch.cuda.device_count()} CUDA device(s); "
            "use cuda:0 .. cuda:N-1 or device=auto"
        )
