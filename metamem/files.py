"""Writing files so that nothing is ever left half-written: the one atomic-write helper.

Every file metamem writes (checkpoints, ``config.yaml``, ``metrics.jsonl``, evaluation
results, plots, the decode cache) goes to a temporary file in the target's folder, is
flushed and fsynced, then moved in place with :func:`os.replace`. A reader sees the old file
or the new one, never a partial one; on any error the temporary file is removed and the old
file is untouched.
"""

from __future__ import annotations

import os
import signal
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable

#: crash-test hook: ``METAMEM_KILL_AT=<point>:<n>`` (see :func:`kill_point`); read once.
_KILL_AT = os.environ.get("METAMEM_KILL_AT")
_KILL_COUNTS: dict[str, int] = {}

__all__ = ["atomic_write", "write_text", "make_readable", "remove_orphan_temps", "kill_point"]


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
            kill_point(f"write:{path.name}")  # crash tests: killed mid-write, temp file left
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


def kill_point(name: str, before: Callable[[], object] | None = None) -> None:
    """A named point where the crash-safety tests kill the process with SIGKILL.

    With ``METAMEM_KILL_AT=<name>:<n>`` in the environment, the ``n``-th time (1-based) the
    process reaches the point ``name`` it calls ``before()`` (e.g. to write half a line)
    and then sends itself ``SIGKILL``: no ``finally`` block, ``atexit`` hook or buffered
    write runs, exactly as with ``kill -9``. Without the variable this is one ``is None``
    test. Points: ``step`` (after an optimizer step), ``metrics_line`` (a metrics line
    written, its checkpoint not yet), ``metrics_partial`` (half a metrics line written),
    ``eval`` (during the final evaluation) and ``write:<file name>`` (inside
    :func:`atomic_write`, the temp file written but not yet moved in place).
    """
    if _KILL_AT is None:
        return
    target, _, count = _KILL_AT.rpartition(":")
    if target != name:
        return
    _KILL_COUNTS[name] = _KILL_COUNTS.get(name, 0) + 1
    if _KILL_COUNTS[name] == int(count):
        if before is not None:
            before()
        os.kill(os.getpid(), signal.SIGKILL)
