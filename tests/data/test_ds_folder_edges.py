"""The folder loader (and the user-episode folder reader) accept nothing wrong silently:
palette colour PNGs stay colour, hidden folders are no classes, a bad first file is named,
stray files are errors. Specific cases first, then hypothesis properties over file kinds
and PIL modes."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

import metamem
from metamem.data import DatasetError
from metamem.evaluation.user_episodes import EpisodeInputError, Preprocess, load_image_folders


def gray(seed: int, size: int = 6) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (size, size), dtype=np.uint8)


def colour_palette_png(path: Path, size: int = 6) -> np.ndarray:
    """A palette (P-mode) PNG with red/green/blue pixels; returns its RGB pixels."""
    rgb = np.zeros((size, size, 3), dtype=np.uint8)
    rgb[: size // 2, :, 0] = 255
    rgb[size // 2:, :, 1] = 200
    rgb[:, : size // 3, 2] = 90
    img = Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    assert Image.open(path).mode == "P"
    return np.asarray(img.convert("RGB"))


def load(root: Path, **kw: object) -> metamem.data.ImageDataset:
    return metamem.load_dataset("folder", root=root, cache=False, **kw)


def test_palette_colour_pngs_load_as_colour(tmp_path: Path) -> None:
    """P-mode colour PNGs used to load as grayscale."""
    want = colour_palette_png(tmp_path / "d" / "a" / "0.png")
    colour_palette_png(tmp_path / "d" / "b" / "0.png")
    ds = load(tmp_path / "d")
    assert ds.image_shape == (3, 6, 6)
    np.testing.assert_array_equal(ds.images[0].permute(1, 2, 0).numpy(), want)


def test_gray_palette_pngs_stay_grayscale(tmp_path: Path) -> None:
    for c in "ab":
        p = tmp_path / "d" / c / "0.png"
        p.parent.mkdir(parents=True)
        Image.fromarray(gray(1)).convert("P").save(p)
    assert load(tmp_path / "d").image_shape == (1, 6, 6)


def test_colour_image_after_a_grayscale_first_image_is_named(tmp_path: Path, write_png) -> None:
    write_png(tmp_path / "d" / "a" / "0.png", gray(0))
    bad = tmp_path / "d" / "b" / "0.png"
    colour_palette_png(bad)
    with pytest.raises(DatasetError, match=rf"image {bad} is colour \(P\) but the dataset is read as grayscale; the first image .*pass channels=3"):
        load(tmp_path / "d")
    assert load(tmp_path / "d", channels=3).image_shape == (3, 6, 6)
    assert load(tmp_path / "d", channels=1).image_shape == (1, 6, 6)  # asked for: converted
    # RGB files holding gray pixels lose nothing in a grayscale dataset
    write_png(bad, np.repeat(gray(3)[..., None], 3, axis=2))
    assert load(tmp_path / "d").image_shape == (1, 6, 6)


def test_hidden_folders_and_files_are_not_classes(tmp_path: Path, write_png) -> None:
    for c in ("a", "b"):
        write_png(tmp_path / "d" / c / "0.png", gray(0))
    write_png(tmp_path / "d" / ".ipynb_checkpoints" / "0-checkpoint.png", gray(1))
    write_png(tmp_path / "d" / "a" / ".ipynb_checkpoints" / "x.png", gray(2))
    write_png(tmp_path / "d" / "a" / "._0.png", gray(2))
    ds = load(tmp_path / "d")
    assert ds.class_names == ["a", "b"] and len(ds) == 2


@pytest.mark.parametrize("content, what", [
    (b"", r"is empty \(0 bytes\)"),
    (b"\x89PNG\r\n\x1a\n" + b"\0" * 30, r"cannot decode image"),
    (b"not an image at all", r"cannot decode image .*UnidentifiedImageError"),
])
def test_a_bad_first_image_is_named(tmp_path: Path, write_png, content: bytes, what: str) -> None:
    """A corrupt or empty image that sorts first gave a raw OSError naming no file."""
    first = tmp_path / "d" / "a" / "000.png"
    first.parent.mkdir(parents=True)
    first.write_bytes(content)
    write_png(tmp_path / "d" / "a" / "001.png", gray(0))
    write_png(tmp_path / "d" / "b" / "0.png", gray(1))
    with pytest.raises(DatasetError, match=rf"{what}.*" if "empty" not in what else rf"image {first} {what}"):
        load(tmp_path / "d")
    with pytest.raises(DatasetError, match=str(first)):
        load(tmp_path / "d", channels=1)  # the decoder path (no first-file sniffing) names it too


@pytest.mark.parametrize("stray, where", [("loose.png", "beside the class folders"),
                                          ("a/sub/deep.png", "two or more levels deep")])
def test_stray_images_are_errors(tmp_path: Path, write_png, stray: str, where: str) -> None:
    write_png(tmp_path / "d" / "a" / "0.png", gray(0))
    write_png(tmp_path / "d" / stray, gray(1))
    with pytest.raises(DatasetError, match=rf"image {tmp_path / 'd' / stray} lies {where}.*move it into its class folder"):
        load(tmp_path / "d")


# ---------------------------------------------------------- user-episode folders
def test_loose_query_files_beside_query_class_folders_are_an_error(tmp_path: Path, write_png) -> None:
    """They used to be dropped silently."""
    pre = Preprocess(mode="L", size=(6, 6))
    write_png(tmp_path / "s" / "a" / "0.png", gray(0))
    write_png(tmp_path / "s" / "b" / "0.png", gray(1))
    write_png(tmp_path / "q" / "a" / "1.png", gray(2))
    write_png(tmp_path / "q" / "lost.png", gray(3))
    with pytest.raises(EpisodeInputError, match=r"query folder .*q mixes loose images \(lost.png\) with class sub-folders \(a/\)"):
        load_image_folders(tmp_path / "s", tmp_path / "q", pre)
    (tmp_path / "q" / "lost.png").unlink()
    ep = load_image_folders(tmp_path / "s", tmp_path / "q", pre)
    assert ep.class_names == ["a", "b"] and ep.has_query_labels
    write_png(tmp_path / "s" / "stray.png", gray(3))
    with pytest.raises(EpisodeInputError, match=r"support image .*stray.png lies beside the class folders"):
        load_image_folders(tmp_path / "s", tmp_path / "q", pre)


def test_hidden_folders_are_not_episode_classes(tmp_path: Path, write_png) -> None:
    pre = Preprocess(mode="L", size=(6, 6))
    write_png(tmp_path / "s" / "a" / "0.png", gray(0))
    write_png(tmp_path / "s" / "b" / "0.png", gray(1))
    write_png(tmp_path / "s" / ".ipynb_checkpoints" / "0.png", gray(1))
    write_png(tmp_path / "q" / "x.png", gray(2))
    write_png(tmp_path / "q" / ".ipynb_checkpoints" / "x.png", gray(2))
    ep = load_image_folders(tmp_path / "s", tmp_path / "q", pre)
    assert ep.class_names == ["a", "b"] and not ep.has_query_labels and len(ep.query_names) == 1


# ----------------------------------------------------------------- properties
MODES = ["L", "RGB", "RGBA", "P", "1", "LA", "I", "CMYK"]
FORMATS = ["PNG", "JPEG", "BMP", "GIF", "TIFF", "WEBP"]


@st.composite
def image_file(draw: st.DrawFn) -> tuple[str, bytes, str]:
    mode = draw(st.sampled_from(MODES))
    fmt = draw(st.sampled_from(FORMATS))
    size = draw(st.integers(1, 7))
    seed = draw(st.integers(0, 99))
    rgb = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    if draw(st.booleans()):
        rgb[..., 1] = rgb[..., 2] = rgb[..., 0]  # gray content
    img = Image.fromarray(rgb).convert(mode)
    buf = io.BytesIO()
    try:
        img.save(buf, format=fmt)
        data = buf.getvalue()
    except (OSError, ValueError, KeyError):  # that format cannot store that mode
        data = b""
    damage = draw(st.sampled_from(["none", "none", "truncate", "flip", "empty"]))
    if damage == "truncate" and data:
        data = data[: draw(st.integers(0, len(data) - 1))]
    elif damage == "flip" and data:
        i = draw(st.integers(0, len(data) - 1))
        data = data[:i] + bytes([data[i] ^ 0xFF]) + data[i + 1:]
    elif damage == "empty":
        data = b""
    ext = {"JPEG": ".jpg", "TIFF": ".tif"}.get(fmt, "." + fmt.lower())
    return ext, data, mode


@settings(max_examples=60, derandomize=True, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(files=st.lists(image_file(), min_size=1, max_size=5), channels=st.sampled_from([None, 1, 3]),
       image_size=st.sampled_from([None, 5]))
def test_folder_loads_exactly_or_names_the_file(tmp_path_factory: pytest.TempPathFactory, files: list,
                                                channels: int | None, image_size: int | None) -> None:
    root = tmp_path_factory.mktemp("prop")
    names = []
    for k, (ext, data, _) in enumerate(files):
        p = root / f"c{k % 2}" / f"{k:02d}{ext}"
        p.parent.mkdir(exist_ok=True)
        p.write_bytes(data)
        names.append(p)
    try:
        ds = load(root, channels=channels, image_size=image_size)
    except DatasetError as e:
        msg = str(e)
        assert "\n" not in msg
        assert any(str(p) in msg for p in names) or "image_size" in msg, msg
        return
    assert ds.num_classes == len({p.parent.name for p in names}) and len(ds) == len(names)
    if channels is not None:
        assert ds.image_shape[0] == channels
    if image_size is not None:
        assert ds.image_shape[1:] == (image_size, image_size)
    if ds.image_shape[0] == 1 and channels is None:
        # grayscale inferred: no stored image had colour
        for p in names:
            with Image.open(p) as im:
                im.load()
                assert not (np.asarray(im.convert("RGB")).std(axis=2) > 0).any(), p


def test_16_bit_pngs_are_scaled_not_saturated(tmp_path: Path) -> None:
    """PIL's convert("L") saturates every 16-bit value above 255."""
    a = (np.linspace(0, 1, 36).reshape(6, 6) * 65535).astype(np.uint16)
    for c in "ab":
        p = tmp_path / "d" / c / "0.png"
        p.parent.mkdir(parents=True)
        Image.fromarray(a).save(p)
    ds = load(tmp_path / "d")
    got = ds.images[0, 0].numpy().astype(int)
    assert np.abs(got - np.rint(a / 65535 * 255)).max() <= 1 and 0 < got.mean() < 255


