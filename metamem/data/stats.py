"""Pixel statistics of a dataset split, and the warnings when two splits look different.

A run trained on white strokes on black (Omniglot as loaded) scores chance on black strokes
on white, silently. :func:`pixel_stats` summarises a split in four numbers and
:func:`compare_pixel_stats` names what differs, so evaluating a run on new data can say so.

* ``mean``: mean pixel value in [0, 1];
* ``background``: median over images of the mean of each image's one-pixel border;
* ``polarity``: ``"dark"`` or ``"light"`` background when ``background`` is below 0.2 or
  above 0.8, else ``"mixed"`` (natural images);
* ``ink``: mean fraction of pixels that differ from their image's border mean by more than
  0.3 (the strokes, for line drawings).

Computed on at most ``max_images`` images taken at a fixed stride (no random draw).
"""

from __future__ import annotations

from typing import Any

import torch

from metamem.data.base import ImageDataset

__all__ = ["pixel_stats", "compare_pixel_stats"]

_CLEAR_DARK, _CLEAR_LIGHT = 0.2, 0.8
_INK_DELTA = 0.3
#: mean ink ratio (either way) above which the strokes count as much thicker or thinner:
#: the demo shapes sit at 1.1x Omniglot's ink, digits drawn with a thick pen at 2.7x
_INK_RATIO = 2.0


def pixel_stats(ds: ImageDataset, max_images: int = 1000) -> dict[str, Any]:
    """Pixel statistics of ``ds`` (see the module docstring).

    Returns:
        ``{"mean", "background", "ink", "polarity", "images"}``.
    """
    m = len(ds)
    if m == 0:
        raise ValueError(f"dataset {ds.name!r} split {ds.split!r} has no images")
    idx = torch.linspace(0, m - 1, steps=min(m, max_images)).round().long().unique()
    x = ds.images[idx].to(torch.float32).div_(255.0).mean(1)  # [n, H, W], channels averaged
    border = torch.cat([x[:, 0, :], x[:, -1, :], x[:, 1:-1, 0], x[:, 1:-1, -1]], dim=1).mean(1)  # [n]
    ink = ((x - border[:, None, None]).abs() > _INK_DELTA).to(torch.float32).mean((1, 2))  # [n]
    bg = float(border.median())
    polarity = "dark" if bg < _CLEAR_DARK else "light" if bg > _CLEAR_LIGHT else "mixed"
    return {"mean": float(x.mean()), "background": bg, "ink": float(ink.mean()),
            "polarity": polarity, "images": int(idx.numel())}


def compare_pixel_stats(
    trained: dict[str, Any], new: dict[str, Any], *, what: str = "the new data",
    fix: str = "invert=True",
) -> list[str]:
    """One line per way ``new`` looks unlike the data a run was ``trained`` on.

    Args:
        trained, new: from :func:`pixel_stats`.
        what: names the new data in the messages.
        fix: how to flip the new data's polarity, named in the polarity message.

    Returns:
        Messages (empty when nothing is far off): polarity (dark vs light background),
        mean ink off by more than 2x (when both have a clear background), mean pixel value
        off by more than 0.25.
    """
    out = []
    tp, np_ = trained["polarity"], new["polarity"]
    if {tp, np_} == {"dark", "light"}:
        out.append(
            f"polarity: the run was trained on a {tp} background (border mean {trained['background']:.2f}) "
            f"but {what} has a {np_} one ({new['background']:.2f}); accuracy usually drops, often to "
            f"chance. Flip it with {fix}"
        )
    elif tp in ("dark", "light") and np_ == tp:
        a, b = trained["ink"], new["ink"]
        if min(a, b) > 0 and max(a, b) / min(a, b) > _INK_RATIO:
            out.append(
                f"mean ink: {100 * b:.1f}% of the pixels of {what} are strokes against "
                f"{100 * a:.1f}% in the training data ({b / a:.1f}x); strokes much thicker or thinner than in "
                "training lower the accuracy (resize or re-draw the images)"
            )
    if not out and abs(trained["mean"] - new["mean"]) > 0.25:
        out.append(
            f"mean pixel value: {new['mean']:.2f} in {what} against {trained['mean']:.2f} in the "
            "training data; check the images' brightness and polarity"
        )
    return out
