"""CIFAR-FS (Bertinetto et al., 2019) and FC100 (Oreshkin et al., 2018), both from CIFAR-100.

Both benchmarks take all 600 images (train and test files together) of each CIFAR-100 class
and split the 100 classes for meta-learning:

* ``cifar_fs``: 64 / 16 / 20 classes drawn at random by Bertinetto et al., "Meta-learning
  with differentiable closed-form solvers" (ICLR 2019);
* ``fc100``: by superclass, 12 / 4 / 4 superclasses (60 / 20 / 20 classes), Oreshkin et
  al., "TADAM: Task dependent adaptive metric for improved few-shot learning" (NeurIPS 2018).

The class (CIFAR-FS) and superclass (FC100) lists are bundled in ``datasets/cifar_fs`` and
``datasets/fc100`` (see their cards). The images come from the official python archive
``cifar-100-python.tar.gz`` (``metamem prepare cifar_fs``), read in place, or from its
extracted folder ``cifar-100-python/``. The archive's pickles are read with the restricted
unpickler (numpy arrays and plain containers only).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from metamem.data.base import DatasetError, ImageDataset
from metamem.data.cache import Decoded
from metamem.data.mini_imagenet import restricted_pickle_loadf
from metamem.data.options import ImageOptions, image_loader
from metamem.data.sources import file_md5, image_to_array, read_tar_members

__all__ = ["CIFAR_FILES", "load_cifar_fs", "load_fc100", "read_cifar100", "read_name_list"]

#: members of the official archive (under ``cifar-100-python/``)
CIFAR_FILES = ("train", "test", "meta")
_TOP = "cifar-100-python"


def read_name_list(path: str | os.PathLike[str]) -> list[str]:
    """Names of a split list file: one per line, blank lines and ``#`` comments skipped."""
    p = Path(path)
    try:
        lines = p.read_text().splitlines()
    except OSError as e:
        raise DatasetError(f"cannot read split file {p}: {e.strerror or e}") from None
    names = [s.strip() for s in lines if s.strip() and not s.strip().startswith("#")]
    if not names:
        raise DatasetError(f"split file {p} lists no names")
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise DatasetError(f"split file {p} lists {dup!r} twice")
    return names


def _str_keys(obj: Any, where: str) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise DatasetError(f"{where}: expected a pickled dict, got {type(obj).__name__}")
    return {k.decode("latin1") if isinstance(k, bytes) else str(k): v for k, v in obj.items()}


def _names(v: Any, where: str, key: str) -> list[str]:
    if not isinstance(v, (list, tuple)):
        raise DatasetError(f"{where}: {key!r} must be a list of names")
    return [x.decode("latin1") if isinstance(x, bytes) else str(x) for x in v]


def _source(root: Path) -> tuple[str, str, dict[str, Any]]:
    """(kind, path, md5 material) of the CIFAR-100 data under ``root``."""
    archive = root / "cifar-100-python.tar.gz"
    folder = root / _TOP
    if archive.is_file():
        return "archive", str(archive), {"archive": file_md5(archive)}
    if folder.is_dir():
        missing = [f for f in CIFAR_FILES if not (folder / f).is_file()]
        if missing:
            raise DatasetError(f"{folder}/{missing[0]} is missing; extract the whole official archive again")
        return "folder", str(folder), {f: file_md5(folder / f) for f in CIFAR_FILES}
    raise DatasetError(
        f"no CIFAR-100 data in {root}: expected cifar-100-python.tar.gz or cifar-100-python/; "
        "run: metamem prepare cifar_fs (or --from PATH for a local copy)"
    )


def read_cifar100(kind: str, path: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str], list[str]]:
    """All 60,000 images of CIFAR-100 (train file, then test file).

    Returns:
        images uint8 ``[M, 3, 32, 32]``, fine labels int64 ``[M]``, coarse labels int64
        ``[M]``, fine class names, coarse class names.
    """
    parts: dict[str, dict[str, Any]] = {}
    if kind == "archive":
        members = {f"{_TOP}/{leaf}": leaf for leaf in CIFAR_FILES}
        for m, part in read_tar_members(
            path, lambda m: m.name in members,
            lambda m, f: _str_keys(restricted_pickle_loadf(f, f"{path}:{m.name}"), f"{path}:{m.name}"),
        ):
            parts[members[m.name]] = part
        missing = [f for f in CIFAR_FILES if f not in parts]
        if missing:
            raise DatasetError(f"{path} lacks member {_TOP}/{missing[0]}; it is not the official CIFAR-100 archive")
    else:
        for leaf in CIFAR_FILES:
            p = Path(path) / leaf
            with open(p, "rb") as f:
                parts[leaf] = _str_keys(restricted_pickle_loadf(f, p), str(p))
    where = f"{path}:{_TOP}/meta"
    meta = parts["meta"]
    for key in ("fine_label_names", "coarse_label_names"):
        if key not in meta:
            raise DatasetError(f"{where}: key {key!r} is missing")
    fine_names = _names(meta["fine_label_names"], where, "fine_label_names")
    coarse_names = _names(meta["coarse_label_names"], where, "coarse_label_names")
    images, fine, coarse = [], [], []
    for leaf in ("train", "test"):
        d, w = parts[leaf], f"{path}:{_TOP}/{leaf}"
        for key in ("data", "fine_labels", "coarse_labels"):
            if key not in d:
                raise DatasetError(f"{w}: key {key!r} is missing")
        x = d["data"]
        if not (isinstance(x, np.ndarray) and x.dtype == np.uint8 and x.ndim == 2 and x.shape[1] == 3072):
            raise DatasetError(f"{w}: 'data' must be uint8 [M, 3072], got {getattr(x, 'dtype', type(x).__name__)} "
                               f"{getattr(x, 'shape', '')}")
        fl, cl = np.asarray(d["fine_labels"], dtype=np.int64), np.asarray(d["coarse_labels"], dtype=np.int64)
        if fl.shape != (len(x),) or cl.shape != (len(x),):
            raise DatasetError(f"{w}: 'fine_labels' and 'coarse_labels' must give one label per row of 'data'")
        if len(fl) and (fl.min() < 0 or fl.max() >= len(fine_names) or cl.min() < 0 or cl.max() >= len(coarse_names)):
            raise DatasetError(f"{w}: labels fall outside the {len(fine_names)} fine / {len(coarse_names)} coarse names")
        images.append(x.reshape(-1, 3, 32, 32))
        fine.append(fl)
        coarse.append(cl)
    return np.concatenate(images), np.concatenate(fine), np.concatenate(coarse), fine_names, coarse_names


