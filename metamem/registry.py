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
import inspect
from typing import Any, Callable, Generic, Iterator, TypeVar

T = TypeVar("T", bound=Callable[..., Any])

__all__ = ["Registry", "UnknownNameError", "load_plugins"]


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