# ----------------------------------------------------------------- EXIF, Unicode names, empty folders
def _sideways_jpeg(path: Path, upright: np.ndarray) -> None:
    """Save ``upright`` (H x W) as a phone does: pixels stored rotated, with the EXIF
    orientation 6 ("rotate 90 clockwise to display") that puts them back upright."""
    stored = np.rot90(upright, k=1)  # 90 degrees counter-clockwise
    img = Image.fromarray(np.ascontiguousarray(stored))
    exif = Image.Exif()
    exif[0x0112] = 6
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, format="JPEG", quality=100, exif=exif.tobytes())


def test_exif_orientation_is_applied_in_datasets_and_user_episodes(tmp_path: Path, write_png) -> None:
    upright = np.zeros((8, 12), dtype=np.uint8)
    upright[:2, :] = 255  # a bright top edge: wider than tall
    _sideways_jpeg(tmp_path / "d" / "a" / "0.jpg", upright)
    write_png(tmp_path / "d" / "b" / "0.png", np.zeros((8, 12), dtype=np.uint8))
    ds = load(tmp_path / "d")
    img = ds.images[0, 0].numpy()  # class a
    assert img.shape == (8, 12), "the stored (sideways) 12x8 pixels were used"
    assert img[:2].mean() > 200 and img[2:].mean() < 40
    query = Preprocess(mode="L", size=(12, 12)).load(tmp_path / "d" / "a" / "0.jpg")  # [1, 12, 12]
    assert query[0, :2].mean() > 150 and query[0, :, :2].mean() < 150  # bright top, not left


