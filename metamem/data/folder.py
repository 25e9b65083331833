"""Plug-in dataset without code: a folder with one sub-folder of images per class.

::

    my_data/
      card.yaml          # optional
      cat/ 001.png 002.png ...
      dog/ 001.png ...

``card.yaml`` (read with :func:`metamem.safe_yaml.load_file`: no duplicate keys) may give
``name``, ``image_size``, ``channels`` (1 or 3), ``invert`` (true for dark strokes on a light background, to match
data stored the other way round, like Omniglot after loading) and
``splits: {train: [class, ...], val: [...], test: [...]}``.
"""

from __future__ import annotations

import os
import unicodedata
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from metamem import safe_yaml
from metamem.data.base import DATASETS, DatasetError, ImageDataset
from metamem.data.cache import Decoded, cached_decode, to_dataset
from metamem.data.sources import GRAY_MODES, FolderSource, decode_images, is_colour

__all__ = ["EmptyClassFolderWarning", "load_folder", "nfc_names", "read_card"]

_CARD_KEYS = {"name", "image_size", "channels", "invert", "splits", "description", "license", "source"}


def read_card(root: Path) -> dict[str, Any]:
    """The folder's ``card.yaml`` as a dict (empty when absent), checked."""
    path = root / "card.yaml"
    if not path.is_file():
        return {}
    try:
        card = safe_yaml.load_file(path) or {}
    except safe_yaml.YamlError as e:
        raise DatasetError(str(e)) from None
    if not isinstance(card, dict):
        raise DatasetError(f"{path} must hold a mapping (name, image_size, channels, splits)")
    unknown = sorted(set(card) - _CARD_KEYS)
    if unknown:
        raise DatasetError(f"{path}: unknown key {unknown[0]!r}; valid keys: {', '.join(sorted(_CARD_KEYS))}")
    splits = card.get("splits")
    if splits is not None and not (
        isinstance(splits, dict) and all(isinstance(v, list) for v in splits.values())
    ):
        raise DatasetError(f"{path}: splits must map split names to lists of class folders")
    return card


@DATASETS.register("folder")
def load_folder(
    split: str | None = None,
    *,
    root: str | os.PathLike[str] | None = None,
    image_size: int | None = None,
    channels: int | None = None,
    invert: bool | None = None,
    name: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    cache: bool = True,
) -> ImageDataset:
    """Plug-in: a folder with one sub-folder of images per class (optional card.yaml).

    Args:
        split: a split named in ``card.yaml`` ``splits``, or ``None``/``"all"`` for every
            class folder.
        root: the dataset folder (required).
        image_size: resize to ``image_size x image_size`` (default from the card; without
            one, every image must already have the same size).
        channels: 1 (grayscale) or 3 (RGB); default from the card, else from the first
            image (a palette PNG counts as colour when its palette is). When grayscale was
            inferred, a later colour image is an error naming it (never silently grayed).
        invert: store ``255 - pixel`` (default from the card, else ``False``). Omniglot is
            loaded inverted (white strokes on black); a folder of dark shapes on a light
            background needs ``invert=True`` to look like it. ``metamem eval RUN
            data=folder:DIR`` sets it from the run's training data.
        name: dataset name (default from the card, else the folder name).
        cache_dir: decode cache root (default ``$METAMEM_CACHE`` or ``~/.cache/metamem``).
        cache: ``False`` decodes without using the cache.
    """
    if root is None:
        raise DatasetError("folder: pass root=DIR, a folder with one sub-folder of images per class")
    base = Path(root).expanduser()
    if not base.is_dir():
        raise DatasetError(f"folder: {base} is not a folder")
    card = read_card(base)
    name = name or card.get("name") or base.name
    image_size = image_size if image_size is not None else card.get("image_size")
    channels = channels if channels is not None else card.get("channels")
    invert = invert if invert is not None else card.get("invert", False)
    if not isinstance(invert, bool):
        raise DatasetError(f"folder {base}: invert must be true or false, got {invert!r}")
    src = FolderSource(base)  # hidden files and folders (.ipynb_checkpoints/) are skipped
    files = [f for f in src.files if f.count("/") == 1]
    stray = next((f for f in src.files if f.count("/") != 1), None)
    if stray is not None:
        where = "beside the class folders" if "/" not in stray else "two or more levels deep"
        raise DatasetError(
            f"folder {base}: image {base / stray} lies {where}, where it belongs to no class; "
            f"the layout is {base}/<class>/<image>: move it into its class folder or remove it"
        )
    folder_of = nfc_names(base, sorted({f.split("/")[0] for f in files}))  # NFC name -> folder
    all_classes = sorted(folder_of)
    if not all_classes:
        raise DatasetError(
            f"folder: {base} has no class sub-folders with images; expected {base}/<class>/<image>.png"
        )
    _warn_empty_folders(base, set(folder_of.values()))
    splits: dict[str, list[Any]] = card.get("splits") or {}
    if split in (None, "all"):
        classes = all_classes
    elif split in splits:
        classes = sorted({unicodedata.normalize("NFC", str(c)) for c in splits[split]})
        absent = [c for c in classes if c not in all_classes]
        if absent:
            raise DatasetError(
                f"folder: {base / 'card.yaml'} split {split!r} names class {absent[0]!r} but "
                f"{base / absent[0]} holds no images"
            )
    else:
        raise DatasetError(
            f"folder {base}: unknown split {split!r}; valid splits: {', '.join(['all', *splits])}"
        )
    wanted = {folder_of[c] for c in classes}
    files = [f for f in files if f.split("/")[0] in wanted]
    colour_hint = None
    if channels is None:  # from the first image; a later colour image is then an error
        channels = 1 if not _first_is_colour(base / files[0]) else 3
        if channels == 1:
            colour_hint = (
                f"the first image {base / files[0]} is grayscale, so channels was inferred as 1: "
                "pass channels=3 (or set channels: 3 in card.yaml) to keep colour, or channels=1 "
                "to convert every image to grayscale"
            )
    if channels not in (1, 3):
        raise DatasetError(f"folder {base}: channels must be 1 or 3, got {channels!r}")
    sub = FolderSource(base, files=files)
    material = {
        "dataset": "folder", "source": sub.digest(), "classes": classes,
        "image_size": image_size, "channels": channels, "resample": "lanczos",
        "orientation": "exif",  # entries decoded before EXIF orientation was applied are stale
    }
    if invert:  # only when set, so existing cache entries stay valid
        material["invert"] = True
    cid = {folder_of[c]: i for i, c in enumerate(classes)}  # by folder, as the files are named

    def build() -> Decoded:
        images = decode_images(sub, sub.files, mode="L" if channels == 1 else "RGB", size=image_size,
                               invert=invert, colour_hint=colour_hint)
        labels = np.array([cid[f.split("/")[0]] for f in sub.files], dtype=np.int64)
        return Decoded(images, labels, classes)

    decoded, cinfo = cached_decode("folder", material, build, cache_dir=cache_dir, cache=cache)
    info = {"source": str(base), "image_size": image_size, "channels": channels, **cinfo,
            "preprocess": {"mode": "L" if channels == 1 else "RGB", "invert": invert, "resample": "lanczos"}}
    return to_dataset(decoded, name=str(name), split=split or "all", info=info)


