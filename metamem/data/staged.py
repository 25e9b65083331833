"""Splits larger than memory: the uint8 store stays on the host, batches are staged per call.

A split is normally moved whole onto the sampler's device (one uint8 tensor ``[M, C, H, W]``).
A split whose store is larger than a budget (tiered-ImageNet's train split is 9.5 GB at
84x84) instead stays in its decode-cache file, opened as a read-only numpy memmap. Each
batch reads its B·N·(K+Q) images from the file with positional reads (``os.preadv``, one
per image, into a reused host buffer: pinned where the device is CUDA) and copies that
buffer to the device in one transfer. Reading through ``preadv`` rather than through the
map's pages keeps no file page in the process: its resident memory is the two staging
buffers plus the batch whatever the split's size, while the kernel's page cache keeps what
memory allows. (Gathering through the map instead leaves every page a batch touched
resident, up to 16 pages at a time with the kernel's fault-around: 6.2 GiB more after 200
batches on the 9.5 GB split, see docs/benchmarks_data.md.)

The episodes are the same as the in-memory path's: only where the bytes come from changes.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import torch

from metamem.data.base import ImageDataset

__all__ = ["StagedImages", "parse_bytes", "store_budget"]

def parse_bytes(text: str | int | float) -> int:
    """``"8G"``, ``"512M"``, ``"1.5GiB"``, ``4096`` -> bytes (K/M/G/T are powers of 1024).

    Raises:
        ValueError: naming the text, for anything else.
    """
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        if text < 0:
            raise ValueError(f"a memory budget must be >= 0 bytes, got {text}")
        return int(text)
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([kmgt]?)(i?b)?\s*", str(text), re.IGNORECASE)
    if m is None:
        raise ValueError(f"cannot read {text!r} as a size; write bytes or a number with K, M, G or T (e.g. 8G)")
    scale = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}[m.group(2).lower()]
    return int(float(m.group(1)) * scale)


def store_budget(device: torch.device) -> int:
    """Bytes of uint8 images a sampler may hold on ``device``: ``$METAMEM_STORE_BUDGET`` when
    set (``8G``...), else half the device's memory (a CUDA device's total memory, the host's
    physical memory for the CPU)."""
    env = os.environ.get("METAMEM_STORE_BUDGET")
    if env:
        try:
            return parse_bytes(env)
        except ValueError as e:
            raise ValueError(f"$METAMEM_STORE_BUDGET: {e}") from None
    if device.type == "cuda":
        return int(torch.cuda.get_device_properties(device).total_memory) // 2
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2
    except (ValueError, OSError, AttributeError):  # no sysconf: never stage on the CPU
        return 1 << 62


class StagedImages:
    """A uint8 store ``[M, C, H, W]`` read from its cache file on the host, staged to ``device``
    per batch.

    Args:
        images: the split's images (a tensor over a memmap, or any CPU uint8 tensor).
        device: where batches are wanted.
        path: the decode cache's ``images.npy`` (default: none; ``images`` is then gathered
            as it is, which still stages it per batch but keeps it in memory).
    """

    def __init__(self, images: torch.Tensor, device: torch.device, *,
                 path: str | os.PathLike[str] | None = None) -> None:
        self.device = device
        self.shape = tuple(int(n) for n in images.shape)
        self._fd: int | None = None
        if path is not None and Path(path).is_file() and hasattr(os, "preadv"):
            arr = np.load(path, mmap_mode="r")
            if tuple(arr.shape) != self.shape or arr.dtype != np.uint8 or not arr.flags.c_contiguous:
                raise ValueError(f"{path} holds {arr.dtype} {arr.shape}, not the split's uint8 {self.shape}")
            self.store = _readonly_tensor(arr)
            self._offset = int(arr.offset)
            self._fd = os.open(path, os.O_RDONLY)
        else:
            self.store = images.cpu()
        self._row = int(np.prod(self.shape[1:]))
        self._pin = device.type == "cuda"
        self._bufs: list[torch.Tensor] = []
        self._events: list[torch.cuda.Event | None] = []
        self._next = 0
        self.bytes_read = 0  # bytes read from the file (for tests and figures)

    @classmethod
    def for_split(cls, dataset: ImageDataset, device: torch.device,
                  budget: int | str | None = None) -> StagedImages | None:
        """A staged store for ``dataset`` when its images exceed ``budget`` bytes (default
        :func:`store_budget`), else ``None`` (the split fits: keep it on the device)."""
        limit = store_budget(device) if budget is None else parse_bytes(budget)
        if dataset.images.numel() <= limit:
            return None
        folder = dataset.info.get("cache_path")
        return cls(dataset.images, device, path=Path(folder) / "images.npy" if folder else None)

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape))

    @property
    def from_file(self) -> bool:
        """Whether batches are read from the cache file (else from ``images`` in memory)."""
        return self._fd is not None

    def _buffer(self, n: int) -> torch.Tensor:
        """One of two host buffers of ``n`` rows (pinned for CUDA), free to overwrite."""
        i = self._next
        self._next = 1 - i
        while len(self._bufs) <= i:
            self._bufs.append(torch.empty(0, dtype=torch.uint8))
            self._events.append(None)
        ev = self._events[i]
        if ev is not None:
            ev.synchronize()  # its last copy to the device has finished
        buf = self._bufs[i]
        if buf.shape[0] < n:
            buf = torch.empty((n, *self.shape[1:]), dtype=torch.uint8, pin_memory=self._pin)
            self._bufs[i] = buf
        return buf[:n]

    def _read(self, idx: list[int], out: np.ndarray) -> None:
        assert self._fd is not None
        row, base = self._row, self._offset
        for j, i in enumerate(idx):
            got = os.preadv(self._fd, [out[j]], base + i * row)
            if got != row:
                raise OSError(f"short read of image {i} from the decode cache ({got} of {row} bytes); "
                              "the cache file changed: delete the entry to rebuild it")
        self.bytes_read += row * len(idx)

    def gather(self, index: torch.Tensor) -> torch.Tensor:
        """uint8 ``[len(index), C, H, W]`` on the device: the images ``index`` (any device)."""
        idx = index.to("cpu", torch.int64)
        host = self._buffer(idx.shape[0])
        if self._fd is not None:
            if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= self.shape[0]):
                raise IndexError(f"image index out of range 0..{self.shape[0] - 1}")
            self._read(idx.tolist(), host.numpy().reshape(idx.shape[0], -1))
        else:
            torch.index_select(self.store, 0, idx, out=host)
        if self.device.type == "cpu":
            return host
        out = host.to(self.device, non_blocking=self._pin)
        if self._pin:
            ev = torch.cuda.Event()
            ev.record()
            self._events[1 - self._next] = ev
        return out

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown
            pass

    def __repr__(self) -> str:
        return f"StagedImages(shape={self.shape}, device={self.device}, from_file={self.from_file})"


def _readonly_tensor(arr: np.ndarray) -> torch.Tensor:
    """A tensor over a read-only array without a copy (torch warns on read-only arrays; the
    store is only ever read)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return torch.from_numpy(arr)
