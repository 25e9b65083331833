"""Decode once: decoded splits are stored as ``.npy`` arrays and memory-mapped later.

An entry lives in ``<cache root>/decoded/<dataset>/<key>/`` with ``images.npy`` (uint8
``[M, C, H, W]``), ``labels.npy`` (int64 ``[M]``) and ``meta.json`` (class names, groups,
the key material). The key hashes the source files' content hash together with every
preprocessing setting, so a changed source or setting gives a new entry. Every file is
written to a temporary name and moved in place with :func:`os.replace`; ``meta.json`` is
written last, so an entry without it is incomplete and is rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from metamem.data.base import ImageDataset
from metamem.data.paths import cache_root
from metamem.files import atomic_write, make_readable

__all__ = ["Decoded", "cached_decode", "cache_key", "atomic_write_bytes", "to_dataset", "decoded_dataset",
           "images_buffer"]

CACHE_VERSION = 1


@dataclass
class Decoded:
    """Decoded arrays of a split and their class table.

    Attributes:
        images: uint8 ``[M, C, H, W]``.
        labels: int64 ``[M]``.
        class_names: one name per class.
        groups: group id per class, or ``None``.
        group_names: name per group id, or ``None``.
    """

    images: np.ndarray
    labels: np.ndarray
    class_names: list[str]
    groups: list[int] | None = None
    group_names: list[str] | None = None


def cache_key(material: dict[str, Any]) -> str:
    """sha256 hex digest of the JSON form of ``material`` (keys sorted)."""
    blob = json.dumps({"cache_version": CACHE_VERSION, **material}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


#: the name :func:`metamem.files.atomic_write` had here.
atomic_write_bytes = atomic_write


def _load_entry(folder: Path, key: str) -> Decoded | None:
    try:
        meta = json.loads((folder / "meta.json").read_text())
        if meta.get("key") != key:
            return None
        images = np.load(folder / "images.npy", mmap_mode="c")
        labels = np.load(folder / "labels.npy")
    except (OSError, ValueError):
        return None
    return Decoded(images, labels, meta["class_names"], meta["groups"], meta["group_names"])


def images_buffer(
    dataset: str,
    shape: tuple[int, ...],
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    cache: bool = True,
) -> np.ndarray:
    """A uint8 array of ``shape`` for a loader's ``build`` to decode into.

    With the cache on it is a new ``.npy`` file memory-mapped from the cache folder
    (:func:`numpy.lib.format.open_memmap`): a split larger than memory is decoded without
    holding it, and :func:`cached_decode` moves the file into the entry instead of writing
    a copy. Without the cache it is an ordinary array.
    """
    if not cache:
        return np.empty(shape, dtype=np.uint8)
    folder = cache_root(cache_dir) / "decoded" / dataset
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".images.", suffix=".npy.tmp", dir=folder)
    make_readable(fd)
    os.close(fd)
    return np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=shape)


def _store_images(folder: Path, images: np.ndarray) -> None:
    name = getattr(images, "filename", None)
    if isinstance(images, np.memmap) and name and Path(name).name.startswith(".images."):
        images.flush()  # a buffer of images_buffer: move the file in place
        with open(name, "rb+") as f:
            os.fsync(f.fileno())
        folder.mkdir(parents=True, exist_ok=True)
        os.replace(name, folder / "images.npy")
        return
    atomic_write(folder / "images.npy", lambda f: np.save(f, np.ascontiguousarray(images)))


def _store_entry(folder: Path, key: str, material: dict[str, Any], d: Decoded) -> None:
    _store_images(folder, d.images)
    atomic_write(folder / "labels.npy", lambda f: np.save(f, d.labels.astype(np.int64)))
    meta = {
        "key": key,
        "material": material,
        "class_names": d.class_names,
        "groups": d.groups,
        "group_names": d.group_names,
    }
    atomic_write(folder / "meta.json", lambda f: f.write(json.dumps(meta, indent=1).encode()))


def cached_decode(
    dataset: str,
    material: dict[str, Any],
    build: Callable[[], Decoded],
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    cache: bool = True,
) -> tuple[Decoded, dict[str, Any]]:
    """Return the decoded arrays for ``material``, building and storing them on a miss.

    Args:
        dataset: dataset name (a sub-folder of the cache).
        material: everything the result depends on: source content hashes and
            preprocessing settings (JSON-serialisable).
        build: decodes the source; called only on a cache miss.
        cache_dir: cache root (default ``$METAMEM_CACHE`` or ``~/.cache/metamem``).
        cache: ``False`` decodes without reading or writing the cache.

    Returns:
        The arrays (images memory-mapped copy-on-write on a hit) and cache info
        ``{"cache_path", "cache_key", "cache_hit"}``.
    """
    key = cache_key(material)
    if not cache:
        return build(), {"cache_path": None, "cache_key": key, "cache_hit": False}
    folder = cache_root(cache_dir) / "decoded" / dataset / key[:32]
    hit = _load_entry(folder, key)
    if hit is not None:
        return hit, {"cache_path": str(folder), "cache_key": key, "cache_hit": True}
    d = build()
    _store_entry(folder, key, material, d)
    if isinstance(d.images, np.memmap):  # reopen the moved file read-only, like a hit
        d.images = np.load(folder / "images.npy", mmap_mode="c")
    return d, {"cache_path": str(folder), "cache_key": key, "cache_hit": False}


def to_dataset(d: Decoded, *, name: str, split: str | None, info: dict[str, Any]) -> ImageDataset:
    """Wrap decoded arrays (no copy) in an :class:`ImageDataset`."""
    return ImageDataset(
        images=torch.from_numpy(d.images),
        labels=torch.from_numpy(np.asarray(d.labels, dtype=np.int64)),
        class_names=list(d.class_names),
        groups=None if d.groups is None else torch.as_tensor(d.groups, dtype=torch.int64),
        group_names=None if d.group_names is None else list(d.group_names),
        name=name,
        split=split,
        info=info,
    )


def decoded_dataset(
    name: str,
    split: str,
    material: dict[str, Any],
    build: Callable[[], Decoded],
    *,
    info: dict[str, Any],
    cache_dir: str | os.PathLike[str] | None = None,
    cache: bool = True,
) -> ImageDataset:
    """A loader's last step: :func:`cached_decode` then :func:`to_dataset`, whose ``info`` is
    ``info`` followed by the cache info (``cache_path``, ``cache_key``, ``cache_hit``).

    ``info`` is read after the decode, so ``build`` may add to it (mini-ImageNet's ``decode_s``).
    """
    decoded, cinfo = cached_decode(name, material, build, cache_dir=cache_dir, cache=cache)
    return to_dataset(decoded, name=name, split=split, info={**info, **cinfo})
