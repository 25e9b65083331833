"""Plug-in: wrap any map-style dataset of ``(image, label)`` pairs in one call.

Works with torchvision datasets (``metamem.data.from_pairs(torchvision.datasets.X(...))``)
without metamem importing torchvision; any object with ``__len__`` and ``__getitem__``
returning ``(image, label)`` will do. The images are decoded once into memory (there is no
source file to key a disk cache on).
"""

from __future__ import annotations

from typing import Any, Protocol, Sequence

import numpy as np
import torch
from PIL import Image

from metamem.data.base import DATASETS, DatasetError, ImageDataset
from metamem.data.sources import image_to_array

__all__ = ["from_pairs", "PairDataset"]


class PairDataset(Protocol):
    """A map-style dataset: ``len(ds)`` and ``ds[i] -> (image, label)``."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> Any: ...


def _to_chw(img: Any, i: int, channels: int | None, image_size: int | None) -> np.ndarray:
    """One image (PIL, ndarray HW/HWC, tensor CHW/HW) as uint8 ``[C, H, W]``."""
    if isinstance(img, Image.Image):
        if channels is None:
            channels = 1 if img.mode in {"1", "L", "LA", "I", "I;16", "F", "P"} else 3
        return image_to_array(img, mode="L" if channels == 1 else "RGB", size=image_size)
    if isinstance(img, torch.Tensor):
        arr = img.detach().cpu().numpy()
        if arr.ndim == 3:
            arr = arr.transpose(1, 2, 0)  # CHW -> HWC
    elif isinstance(img, np.ndarray):
        arr = img
    else:
        raise DatasetError(
            f"item {i}: image of type {type(img).__name__} is not a PIL image, ndarray or tensor"
        )
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (3, 4)):
        raise DatasetError(
            f"item {i}: image shape {tuple(img.shape)} is not HW/HWC (ndarray) or CHW (tensor) "
            "with 1, 3 or 4 channels"
        )
    if arr.dtype != np.uint8:
        if np.issubdtype(arr.dtype, np.floating):
            arr = np.clip(np.rint(arr.astype(np.float64) * 255.0), 0, 255)
        arr = arr.astype(np.uint8)
    pil = Image.fromarray(np.ascontiguousarray(arr))
    return _to_chw(pil, i, channels, image_size)


@DATASETS.register("pairs")
def from_pairs(
    dataset: PairDataset | None = None,
    *,
    split: str | None = None,
    class_names: Sequence[str] | None = None,
    image_size: int | None = None,
    channels: int | None = None,
    name: str = "pairs",
) -> ImageDataset:
    """Plug-in: wrap a map-style dataset of (image, label) pairs, e.g. a torchvision one.

    Also reachable as ``load_dataset("pairs", dataset=ds, split=...)``.

    Args:
        dataset: the map-style dataset. Images may be PIL images, uint8 or float ([0, 1])
            ndarrays ``[H, W]``/``[H, W, C]``, or tensors ``[C, H, W]``; labels int-like.
        class_names: name of each label value (default ``dataset.classes`` when present,
            else the label values as strings).
        image_size: resize every image to ``image_size x image_size`` (needed when sizes
            differ).
        channels: 1 or 3 (default: from the first image).
        name: dataset name.
        split: name recorded on the result (the wrapped dataset already is one split).

    Returns:
        The images as uint8 ``[M, C, H, W]``; labels remapped to ``0..num_classes-1`` in
        sorted label order.
    """
    if dataset is None:
        raise DatasetError("pairs: pass dataset=<map-style dataset returning (image, label)>")
    if channels not in (None, 1, 3):
        raise DatasetError(f"pairs: channels must be 1 or 3, got {channels!r}")
    n = len(dataset)
    if n == 0:
        raise DatasetError("pairs: the dataset is empty")
    images: list[np.ndarray] = []
    raw_labels: list[int] = []
    for i in range(n):
        item = dataset[i]
        if not (isinstance(item, (tuple, list)) and len(item) >= 2):
            raise DatasetError(f"pairs: item {i} is {type(item).__name__}, expected (image, label)")
        arr = _to_chw(item[0], i, channels, image_size)
        channels = arr.shape[0]
        if images and arr.shape != images[0].shape:
            raise DatasetError(
                f"pairs: item {i} has shape {arr.shape} but item 0 has {images[0].shape}; set "
                "image_size to resize all images"
            )
        images.append(arr)
        raw_labels.append(int(item[1]))
    values = sorted(set(raw_labels))
    remap = {v: j for j, v in enumerate(values)}
    source_names = list(class_names) if class_names is not None else getattr(dataset, "classes", None)
    if source_names is not None:
        out_of_range = [v for v in values if not 0 <= v < len(source_names)]
        if out_of_range:
            raise DatasetError(
                f"pairs: label {out_of_range[0]} has no entry in class_names "
                f"({len(source_names)} names)"
            )
        names = [str(source_names[v]) for v in values]
    else:
        names = [str(v) for v in values]
    return ImageDataset(
        images=torch.from_numpy(np.stack(images)),
        labels=torch.tensor([remap[v] for v in raw_labels], dtype=torch.int64),
        class_names=names,
        name=name,
        split=split,
        info={"source": type(dataset).__name__, "image_size": image_size, "channels": channels},
    )
