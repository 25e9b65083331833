"""scripts/mini_imagenet_subset.py: the first N images a class, loadable with split_dir."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import metamem


def _jpeg(value: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((12, 12, 3), value, dtype=np.uint8)).save(buf, format="JPEG")
    return buf.getvalue()


def test_subset_keeps_the_first_images_of_each_class(load_script, tmp_path: Path, monkeypatch) -> None:
    script = load_script("mini_imagenet_subset")
    bundled = tmp_path / "bundled"
    bundled.mkdir()
    rows = [(f"n0{c}000000{i:02d}.jpg", f"n0{c}") for c in (2, 1, 3) for i in (5, 3, 9, 1)]  # unsorted
    (bundled / "test.csv").write_text("filename,label\n" + "".join(f"{f},{w}\n" for f, w in rows))
    monkeypatch.setattr(script, "bundled_dir", lambda *parts: bundled)
    source = tmp_path / "source"
    source.mkdir()
    with zipfile.ZipFile(source / "test.zip", "w") as z:
        for k, (f, _) in enumerate(rows):
            z.writestr(f"images/{f}", _jpeg(10 * k))
    out = tmp_path / "out"
    assert script.write_subset(source, out, "test", 2) == (3, 6)
    kept = (out / "test.csv").read_text().split()[1:]
    assert kept == [f"n0{c}000000{i:02d}.jpg,n0{c}" for c in (1, 2, 3) for i in (1, 3)]
    with zipfile.ZipFile(out / "test.zip") as z, zipfile.ZipFile(source / "test.zip") as src:
        assert sorted(z.namelist()) == sorted(f"images/{r.split(',')[0]}" for r in kept)
        assert all(z.read(n) == src.read(n) for n in z.namelist())  # copied unchanged
    assert not list(out.glob(".*tmp"))
    ds = metamem.load_dataset("mini_imagenet", split="test", root=out, split_dir=out, image_size=12)
    assert len(ds) == 6 and ds.num_classes == 3


def test_subset_names_a_missing_zip(load_script, tmp_path: Path) -> None:
    script = load_script("mini_imagenet_subset")
    with pytest.raises(SystemExit, match=r"train.zip not found; pass --source"):
        script.write_subset(tmp_path, tmp_path / "out", "train", 2)


def test_a_bad_split_argument_is_named(load_script, tmp_path: Path, monkeypatch) -> None:
    script = load_script("mini_imagenet_subset")
    monkeypatch.setattr("sys.argv", ["mini_imagenet_subset.py", "--out", str(tmp_path), "--split", "test=x"])
    with pytest.raises(SystemExit, match=r"--split 'test=x' must be SPLIT=N with N >= 1, e.g. test=100"):
        script.main()
    assert not any(tmp_path.iterdir())  # nothing written
