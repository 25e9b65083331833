"""Plug-in datasets (folder, pairs), the registry listing and the decode cache."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import metamem
from metamem.cli.main import main as cli
from metamem.data import DatasetError, from_pairs
from metamem.data.cache import Decoded, cached_decode


def make_folder(root: Path, write_png, sizes: dict[str, tuple[int, int]] | None = None) -> dict:
    """3 classes (cat, dog, eel) x 3 grayscale images; returns class -> [arrays]."""
    rng = np.random.default_rng(1)
    out = {}
    for c in ("dog", "cat", "eel"):
        h, w = (sizes or {}).get(c, (6, 6))
        out[c] = [rng.integers(0, 256, (h, w), dtype=np.uint8) for _ in range(3)]
        for i, a in enumerate(out[c]):
            write_png(root / c / f"{i}.png", a)
    return out


def test_folder_loads_classes_sorted_with_card_splits(tmp_path: Path, write_png) -> None:
    data = make_folder(tmp_path / "pets", write_png)
    (tmp_path / "pets" / "notes.txt").write_text("ignored")
    (tmp_path / "pets" / "card.yaml").write_text(
        "name: pets\nsplits:\n  train: [dog, cat]\n  test: [eel]\n")
    ds = metamem.load_dataset("folder", root=tmp_path / "pets", cache_dir=tmp_path / "c")
    assert (ds.name, ds.split, ds.class_names, ds.image_shape) == ("pets", "all", ["cat", "dog", "eel"], (1, 6, 6))
    np.testing.assert_array_equal(ds.images[ds.labels == 1][:, 0].numpy(), np.stack(data["dog"]))
    tr = metamem.load_dataset("folder", root=tmp_path / "pets", split="train", cache_dir=tmp_path / "c")
    assert tr.class_names == ["cat", "dog"] and len(tr) == 6 and tr.groups is None
    with pytest.raises(DatasetError, match=r"unknown split 'val'; valid splits: all, train, test"):
        metamem.load_dataset("folder", root=tmp_path / "pets", split="val")


def test_folder_card_size_channels_and_yaml_safety(tmp_path: Path, write_png) -> None:
    make_folder(tmp_path / "p", write_png, sizes={"cat": (9, 7)})
    (tmp_path / "p" / "card.yaml").write_text("image_size: 5\nchannels: 3\n")
    ds = metamem.load_dataset("folder", root=tmp_path / "p", cache=False)
    assert ds.image_shape == (3, 5, 5)
    assert torch.equal(ds.images[:, 0], ds.images[:, 2])  # gray converted to RGB
    (tmp_path / "p" / "card.yaml").write_text("name: !!python/object/apply:os.system ['true']\n")
    with pytest.raises(DatasetError, match=r"card\.yaml: not valid YAML"):
        metamem.load_dataset("folder", root=tmp_path / "p", cache=False)
    (tmp_path / "p" / "card.yaml").write_text("image_sise: 5\n")
    with pytest.raises(DatasetError, match=r"card\.yaml: unknown key 'image_sise'"):
        metamem.load_dataset("folder", root=tmp_path / "p", cache=False)


def test_folder_bad_input_is_named(tmp_path: Path, write_png) -> None:
    (tmp_path / "empty" / "cat").mkdir(parents=True)
    with pytest.raises(DatasetError, match=r"empty has no class sub-folders with images; expected "):
        metamem.load_dataset("folder", root=tmp_path / "empty")
    make_folder(tmp_path / "mixed", write_png, sizes={"eel": (6, 8)})
    with pytest.raises(DatasetError, match=r"image .*mixed/eel/0\.png is 8x6 but .*mixed/cat/0\.png "
                       r"is 6x6; set image_size"):
        metamem.load_dataset("folder", root=tmp_path / "mixed", cache=False)
    assert metamem.load_dataset("folder", root=tmp_path / "mixed", image_size=4,
                                cache=False).image_shape == (1, 4, 4)
    make_folder(tmp_path / "bad", write_png)
    (tmp_path / "bad" / "dog" / "1.png").write_bytes(b"\x89PNG\r\n\x1a\ntruncated")
    with pytest.raises(DatasetError, match=r"cannot decode image .*bad/dog/1\.png"):
        metamem.load_dataset("folder", root=tmp_path / "bad", cache=False)
    with pytest.raises(DatasetError, match="folder: pass root=DIR"):
        metamem.load_dataset("folder")


def test_folder_cache_follows_source_and_settings(tmp_path: Path, write_png) -> None:
    make_folder(tmp_path / "p", write_png)
    kw = dict(root=tmp_path / "p", cache_dir=tmp_path / "c")
    first = metamem.load_dataset("folder", **kw)
    assert first.info["cache_hit"] is False
    assert metamem.load_dataset("folder", **kw).info["cache_hit"] is True
    write_png(tmp_path / "p" / "cat" / "0.png", np.full((6, 6), 7, np.uint8))
    changed = metamem.load_dataset("folder", **kw)
    assert changed.info["cache_hit"] is False and int(changed.images[0].max()) == 7
    resized = metamem.load_dataset("folder", image_size=3, **kw)
    assert resized.info["cache_hit"] is False and resized.image_shape == (1, 3, 3)
    entries = list((tmp_path / "c" / "decoded" / "folder").iterdir())
    assert len(entries) == 3
    assert not [p for p in (tmp_path / "c").rglob(".*")]  # no temp files left behind


def test_cache_rebuilds_incomplete_entries_and_can_be_off(tmp_path: Path) -> None:
    calls = []

    def build() -> Decoded:
        calls.append(1)
        return Decoded(np.zeros((2, 1, 2, 2), np.uint8), np.array([0, 1]), ["a", "b"], [0, 0], ["g"])

    d, info = cached_decode("t", {"x": 1}, build, cache_dir=tmp_path)
    assert not info["cache_hit"] and len(calls) == 1
    meta = Path(info["cache_path"]) / "meta.json"
    assert json.loads(meta.read_text())["material"] == {"x": 1}
    meta.unlink()  # an interrupted write leaves no meta.json
    assert not cached_decode("t", {"x": 1}, build, cache_dir=tmp_path)[1]["cache_hit"]
    assert cached_decode("t", {"x": 1}, build, cache_dir=tmp_path)[1]["cache_hit"]
    _, off = cached_decode("t", {"x": 1}, build, cache_dir=tmp_path / "off", cache=False)
    assert off["cache_path"] is None and not (tmp_path / "off").exists() and len(calls) == 3


class FakeVision:
    """A map-style dataset like torchvision's: ``classes`` and ``(image, label)`` items."""

    classes = ["zero", "one", "two", "three"]

    def __init__(self, kind: str, n: int = 8, size: int = 5) -> None:
        g = torch.Generator().manual_seed(0)
        self.x = torch.randint(0, 256, (n, size, size, 3), generator=g, dtype=torch.uint8)
        self.y = [3, 1] * (n // 2)
        self.kind = kind

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int):
        a = self.x[i].numpy()
        img = {
            "pil": lambda: Image.fromarray(a),
            "hwc": lambda: a,
            "hw": lambda: a[:, :, 0],
            "chw_float": lambda: torch.from_numpy(a).permute(2, 0, 1).float() / 255,
        }[self.kind]()
        return img, torch.tensor(self.y[i])


