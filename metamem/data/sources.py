"""Image files in a folder or a zip archive, their content hash, and batch decoding.

A source lists its image files by relative POSIX path (``"Greek/character01/0394_01.png"``)
whatever the container, so loaders work the same on an official zip archive and on its
extracted folder.
"""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
import threading
import zipfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO, Literal, TypeVar

import numpy as np
from PIL import Image, ImageOps

from metamem.data.base import DatasetError

__all__ = [
    "IMAGE_EXTENSIONS",
    "RESAMPLE",
    "ImageSource",
    "FolderSource",
    "ZipSource",
    "open_source",
    "read_tar_members",
    "file_md5",
    "decode_images",
    "image_to_array",
    "is_colour",
    "to_8bit",
    "GRAY_MODES",
]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")

#: PIL resampling filters (``Image.Resampling`` needs Pillow >= 9.1).
RESAMPLE = {
    "lanczos": getattr(Image, "Resampling", Image).LANCZOS,
    "box": getattr(Image, "Resampling", Image).BOX,
}

_MD5_MEMO: dict[tuple[int, int, int, int, int], str] = {}


def file_md5(path: str | os.PathLike[str]) -> str:
    """md5 hex digest of a file's content, memoised in the process per file identity (device,
    inode: the same file under any path or link) and its size, mtime and ctime."""
    st = os.stat(path)  # follows links, without resolving each path component
    memo = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    if memo not in _MD5_MEMO:
        h = hashlib.md5()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        _MD5_MEMO[memo] = h.hexdigest()
    return _MD5_MEMO[memo]


def _is_image(name: str) -> bool:
    """An image file by extension, not hidden and not under a hidden folder
    (``.ipynb_checkpoints/``, ``.git/``, macOS ``._*`` files)."""
    parts = name.split("/")
    return not any(p.startswith(".") for p in parts) and parts[-1].lower().endswith(IMAGE_EXTENSIONS)


#: PIL modes that hold no colour (``P`` depends on its palette: see :func:`is_colour`).
GRAY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"})


def is_colour(img: Image.Image) -> bool:
    """Whether ``img`` holds colour: a colour mode whose pixels are not all gray (R=G=B).

    A palette (``P``) image is colour when a colour of its palette that the image uses is
    not gray: palette PNGs are common for colour drawings and must not load as grayscale.
    """
    if img.mode in GRAY_MODES:
        return False
    if img.mode in ("P", "PA"):
        colors = img.getcolors(1 << 16)  # [(count, index)] or [(count, (index, alpha))]
        if colors is None:
            return True
        pal = img.getpalette() or []
        for _, c in colors:
            i = c[0] if isinstance(c, tuple) else c
            rgb = pal[3 * i: 3 * i + 3]
            if len(rgb) == 3 and not rgb[0] == rgb[1] == rgb[2]:
                return True
        return False
    arr = np.asarray(img.convert("RGB"))
    return bool((arr[..., 0] != arr[..., 1]).any() or (arr[..., 1] != arr[..., 2]).any())


class ImageSource:
    """Image files addressed by relative POSIX paths (sorted in :attr:`files`)."""

    path: Path
    files: list[str]

    def read(self, name: str) -> bytes:  # pragma: no cover - interface
        raise NotImplementedError

    def where(self, name: str) -> str:
        """Human-readable location of ``name`` for error messages."""
        raise NotImplementedError  # pragma: no cover - interface

    def digest(self) -> str:
        """Hash of the content of every file of the source."""
        raise NotImplementedError  # pragma: no cover - interface


class FolderSource(ImageSource):
    """Image files under a folder (recursively), or only ``files`` when given."""

    def __init__(self, path: str | os.PathLike[str], files: list[str] | None = None) -> None:
        self.path = Path(path)
        if files is not None:
            self.files = sorted(files)
            return
        found = []
        for folder, _, names in os.walk(self.path, followlinks=True):  # faster than rglob
            rel = Path(folder).relative_to(self.path)
            found += [r for r in ((rel / n).as_posix() for n in names) if _is_image(r)]
        self.files = sorted(found)

    def read(self, name: str) -> bytes:
        try:
            return (self.path / name).read_bytes()
        except OSError as e:
            raise DatasetError(f"cannot read image {self.where(name)}: {e.strerror or e}") from e

    def where(self, name: str) -> str:
        return str(self.path / name)

    def digest(self) -> str:
        h = hashlib.md5()
        for name in self.files:
            try:
                md5 = file_md5(self.path / name)
            except OSError as e:
                raise DatasetError(f"cannot read image {self.where(name)}: {e.strerror or e}") from e
            h.update(f"{name}\0{md5}\n".encode())
        return h.hexdigest()


