"""Writing files so that nothing is ever left half-written: the one atomic-write helper.

Every file metamem writes (checkpoints, ``config.yaml``, ``metrics.jsonl``, evaluation
results, plots, the decode cache) goes to a temporary file in the target's folder, is
flushed and fsynced, then moved in place with :func:`os.replace`. A reader sees the old file
or the new one, never a partial one; on any error the temporary file is removed and the old
file is untouched.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable

__all__ = ["atomic_write", "write_text", "make_readable", "remove_orphan_temps"]


def make_readable(fd_or_path: int | str | os.PathLike[str]) -> None:
    """Give a new file the mode an ordinary ``open()`` would (``0o666`` less the umask,
    so 0644 under the usual umask 022) instead of ``mkstemp``'s 0600."""
    mask = os.umask(0o022)  # read the umask (there is no other portable way), put it back
    os.umask(mask)
    if isinstance(fd_or_path, int):
        os.fchmod(fd_or_path, 0o666 & ~mask)
    else:
        os.chmod(fd_or_path, 0o666 & ~mask)


def atomic_write(path: str | os.PathLike[str], write: Callable[[BinaryIO], object]) -> Path:
    """Call ``write(file)`` on a binary temporary file next to ``path``, then move it in place.

    Args:
        path: the target file (its folder is created).
        write: fills the open binary file (``torch.save(obj, f)``, ``np.save(f, a)``,
            ``f.write(data)``, ``fig.savefig(f)``...).

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        make_readable(fd)
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_text(path: str | os.PathLike[str], text: str | bytes) -> Path:
    """Atomically replace ``path`` with ``text`` (str as UTF-8, or bytes)."""
    data = text.encode("utf-8") if isinstance(text, str) else text
    return atomic_write(path, lambda f: f.write(data))


def remove_orphan_temps(folder: str | os.PathLike[str]) -> list[Path]:
    """Delete the temporary files :func:`atomic_write` leaves when its process is killed.

    Only names of the form ``.<name>.<random>.tmp`` directly in ``folder`` are removed
    (a killed checkpoint write leaves a ``.last.pt.<random>.tmp`` as large as the
    checkpoint). Resuming a run calls this on the run directory and its ``checkpoints/``.

    Returns:
        The removed paths, sorted.
    """
    folder = Path(folder)
    removed: list[Path] = []
    for p in sorted(folder.glob(".*.tmp")) if folder.is_dir() else []:
        if p.is_file() and p.name.count(".") >= 3:
            p.unlink(missing_ok=True)
            removed.append(p)
    return removed