@pytest.mark.parametrize("kind", ["pil", "hwc", "hw", "chw_float"])
def test_from_pairs_accepts_images_of_every_kind(kind: str) -> None:
    src = FakeVision(kind)
    ds = from_pairs(src, split="train")
    c = 1 if kind == "hw" else 3
    assert ds.image_shape == (c, 5, 5) and len(ds) == 8 and ds.split == "train"
    assert ds.class_names == ["one", "three"]  # labels 1 and 3, remapped to 0 and 1
    assert ds.labels.tolist() == [1, 0] * 4
    want = src.x.permute(0, 3, 1, 2)[:, :c]
    assert torch.equal(ds.images, want)


def test_pairs_through_the_registry_and_sampler() -> None:
    ds = metamem.load_dataset("pairs", dataset=FakeVision("pil", n=12), image_size=4, channels=1,
                              class_names=[f"c{i}" for i in range(4)])
    assert ds.image_shape == (1, 4, 4) and ds.class_names == ["c1", "c3"]
    b = metamem.EpisodeSampler(ds, n_way=2, k_shot=2, n_query=1, batch_size=3, seed=0).sample()
    assert b.support_x.shape == (3, 4, 1, 4, 4)


def test_from_pairs_bad_input() -> None:
    class Mixed(FakeVision):
        def __getitem__(self, i: int):
            return np.zeros((5 + i, 5), np.uint8), 0

    with pytest.raises(DatasetError, match=r"item 1 has shape \(1, 6, 5\) but item 0 has \(1, 5, 5\); set image_size"):
        from_pairs(Mixed("hw"))
    with pytest.raises(DatasetError, match="item 0: image of type str is not a PIL image"):
        from_pairs([("x", 0)])
    with pytest.raises(DatasetError, match=r"item 0 is int, expected \(image, label\)"):
        from_pairs([3])
    with pytest.raises(DatasetError, match="pass dataset="):
        metamem.load_dataset("pairs")
    with pytest.raises(DatasetError, match=r"label 3 has no entry in class_names \(2 names\)"):
        from_pairs(FakeVision("hw"), class_names=["a", "b"])


def test_ls_datasets_lists_builtins_and_plugins(capsys) -> None:
    assert cli(["ls", "datasets"]) == 0
    names = [line.split()[0] for line in capsys.readouterr().out.splitlines()]
    assert {"omniglot", "mini_imagenet", "folder", "pairs", "synthetic"} <= set(names)
