"""Where dataset files live: bundled data, downloaded data and the decode cache.

* bundled data and cards: the repository's ``datasets/`` folder (``metamem/_datasets``
  in an installed wheel);
* downloaded data (``metamem prepare``): ``$METAMEM_DATA`` or ``~/.cache/metamem/data``;
* decoded arrays: ``$METAMEM_CACHE`` or ``~/.cache/metamem``.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["bundled_dir", "data_root", "cache_root"]

_PKG = Path(__file__).resolve().parents[1]


def bundled_dir(*parts: str) -> Path:
    """The bundled ``datasets/`` folder (or a path inside it)."""
    for base in (_PKG.parent / "datasets", _PKG / "_datasets"):
        if base.is_dir():
            return base.joinpath(*parts)
    return (_PKG.parent / "datasets").joinpath(*parts)


def data_root(root: str | os.PathLike[str] | None = None) -> Path:
    """``root`` if given, else ``$METAMEM_DATA``, else ``~/.cache/metamem/data``."""
    if root is not None:
        return Path(root).expanduser()
    env = os.environ.get("METAMEM_DATA")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "metamem" / "data"


def cache_root(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """``cache_dir`` if given, else ``$METAMEM_CACHE``, else ``~/.cache/metamem``."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get("METAMEM_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "metamem"
