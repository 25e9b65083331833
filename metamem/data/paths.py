"""Where dataset files live: bundled data, downloaded data and the decode cache.

* bundled data and cards: the repository's ``datasets/`` folder (``metamem/_datasets``
  in an installed wheel);
* downloaded data (``metamem prepare``): ``$METAMEM_DATA`` or ``~/.cache/metamem/data``;
* decoded arrays: ``$METAMEM_CACHE`` or ``~/.cache/metamem``.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["bundled_dir", "data_root", "dataset_dir", "split_file", "cache_root"]

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


def dataset_dir(root: str | os.PathLike[str] | None, folder: str) -> Path:
    """``root`` if given, else the dataset's folder ``folder`` under :func:`data_root`."""
    return data_root(root) if root is not None else data_root() / folder


def split_file(split_dir: str | os.PathLike[str] | None, dataset: str, name: str) -> Path:
    """The split list ``name`` in ``split_dir`` if given, else in the bundled ``datasets/<dataset>``."""
    return (Path(split_dir) if split_dir is not None else bundled_dir(dataset)) / name


def cache_root(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """``cache_dir`` if given, else ``$METAMEM_CACHE``, else ``~/.cache/metamem``."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get("METAMEM_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "metamem"
