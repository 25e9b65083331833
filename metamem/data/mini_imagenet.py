"""mini-ImageNet (Vinyals et al., 2016) with the Ravi & Larochelle (2017) 64/16/20 class split.

The split CSVs (``filename,label`` rows, 600 images per class) are bundled in
``datasets/mini_imagenet/``. The images themselves are not redistributable and are read
from ``root`` in one of three layouts:

* ``zip``: ``root/<split>.zip`` holding ``images/<filename>`` for every row of the split's
  CSV, read member by member (no unzip step);
* ``images``: ``root/images/<filename>`` for every row of the split's CSV (the layout of
  the Ravi & Larochelle tooling);
* ``pickle``: ``root/mini-imagenet-cache-<split>.pkl``, a dict with ``image_data`` (uint8
  ``[M, 84, 84, 3]``) and ``class_dict`` (``{wnid: [row indices]}``). Pickles are read with
  a restricted unpickler that only rebuilds numpy arrays and plain containers.

Whatever the layout, the split is decoded once into the uint8 decode cache
(:mod:`metamem.data.cache`) and memory-mapped from there afterwards.
"""

from __future__ import annotations

import csv
import os
import pickle
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from metamem.data.base import SPLITS, DatasetError, ImageDataset
from metamem.data.cache import Decoded
from metamem.data.options import ImageOptions, image_loader
from metamem.data.sources import FolderSource, ImageSource, ZipSource, decode_images, file_md5, image_to_array

__all__ = ["load_mini_imagenet", "read_split_csv", "restricted_pickle_load", "restricted_pickle_loadf", "SPLITS"]
LAYOUTS = ("auto", "zip", "images", "pickle")

#: (module, name) pairs a mini-ImageNet pickle may reference: numpy arrays and containers.
_PICKLE_ALLOWED = {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("_codecs", "encode"),
    ("collections", "OrderedDict"),
}


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file: Any, path: Path) -> None:
        super().__init__(file, encoding="latin1")
        self.path = path

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _PICKLE_ALLOWED:
            return super().find_class(module, name)
        raise DatasetError(
            f"{self.path}: refusing to unpickle {module}.{name} (only numpy arrays and plain "
            "containers are allowed); rebuild the file from numpy arrays, dicts and lists"
        )


def restricted_pickle_load(path: str | os.PathLike[str]) -> Any:
    """Unpickle ``path`` allowing only numpy arrays, dtypes and plain containers.

    A corrupt file is reported as such whatever breaks inside the unpickler: a flipped
    length byte can ask for terabytes (``MemoryError``), a flipped opcode can raise
    ``KeyError``, ``IndexError``, ``UnicodeDecodeError``, ``OverflowError``... None of
    them escapes as anything but :class:`DatasetError`.

    Raises:
        DatasetError: naming the file and the refused global, or a corrupt pickle.
    """
    p = Path(path)
    try:
        f = open(p, "rb")
    except OSError as e:
        raise DatasetError(f"cannot read {p}: {e.strerror or e}") from None
    with f:
        return restricted_pickle_loadf(f, p)


def restricted_pickle_loadf(f: Any, where: str | os.PathLike[str]) -> Any:
    """:func:`restricted_pickle_load` on an open binary file (an archive member...);
    ``where`` names it in messages."""
    p = Path(where)
    try:
        return _RestrictedUnpickler(f, p).load()
    except DatasetError:
        raise
    except MemoryError:
        raise DatasetError(
            f"{p} is not a readable pickle (a length field asks for more memory than "
            "exists: the file is corrupt); fetch it again"
        ) from None
    except Exception as e:  # UnpicklingError, EOFError, KeyError, struct.error, ...
        msg = str(e).splitlines()[0][:200] if str(e) else ""
        raise DatasetError(
            f"{p} is not a readable pickle ({type(e).__name__}: {msg}); fetch it again"
        ) from None


