"""mini-ImageNet on tiny synthetic data in every layout (zip, folder, pickle), the bundled split,
the safe pickle, and (slow tier) the real test split from ../shared."""

from __future__ import annotations

import csv
import os
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

import metamem
from metamem.data import DatasetError
from metamem.data.mini_imagenet import read_split_csv, restricted_pickle_load
from metamem.data.paths import bundled_dir

CLASSES = {"train": ["n03", "n01", "n02"], "val": ["n05", "n04"], "test": ["n07", "n06"]}
PER_CLASS = 4


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory, write_png) -> dict:
    """root/images/*.png + root/<split>.zip + root/mini-imagenet-cache-<split>.pkl + split CSVs; 8x8 RGB."""
    base = tmp_path_factory.mktemp("mini")
    root, csvs = base / "root", base / "splits"
    csvs.mkdir()
    rng = np.random.default_rng(0)
    truth = {}
    for split, wnids in CLASSES.items():
        rows, arrays = [], {}
        for w in wnids:
            for i in range(PER_CLASS):
                fname = f"{w}{i:08d}.png"
                arr = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
                write_png(root / "images" / fname, arr)
                rows.append((fname, w))
                arrays[fname] = arr
        with zipfile.ZipFile(root / f"{split}.zip", "w") as z:  # images/<filename>, as shared
            for fname, _ in rows:
                z.write(root / "images" / fname, f"images/{fname}")
        rows.reverse()  # the loader must not depend on CSV row order
        with open(csvs / f"{split}.csv", "w", newline="") as f:
            csv.writer(f).writerows([("filename", "label"), *rows])
        # pickle: images in a shuffled order, class_dict points into it
        order = rng.permutation(len(rows))
        image_data = np.stack([arrays[rows[j][0]] for j in order])
        class_dict: dict[str, list[int]] = {}
        for pos, j in enumerate(order):
            class_dict.setdefault(rows[j][1], []).append(pos)
        for w in class_dict:  # sort each class's rows by filename like the images layout
            class_dict[w].sort(key=lambda p: rows[order[p]][0])
        with open(root / f"mini-imagenet-cache-{split}.pkl", "wb") as f:
            pickle.dump({"image_data": image_data, "class_dict": class_dict}, f, protocol=4)
        truth[split] = {w: np.stack([arrays[f"{w}{i:08d}.png"] for i in range(PER_CLASS)]) for w in wnids}
    return {"root": root, "csvs": csvs, "truth": truth, "base": base}


def load(tiny: dict, split: str, layout: str, **kw: object):
    opts = dict(root=tiny["root"], split_dir=tiny["csvs"], image_size=8,
                cache_dir=tiny["base"] / "cache", layout=layout)
    opts.update(kw)
    return metamem.load_dataset("mini_imagenet", split=split, **opts)


@pytest.mark.parametrize("layout", ["zip", "images", "pickle"])
@pytest.mark.parametrize("split", ["train", "test"])
def test_both_layouts_give_the_written_pixels(tiny: dict, layout: str, split: str) -> None:
    ds = load(tiny, split, layout)
    wnids = sorted(CLASSES[split])
    assert ds.class_names == wnids
    assert (len(ds), ds.image_shape, ds.info["layout"]) == (PER_CLASS * len(wnids), (3, 8, 8), layout)
    for c, w in enumerate(wnids):
        got = ds.images[ds.labels == c].permute(0, 2, 3, 1).numpy()
        np.testing.assert_array_equal(got, tiny["truth"][split][w])


def test_auto_prefers_pickle_and_resizes(tiny: dict) -> None:
    ds = load(tiny, "val", "auto", image_size=4)
    assert ds.info["layout"] == "pickle" and ds.image_shape == (3, 4, 4)
    again = load(tiny, "val", "images", image_size=4)
    assert again.info["cache_hit"] is False
    assert (ds.images.float() - again.images.float()).abs().max() <= 1  # same resize


