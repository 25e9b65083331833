"""CIFAR-FS, FC100, CUB-200-2011 and tiered-ImageNet, read from small archives in the real
formats (tests/benchmark_archives.py), and their hash-checked installation."""

from __future__ import annotations

import io
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from benchmark_archives import (
    COARSE,
    FINE,
    SUPERCLASSES,
    cifar100_archive,
    cifar_image,
    cub_archive,
    cub_classes,
    cub_image,
    tiered_image,
    tiered_release,
)
from PIL import Image

import metamem
from metamem.cli.main import main
from metamem.data import DatasetError
from metamem.data.archives import ARCHIVES, prepare_archive, prepare_tiered_imagenet
from metamem.data.download import DownloadError, download
from metamem.data.paths import bundled_dir
from metamem.data.sources import image_to_array


@pytest.fixture(scope="module")
def cifar_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cifar100")
    cifar100_archive(root / "cifar-100-python.tar.gz")
    return root


@pytest.fixture(scope="module")
def cub_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cub")
    cub_archive(root / "CUB_200_2011.tgz")
    return root


def _lines(name: str, split: str) -> list[str]:
    return bundled_dir(name, f"{split}.txt").read_text().split()


# ----------------------------------------------------------------------- bundled split lists
def test_bundled_split_lists_have_the_published_sizes_and_are_disjoint() -> None:
    cifar = [_lines("cifar_fs", s) for s in ("train", "val", "test")]
    assert [len(c) for c in cifar] == [64, 16, 20] and sorted(sum(cifar, [])) == FINE
    fc = [_lines("fc100", s) for s in ("train", "val", "test")]
    assert [len(c) for c in fc] == [12, 4, 4] and sorted(sum(fc, [])) == COARSE
    cub = [_lines("cub", s) for s in ("train", "val", "test")]
    assert [len(c) for c in cub] == [100, 50, 50] and len(set(sum(cub, []))) == 200
    # Chen et al.: class i (0-based, folders sorted) trains if i % 2 == 0, validates if i % 4 == 1
    every = sorted(sum(cub, []))
    assert cub[0] == every[0::2] and cub[1] == every[1::4] and cub[2] == every[3::4]
    assert [int(c[:3]) for c in every] == list(range(1, 201))
    tiered = [bundled_dir("tiered_imagenet", f"{s}.csv").read_text().split() for s in ("train", "val", "test")]
    assert [len(t) for t in tiered] == [351, 97, 160]
    assert [len({r.split(",")[1] for r in t}) for t in tiered] == [20, 6, 8]
    wnids = [r.split(",")[0] for t in tiered for r in t]
    assert len(set(wnids)) == 608


# ----------------------------------------------------------------------- CIFAR-FS / FC100
@pytest.mark.parametrize("split,n", [("train", 64), ("val", 16), ("test", 20)])
def test_cifar_fs_reads_the_official_archive_format(cifar_root: Path, tmp_path: Path, split: str, n: int) -> None:
    ds = metamem.load_dataset("cifar_fs", split=split, root=cifar_root, cache_dir=tmp_path)
    assert ds.num_classes == n and ds.image_shape == (3, 32, 32) and len(ds) == 3 * n
    assert ds.class_names == _lines("cifar_fs", split)  # the CIFAR-100 order is alphabetical
    for c, name in enumerate(ds.class_names):
        rows = (ds.labels == c).nonzero().flatten()
        f = FINE.index(name)
        assert [int(ds.images[r, 1, 0, 0]) for r in rows] == [0, 1, 2]  # train file, then test
        for k, r in enumerate(rows):
            assert torch.equal(ds.images[r], torch.from_numpy(cifar_image(f, k)))
        assert ds.group_names[int(ds.groups[c])] == next(s for s, v in SUPERCLASSES.items() if name in v.split())
    again = metamem.load_dataset("cifar_fs", split=split, root=cifar_root, cache_dir=tmp_path)
    assert again.info["cache_hit"] and torch.equal(again.images, ds.images)


def test_cifar_extracted_folder_and_resize(cifar_root: Path, tmp_path: Path) -> None:
    with tarfile.open(cifar_root / "cifar-100-python.tar.gz") as tf:
        tf.extractall(tmp_path / "x", filter="data")
    a = metamem.load_dataset("cifar_fs", split="val", root=cifar_root, cache=False)
    b = metamem.load_dataset("cifar_fs", split="val", root=tmp_path / "x", cache=False)
    assert b.info["layout"] == "folder" and torch.equal(a.images, b.images)
    small = metamem.load_dataset("cifar_fs", split="val", root=cifar_root, image_size=20, cache=False)
    ref = image_to_array(Image.fromarray(a.images[5].numpy().transpose(1, 2, 0)), mode="RGB", size=20)
    assert small.image_shape == (3, 20, 20) and np.array_equal(small.images[5].numpy(), ref)


