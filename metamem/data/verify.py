"""Content verification of the full Omniglot sets, and installing a local copy (``prepare --from``).

The official archives ``images_background.zip`` and ``images_evaluation.zip`` are checked by
their md5 when downloaded. A copy that was unpacked and zipped again (a mirror, a cluster's
shared data folder) has the same images but other archive bytes, so it is checked by
*content* instead: the committed manifests ``datasets/omniglot/manifests/images_<set>.md5.gz``
list the md5 of every official image (md5sum format, paths relative to the set's top folder)
and the *content digest*, the md5 of the sorted lines ``"<path>\\0<md5>\\n"`` (the same value
:meth:`~metamem.data.sources.FolderSource.digest` computes for an extracted folder).

:func:`verify_content` accepts a zip archive (with or without the top folder) or a folder
whose images are exactly the official ones and otherwise names the first changed, missing or
extra image. :func:`prepare_from` finds the set(s) in a zip, a folder, or a folder holding
both sets, verifies each and installs it into the data root where :func:`load_omniglot
<metamem.data.omniglot.load_omniglot>` finds it: a zip with the official top folder is copied
as ``images_<set>.zip`` (the loader accepts a re-zipped archive whose content digest matches
the manifest), anything else becomes the folder ``images_<set>/``. Installing goes through a
temporary file or folder and a rename, so a failed install leaves the data root as it was.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from metamem.data.base import DatasetError
from metamem.data.paths import bundled_dir, dataset_dir
from metamem.data.sources import _is_image
from metamem.files import make_readable

__all__ = [
    "FULL_SETS",
    "Manifest",
    "read_manifest",
    "write_manifest",
    "content_hashes",
    "content_digest",
    "zip_content_digest",
    "verify_content",
    "find_sets",
    "prepare_from",
]

#: the full official sets that have a committed manifest
FULL_SETS = ("background", "evaluation")

_DIGEST_MEMO: dict[tuple[str, int, int, int], str] = {}


@dataclass(frozen=True)
class Manifest:
    """The official image list of one set: ``files`` maps relative path -> md5."""

    set_name: str
    files: dict[str, str]
    digest: str
    path: Path


def read_manifest(set_name: str, manifest_dir: str | os.PathLike[str] | None = None) -> Manifest:
    """Load ``images_<set_name>.md5.gz`` from ``manifest_dir`` (default: the bundled one).

    Raises:
        DatasetError: for a set without a manifest, or a manifest whose lines do not give
            the digest in its header.
    """
    if set_name not in FULL_SETS:
        raise DatasetError(
            f"no content manifest for Omniglot set {set_name!r}; manifests exist for "
            f"{', '.join(FULL_SETS)}"
        )
    d = Path(manifest_dir) if manifest_dir is not None else bundled_dir("omniglot", "manifests")
    path = d / f"images_{set_name}.md5.gz"
    if not path.is_file():
        raise DatasetError(f"content manifest {path} not found; reinstall metamem")
    files: dict[str, str] = {}
    digest = None
    for line in gzip.decompress(path.read_bytes()).decode("utf-8").splitlines():
        if line.startswith("# content-digest:"):
            digest = line.split(":", 1)[1].strip()
        elif line and not line.startswith("#"):
            md5, name = line.split("  ", 1)
            files[name] = md5
    if digest is None or content_digest(files) != digest:
        raise DatasetError(f"content manifest {path} is corrupt (its digest does not match its lines)")
    return Manifest(set_name, files, digest, path)


def write_manifest(hashes: dict[str, str], set_name: str, out_dir: str | os.PathLike[str]) -> Path:
    """Write ``images_<set_name>.md5.gz`` for ``{path: md5}`` (how the bundled ones were made,
    from ``content_hashes`` of the official archives)."""
    lines = [
        f"# Omniglot images_{set_name}: md5 of every image, 'md5  Alphabet/characterNN/file.png' (md5sum format),",
        f"# paths relative to the set's top folder images_{set_name}/, sorted. Built from the official content",
        f"# (Lake et al. 2015, brendenlake/omniglot python/images_{set_name}.zip, MIT).",
        f"# files: {len(hashes)}",
        f"# content-digest: {content_digest(hashes)}",
    ] + [f"{hashes[n]}  {n}" for n in sorted(hashes)]
    out = Path(out_dir) / f"images_{set_name}.md5.gz"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode("utf-8"), mtime=0))
    return out


def content_digest(hashes: dict[str, str]) -> str:
    """md5 over the sorted lines ``"<path>\\0<md5>\\n"`` (equals ``FolderSource.digest()``)."""
    h = hashlib.md5()
    for name in sorted(hashes):
        h.update(f"{name}\0{hashes[name]}\n".encode())
    return h.hexdigest()


def _zip_layout(zf: zipfile.ZipFile) -> tuple[list[zipfile.ZipInfo], bool]:
    """The image members and whether they sit under one top folder (``set/Alph/char/x.png``)."""
    members = [i for i in zf.infolist() if not i.is_dir() and _is_image(i.filename)]
    deep = bool(members) and all(i.filename.count("/") == 3 for i in members)
    return members, deep


def content_hashes(path: str | os.PathLike[str]) -> dict[str, str]:
    """md5 of every image of a zip archive or folder, keyed by ``Alphabet/characterNN/file``.

    A zip's top folder (``images_background/`` in the official archives) is dropped when
    every image sits under one; a folder's paths are relative to the folder.

    Raises:
        DatasetError: for a path that is neither a readable zip nor a folder.
    """
    p = Path(path)
    out: dict[str, str] = {}
    if p.is_file():
        try:
            zf = zipfile.ZipFile(p)
        except (zipfile.BadZipFile, OSError) as e:
            raise DatasetError(f"{p} is not a readable zip archive ({e})") from None
        with zf:
            members, deep = _zip_layout(zf)
            for info in members:
                name = info.filename.split("/", 1)[1] if deep else info.filename
                try:
                    out[name] = hashlib.md5(zf.read(info)).hexdigest()
                except (zipfile.BadZipFile, OSError, EOFError) as e:
                    raise DatasetError(f"cannot read {p}:{info.filename} ({e})") from None
        return out
    if p.is_dir():
        for f in sorted(p.rglob("*")):
            if f.is_file() and _is_image(f.name):
                out[f.relative_to(p).as_posix()] = hashlib.md5(f.read_bytes()).hexdigest()
        return out
    raise DatasetError(f"{p} is neither a folder nor a .zip archive")


def zip_content_digest(path: str | os.PathLike[str]) -> str:
    """:func:`content_digest` of a zip archive's images (memoised per file identity)."""
    p = Path(path).resolve()
    st = p.stat()
    key = (str(p), st.st_size, st.st_mtime_ns, st.st_ino)
    if key not in _DIGEST_MEMO:
        _DIGEST_MEMO[key] = content_digest(content_hashes(p))
    return _DIGEST_MEMO[key]


