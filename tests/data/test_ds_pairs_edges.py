"""from_pairs never corrupts data silently: every label and pixel value is stored exactly,
or the call fails with one line naming the item index and the fix. Specific cases first,
then hypothesis properties over label kinds, value types and shapes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from metamem.data import from_pairs
from metamem.data.base import DatasetError

IMG = np.linspace(0, 1, 25).reshape(5, 5)


@pytest.mark.parametrize("pairs, match", [
    # float labels were truncated: 0.2 and 0.7 both became class 0
    ([(IMG, 0.2), (IMG, 0.7)], r"item 0: label 0.2 is not a whole number"),
    ([(IMG, 1), (IMG, float("nan"))], r"item 1: label nan is not a whole number"),
    # normalized floats were clipped to 0 (51% zeros), 0-255 floats saturated
    ([(IMG * 4 - 2, 0)], r"item 0: float image values span \[-2, 2\], outside \[0, 1\] \(negative values: normalized"),
    ([(IMG, 0), (IMG * 255, 1)], r"item 1: float image values span \[0, 255\], outside \[0, 1\] \(0-255 floats\? pass value_range=\(0, 255\)\)"),
    # int64 wrapped mod 256; NaN became 0
    ([(np.full((5, 5), 300, dtype=np.int64), 0)], r"item 0: integer image values span \[300, 300\], outside 0..255 \(they would wrap\)"),
    ([(np.full((5, 5), -1, dtype=np.int16), 0)], r"item 0: integer image values span \[-1, -1\], outside 0..255 .*value_range=\(-1, 255\)"),
    ([(IMG, 0), (np.where(IMG > 0.5, np.nan, IMG), 1)], r"item 1: image holds NaN values"),
    ([(torch.full((1, 5, 5), float("inf")), 0)], r"item 0: image holds inf values"),
    # string / one-hot / None labels gave raw ValueError/TypeError with no index
    ([(IMG, 0), (IMG, np.eye(4)[2])], r"item 1: label is an array of shape \(4,\), not one class id \(one-hot\?"),
    ([(IMG, torch.tensor([0, 1, 0]))], r"item 0: label is an array of shape \(3,\)"),
    ([(IMG, 0), (IMG, None)], r"item 1: label is None"),
    ([(IMG, "cat"), (IMG, 1)], r"item 1: label 1 is a int but item 0's \('cat'\) is a str"),
    ([(IMG, True)], r"item 0: label True is a bool"),
    ([(IMG, {"y": 1})], r"item 0: label of type dict"),
    ([(IMG, 1), (np.zeros((5, 5), dtype=np.complex64), 1)], r"item 1: image values of dtype complex64 are not numbers"),
    ([(np.zeros((5, 5), dtype=object), 1)], r"item 0: image values of dtype object"),
])
def test_silent_corruptions_are_errors_naming_the_item(pairs: list, match: str) -> None:
    with pytest.raises(DatasetError, match=r"^pairs: " + match):
        from_pairs(pairs)


def test_value_range_rescales_exactly() -> None:
    ds = from_pairs([(IMG * 255, 0), (np.full((5, 5), 255.0), 1)], value_range=(0, 255))
    assert ds.images[0, 0].flatten().tolist() == np.rint(IMG.flatten() * 255).astype(int).tolist()
    assert int(ds.images[1].min()) == 255
    norm = (IMG - 0.5) / 0.25  # [-2, 2]
    ds = from_pairs([(norm, 0)], value_range=(-2, 2))
    assert ds.images[0, 0].flatten().tolist() == np.rint(IMG.flatten() * 255).astype(int).tolist()
    u16 = (IMG * 65535).astype(np.uint16)
    ds = from_pairs([(u16, 0)], value_range=(0, 65535))
    assert np.abs(ds.images[0, 0].numpy().astype(int) - np.rint(IMG * 255)).max() <= 1
    with pytest.raises(DatasetError, match=r"item 0: image values span \[-2, 2\], outside value_range=\(0, 1\)"):
        from_pairs([(norm, 0)], value_range=(0, 1))
    with pytest.raises(DatasetError, match=r"value_range must be \(lo, hi\) with finite lo < hi"):
        from_pairs([(IMG, 0)], value_range=(1, 0))


def test_exact_values_are_kept() -> None:
    """uint8 as is, integers in 0..255 losslessly, bool as 0/255, floats times 255."""
    u8 = np.arange(25, dtype=np.uint8).reshape(5, 5) * 10
    ds = from_pairs([(u8, 0), (u8.astype(np.int64), 0), (u8 > 100, 1), (u8 / 255.0, 1)])
    assert torch.equal(ds.images[0, 0], torch.from_numpy(u8))
    assert torch.equal(ds.images[1, 0], torch.from_numpy(u8))
    assert set(ds.images[2].unique().tolist()) == {0, 255}
    assert torch.equal(ds.images[3, 0], torch.from_numpy(u8))


def test_string_and_whole_number_labels() -> None:
    ds = from_pairs([(IMG, "dog"), (IMG, "cat"), (IMG, "dog")])
    assert ds.class_names == ["cat", "dog"] and ds.labels.tolist() == [1, 0, 1]
    ds = from_pairs([(IMG, 3.0), (IMG, np.int32(1)), (IMG, torch.tensor([3])), (IMG, np.array(1.0))])
    assert ds.class_names == ["1", "3"] and ds.labels.tolist() == [1, 0, 1, 0]
    with pytest.raises(DatasetError, match="class_names applies to integer labels"):
        from_pairs([(IMG, "a")], class_names=["x"])


def test_colour_after_inferred_grayscale_is_an_error() -> None:
    rgb = np.zeros((5, 5, 3), dtype=np.uint8)
    rgb[..., 0] = 200
    with pytest.raises(DatasetError, match=r"item 1 is a colour image but item 0 is grayscale .*channels=3"):
        from_pairs([(IMG, 0), (rgb, 1)])
    gray_rgb = np.repeat((IMG * 255).astype(np.uint8)[..., None], 3, axis=2)
    assert from_pairs([(IMG, 0), (gray_rgb, 1)]).image_shape == (1, 5, 5)  # no colour lost
    assert from_pairs([(IMG, 0), (rgb, 1)], channels=3).image_shape == (3, 5, 5)
    # a palette image with a colour palette is colour (it was read as grayscale)
    pal = Image.fromarray(np.stack([rgb[..., 0], IMG.astype(np.uint8) * 90, rgb[..., 2]], 2)).convert("P")
    assert from_pairs([(pal, 0)]).image_shape == (3, 5, 5)


def test_wide_pil_modes_are_range_checked() -> None:
    wide = Image.fromarray(np.full((5, 5), -1000, dtype=np.int32), mode="I")
    with pytest.raises(DatasetError, match=r"item 0: 32-bit integer image with values in \[-1000, -1000\] fits neither"):
        from_pairs([(wide, 0)])
    u16 = Image.fromarray((IMG * 65535).astype(np.uint16))
    assert u16.mode.startswith("I;16")
    got = from_pairs([(u16, 0)]).images[0, 0].numpy().astype(int)
    assert np.abs(got - np.rint(IMG * 255)).max() <= 1  # scaled, not saturated at 255
    flt = Image.fromarray(IMG.astype(np.float32), mode="F")
    with pytest.raises(DatasetError, match=r"item 0: 32-bit float image with values in \[0, 1\] is not 8-bit data"):
        from_pairs([(flt, 0)])
    small = Image.fromarray(np.full((5, 5), 7, dtype=np.int32), mode="I")
    assert int(from_pairs([(small, 0)]).images.max()) == 7


# ----------------------------------------------------------------- properties
label_values = st.one_of(
    st.integers(-3, 3), st.floats(allow_nan=True, allow_infinity=True, width=32),
    st.sampled_from(["a", "b", "c"]), st.none(), st.booleans(),
    st.builds(lambda n: np.eye(3)[n % 3], st.integers(0, 2)),
    st.builds(lambda v: np.int64(v), st.integers(0, 5)),
    st.builds(lambda v: torch.tensor(v), st.integers(0, 5)),
)
dtypes = st.sampled_from([np.uint8, np.int16, np.int64, np.uint16, np.float32, np.float64, np.bool_])


@st.composite
def images(draw: st.DrawFn) -> object:
    dtype = draw(dtypes)
    h, w = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    shape = draw(st.sampled_from([(h, w), (h, w, 1), (h, w, 3), (h, w, 4), (h, w, 2), (h,)]))
    if dtype is np.bool_:
        arr = draw(st.lists(st.booleans(), min_size=int(np.prod(shape)), max_size=int(np.prod(shape))))
    elif np.issubdtype(dtype, np.integer):
        arr = draw(st.lists(st.integers(-5, 300), min_size=int(np.prod(shape)), max_size=int(np.prod(shape))))
    else:
        value = st.one_of(st.floats(-1.5, 2.0, width=32), st.floats(0, 1, width=32),
                          st.just(float("nan")))
        arr = draw(st.lists(value, min_size=int(np.prod(shape)), max_size=int(np.prod(shape))))
    a = np.array(arr).reshape(shape)
    if np.issubdtype(dtype, np.integer):
        a = np.clip(a, np.iinfo(dtype).min, np.iinfo(dtype).max) if dtype is not np.int64 else a
    a = a.astype(dtype)
    kind = draw(st.sampled_from(["numpy", "tensor", "pil"]))
    if kind == "tensor" and a.ndim == 3 and dtype not in (np.uint16,):
        return torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1)))
    if kind == "pil" and a.dtype == np.uint8 and a.ndim == 2:
        return Image.fromarray(a)
    return a


def expected_pixels(img: object) -> np.ndarray | None:
    """The exact uint8 values from_pairs must store for a valid single-channel image, or
    None when the image must be refused (or is not single-channel)."""
    if isinstance(img, Image.Image):
        return np.asarray(img)
    a = img.numpy().transpose(1, 2, 0) if isinstance(img, torch.Tensor) else img
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[..., 0]
    if a.ndim != 2:
        return None
    if a.dtype == np.bool_:
        return a.astype(np.uint8) * 255
    if np.issubdtype(a.dtype, np.integer):
        return a.astype(np.uint8) if a.min() >= 0 and a.max() <= 255 else None
    if not np.isfinite(a).all() or a.min() < 0 or a.max() > 1:
        return None
    return np.rint(a.astype(np.float64) * 255).astype(np.uint8)


@settings(max_examples=300, derandomize=True, deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(images(), label_values), min_size=1, max_size=4))
def test_from_pairs_is_exact_or_a_one_line_metamem_error(items: list) -> None:
    try:
        ds = from_pairs(items, channels=1)
    except DatasetError as e:
        msg = str(e)
        assert "\n" not in msg and msg.startswith("pairs: ")
        return
    # accepted: every image is stored exactly, every label maps to its class
    assert ds.images.dtype == torch.uint8 and len(ds) == len(items)
    for k, (img, label) in enumerate(items):
        exp = expected_pixels(img)
        if exp is not None and exp.shape == tuple(ds.images.shape[2:]):
            assert np.array_equal(ds.images[k, 0].numpy(), exp), k
        name = ds.class_names[int(ds.labels[k])]
        if isinstance(label, str):
            assert name == label
        else:
            v = label.item() if isinstance(label, (np.ndarray, np.generic, torch.Tensor)) else label
            assert not isinstance(v, bool) and float(v).is_integer() and name == str(int(v))


@settings(max_examples=200, derandomize=True, deadline=None)
@given(st.lists(images(), min_size=1, max_size=3))
def test_invalid_pixels_are_never_accepted(imgs: list) -> None:
    """A refused image (NaN, out of range, wrong shape) never yields a dataset."""
    items = [(im, 0) for im in imgs]
    bad = [expected_pixels(im) is None for im in imgs]
    try:
        from_pairs(items, channels=1)
    except DatasetError:
        return
    for im, b in zip(imgs, bad, strict=True):
        a = im if not isinstance(im, torch.Tensor) else im.numpy().transpose(1, 2, 0)
        if b and not isinstance(im, Image.Image):
            # only colour images with valid values may be accepted (converted by channels=1)
            assert np.asarray(a).ndim == 3 and np.asarray(a).shape[2] in (3, 4)
            assert expected_pixels(np.asarray(a)[..., 0]) is not None


def test_invert_flips_the_pixels_as_the_folder_loader_does() -> None:
    img = (np.arange(35, dtype=np.uint8) * 7).reshape(5, 7)
    pairs = [(img, 0), (img[::-1].copy(), 1), (np.full((5, 7), 200, dtype=np.uint8), 1)]
    plain, inv = from_pairs(pairs), from_pairs(pairs, invert=True)
    assert torch.equal(inv.images, 255 - plain.images)
    assert (plain.info["preprocess"]["invert"], inv.info["preprocess"]["invert"]) == (False, True)
    with pytest.raises(DatasetError, match=r"pairs: invert must be True or False, got 'yes'"):
        from_pairs(pairs, invert="yes")


def test_an_exception_in_a_user_getitem_names_the_item() -> None:
    class Flaky:
        def __len__(self) -> int:
            return 5

        def __getitem__(self, i: int):  # type: ignore[no-untyped-def]
            if i == 3:
                raise FileNotFoundError("photo_0003.jpg")
            return np.zeros((4, 4), dtype=np.uint8), i % 2

    with pytest.raises(DatasetError, match=r"^pairs: Flaky\[3\] raised FileNotFoundError: photo_0003\.jpg "
                       r"\(item 3 of 5\); fix the dataset or drop that item$") as info:
        from_pairs(Flaky())
    assert isinstance(info.value.__cause__, FileNotFoundError)  # the user's traceback is kept