def test_fc100_splits_by_superclass(cifar_root: Path, tmp_path: Path) -> None:
    seen = []
    for split, n, g in (("train", 60, 12), ("val", 20, 4), ("test", 20, 4)):
        ds = metamem.load_dataset("fc100", split=split, root=cifar_root, cache_dir=tmp_path)
        assert ds.num_classes == n and ds.group_names == _lines("fc100", split) and len(ds.group_names) == g
        for c, name in enumerate(ds.class_names):
            assert name in SUPERCLASSES[ds.group_names[int(ds.groups[c])]].split()
        assert torch.bincount(ds.groups).tolist() == [5] * g
        seen += ds.class_names
    assert sorted(seen) == FINE
    sampler = metamem.EpisodeSampler(ds, n_way=5, k_shot=1, n_query=2, batch_size=4, within_group=True)
    b = sampler.sample()
    assert all(len(set(ds.groups[b.classes[e]].tolist())) == 1 for e in range(4))


def test_cifar_bad_input_is_named(cifar_root: Path, tmp_path: Path) -> None:
    (tmp_path / "sp").mkdir()
    (tmp_path / "sp" / "test.txt").write_text("apple\nunicorn\n")
    with pytest.raises(DatasetError, match=r"test.txt: class 'unicorn' is not a CIFAR-100 class"):
        metamem.load_dataset("cifar_fs", split="test", root=cifar_root, split_dir=tmp_path / "sp", cache=False)
    with pytest.raises(DatasetError, match=r"no CIFAR-100 data in .*run: metamem prepare cifar_fs"):
        metamem.load_dataset("cifar_fs", split="test", root=tmp_path / "none", cache=False)
    with pytest.raises(DatasetError, match=r"unknown split 'dev'"):
        metamem.load_dataset("fc100", split="dev", root=cifar_root, cache=False)
    evil = tmp_path / "evil" / "cifar-100-python.tar.gz"
    evil.parent.mkdir()
    with tarfile.open(evil, "w:gz") as tf:
        for leaf in ("meta", "train", "test"):
            data = pickle.dumps(__import__("os").getcwd if leaf == "meta" else {})
            info = tarfile.TarInfo(f"cifar-100-python/{leaf}")
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    with pytest.raises(DatasetError, match=r"refusing to unpickle posix.getcwd"):
        metamem.load_dataset("cifar_fs", split="test", root=evil.parent, cache=False)


# ----------------------------------------------------------------------- CUB
def test_cub_reads_the_official_archive_format(cub_root: Path, tmp_path: Path) -> None:
    classes = cub_classes()
    for split, n in (("train", 100), ("val", 50), ("test", 50)):
        ds = metamem.load_dataset("cub", split=split, root=cub_root, image_size=10, cache_dir=tmp_path)
        assert ds.num_classes == n and len(ds) == 2 * n and ds.image_shape == (3, 10, 10)
        assert ds.class_names == _lines("cub", split)
    ds = metamem.load_dataset("cub", split="train", root=cub_root, image_size=10, cache_dir=tmp_path)
    assert ds.info["cache_hit"]
    # class 0 (train): image 0 is grayscale, read as RGB with equal channels; images by file name
    buf = io.BytesIO()
    cub_image(0, 0).save(buf, format="JPEG", quality=95)
    ref = image_to_array(Image.open(io.BytesIO(buf.getvalue())), mode="RGB", size=10)
    assert np.array_equal(ds.images[0].numpy(), ref)
    assert torch.equal(ds.images[0, 0], ds.images[0, 1]) and torch.equal(ds.images[0, 1], ds.images[0, 2])
    buf = io.BytesIO()
    cub_image(classes.index(ds.class_names[3]), 1).save(buf, format="JPEG", quality=95)
    ref = image_to_array(Image.open(io.BytesIO(buf.getvalue())), mode="RGB", size=10)
    assert np.array_equal(ds.images[7].numpy(), ref)  # class 3's second image
    # the extracted folder gives the same images
    with tarfile.open(cub_root / "CUB_200_2011.tgz") as tf:
        tf.extractall(tmp_path / "x", filter="data")
    folder = metamem.load_dataset("cub", split="train", root=tmp_path / "x", image_size=10, cache=False)
    assert folder.info["layout"] == "folder" and torch.equal(folder.images, ds.images)


def test_cub_missing_class_is_named(tmp_path: Path) -> None:
    cub_archive(tmp_path / "CUB_200_2011.tgz", per_class=1)
    (tmp_path / "sp").mkdir()
    (tmp_path / "sp" / "val.txt").write_text("002.Laysan_Albatross\n999.Dodo\n")
    with pytest.raises(DatasetError, match=r"has no images of class '999.Dodo'"):
        metamem.load_dataset("cub", split="val", root=tmp_path, split_dir=tmp_path / "sp", cache=False)


