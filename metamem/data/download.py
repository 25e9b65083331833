"""Verified downloads and safe archive extraction (used by ``metamem prepare``).

* :func:`download` streams a URL to a temporary file next to the destination (with a tqdm
  progress bar), refuses HTML pages and truncated bodies, checks the md5, checks that an
  expected zip is a zip, and only then moves the file in place with :func:`os.replace`:
  a failed download never touches the previous file.
* :func:`safe_extract` checks every member of an archive first and extracts nothing when
  one is absolute or climbs out of the target folder with ``..``.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile
import zlib
from pathlib import Path, PurePosixPath

from tqdm import tqdm

from metamem.data.base import DatasetError
from metamem.data.paths import dataset_dir
from metamem.data.sources import file_md5
from metamem.files import make_readable

__all__ = [
    "DownloadError",
    "OMNIGLOT_URL",
    "OMNIGLOT_FILES",
    "omniglot_base_url",
    "download",
    "safe_extract",
    "prepare_omniglot",
]

#: Official location of the Omniglot archives (Lake et al., 2015).
OMNIGLOT_URL = "https://raw.githubusercontent.com/brendenlake/omniglot/master/python"

#: Omniglot set -> (archive file name, md5).
OMNIGLOT_FILES: dict[str, tuple[str, str]] = {
    "background": ("images_background.zip", "68d2efa1b9178cc56df9314c21c6e718"),
    "evaluation": ("images_evaluation.zip", "6b91aef0f799c5bb55b94e3f2daec811"),
    "background_small1": ("images_background_small1.zip", "e704a628b5459e08445c13499850abc4"),
    "background_small2": ("images_background_small2.zip", "b75a71a51d3b13f821f212756fe481fd"),
}

_HTML_HEAD = re.compile(rb"^\s*(<!doctype\s+html|<html|<head|<\?xml)", re.IGNORECASE)


class DownloadError(DatasetError):
    """A download or an archive that cannot be used (HTML page, truncated, bad md5...)."""


def omniglot_base_url(base_url: str | None = None) -> str:
    """``base_url`` if given, else ``$METAMEM_OMNIGLOT_URL``, else :data:`OMNIGLOT_URL`."""
    url = base_url or os.environ.get("METAMEM_OMNIGLOT_URL") or OMNIGLOT_URL
    return url.rstrip("/")


def download(
    url: str,
    dest: str | os.PathLike[str],
    *,
    md5: str | None = None,
    expect_zip: bool = True,
    progress: bool = True,
    timeout: float = 60.0,
    sha256: str | None = None,
    expect_tar: bool = False,
    mirror_hint: str = "point METAMEM_OMNIGLOT_URL at a mirror",
) -> Path:
    """Download ``url`` to ``dest`` atomically, verifying what arrived.

    Args:
        url: what to fetch (``http(s)://`` or ``file://``).
        dest: destination file; replaced only once the new file passed every check.
        md5: expected md5 hex digest, or ``None`` to skip the check.
        expect_zip: require a valid zip archive.
        sha256: expected sha256 hex digest, or ``None`` to skip the check.
        expect_tar: require a readable tar archive (plain or compressed).
        mirror_hint: what the "cannot reach" message suggests.
        progress: show a tqdm progress bar.
        timeout: socket timeout in seconds.

    Returns:
        ``dest`` as a :class:`~pathlib.Path`.

    Raises:
        DownloadError: unreachable URL, HTTP error, an HTML page instead of the file, a
            truncated body (Content-Length mismatch or bad zip), or an md5 mismatch (naming
            the file, expected and got). The previous ``dest`` is kept in every case.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    make_readable(fd)
    try:
        resp = urllib.request.urlopen(url, timeout=timeout)  # noqa: S310 - user-chosen URL
    except (urllib.error.URLError, OSError) as e:  # HTTPError is a URLError
        os.close(fd)
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, urllib.error.HTTPError):
            msg = f"download of {url} failed: HTTP {e.code} {e.reason}"
        else:
            msg = f"cannot reach {url} ({getattr(e, 'reason', e)}); check the network or {mirror_hint}"
        raise DownloadError(msg) from None
    try:
        with resp, os.fdopen(fd, "wb") as f:
            ctype = resp.headers.get("Content-Type", "") or ""
            if "html" in ctype.lower():
                raise DownloadError(
                    f"{url} returned an HTML page (Content-Type {ctype!r}) instead of "
                    f"{dest.name}; the URL is wrong or the host serves an error/login page"
                )
            length = resp.headers.get("Content-Length")
            total = int(length) if length and length.strip().isdigit() else None
            got = 0
            head = b""
            digest, digest256 = hashlib.md5(), hashlib.sha256()
            incomplete = False
            with tqdm(
                total=total, unit="B", unit_scale=True, desc=dest.name, disable=not progress
            ) as bar:
                while True:
                    try:
                        chunk = resp.read(1 << 16)
                    except http.client.IncompleteRead:
                        incomplete = True
                        break
                    if not chunk:
                        break
                    if len(head) < 64:
                        head += chunk[:64]
                        if _HTML_HEAD.match(head):
                            raise DownloadError(
                                f"{url} returned an HTML page instead of {dest.name} "
                                f"(it starts with {head[:15]!r}); the URL is wrong or the host "
                                "serves an error/login page"
                            )
                    f.write(chunk)
                    digest.update(chunk)
                    if sha256 is not None:
                        digest256.update(chunk)
                    got += len(chunk)
                    bar.update(len(chunk))
            if incomplete or (total is not None and got != total):
                raise DownloadError(
                    f"truncated download of {dest.name} from {url}: got {got} of {total or '?'} "
                    "bytes; try again"
                )
        got_md5 = digest.hexdigest()
        if md5 is not None and got_md5 != md5.lower():
            raise DownloadError(
                f"md5 mismatch for {dest.name} from {url}: expected {md5}, got {got_md5}; "
                f"the previous {dest.name} (if any) was kept"
            )
        if sha256 is not None and digest256.hexdigest() != sha256.lower():
            raise DownloadError(
                f"sha256 mismatch for {dest.name} from {url}: expected {sha256}, got "
                f"{digest256.hexdigest()}; the previous {dest.name} (if any) was kept"
            )
        if expect_tar and not _is_tarfile(tmp):
            raise DownloadError(
                f"{dest.name} from {url} is not a readable tar archive (truncated or corrupt "
                "download); try again"
            )
        if expect_zip and not zipfile.is_zipfile(tmp):
            raise DownloadError(
                f"{dest.name} from {url} is not a valid zip archive (truncated or corrupt "
                "download); try again"
            )
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return dest


