"""Plug-in: wrap any map-style dataset of ``(image, label)`` pairs in one call.

Works with torchvision datasets (``metamem.data.from_pairs(torchvision.datasets.X(...))``)
without metamem importing torchvision; any object with ``__len__`` and ``__getitem__``
returning ``(image, label)`` will do. The images are decoded once into memory (there is no
source file to key a disk cache on).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
import torch
from PIL import Image

from metamem.data.base import DATASETS, DatasetError, ImageDataset
from metamem.data.sources import GRAY_MODES, image_to_array, is_colour, to_8bit

__all__ = ["from_pairs", "PairDataset"]


class PairDataset(Protocol):
    """A map-style dataset: ``len(ds)`` and ``ds[i] -> (image, label)``."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> Any: ...


Label = int | str


def _label(raw: Any, i: int) -> Label:
    """One label as an int (class id) or a str (class name), refusing anything lossy.

    Accepted: Python/numpy ints, whole-number floats (``3.0``), one-element integer arrays
    or tensors, and strings. Refused with the item index: None, bools, fractional or
    non-finite floats, one-hot or other multi-element arrays.
    """
    if raw is None:
        raise DatasetError(f"pairs: item {i}: label is None; every item needs a class id or name")
    if isinstance(raw, (torch.Tensor, np.ndarray)):
        arr = raw.detach().cpu() if isinstance(raw, torch.Tensor) else raw
        if arr.ndim > 0 and np.prod(arr.shape) != 1:
            hint = " (one-hot? pass the class index, e.g. label.argmax())" if arr.ndim == 1 else ""
            raise DatasetError(
                f"pairs: item {i}: label is an array of shape {tuple(arr.shape)}, not one class "
                f"id{hint}"
            )
        raw = arr.reshape(()).item() if isinstance(arr, torch.Tensor) else arr.reshape(()).item()
    elif isinstance(raw, np.generic):
        raw = raw.item()
    if isinstance(raw, bool):
        raise DatasetError(f"pairs: item {i}: label {raw!r} is a bool; use int class ids (0, 1) or names")
    if isinstance(raw, str):
        return raw
    if isinstance(raw, numbers.Integral):
        return int(raw)
    if isinstance(raw, numbers.Real):
        f = float(raw)
        if math.isfinite(f) and f.is_integer():
            return int(f)
        raise DatasetError(
            f"pairs: item {i}: label {raw!r} is not a whole number; labels are class ids (ints) "
            "or class names (strings), never rounded or truncated"
        )
    raise DatasetError(
        f"pairs: item {i}: label of type {type(raw).__name__} ({raw!r:.60}) is not a class id "
        "(int) or class name (str)"
    )


def _as_uint8(arr: np.ndarray, i: int, value_range: tuple[float, float] | None) -> np.ndarray:
    """Pixel values as uint8, refusing any conversion that would lose or invent data.

    uint8 is kept; bool becomes 0/255; other integers must lie in 0..255; floats must be
    finite and lie in [0, 1] (scaled by 255). ``value_range=(lo, hi)`` instead maps
    ``lo..hi`` linearly to 0..255 (values outside it are an error).
    """
    if arr.dtype == np.uint8 and value_range is None:
        return arr
    if arr.dtype == np.bool_:
        return arr.astype(np.uint8) * np.uint8(255)
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise DatasetError(
            f"pairs: item {i}: image values of dtype {arr.dtype} are not numbers; give uint8, "
            "integer or float pixels"
        )
    x = arr.astype(np.float64)
    if not np.isfinite(x).all():
        bad = "NaN" if np.isnan(x).any() else "inf"
        raise DatasetError(f"pairs: item {i}: image holds {bad} values; clean the image first")
    lo_v, hi_v = (float(x.min()), float(x.max())) if x.size else (0.0, 0.0)
    span = f"[{lo_v:.4g}, {hi_v:.4g}]"
    if value_range is not None:
        lo, hi = value_range
        tol = 1e-6 * (hi - lo)
        if lo_v < lo - tol or hi_v > hi + tol:
            raise DatasetError(
                f"pairs: item {i}: image values span {span}, outside value_range=({lo:g}, {hi:g}); "
                "widen value_range to cover the data"
            )
        return np.rint(np.clip((x - lo) / (hi - lo), 0.0, 1.0) * 255.0).astype(np.uint8)
    if np.issubdtype(arr.dtype, np.integer):
        if lo_v < 0 or hi_v > 255:
            raise DatasetError(
                f"pairs: item {i}: integer image values span {span}, outside 0..255 (they would "
                f"wrap); pass value_range=(lo, hi) to rescale, e.g. value_range=({min(int(lo_v), 0)}, {max(int(hi_v), 255)})"
            )
        return arr.astype(np.uint8)
    if lo_v < -1e-6 or hi_v > 1 + 1e-6:
        if lo_v < 0:
            why = "negative values: normalized (mean/std) images? pass value_range=(lo, hi) covering them"
        else:
            why = "0-255 floats? pass value_range=(0, 255)"
        raise DatasetError(
            f"pairs: item {i}: float image values span {span}, outside [0, 1] ({why}); "
            "nothing is clipped or saturated silently"
        )
    return np.rint(np.clip(x, 0.0, 1.0) * 255.0).astype(np.uint8)