class ZipSource(ImageSource):
    """Image files inside a zip archive; ``strip_top`` drops the archive's top folder."""

    def __init__(self, path: str | os.PathLike[str], *, strip_top: bool = True) -> None:
        self.path = Path(path)
        try:
            self._zip = zipfile.ZipFile(self.path)
            infos = self._zip.infolist()
        except Exception as e:  # BadZipFile, OSError, UnicodeDecodeError, struct.error, ...
            raise DatasetError(
                f"{self.path} is not a readable zip archive ({type(e).__name__}: {e}); delete it "
                "and fetch it again"
            ) from None
        self._lock = threading.Lock()
        self._members: dict[str, str] = {}
        for info in infos:
            if info.is_dir() or not _is_image(info.filename):
                continue
            parts = info.filename.split("/")
            rel = "/".join(parts[1:]) if strip_top and len(parts) > 1 else info.filename
            self._members[rel] = info.filename
        self.files = sorted(self._members)

    def read(self, name: str) -> bytes:
        try:
            with self._lock:  # one archive handle shared by the decoding threads
                return self._zip.read(self._members[name])
        except Exception as e:  # BadZipFile (CRC), zlib.error, NotImplementedError (method), ...
            raise DatasetError(
                f"cannot read image {self.where(name)} ({type(e).__name__}: {e}); the archive is "
                "corrupt: delete it and fetch it again"
            ) from None

    def where(self, name: str) -> str:
        return f"{self.path}:{self._members.get(name, name)}"

    def digest(self) -> str:
        return file_md5(self.path)


def open_source(path: str | os.PathLike[str], *, strip_top: bool = True) -> ImageSource:
    """A :class:`ZipSource` for a ``.zip`` file, else a :class:`FolderSource`."""
    p = Path(path)
    if p.is_file() and p.suffix.lower() == ".zip":
        return ZipSource(p, strip_top=strip_top)
    if p.is_dir():
        return FolderSource(p)
    raise DatasetError(f"{p} is neither a folder nor a .zip archive")


_T = TypeVar("_T")


def read_tar_members(
    path: str | os.PathLike[str], want: Callable[[tarfile.TarInfo], bool],
    read: Callable[[tarfile.TarInfo, IO[bytes]], _T],
) -> list[tuple[tarfile.TarInfo, _T]]:
    """``read(member, file)`` of each regular file of the tar archive ``path`` (any
    compression) that ``want(member)`` accepts, in archive order, in one pass.

    Raises:
        DatasetError: the archive cannot be opened or read (the message says to fetch it
            again); whatever ``read`` raises otherwise passes through.
    """
    try:
        tf = tarfile.open(path, "r:*")
    except (tarfile.TarError, OSError, EOFError) as e:
        raise DatasetError(f"{path} is not a readable tar archive ({e}); fetch it again") from None
    out = []
    with tf:
        try:
            for m in tf:
                if m.isfile() and want(m):
                    f = tf.extractfile(m)
                    assert f is not None
                    out.append((m, read(m, f)))
        except (tarfile.TarError, OSError, EOFError) as e:
            raise DatasetError(f"{path}: cannot read the archive ({e}); fetch it again") from None
    return out


#: the EXIF tag of the orientation a viewer applies (1: as stored)
_ORIENTATION = 0x0112


def image_to_array(
    img: Image.Image,
    *,
    mode: Literal["L", "RGB"],
    size: int | None,
    invert: bool = False,
    resample: int = RESAMPLE["lanczos"],
) -> np.ndarray:
    """A PIL image as uint8 ``[C, H, W]`` (C = 1 for ``"L"``, 3 for ``"RGB"``).

    The EXIF orientation tag is applied first (a phone photo stored sideways with
    "rotate 90" in its metadata is read upright, as viewers show it). ``invert`` flips
    intensities (255 - x) before resizing; ``size`` resizes to
    ``size x size`` (skipped when already that size). Wide-value images are never
    saturated (PIL's own ``convert`` clips them): 16-bit ones (``I;16``, or ``I`` with values
    above 255) are scaled from 0..65535 to 0..255; 32-bit float (``F``) images must hold
    whole numbers in 0..255.

    Raises:
        ValueError: for an ``I``/``F`` image whose values no 8-bit image can hold.
    """
    if img.getexif().get(_ORIENTATION, 1) != 1:  # phone photos: upright, as viewers show them
        img = ImageOps.exif_transpose(img)
    img = to_8bit(img)
    img = img.convert(mode)
    if invert:
        img = Image.eval(img, lambda v: 255 - v)
    if size is not None and img.size != (size, size):
        img = img.resize((size, size), resample=resample)
    arr = np.asarray(img, dtype=np.uint8)
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)