def test_auto_takes_the_zip_without_a_pickle(tiny: dict, tmp_path: Path) -> None:
    (tmp_path / "test.zip").write_bytes((tiny["root"] / "test.zip").read_bytes())
    ds = load(tiny, "test", "auto", root=tmp_path, cache_dir=tmp_path / "cache")
    assert ds.info["layout"] == "zip" and ds.info["cache_hit"] is False and ds.info["decode_s"] >= 0
    np.testing.assert_array_equal(ds.images[ds.labels == 0].permute(0, 2, 3, 1).numpy(),
                                  tiny["truth"]["test"]["n06"])
    again = load(tiny, "test", "auto", root=tmp_path, cache_dir=tmp_path / "cache")
    assert again.info["cache_hit"] is True and "decode_s" not in again.info
    assert torch.equal(again.images, ds.images)


def test_zip_missing_member_and_missing_zip_are_named(tiny: dict, tmp_path: Path) -> None:
    with zipfile.ZipFile(tmp_path / "val.zip", "w") as z:
        z.write(tiny["root"] / "images" / "n0400000000.png", "images/n0400000000.png")
    with pytest.raises(DatasetError, match=r"image .*val\.zip:images/n0400000001\.png listed in .*val\.csv is missing"):
        load(tiny, "val", "zip", root=tmp_path, cache_dir=tmp_path)
    with pytest.raises(DatasetError, match=r"test\.zip not found; put the split's zip"):
        load(tiny, "test", "zip", root=tmp_path, cache_dir=tmp_path)


SHARED_MINI = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "mini_imagenet"


@pytest.mark.slow
@pytest.mark.skipif(not (SHARED_MINI / "test.zip").is_file(),
                    reason=f"the real mini-ImageNet zips are not at {SHARED_MINI}")
def test_real_test_split_from_the_shared_zip(tmp_path: Path) -> None:
    """The 12,000 real test images: 20 classes x 600, 84x84 RGB, straight from test.zip."""
    ds = metamem.load_dataset("mini_imagenet", split="test", root=SHARED_MINI, cache_dir=tmp_path)
    assert ds.info["layout"] == "zip" and ds.info["cache_hit"] is False
    assert (len(ds), ds.num_classes, ds.image_shape) == (12000, 20, (3, 84, 84))
    assert ds.class_counts().tolist() == [600] * 20
    assert ds.images.dtype == torch.uint8 and 60 < ds.images.float().mean() < 200
    with zipfile.ZipFile(SHARED_MINI / "test.zip") as z:  # first image of the first class
        import io

        from PIL import Image
        first = sorted(f for f, w in read_split_csv(bundled_dir("mini_imagenet", "test.csv"))
                       if w == ds.class_names[0])[0]
        ref = np.asarray(Image.open(io.BytesIO(z.read(f"images/{first}"))).convert("RGB"))
    np.testing.assert_array_equal(ds.images[0].permute(1, 2, 0).numpy(), ref)
    hit = metamem.load_dataset("mini_imagenet", split="test", root=SHARED_MINI, cache_dir=tmp_path)
    assert hit.info["cache_hit"] is True and torch.equal(hit.images[::997], ds.images[::997])


def test_cache_hit_on_second_load(tiny: dict) -> None:
    load(tiny, "val", "images")
    assert load(tiny, "val", "images").info["cache_hit"] is True


def test_bundled_ravi_split() -> None:
    rows = {s: read_split_csv(bundled_dir("mini_imagenet", f"{s}.csv")) for s in ("train", "val", "test")}
    classes = {s: {w for _, w in r} for s, r in rows.items()}
    assert {s: len(c) for s, c in classes.items()} == {"train": 64, "val": 16, "test": 20}
    assert {s: len(r) for s, r in rows.items()} == {"train": 38400, "val": 9600, "test": 12000}
    assert not (classes["train"] & classes["val"] or classes["train"] & classes["test"]
                or classes["val"] & classes["test"])


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch PWNED",))


