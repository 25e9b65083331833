"""Check a loaded experiment config against the registered builders, without running anything.

``metamem validate FILE...`` and the training loop call :func:`validate_config`: the learner,
dataset, optimizer and scheduler names must be registered, their keyword arguments must
bind to the builder's signature (``inspect.signature(builder).bind``) and match its type
annotations, and the numeric settings must make sense. No data is loaded and no module is
built.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, get_type_hints

from metamem.config import ConfigError, ExperimentCfg, check_value, type_name
from metamem.registry import Registry, UnknownNameError

__all__ = ["validate_config", "check_builder_kwargs"]

#: the scorings of :func:`metamem.evaluate`.
EVAL_PROTOCOLS = ("set", "sequence", "both")
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
) -> None:
    """Bind ``kwargs`` (plus ``injected``) to ``builder``'s signature and check their types.

    Args:
        builder: the registered class or function.
        kwargs: the config section's keyword arguments.
        section: dotted config path of the section (for messages).
        source: the config file (for messages).
        injected: keyword arguments the framework adds itself.
        skip_first: leading positional parameters the framework passes (params, optimizer).

    Raises:
        ConfigError: naming the key and the builder's accepted keys.
    """
    sig = inspect.signature(builder)
    params = list(sig.parameters.values())[skip_first:]
    accepted = [
        p.name for p in params
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name not in (injected or {})
    ]
    has_var_kw = any(p.kind == p.VAR_KEYWORD for p in params)
    for key in kwargs:
        if key not in accepted and not has_var_kw:
            name = getattr(builder, "__name__", str(builder))
            raise ConfigError(
                f"{source}: {section}.{key}: unknown key for {name}; allowed keys: "
                f"{', '.join(accepted) or '(none)'}"
            )
    try:
        sig.replace(parameters=params).bind(**(injected or {}), **kwargs)
    except TypeError as e:
        raise ConfigError(f"{source}: {section}: {e}") from None
    try:
        hints = get_type_hints(builder.__init__ if isinstance(builder, type) else builder)
    except Exception:  # unresolvable annotations: the bind check above still applies
        hints = {}
    for key, value in kwargs.items():
        tp = hints.get(key)
        if tp is not None and not check_value(value, tp)[0]:
            raise ConfigError(
                f"{source}: {section}.{key}: expected {type_name(tp)}, got {value!r} "
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
    from metamem.data import DATASETS
    from metamem.optim import OPTIMIZERS, SCHEDULERS

    if cfg.learner is None:
        if require_learner:
            raise ConfigError(f"{source}: learner: missing section (needs at least learner.name)")
    else:
        _check_learner(cfg, source)
    loader = _lookup(DATASETS, cfg.data.name, "data.name", source)
    check_builder_kwargs(
        loader, cfg.data.options, section="data.options", source=source,
        injected={"split": cfg.data.train_split},
    )
    for section, registry, first in (
        (cfg.train.optimizer, OPTIMIZERS, 1),
        (cfg.train.scheduler, SCHEDULERS, 1),
    ):
        path = "train.optimizer" if registry is OPTIMIZERS else "train.scheduler"
        cls = _lookup(registry, section.name, f"{path}.name", source)
        check_builder_kwargs(cls, section.kwargs, section=path, source=source, skip_first=first)
    _check_numbers(cfg, source)


def _check_learner(cfg: ExperimentCfg, source: str) -> None:
    from metamem.learners import LEARNERS

    assert cfg.learner is not None
    for key, what in INJECTED_LEARNER_KWARGS.items():
        if key in cfg.learner.kwargs:
            raise ConfigError(
                f"{source}: learner.{key}: set by the framework from {what}; remove it"
            )
    builder = _lookup(LEARNERS, cfg.learner.name, "learner.name", source)
    check_builder_kwargs(
        builder, cfg.learner.kwargs, section="learner", source=source,
        injected={"n_way": cfg.episodes.n_way, "image_shape": (1, 1, 1)},
    )


def _check_numbers(cfg: ExperimentCfg, source: str) -> None:
    ep, tr, ev = cfg.episodes, cfg.train, cfg.eval
    rules: list[tuple[str, Any, int]] = [
        ("episodes.n_way", ep.n_way, 1), ("episodes.k_shot", ep.k_shot, 1),
        ("episodes.n_query", ep.n_query, 0), ("episodes.batch_size", ep.batch_size, 1),
        ("train.steps", tr.steps, 1), ("train.log_every", tr.log_every, 1),
        ("train.val_every", tr.val_every, 0), ("train.val_episodes", tr.val_episodes, 1),
        ("train.checkpoint_every", tr.checkpoint_every, 0),
        ("eval.n_query", ev.n_query, 0), ("eval.episodes", ev.episodes, 1),
        ("eval.batch_size", ev.batch_size, 1),
    ]
    for name, values in (("eval.n_way", ev.n_way), ("eval.k_shot", ev.k_shot)):
        for v in values if isinstance(values, list) else [values]:
            rules.append((name, v, 1))
    for key, value, low in rules:
        if value < low:
            raise ConfigError(f"{source}: {key}: must be >= {low}, got {value}")
    if tr.grad_clip is not None and tr.grad_clip <= 0:
        raise ConfigError(f"{source}: train.grad_clip: must be > 0 or null, got {tr.grad_clip}")
    if ev.protocol not in EVAL_PROTOCOLS:
        raise ConfigError(
            f"{source}: eval.protocol: unknown protocol {ev.protocol!r}; allowed: "
            f"{', '.join(EVAL_PROTOCOLS)}"
        )
    if isinstance(ev.n_way, list) and not ev.n_way or isinstance(ev.k_shot, list) and not ev.k_shot:
        raise ConfigError(f"{source}: eval.n_way/eval.k_shot: a sweep list must not be empty")
