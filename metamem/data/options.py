"""The options every benchmark image loader shares, declared once.

CIFAR-FS, FC100, CUB, mini-ImageNet and tiered-ImageNet all read a published split list,
decode the images at one side length through the decode cache, and take the same keyword
options for that (``data.options`` in a config): ``root``, ``image_size``, ``split_dir``,
``cache_dir`` and ``cache``. :class:`ImageOptions` holds them (names, types, defaults) and
:func:`image_loader` turns a loader body ``body(split, options, *, own_option=...)`` into the
registered builder ``loader(split="train", *, root=None, <own options>, image_size=...,
split_dir=None, cache_dir=None, cache=True)``, whose signature and annotations
``inspect.signature`` and ``typing.get_type_hints`` read (``metamem validate``, ``metamem
ls``), exactly as if each loader had written them out.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from metamem.data.base import DATASETS, ImageDataset, check_image_size, check_split
from metamem.data.cache import Decoded, decoded_dataset
from metamem.data.paths import dataset_dir, split_file
from metamem.registry import builder_hints

__all__ = ["ImageOptions", "image_loader"]


@dataclass(frozen=True)
class ImageOptions:
    """The shared keyword options of the benchmark image loaders.

    Attributes:
        root: the dataset's data folder (default ``$METAMEM_DATA/<dataset>`` or
            ``~/.cache/metamem/data/<dataset>``; ``metamem prepare`` puts the files there).
        image_size: output side; images are resized with PIL LANCZOS.
        split_dir: folder of the split lists (default the bundled published split); tests
            and custom splits point it elsewhere.
        cache_dir: decode cache root (default ``$METAMEM_CACHE`` or ``~/.cache/metamem``).
        cache: ``False`` decodes without using the cache.
    """

    root: str | os.PathLike[str] | None = None
    image_size: int = 84
    split_dir: str | os.PathLike[str] | None = None
    cache_dir: str | os.PathLike[str] | None = None
    cache: bool = True

    def data_dir(self, folder: str) -> Path:
        """``root`` if given, else the dataset's ``folder`` under the data root."""
        return dataset_dir(self.root, folder)

    def split_list(self, dataset: str, name: str) -> Path:
        """The split list file ``name`` in ``split_dir``, else in the bundled ``datasets/<dataset>``."""
        return split_file(self.split_dir, dataset, name)

    def material(self, dataset: str, split: str, **more: Any) -> dict[str, Any]:
        """The decode cache's key material: the dataset, split, ``more`` (source hashes,
        layout...) and the output size and resampling filter."""
        return {"dataset": dataset, "split": split, **more, "image_size": self.image_size, "resample": "lanczos"}

    def dataset(
        self, dataset: str, split: str, material: dict[str, Any], build: Callable[[], Decoded], *,
        source: str, layout: str, split_path: Path, info: dict[str, Any] | None = None,
    ) -> ImageDataset:
        """The loader's last step: :func:`~metamem.data.cache.decoded_dataset` through this
        cache, with ``info`` holding ``source``, ``layout``, ``split_file`` and ``image_size``.

        ``info`` (a new dict by default) is filled here and read after the decode, so
        ``build`` may add to a dict the loader passes (mini-ImageNet's ``decode_s``).
        """
        info = {} if info is None else info
        info.update(source=source, layout=layout, split_file=str(split_path), image_size=self.image_size)
        return decoded_dataset(dataset, split, material, build, info=info, cache_dir=self.cache_dir,
                               cache=self.cache)


_COMMON = tuple(f.name for f in dataclasses.fields(ImageOptions))


def image_loader(
    name: str, *, image_size: int = 84
) -> Callable[[Callable[..., ImageDataset]], Callable[..., ImageDataset]]:
    """Decorator registering a loader body that takes :class:`ImageOptions` as dataset ``name``.

    The body is ``body(split, options: ImageOptions, *, <own keyword options>)``; what
    :data:`~metamem.data.DATASETS` holds is ``loader(split="train", *, root, <own options>,
    image_size, split_dir, cache_dir, cache)`` (where the files are and how they are laid out
    first), with the defaults of :class:`ImageOptions` (``image_size`` as given here) and the
    body's own. The loader checks ``split`` (:func:`~metamem.data.base.check_split`) and
    ``image_size`` (:func:`~metamem.data.base.check_image_size`) and passes the body the
    checked split, the options and its own keywords; an unknown keyword is the body's
    ``TypeError``.

    Args:
        name: the registered dataset name (also the one its error messages start with).
        image_size: this dataset's default output side.
    """
    defaults = ImageOptions(image_size=image_size)

    def deco(body: Callable[..., ImageDataset]) -> Callable[..., ImageDataset]:
        body_params = list(inspect.signature(body).parameters.values())
        own = [p for p in body_params[2:] if p.kind is p.KEYWORD_ONLY]
        if len(body_params) < 2 or len(own) != len(body_params) - 2:
            raise ValueError(f"image_loader on {body.__qualname__}: needs (split, options, *, own keyword options)")
        hints = {**builder_hints(ImageOptions), **builder_hints(body), "split": str | None, "return": ImageDataset}
        common = {f: inspect.Parameter(f, inspect.Parameter.KEYWORD_ONLY, default=getattr(defaults, f))
                  for f in _COMMON}
        split = inspect.Parameter("split", inspect.Parameter.POSITIONAL_OR_KEYWORD, default="train")
        params = [p.replace(annotation=hints[p.name])
                  for p in (split, common.pop("root"), *own, *common.values())]

        @functools.wraps(body)
        def loader(split: str | None = "train", **options: Any) -> ImageDataset:
            opts = dataclasses.replace(defaults, **{k: options.pop(k) for k in _COMMON if k in options})
            checked = check_split(name, split)
            check_image_size(name, opts.image_size)
            return body(checked, opts, **options)

        loader.__signature__ = inspect.Signature(params, return_annotation=ImageDataset)  # type: ignore[attr-defined]
        loader.__annotations__ = {p.name: p.annotation for p in params} | {"return": ImageDataset}
        return DATASETS.register(name)(loader)

    return deco