def read_split_csv(path: str | os.PathLike[str]) -> list[tuple[str, str]]:
    """``(filename, wnid)`` rows of a Ravi & Larochelle split CSV, sorted by (wnid, filename)."""
    p = Path(path)
    try:
        with open(p, newline="") as f:
            reader = csv.DictReader(f)
            if reader.fieldnames is None or not {"filename", "label"} <= set(reader.fieldnames):
                raise DatasetError(
                    f"{p}: expected a CSV with header 'filename,label', got {reader.fieldnames}"
                )
            rows = [(r["filename"], r["label"]) for r in reader]
    except OSError as e:
        raise DatasetError(f"cannot read split file {p}: {e.strerror or e}") from None
    if not rows:
        raise DatasetError(f"{p} lists no images")
    return sorted(rows, key=lambda r: (r[1], r[0]))


def _pickle_path(root: Path, split: str) -> Path:
    return root / f"mini-imagenet-cache-{split}.pkl"


def _decode_pickle(path: Path, wnids: list[str], image_size: int) -> Decoded:
    obj = restricted_pickle_load(path)
    if not isinstance(obj, dict) or "image_data" not in obj or "class_dict" not in obj:
        raise DatasetError(f"{path}: expected a dict with keys 'image_data' and 'class_dict'")
    data, class_dict = obj["image_data"], obj["class_dict"]
    if not (isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 4
            and data.shape[3] == 3):
        raise DatasetError(
            f"{path}: image_data must be uint8 [M, H, W, 3], got "
            f"{getattr(data, 'dtype', type(data).__name__)} {getattr(data, 'shape', '')}"
        )
    if not isinstance(class_dict, dict) or not all(
        isinstance(k, str) and isinstance(v, (list, tuple, np.ndarray)) for k, v in class_dict.items()
    ):
        raise DatasetError(f"{path}: class_dict must map class ids (str) to lists of row indices")
    missing = sorted(set(wnids) - set(class_dict))
    extra = sorted(set(class_dict) - set(wnids))
    if missing or extra:
        what = f"lacks class {missing[0]}" if missing else f"holds class {extra[0]}"
        raise DatasetError(
            f"{path} {what} of the split CSV ({len(class_dict)} classes vs {len(wnids)}); "
            "use the pickle of the same split or pass split_dir with matching CSVs"
        )
    try:
        idx = [np.asarray(class_dict[w], dtype=np.int64).reshape(-1) for w in wnids]
    except (TypeError, ValueError, OverflowError):
        raise DatasetError(f"{path}: class_dict values must be lists of integer row indices") from None
    flat = np.concatenate(idx)
    if flat.size and (flat.min() < 0 or flat.max() >= len(data)):
        raise DatasetError(f"{path}: class_dict indices fall outside image_data (M={len(data)})")
    _refuse_shared_rows(path, wnids, idx)
    picked = data[flat]  # [M, H, W, 3]
    if picked.shape[1:3] == (image_size, image_size):
        images = picked.transpose(0, 3, 1, 2)
    else:
        images = np.stack(
            [image_to_array(Image.fromarray(im), mode="RGB", size=image_size) for im in picked]
        )
    labels = np.repeat(np.arange(len(wnids)), [len(i) for i in idx])
    return Decoded(np.ascontiguousarray(images), labels, list(wnids))


def _refuse_shared_rows(path: Path, wnids: list[str], idx: list[np.ndarray]) -> None:
    """One image, one class: a row of ``image_data`` listed twice (in one class or in two)
    would put one image on both sides of an episode, or count it as two."""
    flat = np.concatenate(idx) if idx else np.zeros(0, dtype=np.int64)
    rows, counts = np.unique(flat, return_counts=True)
    if not (counts > 1).any():
        return
    row = int(rows[np.argmax(counts > 1)])
    owners = [w for w, i in zip(wnids, idx, strict=True) if (i == row).any()]
    where = (f"twice in class {owners[0]}" if len(owners) == 1
             else f"in classes {owners[0]} and {owners[1]}")
    raise DatasetError(
        f"{path}: class_dict lists image_data row {row} {where} "
        f"({int((counts > 1).sum())} row(s) listed more than once); an image must belong to one "
        "class once: rebuild the pickle"
    )


