"""A small demo folder of hand-drawn-looking shapes, for trying "your own data" end to end.

:func:`write_shapes_folder` draws ``per_class`` jittered outlines of each shape class
(circle, square, triangle, cross, diamond, ring, ...) as PNG files laid out the way the
``folder`` loader reads them (``ROOT/<class>/<i>.png``), dark strokes on a light background
like a scanned drawing (Omniglot's own files look like that too; metamem loads Omniglot
inverted, so ``metamem eval RUN data=folder:ROOT`` inverts this folder to match). Every
random choice comes from a :class:`numpy.random.Generator` seeded with ``seed``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from metamem.files import atomic_write

__all__ = ["SHAPES", "write_shapes_folder"]

Pts = list[tuple[float, float]]


def _polygon(n: int, phase: float) -> Callable[[float, float, float, float], Pts]:
    def pts(cx: float, cy: float, r: float, rot: float) -> Pts:
        return [(cx + r * math.cos(phase + rot + 2 * math.pi * i / n),
                 cy + r * math.sin(phase + rot + 2 * math.pi * i / n)) for i in range(n)]
    return pts


def _star(cx: float, cy: float, r: float, rot: float) -> Pts:
    return [(cx + (r if i % 2 == 0 else 0.45 * r) * math.cos(rot - math.pi / 2 + math.pi * i / 5),
             cy + (r if i % 2 == 0 else 0.45 * r) * math.sin(rot - math.pi / 2 + math.pi * i / 5))
            for i in range(10)]


def _draw(kind: str, d: ImageDraw.ImageDraw, cx: float, cy: float, r: float, rot: float, w: int) -> None:
    if kind in ("circle", "ring"):
        d.ellipse([cx - r, cy - r, cx + r, cy + r], outline=0, width=w)
        if kind == "ring":
            d.ellipse([cx - r / 2, cy - r / 2, cx + r / 2, cy + r / 2], outline=0, width=w)
        return
    if kind in ("cross", "plus"):
        base = math.pi / 4 if kind == "cross" else 0.0
        for a in (base + rot, base + rot + math.pi / 2):
            dx, dy = r * math.cos(a), r * math.sin(a)
            d.line([(cx - dx, cy - dy), (cx + dx, cy + dy)], fill=0, width=w)
        return
    pts = {"triangle": _polygon(3, -math.pi / 2), "square": _polygon(4, math.pi / 4),
           "diamond": _polygon(4, 0.0), "hexagon": _polygon(6, 0.0), "star": _star}[kind](cx, cy, r, rot)
    d.line(pts + pts[:1], fill=0, width=w, joint="curve")


#: the shape classes, in folder order
SHAPES = ("circle", "cross", "diamond", "hexagon", "plus", "ring", "square", "star", "triangle")


def write_shapes_folder(
    root: str | os.PathLike[str], *, classes: int = len(SHAPES), per_class: int = 20,
    size: int = 64, seed: int = 0,
) -> Path:
    """Write ``classes`` shape classes x ``per_class`` PNG images (``size`` x ``size``,
    grayscale, dark on light) under ``root``; returns ``root``.

    Each image jitters the centre (±12% of the size), radius (28-40%), rotation (±15°) and
    stroke width (2-4 px at 64 px).

    Raises:
        ValueError: for ``classes`` outside 1..len(SHAPES) or ``per_class`` < 1.
    """
    if not 1 <= classes <= len(SHAPES) or per_class < 1:
        raise ValueError(f"classes must be in 1..{len(SHAPES)} and per_class >= 1, got {classes}, {per_class}")
    root = Path(root)
    rng = np.random.default_rng(seed)
    s = size / 64
    for kind in SHAPES[:classes]:
        for i in range(per_class):
            img = Image.new("L", (size, size), 255)
            cx, cy = size / 2 + rng.uniform(-0.12, 0.12, 2) * size
            r = rng.uniform(0.28, 0.40) * size
            rot = math.radians(rng.uniform(-15, 15))
            _draw(kind, ImageDraw.Draw(img), float(cx), float(cy), float(r), rot,
                  max(1, round(rng.integers(2, 5) * s)))
            atomic_write(root / kind / f"{i:03d}.png", lambda f, im=img: im.save(f, format="PNG"))
    return root
