"""Small archives in the real formats of the benchmark releases, written by the tests.

* :func:`cifar100_archive`: ``cifar-100-python.tar.gz`` with the real 100 fine and 20 coarse
  class names and their real mapping, ``per_class`` images per class (the last one in the
  ``test`` pickle, the others in ``train``); pixel ``(0, 0, 0)`` of an image is its fine
  class id, ``(1, 0, 0)`` its index within the class;
* :func:`cub_archive`: ``CUB_200_2011.tgz`` with the real 200 class folders, small JPEGs
  (one grayscale), plus the archive's other top-level files;
* :func:`tiered_release`: ``<split>_labels.pkl`` with ``<split>_images_png.pkl`` or
  ``<split>_images.npz`` (BGR, as the release's OpenCV decoding writes it), and the split CSV.
"""

from __future__ import annotations

import io
import pickle
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image

SUPERCLASSES = {
    "aquatic_mammals": "beaver dolphin otter seal whale",
    "fish": "aquarium_fish flatfish ray shark trout",
    "flowers": "orchid poppy rose sunflower tulip",
    "food_containers": "bottle bowl can cup plate",
    "fruit_and_vegetables": "apple mushroom orange pear sweet_pepper",
    "household_electrical_devices": "clock keyboard lamp telephone television",
    "household_furniture": "bed chair couch table wardrobe",
    "insects": "bee beetle butterfly caterpillar cockroach",
    "large_carnivores": "bear leopard lion tiger wolf",
    "large_man-made_outdoor_things": "bridge castle house road skyscraper",
    "large_natural_outdoor_scenes": "cloud forest mountain plain sea",
    "large_omnivores_and_herbivores": "camel cattle chimpanzee elephant kangaroo",
    "medium_mammals": "fox porcupine possum raccoon skunk",
    "non-insect_invertebrates": "crab lobster snail spider worm",
    "people": "baby boy girl man woman",
    "reptiles": "crocodile dinosaur lizard snake turtle",
    "small_mammals": "hamster mouse rabbit shrew squirrel",
    "trees": "maple_tree oak_tree palm_tree pine_tree willow_tree",
    "vehicles_1": "bicycle bus motorcycle pickup_truck train",
    "vehicles_2": "lawn_mower rocket streetcar tank tractor",
}
COARSE = sorted(SUPERCLASSES)
FINE = sorted(c for v in SUPERCLASSES.values() for c in v.split())
COARSE_OF = {c: COARSE.index(s) for s, v in SUPERCLASSES.items() for c in v.split()}


def _add(tf: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tf.addfile(info, io.BytesIO(data))


def cifar_image(fine: int, k: int) -> np.ndarray:
    """The synthesized ``[3, 32, 32]`` image ``k`` of class ``fine``."""
    rng = np.random.default_rng(fine * 1000 + k)
    x = rng.integers(0, 256, (3, 32, 32), dtype=np.uint8)
    x[0, 0, 0], x[1, 0, 0] = fine, k
    return x


def cifar100_archive(path: Path, per_class: int = 3) -> Path:
    """Write a CIFAR-100 python archive (see the module docstring)."""
    parts = {}
    for leaf, ks in (("train", range(per_class - 1)), ("test", range(per_class - 1, per_class))):
        rows = [(f, k) for k in ks for f in range(100)]  # interleaved classes, as the real files
        data = np.stack([cifar_image(f, k).reshape(-1) for f, k in rows])
        d = {"batch_label": f"{leaf} batch", "filenames": [f"img_{f}_{k}.png" for f, k in rows], "data": data,
             "fine_labels": [f for f, _ in rows], "coarse_labels": [COARSE_OF[FINE[f]] for f, _ in rows]}
        if leaf == "train":  # the Python 2 files unpickle with bytes keys under encoding="bytes"
            d = {k.encode(): v for k, v in d.items()}
        parts[leaf] = pickle.dumps(d, protocol=2)
    parts["meta"] = pickle.dumps({"fine_label_names": FINE, "coarse_label_names": COARSE}, protocol=2)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tf:
        for leaf in ("meta", "test", "train"):
            _add(tf, f"cifar-100-python/{leaf}", parts[leaf])
    return path


def cub_classes() -> list[str]:
    from metamem.data.paths import bundled_dir

    return sorted(sum((bundled_dir("cub", f"{s}.txt").read_text().split() for s in ("train", "val", "test")), []))


def cub_image(cls: int, k: int) -> Image.Image:
    """The synthesized JPEG image ``k`` of class ``cls`` (image 0 of class 0 is grayscale)."""
    rng = np.random.default_rng(cls * 100 + k)
    a = rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)
    img = Image.fromarray(a)
    return img.convert("L") if (cls, k) == (0, 0) else img


def cub_archive(path: Path, per_class: int = 2) -> Path:
    """Write ``CUB_200_2011.tgz`` with the 200 real class folders (see the module docstring)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tf:
        _add(tf, "attributes.txt", b"1 has_bill_shape::curved\n")
        classes = cub_classes()
        _add(tf, "CUB_200_2011/classes.txt", "".join(f"{i + 1} {c}\n" for i, c in enumerate(classes)).encode())
        for i, c in enumerate(classes):
            for k in reversed(range(per_class)):  # not in name order: the loader sorts
                buf = io.BytesIO()
                cub_image(i, k).save(buf, format="JPEG", quality=95)
                _add(tf, f"CUB_200_2011/images/{c}/{c.split('.', 1)[1]}_{k:04d}_{i}.jpg", buf.getvalue())
    return path


def tiered_image(i: int, size: int) -> np.ndarray:
    """The synthesized RGB ``[size, size, 3]`` image number ``i`` of a split."""
    rng = np.random.default_rng(7000 + i)
    return rng.integers(0, 256, (size, size, 3), dtype=np.uint8)


def tiered_release(folder: Path, split: str, *, classes: int = 5, superclasses: int = 2, per_class: int = 4,
                   size: int = 12, layout: str = "pickle") -> tuple[Path, np.ndarray]:
    """Write a tiered-ImageNet split in the release's format, and its split CSV in ``folder/split``.

    Returns:
        ``(split_dir, labels)``: the CSV folder and ``label_specific`` (images are stored in
        an interleaved class order, as the release is not sorted by class).
    """
    folder.mkdir(parents=True, exist_ok=True)
    m = classes * per_class
    spec = np.arange(m, dtype=np.int32) % classes
    sup_of = np.arange(classes) % superclasses
    labels = {b"label_specific": spec, b"label_general": sup_of[spec].astype(np.int32),
              b"label_specific_str": [f"class {c}" for c in range(classes)],
              b"label_general_str": [f"super {s}" for s in range(superclasses)]}
    (folder / f"{split}_labels.pkl").write_bytes(pickle.dumps(labels, protocol=2))
    images = [tiered_image(i, size) for i in range(m)]
    if layout == "pickle":
        pngs = []
        for im in images:
            buf = io.BytesIO()
            Image.fromarray(im).save(buf, format="PNG")
            pngs.append(np.frombuffer(buf.getvalue(), dtype=np.uint8))
        (folder / f"{split}_images_png.pkl").write_bytes(pickle.dumps(pngs, protocol=2))
    else:
        np.savez(folder / f"{split}_images.npz", images=np.stack(images)[..., ::-1])  # BGR
    split_dir = folder / "split"
    split_dir.mkdir(exist_ok=True)
    (split_dir / f"{split}.csv").write_text("".join(f"n{c:08d},n9{sup_of[c]:07d}\n" for c in range(classes)))
    return split_dir, spec