@image_loader("mini_imagenet", image_size=84)
def load_mini_imagenet(split: str, options: ImageOptions, *, layout: str = "auto") -> ImageDataset:
    """mini-ImageNet, Ravi & Larochelle 64/16/20 class split, from images or pickle caches.

    Args:
        split: ``train`` (64 classes), ``val`` (16) or ``test`` (20).
        options: the keywords of :class:`~metamem.data.options.ImageOptions`: ``root`` (data
            folder, default ``$METAMEM_DATA/mini_imagenet`` or
            ``~/.cache/metamem/data/mini_imagenet``), ``image_size`` (output side length, 84
            default; images are resized with PIL LANCZOS), ``split_dir`` (folder holding
            ``<split>.csv``, default the bundled Ravi split; tests and custom splits point it
            elsewhere), ``cache_dir`` and ``cache`` (the decode cache).
        layout: ``zip`` (``root/<split>.zip`` holding ``images/<filename>``), ``images``
            (``root/images/<filename>``), ``pickle`` (``root/mini-imagenet-cache-<split>.pkl``)
            or ``auto``: the pickle when present, else the zip when present, else ``images``.

    Returns:
        uint8 RGB images ``[M, 3, image_size, image_size]``; classes sorted by WordNet id.
    """
    if layout not in LAYOUTS:
        raise DatasetError(f"mini_imagenet: unknown layout {layout!r}; valid: {', '.join(LAYOUTS)}")
    image_size = options.image_size
    root_dir = options.data_dir("mini_imagenet")
    csv_path = options.split_list("mini_imagenet", f"{split}.csv")
    rows = read_split_csv(csv_path)
    wnids = sorted({w for _, w in rows})
    pkl = _pickle_path(root_dir, split)
    zpath = root_dir / f"{split}.zip"
    if layout == "auto":
        layout = "pickle" if pkl.is_file() else "zip" if zpath.is_file() else "images"
    material = options.material("mini_imagenet", split, layout=layout, csv=file_md5(csv_path))
    info: dict[str, Any] = {}  # build adds decode_s when it decodes
    if layout == "pickle":
        if not pkl.is_file():
            raise DatasetError(f"mini_imagenet: {pkl} not found; put the pickle cache there or use layout='images'")
        material["source"] = file_md5(pkl)
        source_path = str(pkl)

        def build() -> Decoded:
            return _decode_pickle(pkl, wnids, image_size)

    else:
        src: ImageSource
        if layout == "zip":
            if not zpath.is_file():
                raise DatasetError(
                    f"mini_imagenet: {zpath} not found; put the split's zip (holding "
                    f"images/<filename>) there or use layout='images' or 'pickle'"
                )
            src = ZipSource(zpath, strip_top=True)
            where = f"{zpath}:images/"
        else:
            img_dir = root_dir / "images"
            if not img_dir.is_dir():
                raise DatasetError(
                    f"mini_imagenet: no data in {root_dir}: expected {pkl.name}, {zpath.name} or "
                    f"images/<filename> as listed in {csv_path.name}; see docs/datasets.md"
                )
            src = FolderSource(img_dir, files=[f for f, _ in rows])
            where = f"{img_dir}/"
        files = [f for f, _ in rows]
        present = set(src.files) if layout == "zip" else None
        missing = next(
            (f for f in files
             if (f not in present if present is not None else not (src.path / f).is_file())),
            None,
        )
        if missing is not None:
            raise DatasetError(f"mini_imagenet: image {where}{missing} listed in {csv_path} is missing")
        material["source"] = src.digest()
        source_path = str(src.path)
        cid = {w: i for i, w in enumerate(wnids)}

        def build() -> Decoded:
            t0 = time.perf_counter()
            names = [f for f, _ in rows]  # sorted by (wnid, filename)
            images = decode_images(src, names, mode="RGB", size=image_size)
            labels = np.array([cid[w] for _, w in rows], dtype=np.int64)
            info["decode_s"] = round(time.perf_counter() - t0, 3)  # set when this call decoded the images
            return Decoded(images, labels, list(wnids))

    return options.dataset("mini_imagenet", split, material, build, source=source_path, layout=layout,
                           split_path=csv_path, info=info)