# ----------------------------------------------------------------------- tiered-ImageNet
def test_tiered_pickle_and_npz_releases_give_the_same_split(tmp_path: Path) -> None:
    sd, spec = tiered_release(tmp_path / "p", "val", classes=5, superclasses=2, per_class=4)
    tiered_release(tmp_path / "n", "val", classes=5, superclasses=2, per_class=4, layout="npz")
    a = metamem.load_dataset("tiered_imagenet", split="val", root=tmp_path / "p", split_dir=sd, image_size=12,
                             cache_dir=tmp_path / "c")
    b = metamem.load_dataset("tiered_imagenet", split="val", root=tmp_path / "n", split_dir=sd, image_size=12,
                             cache_dir=tmp_path / "c")
    assert a.info["layout"] == "pickle" and b.info["layout"] == "npz"
    assert torch.equal(a.images, b.images)  # the npz's BGR arrays come out RGB
    assert a.labels.tolist() == sorted(spec.tolist()) and a.class_names == [f"class {c}" for c in range(5)]
    assert a.groups.tolist() == [0, 1, 0, 1, 0] and a.group_names == ["super 0", "super 1"]
    order = np.argsort(spec, kind="stable")
    for pos, i in enumerate(order):
        assert np.array_equal(a.images[pos].numpy(), tiered_image(int(i), 12).transpose(2, 0, 1))
    assert (Path(a.info["cache_path"]) / "images.npy").is_file()  # decoded into the entry's file
    hit = metamem.load_dataset("tiered_imagenet", split="val", root=tmp_path / "p", split_dir=sd, image_size=12,
                               cache_dir=tmp_path / "c")
    assert hit.info["cache_hit"] and torch.equal(hit.images, a.images)
    rgb = metamem.load_dataset("tiered_imagenet", split="val", root=tmp_path / "n", split_dir=sd, image_size=12,
                               channel_order="rgb", cache=False)
    assert torch.equal(rgb.images, a.images.flip(1))
    left = [p.name for p in (tmp_path / "c").rglob(".images.*")]
    assert left == []  # the decode buffer was moved into the entry


def test_tiered_ilsvrc_folders_and_wrong_counts(tmp_path: Path) -> None:
    sd, _ = tiered_release(tmp_path / "p", "test", classes=3, superclasses=2, per_class=2)
    wnids = [r.split(",")[0] for r in (sd / "test.csv").read_text().split()]
    for c, w in enumerate(wnids):
        (tmp_path / "il" / "train" / w).mkdir(parents=True)
        for k in range(2):
            Image.fromarray(tiered_image(10 * c + k, 20)).save(tmp_path / "il" / "train" / w / f"{w}_{k}.JPEG",
                                                             format="PNG")
    ds = metamem.load_dataset("tiered_imagenet", split="test", root=tmp_path / "il", split_dir=sd, image_size=8,
                              cache_dir=tmp_path / "c")
    assert ds.info["layout"] == "images" and ds.class_names == wnids and ds.labels.tolist() == [0, 0, 1, 1, 2, 2]
    assert ds.groups.tolist() == [0, 1, 0]
    ref = image_to_array(Image.fromarray(tiered_image(21, 20)), mode="RGB", size=8)
    assert np.array_equal(ds.images[5].numpy(), ref)
    (sd / "test.csv").write_text((sd / "test.csv").read_text() + "n77777777,n90000000\n")
    with pytest.raises(DatasetError, match=r"test_labels.pkl has 3 classes under 2 superclasses but .*test.csv "
                                           r"lists 4 under 2"):
        metamem.load_dataset("tiered_imagenet", split="test", root=tmp_path / "p", split_dir=sd, cache=False)


# ----------------------------------------------------------------------- installing, hashes
def test_prepare_refuses_an_archive_without_the_official_md5(cifar_root: Path, tmp_path: Path, capsys) -> None:
    synth = cifar_root / "cifar-100-python.tar.gz"
    with pytest.raises(DownloadError, match=r"md5 mismatch for .*expected eb9058c3a382ffc7106e4002c42a8d85 "
                                            r"\(the official cifar-100-python.tar.gz\).*nothing was installed"):
        prepare_archive("cifar_fs", tmp_path / "r", source=synth)
    assert not (tmp_path / "r" / "cifar-100-python.tar.gz").exists()
    assert main(["prepare", "fc100", "--from", str(synth), "--root", str(tmp_path / "r")]) == 1
    assert "md5 mismatch" in capsys.readouterr().err
    ok = prepare_archive("cifar_fs", tmp_path / "r", source=synth.parent, md5=__import__("hashlib").md5(
        synth.read_bytes()).hexdigest())
    assert ok.read_bytes() == synth.read_bytes()
    assert ARCHIVES["cub"].md5 == "97eceeb196236b17998738112f37df78"


