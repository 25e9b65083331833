"""Omniglot on the bundled minimal archives: counts, preprocessing, splits, cache, errors."""

from __future__ import annotations

import re
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import metamem
from metamem.data import DatasetError, ImageDataset
from metamem.data.omniglot import read_split_file
from metamem.data.paths import bundled_dir

SPLITS = bundled_dir("omniglot", "splits")
MINIMAL = {s: read_split_file(SPLITS / "minimal" / f"{s}.txt") for s in ("train", "val", "test")}


def load(split: str, cache: Path, **kw: object) -> ImageDataset:
    return metamem.load_dataset("omniglot", split=split, image_size=20, cache_dir=cache, **kw)


def test_background_small1_counts_and_layout(small1_20: ImageDataset) -> None:
    ds = small1_20
    assert (len(ds), ds.num_classes, ds.image_shape) == (2720, 136, (1, 20, 20))
    assert ds.images.dtype == torch.uint8
    assert ds.group_names == ["Balinese", "Early_Aramaic", "Greek", "Korean", "Latin"]
    assert ds.class_names == sorted(ds.class_names)
    assert ds.class_names[0] == "Balinese/character01"
    assert all(re.fullmatch(r"[A-Za-z_()]+/character\d\d", n) for n in ds.class_names)
    assert torch.equal(ds.class_counts(), torch.full((136,), 20))
    # group of each class = its alphabet
    for c in (0, 50, 135):
        assert ds.group_names[int(ds.groups[c])] == ds.class_names[c].split("/")[0]
    # per-alphabet character counts of the minimal set
    counts = torch.bincount(ds.groups).tolist()
    assert counts == [24, 22, 24, 40, 26]


def test_images_are_inverted_strokes_bright(small1_20: ImageDataset) -> None:
    x = small1_20.images.float()
    border = torch.cat([x[:, 0, 0, :], x[:, 0, -1, :], x[:, 0, :, 0], x[:, 0, :, -1]], dim=1)
    assert border.mean() < 3  # background is 0
    assert x.mean() < 60  # mostly background
    assert (x.amax(dim=(1, 2, 3)) > 200).float().mean() > 0.95  # bright strokes in nearly all


