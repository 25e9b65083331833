"""CUB-200-2011 (Wah et al., 2011) with the 100/50/50 class split of Chen et al. (2019).

Chen et al., "A Closer Look at Few-shot Classification" (ICLR 2019), sort the 200 class
folders of ``CUB_200_2011/images`` by name and take class ``i`` (0-based) for training when
``i % 2 == 0``, for validation when ``i % 4 == 1`` and for testing when ``i % 4 == 3``. The
resulting class lists are bundled in ``datasets/cub/{train,val,test}.txt``.

The images are read from the official archive ``CUB_200_2011.tgz`` in place (``metamem
prepare cub``) or from its extracted folder ``CUB_200_2011/images/<class>/<file>.jpg``. Every
image is converted to RGB (a few are grayscale) and resized (whole image, no crop) to
``image_size`` (84 by default, the size Chen et al. use with the Conv-4 backbone).
"""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image

from metamem.data.base import DatasetError, ImageDataset
from metamem.data.cache import Decoded
from metamem.data.cifar import read_name_list
from metamem.data.options import ImageOptions, image_loader
from metamem.data.sources import (
    IMAGE_EXTENSIONS,
    FolderSource,
    decode_images,
    file_md5,
    image_to_array,
    read_tar_members,
)

__all__ = ["load_cub"]

_IMAGES = ("CUB_200_2011", "images")


def _decode(data: bytes, where: str, size: int) -> np.ndarray:
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            return image_to_array(img, mode="RGB", size=size)
    except Exception as e:  # PIL raises many types on corrupt files
        raise DatasetError(f"cannot decode image {where} ({type(e).__name__}: {e}); fetch the archive again") from None


def _from_archive(path: Path, classes: list[str], size: int) -> tuple[np.ndarray, np.ndarray]:
    cid = {c: i for i, c in enumerate(classes)}

    def want(m: tarfile.TarInfo) -> bool:
        parts = m.name.split("/")
        return (len(parts) == 4 and tuple(parts[:2]) == _IMAGES and parts[2] in cid
                and parts[3].lower().endswith(IMAGE_EXTENSIONS) and not parts[3].startswith("."))

    found = [(cid[m.name.split("/")[2]], m.name.split("/")[3], image)
             for m, image in read_tar_members(path, want, lambda m, f: _decode(f.read(), f"{path}:{m.name}", size))]
    have = {c for c, _, _ in found}
    missing = [c for c in classes if cid[c] not in have]
    if missing:
        raise DatasetError(f"{path} has no images of class {missing[0]!r} (expected under "
                           f"{'/'.join(_IMAGES)}/{missing[0]}/); it is not the official CUB_200_2011.tgz")
    found.sort(key=lambda t: (t[0], t[1]))
    return np.stack([a for _, _, a in found]), np.array([c for c, _, _ in found], dtype=np.int64)


@image_loader("cub", image_size=84)
def load_cub(split: str, options: ImageOptions) -> ImageDataset:
    """CUB-200-2011 birds, Chen et al. (2019) 100/50/50 class split, from the official archive.

    Args:
        split: ``train`` (100 classes), ``val`` (50) or ``test`` (50).
        options: the keywords of :class:`~metamem.data.options.ImageOptions`: ``root`` (the
            folder holding ``CUB_200_2011.tgz`` or the extracted ``CUB_200_2011/``, default
            ``$METAMEM_DATA/cub``; ``metamem prepare cub`` puts the archive there),
            ``image_size`` (84 by default; whole images resized with LANCZOS), ``split_dir``
            (folder of ``<split>.txt`` class-folder lists, default the bundled split),
            ``cache_dir`` and ``cache`` (the decode cache).

    Returns:
        uint8 RGB images ``[M, 3, S, S]``; classes in folder order, images by file name.
    """
    list_path = options.split_list("cub", f"{split}.txt")
    classes = sorted(read_name_list(list_path))
    root_dir = options.data_dir("cub")
    image_size = options.image_size
    archive, folder = root_dir / "CUB_200_2011.tgz", root_dir.joinpath(*_IMAGES)
    material = options.material("cub", split, list=file_md5(list_path))
    if archive.is_file():
        layout, source = "archive", str(archive)
        material["source"] = file_md5(archive)

        def build() -> Decoded:
            images, labels = _from_archive(archive, classes, image_size)
            return Decoded(images, labels, classes)

    elif folder.is_dir():
        missing = [c for c in classes if not (folder / c).is_dir()]
        if missing:
            raise DatasetError(f"cub: class folder {folder / missing[0]} is missing; extract the official archive again")
        names = sorted(f"{c}/{p.name}" for c in classes for p in (folder / c).iterdir()
                       if p.is_file() and p.name.lower().endswith(IMAGE_EXTENSIONS) and not p.name.startswith("."))
        src = FolderSource(folder, files=names)
        layout, source = "folder", str(folder)
        material["source"] = src.digest()
        cid = {c: i for i, c in enumerate(classes)}

        def build() -> Decoded:
            images = decode_images(src, names, mode="RGB", size=image_size)
            return Decoded(images, np.array([cid[n.split("/")[0]] for n in names], dtype=np.int64), classes)

    else:
        raise DatasetError(
            f"cub: no data in {root_dir}: expected CUB_200_2011.tgz or CUB_200_2011/images/; "
            "run: metamem prepare cub (or --from PATH for a local copy)"
        )
    return options.dataset("cub", split, material, build, source=source, layout=layout, split_path=list_path)