def _load(name: str, split: str, opts: ImageOptions, by_superclass: bool) -> ImageDataset:
    list_path = opts.split_list(name, f"{split}.txt")
    wanted = read_name_list(list_path)
    kind, path, digest = _source(opts.data_dir("cifar100"))
    image_size = opts.image_size
    material = opts.material(name, split, list=file_md5(list_path), source=digest)

    def build() -> Decoded:
        x, fine, coarse, fine_names, coarse_names = read_cifar100(kind, path)
        pool = coarse_names if by_superclass else fine_names
        unknown = [w for w in wanted if w not in pool]
        if unknown:
            what = "superclass" if by_superclass else "class"
            raise DatasetError(f"{list_path}: {what} {unknown[0]!r} is not a CIFAR-100 {what} of {path}")
        if by_superclass:
            keep = {coarse_names.index(w) for w in wanted}
            classes = sorted({int(f) for f, c in zip(fine, coarse, strict=True) if int(c) in keep})
        else:
            classes = sorted(fine_names.index(w) for w in wanted)
        cid = np.full(len(fine_names), -1, dtype=np.int64)
        cid[classes] = np.arange(len(classes))
        new = cid[fine]
        rows = np.nonzero(new >= 0)[0]
        rows = rows[np.argsort(new[rows], kind="stable")]  # class by class, archive order within
        labels = new[rows]
        sup = np.full(len(classes), -1, dtype=np.int64)
        for c in range(len(classes)):
            cs = np.unique(coarse[rows[labels == c]])
            if len(cs) != 1:
                raise DatasetError(f"{path}: class {fine_names[classes[c]]!r} has images under "
                                   f"{len(cs)} superclasses; the archive is corrupt")
            sup[c] = cs[0]
        used = sorted(set(sup.tolist()))
        images = x[rows]
        if image_size != 32:
            images = np.stack([image_to_array(Image.fromarray(im.transpose(1, 2, 0)), mode="RGB", size=image_size)
                               for im in images])
        return Decoded(np.ascontiguousarray(images), labels, [fine_names[c] for c in classes],
                       [used.index(int(s)) for s in sup], [coarse_names[g] for g in used])

    return opts.dataset(name, split, material, build, source=path, layout=kind, split_path=list_path)


@image_loader("cifar_fs", image_size=32)
def load_cifar_fs(split: str, options: ImageOptions) -> ImageDataset:
    """CIFAR-FS, Bertinetto et al. 64/16/20 classes of CIFAR-100 (600 images each, 32x32).

    Args:
        split: ``train`` (64 classes), ``val`` (16) or ``test`` (20).
        options: the keywords of :class:`~metamem.data.options.ImageOptions`: ``root`` (the
            folder holding ``cifar-100-python.tar.gz`` or ``cifar-100-python/``, default
            ``$METAMEM_DATA/cifar100``; ``metamem prepare cifar_fs`` puts the archive there),
            ``image_size`` (32, the native size, by default; others resized with LANCZOS),
            ``split_dir`` (folder of ``<split>.txt`` class lists, default the bundled
            published split), ``cache_dir`` and ``cache`` (the decode cache).

    Returns:
        uint8 RGB images ``[M, 3, S, S]``; classes in CIFAR-100 order; ``groups`` the
        CIFAR-100 superclass of each class.
    """
    return _load("cifar_fs", split, options, by_superclass=False)


@image_loader("fc100", image_size=32)
def load_fc100(split: str, options: ImageOptions) -> ImageDataset:
    """FC100, Oreshkin et al. split of CIFAR-100 by superclass: 60/20/20 classes (12/4/4 superclasses).

    Args:
        split: ``train`` (12 superclasses, 60 classes), ``val`` (4, 20) or ``test`` (4, 20).
        options: as :func:`load_cifar_fs`'s (``metamem prepare fc100`` puts the archive in
            ``root``; ``split_dir`` holds ``<split>.txt`` superclass lists).

    Returns:
        uint8 RGB images ``[M, 3, S, S]``; classes in CIFAR-100 order; ``groups`` the
        superclass (so ``within_group=True`` draws an episode from one superclass).
    """
    return _load("fc100", split, options, by_superclass=True)
