"""What is registered, without importing torch: a cached manifest of the registries.

``metamem ls`` and ``metamem validate`` only need each registered builder's name, first
docstring line and signature. Importing the builders themselves costs seconds (torch), so
the first call imports them once and writes a manifest (JSON) under the cache root
(``$METAMEM_CACHE`` or ``~/.cache/metamem``); later calls read it in milliseconds. The
manifest file name is a hash of everything it depends on: the metamem version, the path,
size and modification time of every module of the package, the torch and Python versions
and the ``metamem.plugins`` entry points. Any change there writes a new manifest.

When the registries' modules are already imported (inside training, a test, or after a
plugin was loaded), :func:`registry` returns the live :class:`~metamem.registry.Registry`
itself, so both paths check the same builders.

A manifest entry holds plain data only (no code): parameter names, kinds and whether they
have a default, and each annotation as a small JSON tree of the types a config can hold
(``int``, ``float``, ``str``, ``bool``, ``None``, unions, lists, tuples, dicts, literals).
Other annotations are left out, and their values are then only checked by binding.
"""

from __future__ import annotations

import importlib
import os
import sys
import types
from typing import TYPE_CHECKING, Any, Literal, Union, get_args, get_origin

if TYPE_CHECKING:
    import inspect
    from pathlib import Path

    from metamem.registry import Registry

__all__ = [
    "REGISTRIES", "BuilderSpec", "registry", "manifest_path", "build_manifest", "limited_ways_of",
]

#: listable name -> (module that fills the registry, registry attribute)
REGISTRIES: dict[str, tuple[str, str]] = {
    "datasets": ("metamem.data", "DATASETS"),
    "learners": ("metamem.learners", "LEARNERS"),
    "backbones": ("metamem.learners", "BACKBONES"),
    "write-policies": ("metamem.memory", "WRITE_POLICIES"),
    "cores": ("metamem.memory", "MEMORY_CORES"),
    "optimizers": ("metamem.optim", "OPTIMIZERS"),
    "schedulers": ("metamem.optim", "SCHEDULERS"),
}
_FORMAT = 2  # 2: builders record their renamed keywords
_PKG = os.path.dirname(os.path.realpath(__file__))  # (pathlib is imported only when needed)


class BuilderSpec:
    """A registered builder as data: its name, first docstring line, signature and the
    annotations that a config value can be checked against.

    (A plain class, not a dataclass: this module is imported by every ``metamem`` start.)
    """

    def __init__(self, name: str, doc: str, signature: inspect.Signature, hints: dict[str, Any],
                 builder_name: str = "", renamed: dict[str, str] | None = None,
                 limited_ways: bool = False) -> None:
        self.name, self.doc, self.signature, self.hints = name, doc, signature, hints
        self.__renamed__ = dict(renamed or {})  # old -> new keyword names (registry.renames_of)
        self.limited_ways = limited_ways  # see limited_ways_of
        self.__doc__ = doc  # what Registry.describe and messages read
        self.__name__ = builder_name or name

    def __repr__(self) -> str:
        return f"BuilderSpec({self.name!r}, {self.signature})"


def _encode_type(tp: Any) -> Any:
    """A JSON tree for a config-checkable annotation, else ``None``."""
    names = {int: "int", float: "float", str: "str", bool: "bool", type(None): "none", Any: "any"}
    if tp in names:
        return names[tp]
    origin, args = get_origin(tp), get_args(tp)
    if origin is Union or origin is types.UnionType:
        parts = [_encode_type(a) for a in args]
        return None if any(p is None for p in parts) else {"union": parts}
    if origin is Literal:
        ok = all(isinstance(a, (str, int, float, bool)) or a is None for a in args)
        return {"literal": list(args)} if ok else None
    if origin in (list, tuple) or tp in (list, tuple, dict) or origin is dict:
        kind = "dict" if (origin or tp) is dict else ("list" if (origin or tp) is list else "tuple")
        parts = ["ellipsis" if a is Ellipsis else _encode_type(a) for a in args]
        return None if any(p is None for p in parts) else {kind: parts}
    return None


def _decode_type(node: Any) -> Any:
    names = {"int": int, "float": float, "str": str, "bool": bool, "none": type(None), "any": Any}
    if isinstance(node, str):
        return names[node]
    (kind, val), = node.items()
    if kind == "union":
        return Union[tuple(_decode_type(v) for v in val)]  # noqa: UP007
    if kind == "literal":
        return Literal[tuple(val)]
    args = tuple(Ellipsis if v == "ellipsis" else _decode_type(v) for v in val)
    base: Any = {"list": list, "tuple": tuple, "dict": dict}[kind]
    return base[args] if args else base


def spec_of(name: str, builder: Any) -> BuilderSpec:
    """The :class:`BuilderSpec` of a live builder (a function or a class)."""
    import inspect

    from metamem.registry import builder_hints, renames_of

    doc = inspect.getdoc(builder) or ""
    return BuilderSpec(name, doc.splitlines()[0] if doc else "", inspect.signature(builder), builder_hints(builder),
                       getattr(builder, "__name__", name), renames_of(builder), limited_ways_of(builder))


