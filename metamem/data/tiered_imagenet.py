"""tiered-ImageNet (Ren et al., 2018): 608 ILSVRC-2012 classes under 34 superclasses.

Ren et al., "Meta-Learning for Semi-Supervised Few-Shot Classification" (ICLR 2018), split
the classes by superclass: 351 classes (20 superclasses) for training, 97 (6) for
validation and 160 (8) for testing, 84x84 images. Their split files (``<wnid>,<superclass
wnid>`` rows) are bundled in ``datasets/tiered_imagenet/{train,val,test}.csv``.

Three layouts are read from ``root``:

* ``pickle`` (the common release): ``<split>_images_png.pkl``, a list of PNG-encoded images,
  and ``<split>_labels.pkl``, a dict with ``label_specific`` (class id per image),
  ``label_general`` (superclass id per image), ``label_specific_str`` and
  ``label_general_str`` (their names);
* ``npz``: ``<split>_images.npz`` holding ``images`` (uint8 ``[M, 84, 84, 3]``, decoded by
  OpenCV, so in **BGR** order: ``channel_order="bgr"`` by default) with the same labels file;
* ``images``: the ILSVRC-2012 training folders ``root/train/<wnid>/*.JPEG`` of the split's
  classes (as Ren et al. built the release), resized to 84x84.

Pickles are read with the restricted unpickler (numpy arrays and plain containers only).
A split is decoded straight into a memory-mapped file of the decode cache, so the train
split (448,695 images, 9.5 GB at 84x84) never has to fit in memory.
"""

from __future__ import annotations

import csv
import io
import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from metamem.data.base import DatasetError, ImageDataset
from metamem.data.cache import Decoded, images_buffer
from metamem.data.mini_imagenet import restricted_pickle_load
from metamem.data.options import ImageOptions, image_loader
from metamem.data.sources import FolderSource, file_md5, image_to_array

__all__ = ["PUBLISHED", "load_tiered_imagenet", "read_tiered_labels", "read_tiered_split"]

LAYOUTS = ("auto", "pickle", "npz", "images")
#: published (classes, superclasses, images) per split
PUBLISHED = {"train": (351, 20, 448_695), "val": (97, 6, 124_261), "test": (160, 8, 206_209)}


def read_tiered_split(path: str | os.PathLike[str]) -> list[tuple[str, str]]:
    """``(wnid, superclass wnid)`` rows of a split CSV, in file order."""
    p = Path(path)
    try:
        with open(p, newline="") as f:
            rows = [tuple(r[:2]) for r in csv.reader(f) if r]
    except OSError as e:
        raise DatasetError(f"cannot read split file {p}: {e.strerror or e}") from None
    if not rows or any(len(r) != 2 for r in rows):
        raise DatasetError(f"{p}: expected rows '<wnid>,<superclass wnid>'")
    return [(a, b) for a, b in rows]


def _key(d: dict[Any, Any], key: str, where: Path) -> Any:
    for k in (key, key.encode()):
        if k in d:
            return d[k]
    raise DatasetError(f"{where}: key {key!r} is missing (expected label_specific, label_general, "
                       "label_specific_str, label_general_str)")


def read_tiered_labels(path: Path) -> tuple[np.ndarray, np.ndarray, list[str], list[str]]:
    """``label_specific`` and ``label_general`` (int64 ``[M]``) and their names."""
    obj = restricted_pickle_load(path)
    if not isinstance(obj, dict):
        raise DatasetError(f"{path}: expected a dict of labels, got {type(obj).__name__}")
    spec = np.asarray(_key(obj, "label_specific", path)).astype(np.int64).reshape(-1)
    gen = np.asarray(_key(obj, "label_general", path)).astype(np.int64).reshape(-1)
    names = [n.decode("latin1") if isinstance(n, bytes) else str(n) for n in _key(obj, "label_specific_str", path)]
    gnames = [n.decode("latin1") if isinstance(n, bytes) else str(n) for n in _key(obj, "label_general_str", path)]
    if spec.shape != gen.shape:
        raise DatasetError(f"{path}: label_specific and label_general differ in length")
    if spec.size and (spec.min() < 0 or spec.max() >= len(names) or gen.min() < 0 or gen.max() >= len(gnames)):
        raise DatasetError(f"{path}: labels fall outside label_specific_str / label_general_str")
    return spec, gen, names, gnames


