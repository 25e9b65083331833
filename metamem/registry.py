"""Small named registries, one per component kind (datasets, learners, write policies, ...).

A registry maps a name to a builder (a class or a function taking keyword arguments).
Components register themselves with a decorator in their own module, and the subpackage's
``__init__`` imports each built-in module explicitly. Third-party packages can add
components through the ``metamem.plugins`` entry-point group (loaded by the CLI only, see
:func:`load_plugins`).

Example::

    from metamem.registry import Registry
    MODELS = Registry("model")

    @MODELS.register("tiny")
    def build_tiny(*, width: int = 8) -> nn.Module: ...

    MODELS.build("tiny", width=4)
"""

from __future__ import annotations

import difflib
import functools
import inspect
import typing
import warnings
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Generic, TypeVar

T = TypeVar("T", bound=Callable[..., Any])

__all__ = [
    "Registry", "UnknownNameError", "builder_hints", "forwards_to", "load_plugins", "renamed_keys", "renames_of", "rename_keys",
    "RenamedKeyWarning", "RenamedKeyError",
]


class UnknownNameError(KeyError, ValueError):
    """Raised for a name that is not registered; the message lists the valid names."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class Registry(Generic[T]):
    """A name → builder mapping with helpful errors.

    Args:
        kind: what the registry holds, used in messages ("learner", "write policy", ...).
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator that registers ``obj`` under ``name``.

        Raises:
            ValueError: if ``name`` is already registered to a different object.
        """

        def deco(obj: T) -> T:
            old = self._items.get(name)
            if old is not None and old is not obj:
                raise ValueError(
                    f"{self.kind} {name!r} is already registered (to {_qualname(old)}); "
                    f"pick another name for {_qualname(obj)}"
                )
            self._items[name] = obj
            return obj

        return deco

    def get(self, name: str) -> T:
        """Return the builder registered as ``name``.

        Raises:
            UnknownNameError: naming the valid choices and the closest matches.
        """
        try:
            return self._items[name]
        except KeyError:
            raise UnknownNameError(self.unknown_message(name)) from None

    def unknown_message(self, name: object) -> str:
        valid = ", ".join(self.names()) or "(none registered)"
        close = difflib.get_close_matches(str(name), self.names(), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return f"unknown {self.kind} {name!r}{hint}; valid {self.kind}s: {valid}"

    def build(self, name: str, /, **kwargs: Any) -> Any:
        """Call the builder registered as ``name`` with ``kwargs``."""
        return self.get(name)(**kwargs)

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._items)

    def describe(self) -> list[tuple[str, str]]:
        """``(name, first docstring line)`` for each registered component."""
        out = []
        for name in self.names():
            doc = inspect.getdoc(self._items[name]) or ""
            out.append((name, doc.splitlines()[0] if doc else ""))
        return out

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self.names()})"


def _qualname(obj: object) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', repr(obj))}"


class RenamedKeyWarning(FutureWarning):
    """A builder keyword given by its old name (it still works; the config should say the new one).

    A :class:`FutureWarning` (Python's category for deprecations aimed at end users), so it
    is shown by default, unlike a plain ``DeprecationWarning`` raised in library code.
    """


class RenamedKeyError(ValueError):
    """A keyword given under both its old and its new name."""


def rename_keys(
    kwargs: Mapping[str, Any], renames: Mapping[str, str], *, owner: str, prefix: str = "",
    where: Callable[[str], str] | None = None,
) -> dict[str, Any]:
    """``kwargs`` with each deprecated key of ``renames`` (old -> new) under its new name.

    Each old key warns once per call (:class:`RenamedKeyWarning`, one line naming both).

    Args:
        kwargs: keyword arguments, maybe with old names.
        renames: old name -> new name.
        owner: the builder or section named in messages (``"learner mann"``).
        prefix: dotted config path put before each key in messages (``"learner."``).
        where: maps a dotted key to where it was set (a file or override), for messages.

    Raises:
        RenamedKeyError: when a key is given under both names (one line, naming both).
    """
    out = dict(kwargs)
    for old, new in renames.items():
        if old not in out:
            continue
        at = f"{where(prefix + old)}: " if where is not None else ""
        if new in out:
            raise RenamedKeyError(
                f"{at}{owner}: {prefix}{old} is the old name of {prefix}{new} and both are given; "
                f"keep {prefix}{new} only"
            )
        warnings.warn(
            f"{at}{owner}: {prefix}{old} is deprecated, renamed {prefix}{new} (the old name still loads)",
            RenamedKeyWarning, stacklevel=3,
        )
        out[new] = out.pop(old)
    return out


def renamed_keys(**renames: str) -> Callable[[T], T]:
    """Decorator for a builder whose keyword arguments were renamed: ``old=new`` pairs.

    The wrapped builder keeps the new signature (``inspect.signature`` follows it, so
    ``metamem validate`` and ``metamem ls`` show the new names) and still accepts each old
    name, with a :class:`RenamedKeyWarning`; both names at once raise :class:`RenamedKeyError`.
    :func:`renames_of` reads the table back (the manifest stores it for ``metamem validate``).

    Example::

        @LEARNERS.register("mann")
        @renamed_keys(memory_slots="slots")
        def build_mann(*, n_way: int, image_shape: tuple[int, int, int], slots: int = 128): ...
    """

    def deco(builder: T) -> T:
        params = inspect.signature(builder).parameters
        for old, new in renames.items():
            if new not in params or old in params:
                raise ValueError(
                    f"renamed_keys on {_qualname(builder)}: {old!r} -> {new!r} needs {new!r} and not "
                    f"{old!r} among its parameters"
                )
        owner = getattr(builder, "__name__", "builder")

        @functools.wraps(builder)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            return builder(*args, **rename_keys(kwargs, renames, owner=owner))

        wrapper.__renamed__ = dict(renames)  # type: ignore[attr-defined]
        return wrapper  # type: ignore[return-value]

    return deco


def builder_hints(builder: Any) -> dict[str, Any]:
    """The resolved annotations of a builder (a class's ``__init__``, or a function).

    Raises:
        TypeError: an annotation names something the builder's module does not define or
            import (a missing import is a bug: its config would go unchecked).
    """
    target = typing.cast(Any, builder).__init__ if isinstance(builder, type) else builder
    try:
        return typing.get_type_hints(target)
    except NameError as e:
        where = f"{getattr(builder, '__module__', '?')}.{getattr(builder, '__qualname__', builder)}"
        raise TypeError(f"{where}: its type annotations do not resolve ({e}); import that name in its module") from e


def forwards_to(target: Callable[..., Any], *, drop: tuple[str, ...] = ()) -> Callable[[T], T]:
    """Decorator for a builder that builds some parts itself and passes its other keyword
    arguments on to ``target`` (a class): ``def build(*, n_way, backbone="conv4", **options)``.

    The builder's signature becomes its own keyword parameters followed by ``target``'s
    keyword parameters (less ``drop``, the parts the builder makes, and the names it has
    itself), with their defaults and annotations (resolved here, in ``target``'s module).
    So ``inspect.signature`` and ``typing.get_type_hints`` (``metamem validate``, ``metamem
    ls``) see every key, while each default is written once, on ``target``.
    """

    def deco(builder: T) -> T:
        own = inspect.signature(builder)
        kept = [p for p in own.parameters.values() if p.kind is not p.VAR_KEYWORD]
        if len(kept) == len(own.parameters):
            raise ValueError(f"forwards_to on {_qualname(builder)}: the builder needs **options to forward")
        skip = {p.name for p in kept} | set(drop)
        keyword = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        annotations = builder_hints(target)
        extra = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in inspect.signature(target).parameters.values()
                 if p.kind in keyword and p.name not in skip]
        builder.__signature__ = own.replace(parameters=kept + extra)  # type: ignore[attr-defined]
        var_kw = next(p.name for p in own.parameters.values() if p.kind is p.VAR_KEYWORD)
        builder.__annotations__ = {**{k: v for k, v in builder.__annotations__.items() if k != var_kw},
                                   **{p.name: annotations[p.name] for p in extra if p.name in annotations}}
        return builder

    return deco


def renames_of(builder: object) -> dict[str, str]:
    """The ``old -> new`` keyword renames a builder declared with :func:`renamed_keys` (or
    a manifest :class:`~metamem.manifest.BuilderSpec` recorded); ``{}`` for none."""
    return dict(getattr(builder, "__renamed__", None) or {})


_PLUGINS_LOADED = False


def load_plugins(group: str = "metamem.plugins") -> list[str]:
    """Import every module advertised in the ``metamem.plugins`` entry-point group.

    A plugin module registers its components on import (``@DATASETS.register(...)``).
    Called once by the CLI; library code never calls it implicitly.

    Returns:
        The entry-point names that were loaded.
    """
    global _PLUGINS_LOADED
    if _PLUGINS_LOADED:
        return []
    from importlib import metadata  # here: importing it costs ~0.1 s of every CLI start

    loaded = []
    for ep in metadata.entry_points(group=group):
        ep.load()
        loaded.append(ep.name)
    _PLUGINS_LOADED = True
    return loaded