def test_second_load_memory_maps_the_cache(small1_20: ImageDataset, omni_cache: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. torch's non-writable-array warning
        again = load("background_small1", omni_cache)
    assert again.info["cache_hit"] is True
    assert again.info["cache_key"] == small1_20.info["cache_key"]
    assert torch.equal(again.images, small1_20.images)
    assert torch.equal(again.labels, small1_20.labels)
    assert again.class_names == small1_20.class_names
    assert Path(again.info["cache_path"], "images.npy").is_file()
    again.images[0].zero_()  # copy-on-write: writable, file untouched
    third = load("background_small1", omni_cache)
    assert torch.equal(third.images[0], small1_20.images[0])


def test_changed_setting_misses_the_cache(small1_20: ImageDataset, omni_cache: Path) -> None:
    other = load("background_small1", omni_cache, resample="box")
    assert other.info["cache_hit"] is False
    assert other.info["cache_key"] != small1_20.info["cache_key"]
    assert not torch.equal(other.images, small1_20.images)
    assert load("background_small1", omni_cache, resample="box").info["cache_hit"] is True


def test_changed_source_misses_the_cache(tmp_path: Path, write_png, omni_cache: Path) -> None:
    # an extracted official layout: root/images_background/<Alphabet>/<character>/<img>.png
    img = np.zeros((9, 9), np.uint8) + 255
    img[2:7, 4] = 0
    base = tmp_path / "root" / "images_background" / "Alpha" / "character01"
    for i in range(2):
        write_png(base / f"{i}.png", img)
    first = metamem.load_dataset("omniglot", split="background", root=tmp_path / "root",
                                 image_size=9, cache_dir=tmp_path / "c")
    assert first.images[0, 0, 3, 4] == 255 and first.images[0, 0, 0, 0] == 0
    img[2:7, 4] = 255  # blank the stroke in one file
    write_png(base / "1.png", img)
    second = metamem.load_dataset("omniglot", split="background", root=tmp_path / "root",
                                  image_size=9, cache_dir=tmp_path / "c")
    assert second.info["cache_hit"] is False
    assert int(second.images[1].max()) == 0 and int(second.images[0].max()) == 255


def test_rotations_add_new_classes_in_the_same_group(small1_20: ImageDataset, omni_cache: Path) -> None:
    rot = load("background_small1", omni_cache, rotations=True)
    c = small1_20.num_classes
    assert (rot.num_classes, len(rot)) == (4 * c, 4 * len(small1_20))
    assert rot.class_names[:c] == small1_20.class_names
    assert rot.class_names[c] == "Balinese/character01/rot90"
    assert rot.class_names[3 * c + 5] == small1_20.class_names[5] + "/rot270"
    assert torch.equal(rot.groups, small1_20.groups.repeat(4))
    for k in (1, 2, 3):
        idx = (rot.labels == k * c + 7).nonzero().squeeze(1)
        ref = (small1_20.labels == 7).nonzero().squeeze(1)
        assert torch.equal(rot.images[idx], torch.rot90(small1_20.images[ref], k, dims=(2, 3)))


def test_minimal_meta_splits_partition_the_eight_alphabets(omni_cache: Path) -> None:
    ds = {s: load(f"minimal/{s}", omni_cache) for s in ("train", "val", "test")}
    assert {s: d.num_classes for s, d in ds.items()} == {"train": 156, "val": 22, "test": 64}
    assert {s: d.num_classes for s, d in ds.items()} == {s: m.expected for s, m in MINIMAL.items()}
    names = [set(d.class_names) for d in ds.values()]
    assert not (names[0] & names[1] or names[0] & names[2] or names[1] & names[2])
    assert len(names[0] | names[1] | names[2]) == 242
    for s, d in ds.items():
        alphabets = {e for _, e in MINIMAL[s].entries}
        assert set(d.group_names or []) == alphabets
        assert {n.split("/")[0] for n in d.class_names} == alphabets
        assert torch.equal(d.class_counts(), torch.full((d.num_classes,), 20))
        assert d.class_names == sorted(d.class_names)
    assert ds["test"].group_names == ["Japanese_(katakana)", "Tagalog"]


def test_episodes_only_use_their_split(omni_cache: Path) -> None:
    train = load("minimal/train", omni_cache)
    test = load("minimal/test", omni_cache)
    train_images = {bytes(im.numpy().tobytes()) for im in train.images}
    test_alphabets = {e for _, e in MINIMAL["test"].entries}
    sampler = metamem.EpisodeSampler(test, n_way=5, k_shot=1, n_query=2, batch_size=50, seed=3)
    seen: set[int] = set()
    for _ in range(8):  # 400 episodes
        b = sampler.sample()
        seen.update(b.classes.flatten().tolist())
        for c in b.classes.flatten().tolist():
            assert test.class_names[c].split("/")[0] in test_alphabets
        pixels = torch.cat([b.support_x, b.query_x], 1).flatten(0, 1).mul(255).round().to(torch.uint8)
        assert not any(bytes(p.numpy().tobytes()) in train_images for p in pixels)
        # every drawn image belongs to the class the episode says
        assert torch.equal(test.labels[b.support_index], b.classes)  # k_shot=1
    assert len(seen) > 50  # episodes cover most of the 64 test characters


def test_unknown_split_lists_valid_ones(omni_cache: Path) -> None:
    with pytest.raises(DatasetError, match=r"unknown split 'bogus'; valid splits: background, "
                       r"evaluation, background_small1, background_small2, minimal/test, "
                       r"minimal/train, minimal/val, vinyals/test, vinyals/train, vinyals/trainval, vinyals/val"):
        load("bogus", omni_cache)


@pytest.mark.parametrize("split", ["background", "evaluation", "vinyals/test"])
def test_missing_full_data_says_how_to_get_it(tmp_path: Path, split: str) -> None:
    with pytest.raises(DatasetError, match=r"needs images_(background|evaluation)\.zip, not found "
                       r"in .*; run `metamem prepare omniglot`"):
        metamem.load_dataset("omniglot", split=split, root=tmp_path, cache_dir=tmp_path)


def test_corrupt_official_archive_is_named(tmp_path: Path) -> None:
    shutil.copy(bundled_dir("omniglot", "images_background_small2.zip"),
                tmp_path / "images_background_small1.zip")
    with pytest.raises(DatasetError, match=r"images_background_small1\.zip has md5 "
                       r"b75a71a51d3b13f821f212756fe481fd, expected e704a628b5459e08445c13499850abc4"):
        load("background_small1", tmp_path, root=tmp_path)


def test_corrupt_image_is_named(tmp_path: Path, write_png) -> None:
    base = tmp_path / "images_evaluation" / "Alpha"
    write_png(base / "character01" / "a.png", np.zeros((5, 5), np.uint8))
    (base / "character02").mkdir()
    (base / "character02" / "b.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(DatasetError, match=r"cannot decode image .*character02/b\.png"):
        load("evaluation", tmp_path, root=tmp_path)


def test_bad_options_are_refused(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="image_size must be a positive int, got 0"):
        metamem.load_dataset("omniglot", split="background_small1", image_size=0)
    with pytest.raises(DatasetError, match="unknown resample 'bicubic'; valid: lanczos, box"):
        load("background_small1", tmp_path, resample="bicubic")


# --- meta-split files -----------------------------------------------------------------


def test_vinyals_split_files_follow_protonets() -> None:
    spec = {s: read_split_file(SPLITS / "vinyals" / f"{s}.txt") for s in ("train", "val", "test")}
    assert [spec[s].expected for s in ("train", "val", "test")] == [1028, 172, 423]
    assert all(v.sources == ("background", "evaluation") for v in spec.values())
    alph = {s: {e.split("/")[0] for _, e in v.entries} for s, v in spec.items()}
    assert len(alph["train"] | alph["val"] | alph["test"]) == 50
    assert alph["train"] & alph["test"] == {"Gurmukhi"}  # split inside one alphabet
    assert not alph["val"] & (alph["train"] | alph["test"])
    gur = {s: [e for _, e in v.entries if e.startswith("Gurmukhi")] for s, v in spec.items()}
    assert gur["train"] == [f"Gurmukhi/character{i:02d}" for i in range(1, 42)]
    assert gur["test"] == [f"Gurmukhi/character{i:02d}" for i in range(42, 46)]
    assert alph["val"] == {"Hebrew", "Mkhedruli_(Georgian)", "Armenian", "Early_Aramaic", "Bengali"}


def test_vinyals_trainval_is_train_and_val_together() -> None:
    spec = {s: read_split_file(SPLITS / "vinyals" / f"{s}.txt") for s in ("train", "val", "trainval")}
    assert spec["trainval"].expected == 1200 and spec["trainval"].sources == ("background", "evaluation")
    entries = {s: [e for _, e in v.entries] for s, v in spec.items()}
    assert sorted(entries["trainval"]) == sorted(entries["train"] + entries["val"])
    assert len(set(entries["trainval"])) == len(entries["trainval"])


def _fake_full(root: Path, write_png) -> None:
    """background: A (3 characters), B (2); evaluation: C (2); 2 images each."""
    layout = {"images_background": {"A": 3, "B": 2}, "images_evaluation": {"C": 2}}
    for top, alphabets in layout.items():
        for a, n in alphabets.items():
            for c in range(1, n + 1):
                for i in range(2):
                    img = np.full((6, 6), 255, np.uint8)
                    img[c, i] = 0
                    write_png(root / top / a / f"character{c:02d}" / f"{i}.png", img)


def test_meta_split_resolution_on_fake_full_data(tmp_path: Path, write_png) -> None:
    _fake_full(tmp_path / "root", write_png)
    sdir = tmp_path / "splits" / "mine"
    sdir.mkdir(parents=True)
    (sdir / "a.txt").write_text("# sources: background evaluation\n# characters: 4\nA\nC/character02\n")
    (sdir / "b.txt").write_text("# sources: background evaluation\n# characters: 5\nB\n")
    (sdir / "c.txt").write_text("# sources: background evaluation\nB\nNope/character01\n")
    kw = dict(root=tmp_path / "root", splits_dir=tmp_path / "splits", image_size=6,
              cache_dir=tmp_path / "c")
    ds = metamem.load_dataset("omniglot", split="mine/a", rotations=True, **kw)
    assert ds.class_names[:4] == ["A/character01", "A/character02", "A/character03", "C/character02"]
    assert ds.num_classes == 16 and ds.group_names == ["A", "C"]
    assert ds.groups[:4].tolist() == [0, 0, 0, 1]
    with pytest.raises(DatasetError, match=r"b\.txt resolves to 2 characters but its header says 5"):
        metamem.load_dataset("omniglot", split="mine/b", **kw)
    with pytest.raises(DatasetError, match=r"c\.txt line 3: 'Nope/character01' matches no alphabet"):
        metamem.load_dataset("omniglot", split="mine/c", **kw)


@pytest.mark.slow
def test_all_bundled_splits_at_default_size(tmp_path: Path) -> None:
    s2 = metamem.load_dataset("omniglot", split="background_small2", cache=False)
    assert (len(s2), s2.num_classes, s2.image_shape, len(s2.group_names or [])) == (3120, 156, (1, 28, 28), 5)
    total = 0
    for s in ("train", "val", "test"):
        d = metamem.load_dataset("omniglot", split=f"minimal/{s}", rotations=True, cache_dir=tmp_path)
        assert d.num_classes == 4 * MINIMAL[s].expected
        total += d.num_classes
    assert total == 4 * 242