def _groups(spec: np.ndarray, gen: np.ndarray, n: int, where: Path) -> list[int]:
    sup = np.full(n, -1, dtype=np.int64)
    sup[spec] = gen
    bad = np.nonzero(sup[spec] != gen)[0]
    if bad.size:
        raise DatasetError(f"{where}: class {int(spec[bad[0]])} has images under two superclasses")
    return sup.tolist()


def _npz_images(path: Path) -> np.ndarray:
    """The ``images`` array of an npz, memory-mapped when stored uncompressed."""
    try:
        with zipfile.ZipFile(path) as zf:
            info = zf.getinfo("images.npy")
            if info.compress_type == zipfile.ZIP_STORED:
                with zf.open(info) as f:
                    fmt = np.lib.format
                    version = fmt.read_magic(f)
                    read = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
                    shape, fortran, dtype = read(f)
                    header = f.tell()
                with open(path, "rb") as raw:  # the member's data offset in the file
                    raw.seek(info.header_offset + 26)
                    n, m = np.frombuffer(raw.read(4), dtype="<u2")
                offset = info.header_offset + 30 + int(n) + int(m) + header
                return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape,
                                 order="F" if fortran else "C")
        with np.load(path, allow_pickle=False) as z:
            return z["images"]
    except KeyError:
        raise DatasetError(f"{path} holds no 'images' array") from None
    except (zipfile.BadZipFile, OSError, ValueError) as e:
        raise DatasetError(f"{path} is not a readable npz ({e}); fetch it again") from None