def _to_pil(img: Any, i: int, value_range: tuple[float, float] | None) -> Image.Image:
    """One image (PIL, ndarray HW/HWC, tensor CHW/HW) as a PIL image of uint8 pixels."""
    if isinstance(img, Image.Image):
        if value_range is not None:
            return _to_pil(np.asarray(img), i, value_range)
        try:
            return to_8bit(img)  # 16-bit scaled to 8; I/F images out of range refused
        except ValueError as e:
            raise DatasetError(f"pairs: item {i}: {e}; or pass value_range=(lo, hi)") from None
    if isinstance(img, torch.Tensor):
        t = img.detach().cpu()
        if t.is_complex():
            raise DatasetError(f"pairs: item {i}: image tensor is complex ({t.dtype})")
        if t.dtype in (torch.bfloat16, torch.float16):
            t = t.float()
        arr = t.numpy()
        if arr.ndim == 3:
            arr = arr.transpose(1, 2, 0)  # CHW -> HWC
    elif isinstance(img, np.ndarray):
        arr = img
    else:
        raise DatasetError(
            f"pairs: item {i}: image of type {type(img).__name__} is not a PIL image, ndarray or tensor"
        )
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (3, 4)) or 0 in arr.shape:
        raise DatasetError(
            f"pairs: item {i}: image shape {tuple(img.shape)} is not HW/HWC (ndarray) or CHW "
            "(tensor) with 1, 3 or 4 channels"
        )
    return Image.fromarray(np.ascontiguousarray(_as_uint8(arr, i, value_range)))


def _channels_of(img: Image.Image) -> int:
    return 3 if is_colour(img) or img.mode not in GRAY_MODES | {"P", "PA"} else 1