def test_download_checks_the_md5_and_refuses_html(cub_root: Path, tmp_path: Path, server_for) -> None:
    good = (cub_root / "CUB_200_2011.tgz").read_bytes()
    base = server_for({"/ok/CUB_200_2011.tgz": ("application/x-gzip", good),
                       "/html/CUB_200_2011.tgz": ("text/html", b"<!DOCTYPE html><html>quota</html>"),
                       "/notar/CUB_200_2011.tgz": ("application/octet-stream", b"\x00not a tar archive" * 40)})
    md5 = __import__("hashlib").md5(good).hexdigest()
    with pytest.raises(DownloadError, match=r"md5 mismatch for CUB_200_2011.tgz"):
        prepare_archive("cub", tmp_path, url=f"{base}/ok/CUB_200_2011.tgz", progress=False)
    with pytest.raises(DownloadError, match=r"HTML page"):
        prepare_archive("cub", tmp_path, url=f"{base}/html/CUB_200_2011.tgz", md5=md5, progress=False)
    assert not (tmp_path / "CUB_200_2011.tgz").exists()
    got = prepare_archive("cub", tmp_path, url=f"{base}/ok/CUB_200_2011.tgz", md5=md5, progress=False)
    assert got.read_bytes() == good
    sha = __import__("hashlib").sha256(good).hexdigest()
    with pytest.raises(DownloadError, match=rf"sha256 mismatch for x.tgz .*expected {'0' * 64}, got {sha}"):
        download(f"{base}/ok/CUB_200_2011.tgz", tmp_path / "x.tgz", sha256="0" * 64, expect_zip=False, progress=False)
    assert download(f"{base}/ok/CUB_200_2011.tgz", tmp_path / "x.tgz", sha256=sha, expect_zip=False,
                    expect_tar=True, progress=False).read_bytes() == good
    with pytest.raises(DownloadError, match=r"x.tgz from .* is not a readable tar archive"):
        download(f"{base}/notar/CUB_200_2011.tgz", tmp_path / "x.tgz", expect_zip=False, expect_tar=True,
                 progress=False)
    assert (tmp_path / "x.tgz").read_bytes() == good  # the previous file is kept


def test_prepare_tiered_checks_the_published_counts(tmp_path: Path, capsys) -> None:
    for s in ("train", "val", "test"):
        tiered_release(tmp_path / "rel", s, classes=3, per_class=2)
    with pytest.raises(DatasetError, match=r"train_labels.pkl has 3 classes under 2 superclasses, not the "
                                           r"published 351 under 20 of the train split; nothing was installed"):
        prepare_tiered_imagenet(tmp_path / "rel", tmp_path / "root")
    assert not (tmp_path / "root").exists()
    assert main(["prepare", "tiered_imagenet", "--root", str(tmp_path / "root")]) == 1
    assert "--from FOLDER" in capsys.readouterr().err
    done = prepare_tiered_imagenet(tmp_path / "rel", tmp_path / "root", published=False)
    assert sorted(p.name for p in done) == sorted(f"{s}_{k}.pkl" for s in ("train", "val", "test")
                                                  for k in ("labels", "images_png"))


def test_ls_datasets_lists_the_benchmarks(capsys) -> None:
    assert main(["ls", "datasets"]) == 0
    out = capsys.readouterr().out
    for name in ("cifar_fs", "fc100", "cub", "tiered_imagenet"):
        assert any(line.startswith(name + " ") for line in out.splitlines()), name


@pytest.mark.parametrize("name", ["cifar_fs", "fc100", "cub", "mini_imagenet", "tiered_imagenet", "omniglot"])
def test_every_loader_checks_split_and_image_size_alike_before_reading(name: str, tmp_path: Path) -> None:
    split = "background" if name == "omniglot" else "train"
    for bad in (0, True, 2.5):  # a bool is not a size (mini_imagenet and omniglot took True as 1)
        with pytest.raises(DatasetError, match=rf"^{name}: image_size must be a positive int, got {bad!r}$"):
            metamem.load_dataset(name, split, root=tmp_path, image_size=bad, cache=False)
    if name != "omniglot":  # omniglot's splits are its sets and meta-splits (test_ds_omniglot)
        with pytest.raises(DatasetError, match=rf"^{name}: unknown split 'dev'; valid splits: train, val, test$"):
            metamem.load_dataset(name, "dev", root=tmp_path, cache=False)
