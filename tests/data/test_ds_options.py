"""The benchmark image loaders' shared options (metamem.data.options): what their published
signatures say, and that ``metamem validate`` reads each loader's keys from it, live and
through the cached manifest."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest
import yaml

import metamem.data  # noqa: F401  (fill the registry)
from metamem.config import ConfigError, load_config
from metamem.data import DATASETS, DatasetError, ImageDataset
from metamem.data.options import ImageOptions, image_loader
from metamem.evaluation.trained_run import check_loader_options
from metamem.manifest import _spec_from_json, _spec_to_json, spec_of
from metamem.registry import Registry, builder_hints
from metamem.validate import check_builder_kwargs, validate_config

_COMMON = "image_size, split_dir, cache_dir, cache"
#: loader -> (builder name, default image_size, its keys in signature order, one own option)
LOADERS = {
    "cifar_fs": ("load_cifar_fs", 32, f"root, {_COMMON}", {}),
    "fc100": ("load_fc100", 32, f"root, {_COMMON}", {}),
    "cub": ("load_cub", 84, f"root, {_COMMON}", {}),
    "mini_imagenet": ("load_mini_imagenet", 84, f"root, layout, {_COMMON}", {"layout": "zip"}),
    "tiered_imagenet": ("load_tiered_imagenet", 84, f"root, layout, channel_order, {_COMMON}",
                        {"layout": "npz", "channel_order": "rgb"}),
}


def _config(tmp_path: Path, name: str, options: dict) -> Path:
    path = tmp_path / "e.yaml"
    path.write_text(yaml.safe_dump({
        "data": {"name": name, "options": options},
        "learner": {"name": "protonet"},
        "train": {"steps": 1, "optimizer": {"name": "adam", "lr": 0.01}},
    }))
    return path


@pytest.mark.parametrize("name", sorted(LOADERS))
def test_signature_lists_every_option_with_its_default(name: str) -> None:
    builder_name, size, keys, _ = LOADERS[name]
    loader = DATASETS.get(name)
    params = inspect.signature(loader).parameters
    assert loader.__name__ == builder_name
    assert list(params) == ["split", *keys.split(", ")]
    assert params["split"].default == "train" and params["image_size"].default == size
    assert all(p.kind is p.KEYWORD_ONLY for k, p in params.items() if k != "split")
    hints = builder_hints(loader)
    assert hints["image_size"] is int and hints["cache"] is bool and hints["return"] is ImageDataset


@pytest.mark.parametrize("name", sorted(LOADERS))
def test_validate_accepts_known_and_refuses_unknown_loader_options(tmp_path: Path, name: str) -> None:
    builder_name, _, keys, own = LOADERS[name]
    known = {"root": str(tmp_path), "image_size": 16, "split_dir": str(tmp_path), "cache_dir": str(tmp_path),
             "cache": False, **own}
    path = _config(tmp_path, name, known)
    validate_config(load_config(path), source=str(path))
    refused = re.escape(f"data.options.image_sise: unknown key for {builder_name}; allowed keys: {keys}")
    with pytest.raises(ConfigError, match=refused):
        validate_config(load_config(path, ["data.options.image_sise=16"]), source=str(path))
    with pytest.raises(ConfigError, match=r"data\.options\.image_size: expected int, got 'big'"):
        validate_config(load_config(path, ["data.options.image_size=big"]), source=str(path))
    check_loader_options(name, known, section="eval.data_options")
    with pytest.raises(ConfigError, match=refused.replace("data\\.options", "eval\\.data_options")):
        check_loader_options(name, {"image_sise": 16}, section="eval.data_options")


@pytest.mark.parametrize("name", sorted(LOADERS))
def test_the_cached_manifest_sees_the_same_options(name: str) -> None:
    builder_name, _, keys, own = LOADERS[name]
    spec = _spec_from_json(name, _spec_to_json(spec_of(name, DATASETS.get(name))))
    assert list(spec.signature.parameters) == ["split", *keys.split(", ")]
    check_builder_kwargs(spec, {"image_size": 16, "cache": False, **own}, section="data.options", source="c.yaml",
                         injected={"split": "train"})
    with pytest.raises(ConfigError, match=f"unknown key for {builder_name}; allowed keys: {keys}"):
        check_builder_kwargs(spec, {"size": 16}, section="data.options", source="c.yaml", injected={"split": "train"})


@pytest.mark.parametrize("name", sorted(LOADERS))
def test_a_direct_call_checks_split_image_size_and_keywords(name: str) -> None:
    builder_name, _, _, _ = LOADERS[name]
    loader = DATASETS.get(name)
    with pytest.raises(DatasetError, match=f"{name}: unknown split 'tran'"):
        loader("tran")
    with pytest.raises(DatasetError, match=f"{name}: image_size must be a positive int, got 0"):
        loader("train", image_size=0)
    with pytest.raises(TypeError, match=rf"{builder_name}\(\) got an unexpected keyword argument 'image_sise'"):
        loader("train", image_sise=16)


def test_image_loader_passes_the_checked_split_options_and_own_keywords(monkeypatch: pytest.MonkeyPatch) -> None:
    registry: Registry = Registry("dataset")
    monkeypatch.setattr("metamem.data.options.DATASETS", registry)
    seen = []

    @image_loader("toy", image_size=12)
    def load_toy(split: str, options: ImageOptions, *, flavour: str = "plain") -> ImageDataset:
        """A toy loader."""
        seen.append((split, options, flavour))
        raise DatasetError("stop")

    assert registry.get("toy") is load_toy and load_toy.__doc__ == "A toy loader."
    assert list(inspect.signature(load_toy).parameters) == ["split", "root", "flavour", *_COMMON.split(", ")]
    with pytest.raises(DatasetError, match="stop"):
        load_toy(None, cache=False, flavour="sour")
    assert seen == [("train", ImageOptions(image_size=12, cache=False), "sour")]
    with pytest.raises(ValueError, match="needs \\(split, options, \\*, own keyword options\\)"):
        image_loader("bad")(lambda split, options, extra: None)  # type: ignore[arg-type,return-value]