@DATASETS.register("pairs")
def from_pairs(
    dataset: PairDataset | None = None,
    *,
    split: str | None = None,
    class_names: Sequence[str] | None = None,
    image_size: int | None = None,
    channels: int | None = None,
    value_range: tuple[float, float] | None = None,
    invert: bool = False,
    name: str = "pairs",
) -> ImageDataset:
    """Plug-in: wrap a map-style dataset of (image, label) pairs, e.g. a torchvision one.

    Also reachable as ``load_dataset("pairs", dataset=ds, split=...)``. Nothing is converted
    silently: every value that cannot be stored exactly as uint8 pixels or a class id is an
    error naming the item index and what to pass instead.

    Args:
        dataset: the map-style dataset. Images may be PIL images, ndarrays ``[H, W]`` /
            ``[H, W, C]`` or tensors ``[C, H, W]`` / ``[H, W]`` (C = 1, 3 or 4; alpha is
            dropped). Pixel values: uint8 as is; bool as 0/255; other integers in 0..255;
            floats in [0, 1] (times 255, rounded). Labels: ints (class ids; whole-number
            floats such as ``3.0`` and one-element arrays count) or strings (class names).
        class_names: name of each integer label value (default ``dataset.classes`` when
            present, else the label values as strings). Not used with string labels.
        image_size: resize every image to ``image_size x image_size`` (needed when sizes
            differ).
        channels: 1 or 3 (default: from the first image; a palette image counts as colour
            when its palette is). When grayscale is inferred, a later colour image is an
            error (pass ``channels=3``, or ``channels=1`` to convert everything to gray).
        value_range: ``(lo, hi)`` of the pixel values, mapped linearly to 0..255: for
            normalized float images (``(-2.2, 2.7)`` after ImageNet mean/std), 0-255 floats
            (``(0, 255)``) or 16-bit images (``(0, 65535)``). Values outside it are an error.
        invert: store ``255 - pixel`` (before resizing), as the ``folder`` loader does: dark
            drawings on a light background then look like Omniglot as metamem loads it
            (white strokes on black).
        name: dataset name.
        split: name recorded on the result (the wrapped dataset already is one split).

    Returns:
        The images as uint8 ``[M, C, H, W]``; labels remapped to ``0..num_classes-1`` in
        sorted label order (class names sorted for string labels).

    Raises:
        DatasetError: one line naming the item index and the fix (fractional, None, bool,
            one-hot or mixed int/str labels; NaN, out-of-range or wrapping pixel values;
            shapes that differ without ``image_size``; a colour image where grayscale was
            inferred).
    """
    if dataset is None:
        raise DatasetError("pairs: pass dataset=<map-style dataset returning (image, label)>")
    if not isinstance(invert, bool):
        raise DatasetError(f"pairs: invert must be True or False, got {invert!r}")
    if channels not in (None, 1, 3) or isinstance(channels, bool):
        raise DatasetError(f"pairs: channels must be 1 or 3, got {channels!r}")
    if image_size is not None and (isinstance(image_size, bool) or not isinstance(image_size, int)
                                   or image_size < 1):
        raise DatasetError(f"pairs: image_size must be a positive int or None, got {image_size!r}")
    if value_range is not None:
        ok = (isinstance(value_range, (tuple, list)) and len(value_range) == 2
              and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                      for v in value_range) and value_range[0] < value_range[1])
        if not ok:
            raise DatasetError(f"pairs: value_range must be (lo, hi) with finite lo < hi, got {value_range!r}")
        value_range = (float(value_range[0]), float(value_range[1]))
    try:
        n = len(dataset)
    except TypeError:
        raise DatasetError(
            f"pairs: {type(dataset).__name__} has no len(); pass a map-style dataset"
        ) from None
    if n == 0:
        raise DatasetError("pairs: the dataset is empty")
    inferred = channels is None
    images: list[np.ndarray] = []
    raw_labels: list[Label] = []
    for i in range(n):
        try:
            item = dataset[i]
        except Exception as e:  # the user's own __getitem__: say which item, keep its traceback
            first = " ".join(str(e).split())[:200]
            raise DatasetError(
                f"pairs: {type(dataset).__name__}[{i}] raised {type(e).__name__}"
                + (f": {first}" if first else "") + f" (item {i} of {n}); fix the dataset or drop that item"
            ) from e
        if not (isinstance(item, (tuple, list)) and len(item) >= 2):
            raise DatasetError(f"pairs: item {i} is {type(item).__name__}, expected (image, label)")
        label = _label(item[1], i)
        if raw_labels and isinstance(label, str) != isinstance(raw_labels[0], str):
            raise DatasetError(
                f"pairs: item {i}: label {label!r} is a {type(label).__name__} but item 0's "
                f"({raw_labels[0]!r}) is a {type(raw_labels[0]).__name__}; use one kind"
            )
        pil = _to_pil(item[0], i, value_range)
        if channels is None:
            channels = _channels_of(pil)
        elif inferred and channels == 1 and is_colour(pil):  # gray content in RGB is fine
            raise DatasetError(
                f"pairs: item {i} is a colour image but item 0 is grayscale (channels was "
                "inferred as 1); pass channels=3 to keep colour or channels=1 to convert all"
            )
        arr = image_to_array(pil, mode="L" if channels == 1 else "RGB", size=image_size, invert=invert)
        if images and arr.shape != images[0].shape:
            raise DatasetError(
                f"pairs: item {i} has shape {arr.shape} but item 0 has {images[0].shape}; set "
                "image_size to resize all images"
            )
        images.append(arr)
        raw_labels.append(label)
    values = sorted(set(raw_labels))  # type: ignore[type-var]  (one kind, checked above)
    remap = {v: j for j, v in enumerate(values)}
    source_names = list(class_names) if class_names is not None else getattr(dataset, "classes", None)
    if isinstance(values[0], str):
        if class_names is not None:
            raise DatasetError("pairs: class_names applies to integer labels; the labels are names already")
        names = list(values)
    elif source_names is not None:
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
        info={"source": type(dataset).__name__, "image_size": image_size, "channels": channels,
              "value_range": list(value_range) if value_range else None,
              "preprocess": {"mode": "L" if channels == 1 else "RGB", "invert": invert, "resample": "lanczos"}},
    )