def limited_ways_of(builder: Any) -> bool:
    """Whether a learner builder makes a learner that declares
    :class:`~metamem.learners.capabilities.LimitedWays` (``learner.max_way`` label units:
    MANN, LSTM, MetaNet), which cannot score more ways than that. Read from a
    :class:`BuilderSpec`, or from the class (or the annotated return class of a builder
    function)."""
    if isinstance(builder, BuilderSpec):
        return builder.limited_ways
    from metamem.registry import builder_hints

    cls = builder if isinstance(builder, type) else builder_hints(builder).get("return")
    if not isinstance(cls, type):
        return False
    from metamem.learners.capabilities import LimitedWays

    return issubclass(cls, LimitedWays)


def _spec_to_json(spec: BuilderSpec) -> dict[str, Any]:
    from metamem.registry import renames_of

    params = [[p.name, int(p.kind), p.default is not p.empty] for p in spec.signature.parameters.values()]
    hints = {}
    for key, tp in spec.hints.items():
        enc = _encode_type(tp)
        if enc is not None and key != "return":
            hints[key] = enc
    return {"doc": spec.doc, "params": params, "hints": hints, "builder": spec.__name__,
            "renamed": renames_of(spec), "limited_ways": spec.limited_ways}


def _spec_from_json(name: str, d: dict[str, Any]) -> BuilderSpec:
    import inspect

    params = [
        inspect.Parameter(n, inspect._ParameterKind(kind), default=None if has_default else inspect.Parameter.empty)
        for n, kind, has_default in d["params"]
    ]
    hints = {k: _decode_type(v) for k, v in d["hints"].items()}
    return BuilderSpec(name, d["doc"], inspect.Signature(params), hints, d.get("builder", name),
                       d.get("renamed"), bool(d.get("limited_ways", False)))


def _key() -> str:
    import hashlib
    from importlib import metadata  # here, not at import: it is slow to import

    h = hashlib.sha256(f"metamem-manifest-{_FORMAT}|{sys.version}|{_PKG}".encode())
    for dist in ("metamem", "torch"):
        try:
            h.update(f"|{dist}={metadata.version(dist)}".encode())
        except metadata.PackageNotFoundError:
            h.update(f"|{dist}=?".encode())
    for ep in metadata.entry_points(group="metamem.plugins"):
        h.update(f"|plugin {ep.name}={ep.value}".encode())
    from pathlib import Path

    pkg = Path(_PKG)
    for path in sorted(pkg.rglob("*.py")):
        st = path.stat()
        h.update(f"|{path.relative_to(pkg)}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:20]


def manifest_path() -> Path:
    """The manifest file for the installed code (under ``$METAMEM_CACHE`` or ``~/.cache/metamem``)."""
    from pathlib import Path

    env = os.environ.get("METAMEM_CACHE")
    root = Path(env).expanduser() if env else Path.home() / ".cache" / "metamem"
    return root / "manifests" / f"registries-{_key()}.json"


def build_manifest() -> dict[str, dict[str, Any]]:
    """Import every registry and describe its builders (the slow path)."""
    out: dict[str, dict[str, Any]] = {}
    for what, (module, attr) in REGISTRIES.items():
        reg = getattr(importlib.import_module(module), attr)
        out[what] = {"kind": reg.kind, "items": {n: _spec_to_json(spec_of(n, reg.get(n))) for n in reg.names()}}
    return out


_LOADED: dict[str, Any] = {}  # this process's manifest (read once)


def _load_manifest() -> dict[str, dict[str, Any]]:
    if "registries" not in _LOADED:
        _LOADED["registries"] = _read_or_build()
    return _LOADED["registries"]


def _read_or_build() -> dict[str, dict[str, Any]]:
    import json
    import tempfile

    path = manifest_path()
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        if doc.get("format") == _FORMAT:
            return doc["registries"]
    except (OSError, ValueError, KeyError, AttributeError):
        pass  # missing or unreadable: rebuild it

    regs = build_manifest()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump({"format": _FORMAT, "registries": regs}, f)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except OSError:
        pass  # a read-only cache only costs speed
    return regs


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def registry(what: str) -> Registry[Any]:
    """The registry ``what`` (a key of :data:`REGISTRIES`): the live one when its module is
    already imported, else a registry of :class:`BuilderSpec` read from the manifest."""
    module, attr = REGISTRIES[what]
    if module in sys.modules:
        return getattr(sys.modules[module], attr)
    if what not in _LOADED:
        from metamem.registry import Registry

        entry = _load_manifest()[what]
        reg: Registry[Any] = Registry(entry["kind"])
        for name, d in entry["items"].items():
            reg.register(name)(_spec_from_json(name, d))
        _LOADED[what] = reg
    return _LOADED[what]