class EmptyClassFolderWarning(UserWarning):
    """A class folder of a folder dataset holds no images, so the dataset has no such class."""


def nfc_names(folder: Path, names: list[str], error: type[Exception] = DatasetError) -> dict[str, str]:
    """``{name in Unicode NFC: name as stored}`` for the class folders ``names`` of
    ``folder``: "été" typed on Linux (NFC) and saved by macOS (NFD) is one name, not two
    classes that print the same.

    Raises:
        error: for two folders whose names differ only in their Unicode form.
    """
    out: dict[str, str] = {}
    for name in names:
        key = unicodedata.normalize("NFC", name)
        if key in out:
            raise error(
                f"folder {folder}: class folders {out[key]!r} and {name!r} have the same name "
                f"{key!r} in different Unicode forms (NFC/NFD); merge them into one folder"
            )
        out[key] = name
    return out


def _warn_empty_folders(base: Path, used: set[str]) -> None:
    """Warn, naming them, about sub-folders that hold no images (they become no class)."""
    try:
        empty = sorted(d.name for d in base.iterdir()
                       if d.is_dir() and not d.name.startswith(".") and d.name not in used)
    except OSError:
        return
    if empty:
        shown = ", ".join(repr(n) for n in empty[:5]) + (f" and {len(empty) - 5} more" if len(empty) > 5 else "")
        warnings.warn(
            f"folder {base}: {len(empty)} class folder(s) hold no images and are left out: {shown}",
            EmptyClassFolderWarning, stacklevel=3,
        )


def _first_is_colour(path: Path) -> bool:
    """Whether the first image is colour (palette PNGs by their palette), naming the file
    when it cannot be read."""
    try:
        if path.stat().st_size == 0:
            raise DatasetError(f"image {path} is empty (0 bytes); replace or remove the file")
        with Image.open(path) as first:
            if first.mode in GRAY_MODES:
                return False
            if first.mode not in ("P", "PA"):
                return True  # a colour mode (RGB, RGBA, CMYK...): colour, as stored
            first.load()
            return is_colour(first)  # a palette image: colour when its palette is
    except DatasetError:
        raise
    except Exception as e:  # UnidentifiedImageError, truncated files, PIL's own parse errors
        raise DatasetError(
            f"cannot decode image {path} ({type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}); "
            "replace or remove the file"
        ) from None