def to_8bit(img: Image.Image) -> Image.Image:
    """An ``I``/``I;16``/``F`` image as an exact or documented-scaled ``L`` image."""
    if img.mode not in ("I", "F") and not img.mode.startswith("I;16"):
        return img
    a = np.asarray(img).astype(np.float64)
    lo, hi = (float(a.min()), float(a.max())) if a.size else (0.0, 0.0)
    if not np.isfinite(a).all():
        raise ValueError(f"{img.mode} image holds NaN or inf values")
    if img.mode == "F":
        if lo < 0 or hi > 255 or not (a == np.rint(a)).all():
            raise ValueError(
                f"32-bit float image with values in [{lo:.4g}, {hi:.4g}] is not 8-bit data; "
                "save it as an 8-bit (or 16-bit) image"
            )
    elif img.mode.startswith("I;16") or (hi > 255 and lo >= 0 and hi <= 65535):
        a = np.rint(a * (255.0 / 65535.0))  # a 16-bit image: full scale to full scale
    elif lo < 0 or hi > 255:
        raise ValueError(
            f"32-bit integer image with values in [{lo:.0f}, {hi:.0f}] fits neither 8 nor 16 "
            "bits; save it as an 8-bit or 16-bit image"
        )
    return Image.fromarray(a.astype(np.uint8), mode="L")


def decode_images(
    source: ImageSource,
    names: list[str],
    *,
    mode: Literal["L", "RGB"],
    size: int | None,
    invert: bool = False,
    resample: int = RESAMPLE["lanczos"],
    workers: int | None = None,
    colour_hint: str | None = None,
) -> np.ndarray:
    """Decode ``names`` of ``source`` into one uint8 array ``[M, C, H, W]``.

    A small thread pool reads and decodes the files (PIL releases the GIL while decoding)
    straight into one preallocated array, so peak memory is the output plus a few images.

    ``colour_hint`` (with ``mode="L"``): refuse a colour image instead of converting it to
    grayscale; the text says how to ask for colour (``"pass channels=3"``). Loaders that
    inferred grayscale from the first image set it, so colour is never dropped silently.

    Raises:
        DatasetError: naming the file that cannot be read or decoded, or (with
            ``size=None``) the first file whose size differs from the first image's, or
            (with ``colour_hint``) the first colour image.
    """
    if not names:
        raise DatasetError(f"{source.path}: no images to decode")

    def one(i: int) -> np.ndarray:
        data = source.read(names[i])
        if not data:
            raise DatasetError(f"image {source.where(names[i])} is empty (0 bytes); replace or remove the file")
        try:
            with Image.open(io.BytesIO(data)) as img:
                img.load()
                if colour_hint and mode == "L" and is_colour(img):
                    raise DatasetError(
                        f"image {source.where(names[i])} is colour ({img.mode}) but the dataset "
                        f"is read as grayscale; {colour_hint}"
                    )
                return image_to_array(img, mode=mode, size=size, invert=invert, resample=resample)
        except DatasetError:
            raise
        except Exception as e:  # PIL raises many types on corrupt files (OSError, SyntaxError, struct.error...)
            raise DatasetError(
                f"cannot decode image {source.where(names[i])} ({type(e).__name__}: "
                f"{str(e).splitlines()[0][:200] if str(e) else ''}); replace or remove the file"
            ) from None

    first = one(0)
    out = np.empty((len(names), *first.shape), dtype=np.uint8)
    out[0] = first

    def fill(i: int) -> None:
        a = one(i)
        if a.shape != first.shape:
            raise DatasetError(
                f"image {source.where(names[i])} is {a.shape[2]}x{a.shape[1]} but "
                f"{source.where(names[0])} is {first.shape[2]}x{first.shape[1]}; set image_size "
                "to resize all images to one size"
            )
        out[i] = a

    pool = ThreadPoolExecutor(max_workers=workers or min(4, os.cpu_count() or 1))
    try:
        for _ in pool.map(fill, range(1, len(names))):
            pass
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return out
