"""Writing files so that nothing is ever left half-written: the one atomic-write helper.

Every file metamem writes (checkpoints, ``config.yaml``, ``metrics.jsonl``, evaluation
results, plots, the decode cache) goes to a temporary file in the target's folder, is
flushed and fsynced, then moved in place with :func:`os.replace`. A reader sees the old file
or the new one, never a partial one; on any error the temporary file is removed and the old
file is untouched.
"""

from __future__ import annotations

import errno
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

__all__ = [
    "atomic_write", "write_text", "make_readable", "remove_orphan_temps", "kill_point",
    "LOCK_NAME", "DirectoryBusy", "directory_holder", "lock_directory", "WriteError", "os_error_in",
]


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

    Raises:
        WriteError: when the system refuses the write (disk full, no permission...), also
            when ``write`` hides the :class:`OSError` behind its own error as ``torch.save``
            does: one line naming ``path`` and the cause; the old file is untouched.
    """
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        make_readable(fd)
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            kill_point(f"write:{path.name}")  # crash tests: killed mid-write, temp file left
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        cause = os_error_in(e) if isinstance(e, Exception) else None
        if cause is not None:
            raise WriteError(path, cause) from None
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


def kill_point(name: str, before: Callable[[], object] | None = None) -> None:
    """A named point where a crash would hurt most; does nothing.

    The crash-safety tests (``tests/training/kill_at.py``) replace this function, in a
    process of their own, with one that calls ``before()`` (e.g. to write half a line) and
    sends the process ``SIGKILL`` the n-th time it reaches a point. Points: ``step`` (after
    an optimizer step), ``metrics_line`` (a metrics line written, its checkpoint not yet),
    ``metrics_partial`` (half a metrics line written), ``eval`` (during the final
    evaluation) and ``write:<file name>`` (inside :func:`atomic_write`, the temp file
    written but not yet moved in place).
    """


#: the lock file :func:`lock_directory` keeps in a run directory (it holds the writer's pid).
LOCK_NAME = ".lock"


class DirectoryBusy(RuntimeError):
    """Another live process holds the directory's lock (:func:`lock_directory`)."""


def _flock_or_holder(fd: int, mode: int) -> str | None:
    """Take ``flock(fd, mode)`` without blocking: ``None`` when taken, else the pid written in
    the lock file by the process that holds it."""
    import fcntl

    try:
        fcntl.flock(fd, mode | fcntl.LOCK_NB)
    except OSError as e:
        if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise
        return os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
    return None


@contextmanager
def lock_directory(folder: str | os.PathLike[str], *, what: str = "run directory") -> Iterator[Path]:
    """Hold an exclusive advisory lock (``fcntl.flock``) on ``folder/.lock`` for the ``with``
    block: one writer per run directory.

    The lock belongs to the open file, so the kernel drops it when the process ends in any
    way (``kill -9`` included): a lock file left by a dead process never blocks. The file
    stays (removing it would let a third process lock a deleted file); it holds the pid of
    its last holder, for the message. The folder is created when missing.

    Raises:
        DirectoryBusy: one line naming the folder and the pid that holds it.
    """
    import fcntl  # POSIX only; metamem runs on Linux and macOS

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        holder = _flock_or_holder(fd, fcntl.LOCK_EX)
        if holder is not None:
            raise DirectoryBusy(
                f"{what} {folder} is in use by another metamem process (pid {holder}); wait for "
                "it to finish or stop it, or pass another --out"
            )
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield path
    finally:
        os.close(fd)  # releases the lock


def directory_holder(folder: str | os.PathLike[str]) -> str | None:
    """The pid (as written) of the live process holding ``folder``'s :func:`lock_directory`
    lock, or ``None`` when no process holds it (no lock file, or one left by a process that
    ended). The probe takes a shared lock for an instant; it never blocks."""
    import fcntl

    path = Path(folder) / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        return _flock_or_holder(fd, fcntl.LOCK_SH)
    finally:
        os.close(fd)  # releases the probe's shared lock


class WriteError(RuntimeError):
    """A file could not be written (disk full, no permission...): one line naming it and why."""

    def __init__(self, path: str | os.PathLike[str], cause: OSError) -> None:
        code = cause.errno
        why = os.strerror(code) if code else (cause.strerror or str(cause) or type(cause).__name__)
        hint = _WRITE_HINTS.get(code or 0, "")
        super().__init__(f"cannot write {path}: {why}" + (f"; {hint}" if hint else ""))
        self.errno = code
        self.path = Path(path)


_WRITE_HINTS = {
    errno.ENOSPC: "the disk is full: free some space or write elsewhere",
    errno.EDQUOT: "the disk quota is used up: free some space or write elsewhere",
    errno.EACCES: "no permission: check the folder's owner and mode, or write elsewhere",
    errno.EROFS: "the file system is read-only: write elsewhere",
}


def os_error_in(e: BaseException) -> OSError | None:
    """The :class:`OSError` behind ``e``: ``e`` itself or one in its cause/context chain
    (``torch.save`` turns a failed ``write`` into ``RuntimeError: [enforce fail at
    inline_container.cc] ... unexpected pos``, with the ``OSError`` as its context)."""
    seen: set[int] = set()
    cur: BaseException | None = e
    while cur is not None and id(cur) not in seen:
        if isinstance(cur, OSError):
            return cur
        seen.add(id(cur))
        cur = cur.__cause__ or cur.__context__
    return None