def test_class_names_are_nfc_and_a_collision_is_an_error(tmp_path: Path, write_png) -> None:
    import unicodedata

    nfc, nfd = unicodedata.normalize("NFC", "été"), unicodedata.normalize("NFD", "été")
    assert nfc != nfd
    write_png(tmp_path / "d" / nfd / "0.png", gray(0))
    write_png(tmp_path / "d" / "b" / "0.png", gray(1))
    ds = load(tmp_path / "d")
    assert ds.class_names == ["b", nfc]  # the NFD folder is named in NFC
    (tmp_path / "d" / "card.yaml").write_text(f"splits: {{train: [{nfc}]}}\n", encoding="utf-8")
    assert load(tmp_path / "d", split="train").class_names == [nfc]  # the card in NFC finds it
    (tmp_path / "d" / "card.yaml").unlink()
    write_png(tmp_path / "d" / nfc / "1.png", gray(2))
    if len({p.name for p in (tmp_path / "d").iterdir()}) < 3:
        pytest.skip("this file system normalises names itself (one folder)")
    with pytest.raises(DatasetError, match=r"class folders .* have the same name 'été' in different "
                       r"Unicode forms \(NFC/NFD\); merge them into one folder"):
        load(tmp_path / "d")
    pre = Preprocess(mode="L", size=(6, 6))
    with pytest.raises(EpisodeInputError, match=r"same name 'été' in different Unicode forms"):
        load_image_folders(tmp_path / "d", tmp_path / "d" / "b", pre)