def _is_tarfile(path: str | os.PathLike[str]) -> bool:
    try:
        with tarfile.open(path, "r:*") as tf:
            return tf.next() is not None
    except (tarfile.TarError, OSError, EOFError, zlib.error):
        return False


def _unsafe_member(name: str) -> bool:
    norm = name.replace("\\", "/")
    p = PurePosixPath(norm)
    return norm.startswith("/") or bool(re.match(r"^[A-Za-z]:", norm)) or ".." in p.parts


def safe_extract(archive: str | os.PathLike[str], dest: str | os.PathLike[str]) -> list[Path]:
    """Extract a zip archive into ``dest`` after checking every member.

    The archive is extracted into a temporary folder inside ``dest``, then each top-level
    entry is moved into place (replacing an older copy).

    Returns:
        The top-level paths created in ``dest``.

    Raises:
        DownloadError: for an unreadable archive, or a member with an absolute path or a
            ``..`` component (then nothing at all is extracted).
    """
    archive, dest = Path(archive), Path(dest)
    try:
        zf = zipfile.ZipFile(archive)
        names = zf.namelist()
    except Exception as e:  # BadZipFile, OSError, UnicodeDecodeError (bad UTF-8 names), ...
        raise DownloadError(f"{archive} is not a readable zip archive ({type(e).__name__}: {e})") from None
    with zf:
        for name in names:
            if _unsafe_member(name):
                raise DownloadError(
                    f"{archive}: refusing to extract member {name!r} (absolute path or '..' "
                    "would escape the target folder); nothing was extracted"
                )
        dest.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".extract-", dir=dest))
        try:
            try:
                zf.extractall(tmp)
            except Exception as e:  # CRC mismatch, zlib.error, unsupported method, ...
                raise DownloadError(
                    f"{archive}: cannot extract ({type(e).__name__}: {e}); the archive is corrupt: "
                    "delete it and fetch it again (nothing was extracted)"
                ) from None
            out = []
            for entry in sorted(tmp.iterdir()):
                target = dest / entry.name
                if target.is_dir() and not target.is_symlink():
                    old = Path(tempfile.mkdtemp(prefix=".old-", dir=dest))
                    os.replace(target, old / entry.name)
                    os.replace(entry, target)
                    shutil.rmtree(old, ignore_errors=True)
                else:
                    if target.exists() or target.is_symlink():
                        target.unlink()
                    os.replace(entry, target)
                out.append(target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def prepare_omniglot(
    root: str | os.PathLike[str] | None = None,
    *,
    sets: tuple[str, ...] = ("background", "evaluation"),
    base_url: str | None = None,
    extract: bool = True,
    progress: bool = True,
) -> list[Path]:
    """Download, verify and extract the official Omniglot archives into ``root``.

    Args:
        root: target folder (default ``$METAMEM_DATA/omniglot`` or
            ``~/.cache/metamem/data/omniglot``).
        sets: which official sets to fetch (keys of :data:`OMNIGLOT_FILES`).
        base_url: where the archives are (default ``$METAMEM_OMNIGLOT_URL`` or the
            official GitHub location).
        extract: also extract each archive into ``root/images_<set>/``.
        progress: show progress bars.

    Returns:
        The verified archive paths. An archive already present with the right md5 is not
        downloaded again.
    """
    target = dataset_dir(root, "omniglot")
    base = omniglot_base_url(base_url)
    done = []
    for s in sets:
        if s not in OMNIGLOT_FILES:
            raise DatasetError(
                f"unknown Omniglot set {s!r}; valid sets: {', '.join(OMNIGLOT_FILES)}"
            )
        fname, md5 = OMNIGLOT_FILES[s]
        dest = target / fname
        fresh = not (dest.is_file() and file_md5(dest) == md5)
        if fresh:
            download(f"{base}/{fname}", dest, md5=md5, progress=progress)
        if extract and (fresh or not (target / fname[: -len(".zip")]).is_dir()):
            safe_extract(dest, target)
        done.append(dest)
    return done