def verify_content(path: str | os.PathLike[str], set_name: str,
                   manifest: Manifest | None = None) -> dict[str, str]:
    """Check that ``path`` (zip or folder) holds exactly the official images of ``set_name``.

    Returns:
        The verified ``{path: md5}``.

    Raises:
        DatasetError: naming the first (in path order) changed, missing or extra image and
            how many of each there are.
    """
    m = manifest or read_manifest(set_name)
    got = content_hashes(path)
    if content_digest(got) == m.digest:
        return got
    changed = sorted(n for n in got.keys() & m.files.keys() if got[n] != m.files[n])
    missing = sorted(m.files.keys() - got.keys())
    extra = sorted(got.keys() - m.files.keys())
    firsts = [(n, what) for group, what in ((changed, "changed"), (missing, "missing"), (extra, "extra"))
              for n in group[:1]]
    name, what = min(firsts)
    detail = {
        "changed": f"differs from the official image (md5 {got.get(name)}, expected {m.files.get(name)})",
        "missing": "is missing",
        "extra": "is not an official image",
    }[what]
    raise DatasetError(
        f"{path} is not the official Omniglot images_{set_name}: {name} {detail} "
        f"({len(changed)} changed, {len(missing)} missing, {len(extra)} extra images against "
        f"{m.path.name}); fetch an intact copy or run `metamem prepare omniglot` to download it"
    )


def _which_set(path: Path) -> str | None:
    stem = path.name[: -len(".zip")] if path.name.lower().endswith(".zip") else path.name
    for s in FULL_SETS:
        if stem == f"images_{s}":
            return s
    return None