def test_query_class_folders_match_support_classes_across_unicode_forms(tmp_path: Path, write_png) -> None:
    import unicodedata

    nfc, nfd = unicodedata.normalize("NFC", "été"), unicodedata.normalize("NFD", "été")
    write_png(tmp_path / "s" / nfc / "0.png", gray(0))
    write_png(tmp_path / "s" / "b" / "0.png", gray(1))
    write_png(tmp_path / "q" / nfd / "1.png", gray(2))
    ep = load_image_folders(tmp_path / "s", tmp_path / "q", Preprocess(mode="L", size=(6, 6)))
    assert ep.has_query_labels and ep.class_names == ["b", nfc]


def test_empty_class_folders_are_named_in_a_warning(tmp_path: Path, write_png) -> None:
    from metamem.data.folder import EmptyClassFolderWarning

    write_png(tmp_path / "d" / "a" / "0.png", gray(0))
    write_png(tmp_path / "d" / "b" / "0.png", gray(1))
    (tmp_path / "d" / "cat").mkdir()
    (tmp_path / "d" / "dog").mkdir()
    (tmp_path / "d" / "dog" / "notes.txt").write_text("no images here")
    (tmp_path / "d" / ".git").mkdir()  # hidden: not a class, no word
    with pytest.warns(EmptyClassFolderWarning, match=r"2 class folder\(s\) hold no images and are "
                      r"left out: 'cat', 'dog'$"):
        ds = load(tmp_path / "d")
    assert ds.class_names == ["a", "b"]
    import warnings

    (tmp_path / "d" / "cat").rmdir()
    (tmp_path / "d" / "dog" / "notes.txt").unlink()
    (tmp_path / "d" / "dog").rmdir()
    with warnings.catch_warnings():
        warnings.simplefilter("error", EmptyClassFolderWarning)
        load(tmp_path / "d")
