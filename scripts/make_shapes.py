"""Write a demo folder of shape drawings (dark strokes on white) to try `data=folder:PATH`.

    python scripts/make_shapes.py runs/shapes             # 9 shapes x 20 images, 64x64
    metamem eval runs/mann_quick data=folder:runs/shapes  # the run's preprocessing applied
"""

from __future__ import annotations

import argparse

from metamem.data.shapes import SHAPES, write_shapes_folder


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("root", help="folder to write (one sub-folder per shape)")
    ap.add_argument("--classes", type=int, default=len(SHAPES), help=f"shape classes (1..{len(SHAPES)})")
    ap.add_argument("--per-class", type=int, default=20, help="images per class")
    ap.add_argument("--size", type=int, default=64, help="image side in pixels")
    ap.add_argument("--seed", type=int, default=0, help="seed of the jitter")
    a = ap.parse_args()
    root = write_shapes_folder(a.root, classes=a.classes, per_class=a.per_class, size=a.size, seed=a.seed)
    print(f"wrote {a.classes} classes x {a.per_class} images to {root}")


if __name__ == "__main__":
    main()
