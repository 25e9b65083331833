"""Experiment configs: typed dataclass sections loaded from YAML with dotted overrides.

An experiment file is a small delta over at most one base file::

    extends: ../base/omniglot.yaml        # optional, ONE level, path relative to this file
    learner: {name: mann, policy: lru}
    train: {steps: 2000}

Loading (:func:`load_config`) goes: read the file with :func:`metamem.safe_yaml.load_file`
(``yaml.safe_load`` that also refuses duplicate keys and alias bombs); merge it over
its base (dicts merge key by key; a ``learner``/``optimizer``/``scheduler`` section that
names a *different* ``name`` than the base replaces the base section instead, so kwargs of
another builder never leak in); apply command-line overrides ``a.b.c=value`` in order
(``value`` parsed with ``yaml.safe_load``, so ``[5,20]`` is a list and ``null`` is None; an
override such as ``learner.name=lstm`` that changes a named section's builder starts that
section afresh, so give its kwargs after it); then convert
to the dataclasses below, rejecting unknown keys and wrong types with the key path, the
file (or override) that set it and the allowed keys.

Sections with a ``name`` plus free keyword arguments (``learner``, ``train.optimizer``,
``train.scheduler``) keep those kwargs in :class:`NamedCfg`; :mod:`metamem.validate`
checks them against the registered builder's signature without building anything.
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
import re
import types
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

import yaml

from metamem import safe_yaml

__all__ = [
    "DEFAULT_K_SHOT",
    "DEFAULT_N_WAY",
    "EVAL_DEFAULTS",
    "PROTOCOL_NAMES",
    "ProtocolName",
    "ConfigError",
    "NamedCfg",
    "DataCfg",
    "EpisodesCfg",
    "TrainCfg",
    "EvalCfg",
    "ExperimentCfg",
    "load_config",
    "config_from_dict",
    "config_to_dict",
    "eval_protocols",
    "parse_overrides",
    "check_value",
    "origin_of",
    "parse_memory_budget",
]


#: the scorings an evaluation runs: ``"set"`` (support / query accuracy), ``"sequence"``
#: (per-presentation accuracy of labelled-late streams) or ``"both"``. Defined once, here.
ProtocolName = Literal["set", "sequence", "both"]
#: the values of :data:`ProtocolName`, in order.
PROTOCOL_NAMES: tuple[str, ...] = get_args(ProtocolName)


class ConfigError(ValueError):
    """A bad experiment config: unknown key, wrong type, bad ``extends``, bad override."""


@dataclass
class NamedCfg:
    """A registry name plus flat builder keyword arguments (``{name: adam, lr: 0.001}``)."""

    name: str
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass
class DataCfg:
    """Which dataset and splits; ``options`` go to ``load_dataset`` as keyword arguments."""

    name: str = "synthetic"
    train_split: str = "train"
    val_split: str | None = "val"
    test_split: str | None = "test"
    options: dict[str, Any] = field(default_factory=dict)

    def split_name(self, split: str) -> str | None:
        """The dataset split that ``split`` names: ``train``/``val``/``test`` mean this
        section's ``train_split``/``val_split``/``test_split`` (None where that is null);
        any other value is a split name of the dataset itself."""
        if split in ("train", "val", "test"):
            return getattr(self, f"{split}_split")  # type: ignore[no-any-return]
        return split


@dataclass
class EpisodesCfg:
    """Training episodes: N-way K-shot with Q queries per class, B episodes per step.

    ``augment`` distorts every training image by random maps drawn from its episode key (keys
    ``rotate`` degrees, ``translate`` fraction of the side, ``scale``, ``shear`` degrees; the
    random-resized crop ``crop_area``/``crop_aspect``, ``flip`` probability, colour jitter
    ``brightness``/``contrast``/``saturation``; see :class:`metamem.episodes.AffineAugment`);
    empty: none (the default). Validation and evaluation episodes are never augmented.

    ``fused: true`` gathers, converts and scales a batch's images in one kernel compiled by
    ``torch.compile`` (:func:`metamem.episodes.sampler.fused_gather`), and hashes the index
    draw's keys in one compiled loop (:func:`~metamem.episodes.sampler.fused_hash`); the same
    episodes, less sampler time per step, a few seconds of compilation at the start.
    ``auto`` (the default) does so where torch.compile builds those kernels, and takes the
    eager path, with one warning, where it does not (``METAMEM_FUSED=0`` makes ``auto``
    eager); ``false`` never compiles.
    """

    n_way: int = 5
    k_shot: int = 1
    n_query: int = 15
    batch_size: int = 16
    within_group: bool = False
    augment: dict[str, float] = field(default_factory=dict)
    fused: bool | Literal["auto"] = "auto"


@dataclass
class TrainCfg:
    """The training loop (see :func:`metamem.training.train`).

    ``steps`` counts optimizer steps (one batch of B episodes each). ``val_every``,
    ``log_every`` and ``checkpoint_every`` are in steps; 0 disables validation/checkpoints
    before the end. ``compile`` wraps the learner in ``torch.compile``.

    ``amp`` runs the forward pass under CUDA autocast in ``amp_dtype`` (``float16`` with a
    gradient scaler, or ``bfloat16`` without one); it is a no-op on CPU. ``channels_last``
    stores the learner's 4-d weights (and so its convolution activations) in the NHWC memory
    format: a large gain for convolutions under AMP on recent GPUs, and on this project's
    CPU about 20% on a Conv-4 training step at 84x84 (docs/benchmarks.md); results equal
    the NCHW ones up to float rounding.

    ``snapshot_every`` (steps, 0 = off) keeps the weights at every multiple in
    ``checkpoints/step_<step>.pt`` (weights and config only, no optimizer state), so that a
    learning curve can be scored on the test protocol afterwards
    (``scripts/time_to_accuracy.py``); ``last.pt`` and ``best.pt`` are unaffected.

    ``init_from`` starts the learner from the weights of another run (its directory, whose
    ``checkpoints/best.pt`` else ``last.pt`` is read, or a checkpoint file; a relative path
    is relative to the working directory): a warm start, e.g. a curriculum from 5-way to
    10-way episodes. The weights must fit this run's learner exactly (same learner keys; for
    MANN/LSTM the same ``max_way``). Only the weights are taken: the optimizer, the schedule
    and the step count start afresh, and ``steps`` counts this run's steps only. A resumed
    run (``--resume``) continues from its own checkpoint and ignores it.
    """

    steps: int = 1000
    optimizer: NamedCfg = field(default_factory=lambda: NamedCfg("adam", {"lr": 1e-3}))
    scheduler: NamedCfg = field(default_factory=lambda: NamedCfg("none"))
    grad_clip: float | None = None
    val_every: int = 200
    val_episodes: int = 100
    log_every: int = 10
    checkpoint_every: int = 500
    snapshot_every: int = 0
    amp: bool = False
    amp_dtype: str = "float16"
    channels_last: bool = False
    compile: bool = False
    init_from: str | None = None


#: the evaluation's default ways and shots (one value each; :class:`EvalCfg` may hold lists)
DEFAULT_N_WAY: int = 5
DEFAULT_K_SHOT: int = 1


@dataclass
class EvalCfg:
    """The evaluation protocol: the final evaluation of a training run, ``metamem eval``,
    and :func:`metamem.evaluate`. These are the only evaluation defaults of metamem; the
    others read them (:data:`EVAL_DEFAULTS`).

    The keys are those of :func:`metamem.evaluate`. ``n_way`` and ``k_shot`` may be lists
    for sweeps (every combination is evaluated). ``protocol`` is a :data:`ProtocolName`:
    ``"set"`` (support / query episodes), ``"sequence"`` (per-presentation accuracy of
    labelled-late streams) or ``"both"``. ``data_options`` are merged over ``data.options`` to
    load the evaluated split only: ``{rotations: false}`` scores the original Omniglot
    characters of a run trained with rotations; with ``within_group: true`` and ``n_way: 20,
    k_shot: 1`` on the ``evaluation`` set that is Lake et al.'s within-alphabet one-shot task.
    """

    split: str = "test"
    n_way: int | list[int] = DEFAULT_N_WAY
    k_shot: int | list[int] = DEFAULT_K_SHOT
    n_query: int = 15
    episodes: int = 1000
    seed: int = 1234
    protocol: ProtocolName = "both"
    within_group: bool = False
    batch_size: int = 32
    data_options: dict[str, Any] = field(default_factory=dict)
    #: working memory of one learner call (bytes, or "512MiB"/"2GiB"): caps the images per
    #: call, shrinking batch_size and chunking sequence scoring (docs/reliability.md)
    memory_budget: int | str = "1GiB"
    #: variable-way, variable-shot episodes (Meta-Dataset's sampler) instead of n_way/k_shot/
    #: n_query: true for its defaults, or a dict of limits ({max_ways: 20}); set scoring only
    variable: bool | dict[str, int] = False


#: the evaluation defaults (one instance of :class:`EvalCfg`; read, never modified).
EVAL_DEFAULTS = EvalCfg()

#: settings that only mean something for the set protocol (support + queries)
SET_SETTINGS = ("k_shot", "n_query")
#: ``n_query`` used when a set setting switches a sequence-protocol run to the set protocol
SWITCH_N_QUERY = 15


def eval_protocols(
    base: EvalCfg | Mapping[str, Any], overrides: Mapping[str, list[Any]] | None = None,
) -> tuple[list[dict[str, Any]], list[str]]:
    """Every protocol an ``eval:`` section asks for, changed by swept overrides.

    The one expansion of evaluation settings: training's final evaluation, ``metamem eval``
    and :meth:`metamem.Run.evaluate` all score what it returns. A list value (in ``base``,
    such as ``n_way: [5, 20]``, or each override's values) sweeps: every combination is one
    protocol, in order, duplicates dropped.

    A sequence-protocol section (``protocol: sequence`` with ``n_query: 0``, as in MANN runs)
    given a set setting (``k_shot`` or ``n_query``) and no ``protocol`` switches to the set
    protocol, with ``n_query`` 15 unless given; the notes say so. With ``protocol=sequence``
    given explicitly nothing switches. With ``variable`` set (variable-way, variable-shot
    episodes) the lists of ``n_way`` and ``k_shot`` do not sweep: their first values stand.

    Args:
        base: an :class:`EvalCfg` or its plain-dict form (a run's ``eval:`` section).
        overrides: ``{setting: [values]}`` (the ``eval.`` prefix stripped).

    Returns:
        ``(settings, notes)``: one dict of :class:`EvalCfg` keys per protocol (``split`` and
        ``data_options`` included; the rest are :func:`metamem.evaluate` keywords), and the
        distinct notes.

    Raises:
        ValueError: for a protocol that scores queries with ``n_query < 1``.
    """
    import itertools

    base = config_to_dict(base) if isinstance(base, EvalCfg) else dict(base)
    b_axes = {k: (list(v) if isinstance(v, list) else [v]) for k, v in base.items()}
    if base.get("variable"):  # variable episodes draw their own ways and shots: one protocol
        b_axes.update({k: b_axes[k][:1] for k in ("n_way", "k_shot") if k in b_axes})
    o_axes = dict(overrides or {})
    out: list[dict[str, Any]] = []
    notes: list[str] = []
    for b in itertools.product(*b_axes.values()):
        for o in itertools.product(*o_axes.values()):
            s, n = _resolve_settings(dict(zip(b_axes, b, strict=True)), dict(zip(o_axes, o, strict=True)))
            if s not in out:
                out.append(s)
            notes += [x for x in n if x not in notes]
    return out, notes


def _resolve_settings(base: dict[str, Any], overrides: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """One protocol: ``base`` changed by ``overrides`` (see :func:`eval_protocols`)."""
    settings = {**base, **overrides}
    notes: list[str] = []
    asked = [k for k in SET_SETTINGS if k in overrides]
    if asked and "protocol" not in overrides and base.get("protocol") == "sequence":
        settings["protocol"] = "set"
        if int(settings.get("n_query") or 0) < 1:
            settings["n_query"] = SWITCH_N_QUERY
        notes.append(
            f"{', '.join('eval.' + k for k in asked)} asked on a run scored with the sequence "
            f"protocol: scoring with the set protocol instead (eval.protocol=set, "
            f"eval.n_query={settings['n_query']}); add eval.protocol=sequence to keep the "
            "sequence protocol, or eval.protocol=both for both"
        )
    if settings.get("protocol") in ("set", "both") and int(settings.get("n_query") or 0) < 1:
        raise ValueError(
            f"eval.protocol={settings['protocol']} scores queries but eval.n_query="
            f"{settings.get('n_query')}; set eval.n_query=15 (or another value >= 1) or use "
            "eval.protocol=sequence"
        )
    return settings, notes


@dataclass
class ExperimentCfg:
    """A resolved experiment: every section typed, ``extends`` already applied.

    ``learner`` is None only in base files (which training and evaluation reject).
    A loaded config also carries ``origins`` (an attribute, not a config key): where each
    dotted key was set, read by :func:`origin_of` so errors blame the right file or override.
    """

    learner: NamedCfg | None = None
    seed: int = 0
    device: str = "auto"
    data: DataCfg = field(default_factory=DataCfg)
    episodes: EpisodesCfg = field(default_factory=EpisodesCfg)
    train: TrainCfg = field(default_factory=TrainCfg)
    eval: EvalCfg = field(default_factory=EvalCfg)


_NAMED_SECTIONS = {("learner",), ("train", "optimizer"), ("train", "scheduler")}
_DEVICE_RE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


# ---------------------------------------------------------------------------- loading
def load_config(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> ExperimentCfg:
    """Load an experiment YAML (with its ``extends`` base) and apply dotted overrides.

    Args:
        path: the experiment file.
        overrides: ``["train.steps=2000", "learner.slots=64", ...]``.

    Returns:
        The typed :class:`ExperimentCfg`.

    Raises:
        ConfigError: naming the file/override and key path at fault and the allowed keys.
        FileNotFoundError: for a missing file.
    """
    raw, origins = load_raw(path)
    apply_overrides(raw, origins, overrides)
    return config_from_dict(raw, origins=origins, source=str(path))


def load_raw(path: str | Path) -> tuple[dict[str, Any], dict[tuple[str, ...], str]]:
    """The merged (``extends`` applied) plain dict of a file, and where each key came from."""
    path = Path(path)
    data = _read_yaml(path)
    origins: dict[tuple[str, ...], str] = {}
    base_ref = data.pop("extends", None)
    if base_ref is None:
        _record_origins(data, (), str(path), origins)
        return data, origins
    if not isinstance(base_ref, str):
        raise ConfigError(f"{path}: extends: expected a relative file path, got {base_ref!r}")
    base_path = (path.parent / base_ref).resolve()
    if not base_path.is_file():
        raise ConfigError(f"{path}: extends: base file {base_ref!r} not found (looked at {base_path})")
    base = _read_yaml(base_path)
    if "extends" in base:
        raise ConfigError(
            f"{path}: extends: base {base_ref!r} itself has 'extends'; only one level is "
            "allowed: merge the two bases into one file"
        )
    _record_origins(base, (), str(base_path), origins)
    _record_origins(data, (), str(path), origins)
    return _merge(base, data, ()), origins


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise FileNotFoundError(f"config file {str(path)!r} not found")
    try:
        data = safe_yaml.load_file(path)
    except safe_yaml.YamlError as e:
        raise ConfigError(str(e)) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def _merge(base: dict[str, Any], over: dict[str, Any], prefix: tuple[str, ...]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in over.items():
        path = prefix + (key,)
        old = out.get(key)
        replace = (
            path in _NAMED_SECTIONS
            and isinstance(value, dict)
            and isinstance(old, dict)
            and "name" in value
            and value.get("name") != old.get("name")
        )
        if isinstance(value, dict) and isinstance(old, dict) and not replace:
            out[key] = _merge(old, value, path)
        else:
            out[key] = copy.deepcopy(value)
    return out


#: most keys a config may hold (YAML aliases can make a small file describe a huge tree)
_MAX_KEYS = 100_000


def _record_origins(data: Any, prefix: tuple[str, ...], source: str, origins: dict,
                    _seen: tuple[int, ...] = ()) -> None:
    if prefix:
        origins[prefix] = source
        if len(origins) > _MAX_KEYS:
            raise ConfigError(
                f"{source}: more than {_MAX_KEYS} keys (YAML aliases expanding?); a config is "
                "a few dozen keys"
            )
    if isinstance(data, dict):
        if id(data) in _seen:
            raise ConfigError(f"{source}: {'.'.join(prefix)}: a YAML alias refers to itself")
        for k, v in data.items():
            _record_origins(v, prefix + (str(k),), source, origins, _seen + (id(data),))


def parse_overrides(overrides: list[str] | tuple[str, ...]) -> list[tuple[tuple[str, ...], Any]]:
    """``["a.b=1", "c=[5,20]"]`` -> ``[(("a", "b"), 1), (("c",), [5, 20])]`` (values via safe_load).

    Raises:
        ConfigError: for an item without ``=`` or with an empty key part.
    """
    out = []
    for item in overrides:
        key, sep, text = item.partition("=")
        parts = tuple(key.strip().split("."))
        if not sep or not all(parts):
            raise ConfigError(
                f"override {item!r} is not key=value: expected KEY.PATH=VALUE (for example "
                "train.steps=2000 or eval.n_way=[5,20])"
            )
        try:
            value = safe_yaml.safe_load(text) if text.strip() else ""
        except safe_yaml.YamlError as e:
            raise ConfigError(f"override {safe_yaml.shorten(item, 80)!r}: {e}") from None
        except yaml.YAMLError:
            value = text
        out.append((parts, value))
    return out


def apply_overrides(
    raw: dict[str, Any], origins: dict[tuple[str, ...], str], overrides: list[str] | tuple[str, ...]
) -> None:
    """Apply dotted overrides to a plain config dict in place (recording their origin)."""
    for (parts, value), item in zip(parse_overrides(overrides), overrides, strict=True):
        node = raw
        for i, key in enumerate(parts[:-1]):
            child = node.get(key)
            if child is None:
                child = node[key] = {}
            if not isinstance(child, dict):
                raise ConfigError(
                    f"override {item!r}: {'.'.join(parts[: i + 1])} is a value, not a section"
                )
            node = child
        if parts[:-1] in _NAMED_SECTIONS and parts[-1] == "name" and node.get("name") != value:
            node.clear()  # another builder: the old one's kwargs do not apply
        node[parts[-1]] = value
        _record_origins(value, parts, f"override {item!r}", origins)


# ---------------------------------------------------------------------------- typing
def config_from_dict(
    raw: dict[str, Any], *, origins: dict[tuple[str, ...], str] | None = None, source: str = "config"
) -> ExperimentCfg:
    """Convert a plain (merged) dict to :class:`ExperimentCfg`, checking keys and types."""
    ctx = _Ctx(origins or {}, source)
    raw = dict(raw)
    raw.pop("extends", None)
    cfg: ExperimentCfg = _to_dataclass(ExperimentCfg, raw, (), ctx)
    if not _DEVICE_RE.match(cfg.device):
        ctx.fail(("device",), f"expected auto, cpu, cuda or cuda:N, got {cfg.device!r}")
    # where each key was set, for origin_of (an attribute, not a config key)
    cfg.origins = dict(origins or {})  # type: ignore[attr-defined]
    return cfg


def origin_of(cfg: Any, dotted: str, default: str) -> str:
    """Where the value at ``dotted`` (``"train.optimizer.lr"``) was set: the file, or
    ``override 'KEY=VALUE'`` when a command-line override set it (or a section above it).

    Falls back to ``default`` for a config not made by :func:`load_config`/``config_from_dict``.
    """
    origins: dict[tuple[str, ...], str] = getattr(cfg, "origins", None) or {}
    parts = tuple(dotted.split("."))
    for n in range(len(parts), 0, -1):
        if parts[:n] in origins:
            return origins[parts[:n]]
    return default


def config_to_dict(cfg: Any) -> Any:
    """Plain-dict view of a config (``NamedCfg`` flattened back to ``{name, **kwargs}``)."""
    if isinstance(cfg, NamedCfg):
        return {"name": cfg.name, **copy.deepcopy(cfg.kwargs)}
    if dataclasses.is_dataclass(cfg):
        return {f.name: config_to_dict(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}
    return copy.deepcopy(cfg)


class _Ctx:
    def __init__(self, origins: dict[tuple[str, ...], str], source: str) -> None:
        self.origins, self.source = origins, source

    def where(self, path: tuple[str, ...]) -> str:
        for n in range(len(path), 0, -1):
            if path[:n] in self.origins:
                return self.origins[path[:n]]
        return self.source

    def fail(self, path: tuple[str, ...], msg: str) -> None:
        key = ".".join(path) or "(top level)"
        raise ConfigError(f"{self.where(path)}: {key}: {msg}")


def _to_dataclass(cls: Any, raw: Any, path: tuple[str, ...], ctx: _Ctx) -> Any:
    if not isinstance(raw, dict):
        ctx.fail(path, f"expected a section (mapping), got {_short(raw)}")
    hints = get_type_hints(cls)
    allowed = [f.name for f in dataclasses.fields(cls)]
    kw: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in hints:
            ctx.fail(path + (str(key),), f"unknown key; allowed keys: {', '.join(allowed)}")
        kw[key] = _convert(value, hints[key], path + (key,), ctx)
    return cls(**kw)


def _convert(value: Any, tp: Any, path: tuple[str, ...], ctx: _Ctx) -> Any:
    if tp is NamedCfg or tp == NamedCfg | None:
        if not isinstance(value, dict) or not isinstance(value.get("name"), str):
            ctx.fail(path, f"expected a section with a string 'name', got {_short(value)}")
        kwargs = {k: v for k, v in value.items() if k != "name"}
        return NamedCfg(value["name"], copy.deepcopy(kwargs))
    if dataclasses.is_dataclass(tp):
        return _to_dataclass(tp, value, path, ctx)
    ok, out = check_value(value, tp)
    if not ok:
        ctx.fail(path, f"expected {type_name(tp)}, got {_short(value)} ({type(value).__name__})")
    return out


def _short(value: Any) -> str:
    """``repr(value)`` cut to 80 characters (a value from a YAML alias can be megabytes)."""
    return safe_yaml.shorten(repr(value), 80)


def check_value(value: Any, tp: Any) -> tuple[bool, Any]:
    """Whether ``value`` fits the annotation ``tp``; returns ``(ok, value converted)``.

    ints are accepted (and converted) where floats are expected; bools are never ints. A
    class annotation (``torch.Tensor``) needs an instance of it, so ``float | Tensor`` refuses
    a string. Annotation kinds that are not classes (type variables, forward references that
    do not resolve) are accepted as is.
    """
    origin = get_origin(tp)
    if tp is Any or tp is inspect.Parameter.empty:
        return True, value
    if origin is Union or origin is types.UnionType:
        for arg in get_args(tp):
            ok, out = check_value(value, arg)
            if ok:
                return True, out
        return False, value
    if tp is type(None):
        return value is None, value
    if tp is bool:
        return isinstance(value, bool), value
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return True, float(value)
        return False, value
    if tp is str:
        return isinstance(value, str), value
    if origin is Literal:
        return value in get_args(tp), value
    if origin in (list, tuple) or tp in (list, tuple):
        if not isinstance(value, (list, tuple)):
            return False, value
        args = get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                return False, value
        else:
            args = (args[0] if args else Any,) * len(value)
        items = []
        for item, arg in zip(value, args, strict=True):
            ok, out = check_value(item, arg)
            if not ok:
                return False, value
            items.append(out)
        return True, (tuple(items) if origin is tuple or tp is tuple else items)
    if origin is dict or tp is dict:
        return isinstance(value, dict), value
    if isinstance(tp, type):  # a class (torch.Tensor, torch.dtype...): a config value must be one
        return isinstance(value, tp), value
    if isinstance(origin, type):  # Sequence[int], Callable[...]...: check the container kind only
        return isinstance(value, origin), value
    return True, value


def type_name(tp: Any) -> str:
    """A readable name for an annotation (``int | list[int]``, ``one of set, sequence, both``)."""
    if get_origin(tp) is Literal:
        return "one of " + ", ".join(str(a) for a in get_args(tp))
    if isinstance(tp, type) and get_origin(tp) is None:
        return tp.__name__
    return str(tp).replace("typing.", "")


_UNITS = {"": 1, "b": 1, "k": 1 << 10, "kb": 10**3, "kib": 1 << 10, "m": 1 << 20, "mb": 10**6,
          "mib": 1 << 20, "g": 1 << 30, "gb": 10**9, "gib": 1 << 30, "t": 1 << 40, "tb": 10**12,
          "tib": 1 << 40}


def parse_memory_budget(value: int | str) -> int:
    """Bytes of ``eval.memory_budget``: an int, or a size such as ``"512MiB"``, ``"2GB"``, ``"1g"``.

    Raises:
        ConfigError: for anything else, or a budget below 1 MiB.
    """
    n: float | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        n = value
    elif isinstance(value, str):
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", value)
        if m and m.group(2).lower() in _UNITS:
            n = float(m.group(1)) * _UNITS[m.group(2).lower()]
    if n is None or n < (1 << 20):
        raise ConfigError(
            f"eval.memory_budget must be bytes (an int) or a size like '512MiB' or '2GiB', at "
            f"least 1MiB; got {value!r}"
        )
    return int(n)


#: ``episodes.augment`` keys (the fields of :class:`metamem.episodes.AffineAugment`, in order)
#: and the closed range of each value.
AUGMENT_LIMITS: dict[str, tuple[float, float]] = {
    "rotate": (0.0, 180.0), "translate": (0.0, 1.0), "scale": (0.0, 1.0), "shear": (0.0, 60.0),
    "crop_area": (1e-6, 1.0), "crop_aspect": (1.0, 10.0), "flip": (0.0, 1.0),
    "brightness": (0.0, 1.0), "contrast": (0.0, 1.0), "saturation": (0.0, 1.0),
}


def check_augment_value(key: str, value: Any) -> None:
    """Raise a ValueError (``augment.KEY must be ...``) unless ``value`` is a finite number in
    the range of ``AUGMENT_LIMITS[key]``."""
    import math

    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"augment.{key} must be a number, got {value!r}")
    lo, hi = AUGMENT_LIMITS[key]
    if not lo <= float(value) <= hi:
        raise ValueError(f"augment.{key} must be in [{0 if lo < 1e-3 else lo:g}, {hi:g}], got {value!r}")


def augment_kwargs(options: Mapping[str, Any]) -> dict[str, Any]:
    """The checked keyword arguments of an ``episodes.augment`` mapping (ints become floats),
    without importing torch: what :func:`metamem.episodes.build_augment` and ``metamem
    validate`` check.

    Raises:
        ValueError: for an unknown key (listing the valid ones) or a bad value.
    """
    bad = [k for k in options if k not in AUGMENT_LIMITS]
    if bad:
        raise ValueError(f"augment: unknown key {bad[0]!r}; valid keys: {', '.join(AUGMENT_LIMITS)}")
    out = {k: float(v) if isinstance(v, int) and not isinstance(v, bool) else v for k, v in options.items()}
    for key in AUGMENT_LIMITS:  # in field order, as AffineAugment checks them
        if key in out:
            check_augment_value(key, out[key])
    return out
