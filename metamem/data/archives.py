"""Official archives of the CIFAR-100 and CUB-200-2011 benchmarks, and installing them.

``metamem prepare cifar_fs|fc100|cub`` downloads the official archive, checks its md5 and
moves it in place atomically (:func:`metamem.data.download.download`: HTML pages and
truncated bodies are refused). ``--from PATH`` installs a local copy of the same archive,
refused unless its md5 is the official one. Loaders read the archives directly (no
extraction step). tiered-ImageNet has no official download with a published checksum:
:func:`prepare_tiered_imagenet` installs a local copy of the common release after checking
its label files against the published class counts.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from metamem.data.base import DatasetError
from metamem.data.download import DownloadError, _is_tarfile, download
from metamem.data.paths import dataset_dir
from metamem.data.sources import file_md5
from metamem.files import make_readable

__all__ = ["ARCHIVES", "ARCHIVE_OF", "Archive", "install_file", "prepare_archive", "prepare_tiered_imagenet"]


@dataclass(frozen=True)
class Archive:
    """An official archive: ``folder`` under the data root, its file name, URL and md5."""

    folder: str
    filename: str
    url: str
    md5: str


#: The official archives (URL and md5 as published by their authors).
ARCHIVES: dict[str, Archive] = {
    "cifar100": Archive(
        "cifar100", "cifar-100-python.tar.gz",
        "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        "eb9058c3a382ffc7106e4002c42a8d85",
    ),
    "cub": Archive(
        "cub", "CUB_200_2011.tgz",
        "https://data.caltech.edu/records/65de6-vp158/files/CUB_200_2011.tgz?download=1",
        "97eceeb196236b17998738112f37df78",
    ),
}

#: dataset name -> the archive it is read from
ARCHIVE_OF = {"cifar_fs": "cifar100", "fc100": "cifar100", "cub": "cub"}


def install_file(src: Path, dest: Path) -> Path:
    """Put a copy of ``src`` at ``dest`` atomically (a hard link when on the same disk)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.exists() and os.path.samefile(src, dest):
        return dest
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    os.close(fd)
    try:
        os.unlink(tmp)
        try:
            os.link(src, tmp)
        except OSError:  # another file system, or links not allowed
            shutil.copyfile(src, tmp)
            make_readable(tmp)
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return dest


def prepare_archive(
    name: str,
    root: str | os.PathLike[str] | None = None,
    *,
    source: str | os.PathLike[str] | None = None,
    url: str | None = None,
    md5: str | None = None,
    progress: bool = True,
) -> Path:
    """Download (or install from ``source``) the official archive of dataset ``name``.

    Args:
        name: ``cifar_fs``, ``fc100`` (both read CIFAR-100) or ``cub``.
        root: target folder (default ``$METAMEM_DATA/<cifar100|cub>``).
        source: a local copy of the archive (the file, or a folder holding it).
        url: download from here instead of the official URL (a mirror).
        md5: expected md5 (default the official one; tests pass their own).
        progress: show a progress bar.

    Returns:
        The installed archive. One already present with the right md5 is kept.

    Raises:
        DownloadError: an md5 mismatch, an HTML page, a truncated or unreadable archive
            (nothing is installed then).
    """
    if name not in ARCHIVE_OF:
        raise DatasetError(f"no official archive for {name!r}; valid: {', '.join(sorted(ARCHIVE_OF))}")
    a = ARCHIVES[ARCHIVE_OF[name]]
    target = dataset_dir(root, a.folder)
    dest = target / a.filename
    want = (md5 or a.md5).lower()
    if source is not None:
        src = Path(source).expanduser()
        if src.is_dir():
            src = src / a.filename
        if not src.is_file():
            raise DatasetError(f"{src} not found; pass the {a.filename} archive (or its folder) to --from")
        got = file_md5(src)
        if got != want:
            raise DownloadError(
                f"md5 mismatch for {src}: expected {want} (the official {a.filename}), got {got}; "
                "nothing was installed: fetch the official archive again"
            )
        if not _is_tarfile(src):
            raise DownloadError(f"{src} is not a readable tar archive; nothing was installed")
        return install_file(src, dest)
    if dest.is_file() and file_md5(dest) == want:
        return dest
    return download(
        url or a.url, dest, md5=want, expect_zip=False, expect_tar=True, progress=progress,
        mirror_hint=f"download {a.filename} by hand and run: metamem prepare {name} --from PATH",
    )


def prepare_tiered_imagenet(
    source: str | os.PathLike[str],
    root: str | os.PathLike[str] | None = None,
    *,
    splits: tuple[str, ...] = ("train", "val", "test"),
    published: bool = True,
) -> list[Path]:
    """Install a local copy of the tiered-ImageNet release (pickle or npz files) into ``root``.

    There is no official download with a published checksum, so the copy is checked by
    content instead: for each split the labels file must unpickle (restricted) and give the
    published class and superclass counts (351/20, 97/6, 160/8; ``published=False`` skips the
    counts, for tests), and the images file must be present. Files are hard-linked when
    ``source`` and ``root`` share a disk, else copied, each atomically.

    Raises:
        DatasetError: naming the first missing or wrong file; nothing is installed then.
    """
    from metamem.data.tiered_imagenet import PUBLISHED, read_tiered_labels

    src = Path(source).expanduser()
    if not src.is_dir():
        raise DatasetError(f"{src} is not a folder; pass the folder holding <split>_labels.pkl and "
                           "<split>_images_png.pkl (or <split>_images.npz)")
    target = dataset_dir(root, "tiered_imagenet")
    todo: list[Path] = []
    for split in splits:
        labels = src / f"{split}_labels.pkl"
        images = next((p for p in (src / f"{split}_images_png.pkl", src / f"{split}_images.npz") if p.is_file()), None)
        if not labels.is_file() or images is None:
            miss = labels if not labels.is_file() else src / f"{split}_images_png.pkl"
            raise DatasetError(f"{miss} not found; the release holds <split>_labels.pkl and "
                               "<split>_images_png.pkl (or <split>_images.npz) per split; nothing was installed")
        _, _, names, gnames = read_tiered_labels(labels)
        want = PUBLISHED[split][:2]
        if published and (len(names), len(gnames)) != want:
            raise DatasetError(
                f"{labels} has {len(names)} classes under {len(gnames)} superclasses, not the published "
                f"{want[0]} under {want[1]} of the {split} split; nothing was installed"
            )
        todo += [labels, images]
    return [install_file(p, target / p.name) for p in todo]
