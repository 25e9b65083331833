"""Omniglot (Lake et al., 2015): 1,623 handwritten characters from 50 alphabets, 20 drawers.

Splits:

* the four official sets ``background`` (30 alphabets, 964 characters), ``evaluation``
  (20 alphabets, 659 characters), ``background_small1`` (5 alphabets, 136 characters) and
  ``background_small2`` (5 alphabets, 156 characters). The two small sets are bundled in
  ``datasets/omniglot/`` and work offline; the full sets come from ``metamem prepare
  omniglot``;
* meta-splits defined by the files ``datasets/omniglot/splits/<family>/<split>.txt``:
  ``minimal/{train,val,test}`` (alphabet-level, over the 8 alphabets of the bundled small
  sets) and ``vinyals/{train,val,test}`` (the 1,200/423-character split of Vinyals et al.,
  2016, as in the Prototypical Networks split files; needs the full data), and
  ``vinyals/trainval`` (its 1,200 training characters: train and val together).

Images are inverted (strokes 255, background 0) and resized with PIL to
``image_size x image_size``. Classes are sorted by ``"Alphabet/characterNN"``; the group
of a class is its alphabet.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from metamem.data.base import DATASETS, DatasetError, ImageDataset, check_image_size
from metamem.data.cache import Decoded, cached_decode, to_dataset
from metamem.data.download import OMNIGLOT_FILES
from metamem.data.paths import bundled_dir, dataset_dir
from metamem.data.sources import RESAMPLE, ImageSource, decode_images, open_source
from metamem.data.verify import FULL_SETS, read_manifest, zip_content_digest

__all__ = ["load_omniglot", "OFFICIAL_SETS", "SplitSpec", "read_split_file", "meta_splits"]

OFFICIAL_SETS = ("background", "evaluation", "background_small1", "background_small2")
BUNDLED_SETS = ("background_small1", "background_small2")
ROTATIONS = (90, 180, 270)


@dataclass
class SplitSpec:
    """A meta-split file: entries (alphabets or ``Alphabet/characterNN``), source sets and
    the expected number of characters (``None`` when the file does not say)."""

    path: Path
    entries: list[tuple[int, str]]
    sources: tuple[str, ...]
    expected: int | None


def read_split_file(path: str | os.PathLike[str]) -> SplitSpec:
    """Parse a meta-split file.

    Lines are an alphabet name or ``Alphabet/characterNN``; ``#`` starts a comment, and
    the header comments ``# sources: <set> <set>`` and ``# characters: <count>`` name the
    official sets the split draws from and how many characters it must resolve to.
    """
    p = Path(path)
    entries: list[tuple[int, str]] = []
    sources: tuple[str, ...] = ("background", "evaluation")
    expected = None
    for no, raw in enumerate(p.read_text().splitlines(), 1):
        line = raw.strip()
        if line.startswith("#"):
            body = line.lstrip("#").strip()
            if body.startswith("sources:"):
                sources = tuple(body.split(":", 1)[1].split())
                bad = [s for s in sources if s not in OFFICIAL_SETS]
                if bad:
                    raise DatasetError(
                        f"{p} line {no}: unknown source set {bad[0]!r}; valid: "
                        f"{', '.join(OFFICIAL_SETS)}"
                    )
            elif body.startswith("characters:"):
                expected = int(body.split(":", 1)[1])
            continue
        if line:
            entries.append((no, line.strip("/")))
    return SplitSpec(p, entries, sources, expected)


def meta_splits(splits_dir: str | os.PathLike[str] | None = None) -> list[str]:
    """Names of the meta-splits defined in ``splits_dir`` (``"minimal/train"``...)."""
    d = Path(splits_dir) if splits_dir is not None else bundled_dir("omniglot", "splits")
    if not d.is_dir():
        return []
    return sorted(p.relative_to(d).with_suffix("").as_posix() for p in d.glob("*/*.txt"))


def _find_source(set_name: str, root: Path, split: str) -> ImageSource:
    fname, _ = OMNIGLOT_FILES[set_name]
    candidates = [root / fname, root / fname[: -len(".zip")]]
    if set_name in BUNDLED_SETS:
        candidates.append(bundled_dir("omniglot", fname))
    for c in candidates:
        if c.exists():
            return open_source(c, strip_top=True)
    raise DatasetError(
        f"omniglot split {split!r} needs {fname}, not found in {root}; run `metamem prepare "
        "omniglot` (or pass root=DIR where the Omniglot archives are)"
    )


def _load_set(
    set_name: str,
    *,
    root: Path,
    split: str,
    image_size: int,
    resample: str,
    cache_dir: str | os.PathLike[str] | None,
    cache: bool,
) -> ImageDataset:
    src = _find_source(set_name, root, split)
    digest = src.digest()
    fname, md5 = OMNIGLOT_FILES[set_name]
    if src.path.name == fname and digest != md5:
        # a re-zipped copy of the official images passes by content (datasets/omniglot/manifests)
        content = zip_content_digest(src.path) if set_name in FULL_SETS else None
        if content is None or content != read_manifest(set_name).digest:
            raise DatasetError(
                f"{src.path} has md5 {digest}, expected {md5}, and its images are not the "
                "official ones (corrupt, partial or modified copy); delete it and run `metamem "
                "prepare omniglot` (or `metamem prepare omniglot --from PATH` with an intact copy)"
            )
        digest = content  # = the digest of the extracted folder: both share the decode cache
    files = [f for f in src.files if f.count("/") == 2]
    if not files:
        raise DatasetError(
            f"{src.path} holds no images in the official layout "
            "<set>/<Alphabet>/<characterNN>/<image>.png"
        )

    def build() -> Decoded:
        class_of = [f.rsplit("/", 1)[0] for f in files]
        class_names = sorted(set(class_of))
        cid = {c: i for i, c in enumerate(class_names)}
        alphabets = sorted({c.split("/")[0] for c in class_names})
        aid = {a: i for i, a in enumerate(alphabets)}
        images = decode_images(
            src, files, mode="L", size=image_size, invert=True, resample=RESAMPLE[resample]
        )
        labels = np.array([cid[c] for c in class_of], dtype=np.int64)
        groups = [aid[c.split("/")[0]] for c in class_names]
        return Decoded(images, labels, class_names, groups, alphabets)

    material = {
        "dataset": "omniglot",
        "set": set_name,
        "source": digest,
        "files": len(files),
        "image_size": image_size,
        "resample": resample,
        "invert": True,
    }
    decoded, cinfo = cached_decode(
        "omniglot", material, build, cache_dir=cache_dir, cache=cache
    )
    info = {"source": str(src.path), "source_hash": digest, **cinfo}
    return to_dataset(decoded, name="omniglot", split=set_name, info=info)


def _concat(parts: list[ImageDataset], split: str) -> ImageDataset:
    """Concatenate datasets with disjoint class names, classes sorted by name."""
    if len(parts) == 1:
        return parts[0]
    names = [n for p in parts for n in p.class_names]
    group_names = sorted({g for p in parts for g in (p.group_names or [])})
    gid = {g: i for i, g in enumerate(group_names)}
    groups = [gid[p.group_names[int(g)]] for p in parts for g in p.groups]  # type: ignore[index,union-attr]
    offsets = np.cumsum([0] + [p.num_classes for p in parts])[:-1]
    labels = torch.cat([p.labels + int(o) for p, o in zip(parts, offsets, strict=True)])
    merged = ImageDataset(
        images=torch.cat([p.images for p in parts]),
        labels=labels,
        class_names=names,
        groups=torch.tensor(groups),
        group_names=group_names,
        name="omniglot",
        split=split,
        info={"parts": [p.info for p in parts]},
    )
    order = sorted(range(len(names)), key=names.__getitem__)
    return merged.subset(order)


def _resolve(spec: SplitSpec, ds: ImageDataset) -> list[int]:
    by_alphabet: dict[str, list[int]] = {}
    index = {n: i for i, n in enumerate(ds.class_names)}
    for i, n in enumerate(ds.class_names):
        by_alphabet.setdefault(n.split("/")[0], []).append(i)
    picked: set[int] = set()
    for no, entry in spec.entries:
        ids = [index[entry]] if entry in index else by_alphabet.get(entry, [])
        if not ids:
            raise DatasetError(
                f"{spec.path} line {no}: {entry!r} matches no alphabet or character of "
                f"omniglot {'+'.join(spec.sources)}; fix the split file"
            )
        picked.update(ids)
    if spec.expected is not None and len(picked) != spec.expected:
        raise DatasetError(
            f"{spec.path} resolves to {len(picked)} characters but its header says "
            f"{spec.expected}; the data in {'+'.join(spec.sources)} is incomplete or the file "
            "is wrong"
        )
    return sorted(picked, key=ds.class_names.__getitem__)


def _with_rotations(ds: ImageDataset) -> ImageDataset:
    """Add 90/180/270-degree rotated copies (counter-clockwise) as new classes."""
    c = ds.num_classes
    images = [ds.images] + [torch.rot90(ds.images, k, dims=(2, 3)) for k in (1, 2, 3)]
    labels = [ds.labels + k * c for k in range(4)]
    names = list(ds.class_names) + [f"{n}/rot{r}" for r in ROTATIONS for n in ds.class_names]
    groups = None if ds.groups is None else ds.groups.repeat(4)
    info = {**ds.info, "rotations": True}
    return ImageDataset(
        images=torch.cat(images),
        labels=torch.cat(labels),
        class_names=names,
        groups=groups,
        group_names=ds.group_names,
        name=ds.name,
        split=ds.split,
        info=info,
    )


@DATASETS.register("omniglot")
def load_omniglot(
    split: str | None = "background",
    *,
    image_size: int = 28,
    rotations: bool = False,
    root: str | os.PathLike[str] | None = None,
    resample: str = "lanczos",
    splits_dir: str | os.PathLike[str] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    cache: bool = True,
) -> ImageDataset:
    """Omniglot handwritten characters: official sets and minimal/vinyals meta-splits.

    Args:
        split: an official set (``background``, ``evaluation``, ``background_small1``,
            ``background_small2``) or a meta-split (``minimal/train`` ...,
            ``vinyals/test``...).
        image_size: output side length (28 default; 20 as in MANN).
        rotations: add the 90/180/270-degree rotations (counter-clockwise) of every
            character as new classes named ``"<class>/rot90"`` etc., in the same group.
            Rotated classes follow the originals: class ``c + k * num_chars`` is ``c``
            rotated by ``90 k`` degrees.
        root: folder with the downloaded archives (default ``$METAMEM_DATA/omniglot`` or
            ``~/.cache/metamem/data/omniglot``).
        resample: PIL filter, ``"lanczos"`` or ``"box"``.
        splits_dir: folder of meta-split files (default ``datasets/omniglot/splits``).
        cache_dir: decode cache root (default ``$METAMEM_CACHE`` or ``~/.cache/metamem``).
        cache: ``False`` decodes without using the cache.

    Returns:
        uint8 images ``[M, 1, image_size, image_size]``, strokes 255 on a 0 background.
    """
    split = split or "background"
    check_image_size("omniglot", image_size)
    if resample not in RESAMPLE:
        raise DatasetError(
            f"omniglot: unknown resample {resample!r}; valid: {', '.join(RESAMPLE)}"
        )
    root_dir = dataset_dir(root, "omniglot")
    sdir = Path(splits_dir) if splits_dir is not None else bundled_dir("omniglot", "splits")
    metas = meta_splits(sdir)
    if split not in OFFICIAL_SETS and split not in metas:
        raise DatasetError(
            f"omniglot: unknown split {split!r}; valid splits: {', '.join(OFFICIAL_SETS + tuple(metas))}"
        )
    kw: dict[str, Any] = dict(
        root=root_dir, split=split, image_size=image_size, resample=resample,
        cache_dir=cache_dir, cache=cache,
    )
    if split in OFFICIAL_SETS:
        ds = _load_set(split, **kw)
    else:
        spec = read_split_file(sdir / f"{split}.txt")
        parts: list[ImageDataset] = []
        seen: set[str] = set()
        for s in spec.sources:  # a class present in several sets is taken from the first
            part = _load_set(s, **kw)
            keep = [i for i, n in enumerate(part.class_names) if n not in seen]
            seen.update(part.class_names)
            parts.append(part if len(keep) == part.num_classes else part.subset(keep))
        union = _concat(parts, split)
        ds = union.subset(_resolve(spec, union), split=split)
        ds.info = {"split_file": str(spec.path), "sources": [p.info for p in parts]}
    ds.split = split
    ds.info.update(image_size=image_size, resample=resample)
    ds.info["preprocess"] = {"mode": "L", "invert": True, "resample": resample}
    return _with_rotations(ds) if rotations else ds