def test_restricted_unpickler_refuses_code(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    bad = tmp_path / "mini-imagenet-cache-train.pkl"
    bad.write_bytes(pickle.dumps({"image_data": _Evil(), "class_dict": {}}))
    with pytest.raises(DatasetError, match=r"mini-imagenet-cache-train\.pkl: refusing to unpickle "
                       r"(posix|nt|os)\.system \(only numpy arrays and plain containers"):
        restricted_pickle_load(bad)
    assert not (tmp_path / "PWNED").exists()
    bad.write_bytes(pickle.dumps({"image_data": torch.zeros(2)}))
    with pytest.raises(DatasetError, match=r"refusing to unpickle torch\."):
        metamem.load_dataset("mini_imagenet", split="train", root=tmp_path, layout="pickle",
                             cache_dir=tmp_path)


def test_pickle_with_other_classes_is_refused(tiny: dict, tmp_path: Path) -> None:
    (tmp_path / "mini-imagenet-cache-val.pkl").write_bytes(
        (tiny["root"] / "mini-imagenet-cache-test.pkl").read_bytes())
    with pytest.raises(DatasetError, match=r"mini-imagenet-cache-val\.pkl lacks class n04 of the split CSV"):
        load(tiny, "val", "pickle", root=tmp_path, cache_dir=tmp_path)


@pytest.mark.parametrize("edit, message", [
    # one image in two classes: its row moved from the second class into the first as well
    (lambda cd: cd["n04"].append(cd["n05"][0]), r"lists image_data row \d+ in classes n04 and n05"),
    (lambda cd: cd["n05"].__setitem__(1, cd["n05"][0]), r"lists image_data row \d+ twice in class n05"),
])
def test_pickle_whose_classes_share_or_repeat_a_row_is_refused(tiny: dict, tmp_path: Path, edit,
                                                               message: str) -> None:
    with open(tiny["root"] / "mini-imagenet-cache-val.pkl", "rb") as f:
        doc = pickle.load(f)
    edit(doc["class_dict"])
    with open(tmp_path / "mini-imagenet-cache-val.pkl", "wb") as f:
        pickle.dump(doc, f, protocol=4)
    with pytest.raises(DatasetError, match=r"mini-imagenet-cache-val\.pkl: class_dict " + message
                       + r" \(1 row\(s\) listed more than once\); an image must belong to one class once"):
        load(tiny, "val", "pickle", root=tmp_path, cache_dir=tmp_path)


def test_missing_and_corrupt_images_are_named(tiny: dict, tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    with pytest.raises(DatasetError, match=r"image .*images/n0400000000\.png listed in .*val\.csv is missing"):
        load(tiny, "val", "images", root=tmp_path, cache_dir=tmp_path)
    for f in (tiny["root"] / "images").glob("n0[45]*.png"):
        (tmp_path / "images" / f.name).write_bytes(f.read_bytes())
    (tmp_path / "images" / "n0500000002.png").write_bytes(b"garbage")
    with pytest.raises(DatasetError, match=r"cannot decode image .*images/n0500000002\.png"):
        load(tiny, "val", "images", root=tmp_path, cache_dir=tmp_path)


def test_errors_for_split_layout_and_missing_root(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="unknown split 'valid'; valid splits: train, val, test"):
        metamem.load_dataset("mini_imagenet", split="valid", root=tmp_path)
    with pytest.raises(DatasetError, match="unknown layout 'lmdb'; valid: auto, zip, images, pickle"):
        metamem.load_dataset("mini_imagenet", split="val", root=tmp_path, layout="lmdb")
    with pytest.raises(DatasetError, match=r"no data in .*: expected mini-imagenet-cache-test\.pkl, "
                       r"test\.zip or images/<filename>"):
        metamem.load_dataset("mini_imagenet", split="test", root=tmp_path)
    bad_csv = tmp_path / "train.csv"
    bad_csv.write_text("file,wnid\na.png,n01\n")
    with pytest.raises(DatasetError, match=r"train\.csv: expected a CSV with header 'filename,label'"):
        metamem.load_dataset("mini_imagenet", split="train", root=tmp_path, split_dir=tmp_path)