def find_sets(
    path: str | os.PathLike[str], manifest_dir: str | os.PathLike[str] | None = None
) -> dict[str, Path]:
    """The full Omniglot sets found at ``path``: ``{set name: zip or folder}``.

    ``path`` is a zip or folder named ``images_<set>`` (``.zip``), a folder holding such
    zips/folders, or a zip/folder of alphabet folders whose alphabets name the set.

    Raises:
        DatasetError: when no set can be recognised (the message says what was expected).
    """
    p = Path(path).expanduser()
    if not p.exists():
        raise DatasetError(f"{p} does not exist")
    s = _which_set(p)
    if s is not None:
        return {s: p}
    if p.is_dir():
        found: dict[str, Path] = {}
        for s in FULL_SETS:
            for cand in (p / f"images_{s}.zip", p / f"images_{s}"):
                if cand.exists() and s not in found:
                    found[s] = cand
        if found:
            return found
    # alphabets directly inside: decide by the manifests' alphabet names
    if p.is_dir():
        alphabets = {c.name for c in p.iterdir() if c.is_dir()}
    elif zipfile.is_zipfile(p):
        with zipfile.ZipFile(p) as zf:
            members, deep = _zip_layout(zf)
            alphabets = {i.filename.split("/")[1 if deep else 0] for i in members}
    else:
        alphabets = set()
    for s in FULL_SETS if alphabets else ():
        official = {n.split("/", 1)[0] for n in read_manifest(s, manifest_dir).files}
        if alphabets <= official:
            return {s: p}
    raise DatasetError(
        f"{p}: no Omniglot set found; expected images_background(.zip), images_evaluation(.zip), "
        "a folder holding them, or a zip/folder of the alphabets of one set"
    )


def _install_zip(src: Path, dest: Path) -> Path:
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    make_readable(fd)
    os.close(fd)
    try:
        shutil.copyfile(src, tmp)
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return dest


def _install_folder(src: Path, names: list[str], dest: Path) -> Path:
    """Write the images ``names`` of ``src`` (zip or folder) to the folder ``dest``."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        if src.is_file():
            with zipfile.ZipFile(src) as zf:
                members, deep = _zip_layout(zf)
                by_name = {(i.filename.split("/", 1)[1] if deep else i.filename): i for i in members}
                for n in names:
                    target = tmp / n
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(zf.read(by_name[n]))
        else:
            for n in names:
                target = tmp / n
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src / n, target)
        old = None
        if dest.exists():
            old = Path(tempfile.mkdtemp(prefix=".old-", dir=dest.parent))
            os.replace(dest, old / dest.name)
        os.replace(tmp, dest)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


def prepare_from(
    path: str | os.PathLike[str],
    root: str | os.PathLike[str] | None = None,
    *,
    sets: tuple[str, ...] | None = None,
    manifest_dir: str | os.PathLike[str] | None = None,
) -> list[Path]:
    """Verify a local copy of the full Omniglot set(s) by content and install it into ``root``.

    Args:
        path: a zip or folder of one set, or a folder holding both (see :func:`find_sets`).
        root: the Omniglot data folder (default ``$METAMEM_DATA/omniglot`` or
            ``~/.cache/metamem/data/omniglot``).
        sets: install only these sets (default: every set found).
        manifest_dir: folder of the content manifests (default: the bundled ones).

    Returns:
        The installed paths (``root/images_<set>.zip`` or ``root/images_<set>/``).

    Raises:
        DatasetError: when no set is found, a requested set is absent, or a copy is not the
            official content (naming the first changed, missing or extra image). Nothing is
            installed unless every set verified.
    """
    found = find_sets(path, manifest_dir)
    if sets is not None:
        absent = [s for s in sets if s not in found]
        if absent:
            raise DatasetError(f"{path}: Omniglot set {absent[0]!r} not found there (found: {', '.join(found)})")
        found = {s: found[s] for s in sets}
    target = dataset_dir(root, "omniglot")
    manifests = {s: read_manifest(s, manifest_dir) for s in found}
    verified = {s: verify_content(src, s, manifests[s]) for s, src in found.items()}
    target.mkdir(parents=True, exist_ok=True)
    done = []
    for s, src in found.items():
        if src.is_file():
            with zipfile.ZipFile(src) as zf:
                _, deep = _zip_layout(zf)
                top = {i.filename.split("/", 1)[0] for i in zf.infolist() if "/" in i.filename}
            if deep and top == {f"images_{s}"}:
                done.append(_install_zip(src, target / f"images_{s}.zip"))
                continue
        folder = target / f"images_{s}"
        stale_zip = target / f"images_{s}.zip"
        # the loader looks at the archive before the folder: drop one that is not official
        if stale_zip.exists() and zip_content_digest(stale_zip) != manifests[s].digest:
            stale_zip.unlink()
        done.append(_install_folder(src, sorted(verified[s]), folder))
    return done