@image_loader("tiered_imagenet", image_size=84)
def load_tiered_imagenet(
    split: str, options: ImageOptions, *, layout: str = "auto", channel_order: str | None = None
) -> ImageDataset:
    """tiered-ImageNet, Ren et al. 351/97/160 classes under 20/6/8 superclasses.

    Args:
        split: ``train``, ``val`` or ``test``.
        options: the keywords of :class:`~metamem.data.options.ImageOptions`: ``root`` (data
            folder, default ``$METAMEM_DATA/tiered_imagenet``; ``metamem prepare
            tiered_imagenet --from PATH`` installs a local copy of the release there),
            ``image_size`` (84 by default), ``split_dir`` (folder of ``<split>.csv``, default
            the bundled Ren et al. split), ``cache_dir`` and ``cache`` (the decode cache).
        layout: ``pickle``, ``npz``, ``images`` or ``auto`` (the first one present).
        channel_order: ``rgb`` or ``bgr``, the order of the npz arrays (default ``bgr``, as
            the release's OpenCV decoding writes them); PNGs and JPEGs are always RGB.

    Returns:
        uint8 RGB images ``[M, 3, S, S]``, class by class; ``groups`` the superclass.
    """
    if layout not in LAYOUTS:
        raise DatasetError(f"tiered_imagenet: unknown layout {layout!r}; valid: {', '.join(LAYOUTS)}")
    if channel_order not in (None, "rgb", "bgr"):
        raise DatasetError(f"tiered_imagenet: channel_order must be 'rgb' or 'bgr', got {channel_order!r}")
    image_size, cache_dir, cache = options.image_size, options.cache_dir, options.cache
    csv_path = options.split_list("tiered_imagenet", f"{split}.csv")
    rows = read_tiered_split(csv_path)
    n_cls, n_sup = len(rows), len({s for _, s in rows})
    root_dir = options.data_dir("tiered_imagenet")
    png, npz = root_dir / f"{split}_images_png.pkl", root_dir / f"{split}_images.npz"
    labels_path = root_dir / f"{split}_labels.pkl"
    if layout == "auto":
        layout = ("pickle" if png.is_file() else "npz" if npz.is_file()
                  else "images" if (root_dir / "train").is_dir() else "")
        if not layout:
            raise DatasetError(
                f"tiered_imagenet: no data in {root_dir}: expected {png.name} or {npz.name} with "
                f"{labels_path.name}, or ILSVRC train/<wnid>/ folders; see docs/datasets_more.md"
            )
    material = options.material("tiered_imagenet", split, layout=layout, csv=file_md5(csv_path))
    if layout in ("pickle", "npz"):
        images_path = png if layout == "pickle" else npz
        for p in (images_path, labels_path):
            if not p.is_file():
                raise DatasetError(f"tiered_imagenet: {p} not found; install the release with "
                                   "metamem prepare tiered_imagenet --from PATH")
        order = channel_order or ("bgr" if layout == "npz" else "rgb")
        material.update(source=file_md5(images_path), labels=file_md5(labels_path), channel_order=order)
        source = str(images_path)

        def build() -> Decoded:
            spec, gen, names, gnames = read_tiered_labels(labels_path)
            if len(names) != n_cls or len(gnames) != n_sup:
                raise DatasetError(
                    f"{labels_path} has {len(names)} classes under {len(gnames)} superclasses but "
                    f"{csv_path} lists {n_cls} under {n_sup}; use the labels file of the same split"
                )
            pos = np.empty(len(spec), dtype=np.int64)  # where image i goes: class by class
            pos[np.argsort(spec, kind="stable")] = np.arange(len(spec))
            if layout == "pickle":
                data = restricted_pickle_load(png)
                if not isinstance(data, (list, tuple)):
                    raise DatasetError(f"{png}: expected a list of PNG-encoded images")
                count = len(data)
            else:
                arr = _npz_images(npz)
                if arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[3] != 3:
                    raise DatasetError(f"{npz}: images must be uint8 [M, H, W, 3], got {arr.dtype} {arr.shape}")
                count = len(arr)
            if count != len(spec):
                raise DatasetError(f"{images_path} holds {count} images but {labels_path} labels {len(spec)}")
            out = images_buffer("tiered_imagenet", (count, 3, image_size, image_size), cache_dir=cache_dir,
                                cache=cache)
            try:
                for i in range(count):
                    if layout == "pickle":
                        blob = np.asarray(data[i], dtype=np.uint8).tobytes()
                        try:
                            with Image.open(io.BytesIO(blob)) as img:
                                img.load()
                                out[pos[i]] = image_to_array(img, mode="RGB", size=image_size)
                        except Exception as e:
                            raise DatasetError(f"{png}: image {i} does not decode ({type(e).__name__}: "
                                               f"{e}); fetch the file again") from None
                        data[i] = None  # let the PNG bytes go as we decode
                    else:
                        im = arr[i][..., ::-1] if order == "bgr" else arr[i]
                        if im.shape[:2] == (image_size, image_size):
                            out[pos[i]] = im.transpose(2, 0, 1)
                        else:
                            out[pos[i]] = image_to_array(Image.fromarray(np.ascontiguousarray(im)), mode="RGB",
                                                         size=image_size)
            except BaseException:
                name = getattr(out, "filename", None)
                del out
                if name:
                    Path(name).unlink(missing_ok=True)
                raise
            return Decoded(out, np.sort(spec), names, _groups(spec, gen, len(names), labels_path), gnames)

    else:
        folder = root_dir / "train"
        wnids = [w for w, _ in rows]
        missing = [w for w in wnids if not (folder / w).is_dir()]
        if missing:
            raise DatasetError(f"tiered_imagenet: class folder {folder / missing[0]} (listed in {csv_path}) "
                               "is missing; point root at the folder holding ILSVRC-2012 train/")
        names = sorted(f"{w}/{p.name}" for w in wnids for p in (folder / w).iterdir()
                       if p.is_file() and not p.name.startswith("."))
        src = FolderSource(folder, files=names)
        material["source"] = src.digest()
        source = str(folder)
        sups = sorted({s for _, s in rows})
        cid = {w: i for i, w in enumerate(wnids)}

        def build() -> Decoded:
            ordered = sorted(names, key=lambda n: (cid[n.split("/")[0]], n))
            out = images_buffer("tiered_imagenet", (len(ordered), 3, image_size, image_size),
                                cache_dir=cache_dir, cache=cache)
            for i, n in enumerate(ordered):
                try:
                    with Image.open(io.BytesIO(src.read(n))) as img:
                        img.load()
                        out[i] = image_to_array(img, mode="RGB", size=image_size)
                except DatasetError:
                    raise
                except Exception as e:
                    raise DatasetError(f"cannot decode image {src.where(n)} ({type(e).__name__}: {e})") from None
            labels = np.array([cid[n.split("/")[0]] for n in ordered], dtype=np.int64)
            return Decoded(out, labels, wnids, [sups.index(s) for _, s in rows], sups)

    return options.dataset("tiered_imagenet", split, material, build, source=source, layout=layout,
                           split_path=csv_path)
