"""A trained run as one object: its learner, its preprocessing, its protocol, any dataset.

::

    import metamem
    run = metamem.load_run("runs/mann_quick")              # device="auto"
    res = run.evaluate()                                   # the run's own test protocol
    shapes = run.dataset("folder", root="runs/shapes")       # the run's preprocessing applied
    res = run.evaluate(shapes, n_way=5, k_shot=1, n_query=5)

:meth:`Run.dataset` loads any registered dataset with the run's preprocessing: the image
size and channels of the checkpoint, and the inversion of its training data (Omniglot is
loaded as white strokes on black, so a folder of dark drawings on white is inverted too).
Pixel values are scaled to [0, 1] by the sampler for every dataset alike. It then compares
the new data's pixel statistics with the training data's (:mod:`metamem.data.stats`) and
warns (:class:`DataMismatchWarning`) when they are far apart: opposite polarity, mean ink
off by more than 2x, mean pixel value off by more than 0.25.

The evaluation settings come from the run's ``eval:`` section (the protocol its training
ended with), changed by keyword arguments, through :func:`metamem.config.eval_protocols`,
which training's final evaluation and ``metamem eval`` use too.
"""

from __future__ import annotations

import inspect
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from metamem.config import ExperimentCfg, config_from_dict, config_to_dict, eval_protocols
from metamem.data.base import DATASETS, DatasetError, ImageDataset, load_dataset
from metamem.data.stats import compare_pixel_stats, pixel_stats
from metamem.device import resolve_device
from metamem.evaluation.scoring import EvalResult, evaluate
from metamem.runs import dataset_for, learner_from_checkpoint, load_checkpoint

__all__ = ["DataMismatchWarning", "Run", "check_loader_options", "load_run"]

#: ``info`` key of a dataset :meth:`Run.dataset` made and checked (the run's path)
_CHECKED = "checked_against_run"


def _invert_fix(inverted: bool) -> str:
    """The polarity advice for data loaded with ``invert=inverted``: the opposite."""
    flip = not inverted
    return f"invert={flip} (CLI: data.options.invert={str(flip).lower()})"


class DataMismatchWarning(UserWarning):
    """New data whose pixel statistics are far from the run's training data."""


def _loader_keys(name: str) -> list[str] | None:
    """The options the loader of dataset ``name`` takes (``split`` aside), in signature
    order; ``None`` when it takes any (``**kwargs``) or has no readable signature."""
    try:
        params = inspect.signature(DATASETS.get(name)).parameters.values()
    except (TypeError, ValueError):
        return None
    if any(p.kind == p.VAR_KEYWORD for p in params):
        return None
    return [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name != "split"]


def _accepts(name: str) -> set[str]:
    keys = _loader_keys(name)
    return {"image_size", "channels", "invert"} if keys is None else set(keys)


def check_loader_options(name: str, options: dict[str, Any], *, section: str, source: str | None = None) -> None:
    """Refuse a loader option that the loader of dataset ``name`` does not take, in one line
    naming its key path and the allowed keys, as a typo in a config is refused.

    Args:
        name: the registered dataset.
        options: the loader options given.
        section: their dotted path (``data.options``, ``eval.data_options``).
        source: where they were given (an override, a call), named first when given.

    Raises:
        ConfigError: ``SOURCE: SECTION.KEY: unknown key for LOADER; allowed keys: ...``.
    """
    from metamem.config import ConfigError

    keys = _loader_keys(name)
    for key in options:
        if keys is not None and key not in keys:
            loader = getattr(DATASETS.get(name), "__name__", name)
            raise ConfigError(f"{source + ': ' if source else ''}{section}.{key}: unknown key for "
                              f"{loader}; allowed keys: {', '.join(keys)}")


@dataclass
class Run:
    """A trained run: the learner (eval mode), the resolved config and the input shape.

    Attributes:
        path: the run directory or checkpoint file.
        learner: the trained learner, in eval mode on ``device``.
        config: the resolved config the run was trained with.
        image_shape: ``(C, H, W)`` of the images the learner reads.
        device: where the learner is.
    """

    path: Path
    learner: torch.nn.Module
    config: ExperimentCfg
    image_shape: tuple[int, int, int]
    device: torch.device
    _train_data: ImageDataset | None = field(default=None, repr=False)
    _train_stats: dict[str, Any] | None = field(default=None, repr=False)

    # ------------------------------------------------------------------ data
    @property
    def data_name(self) -> str:
        return self.config.data.name

    def training_data(self) -> ImageDataset:
        """The run's training split (decode cache; loaded once)."""
        if self._train_data is None:
            self._train_data = self._own_split("train")
        return self._train_data

    def _own_split(self, split: str, options: dict[str, Any] | None = None) -> ImageDataset:
        return dataset_for(self.config, split, source=str(self.path), options=options)

    @property
    def preprocess(self) -> dict[str, Any]:
        """What :meth:`dataset` applies to other data: ``image_size``, ``channels``,
        ``invert`` (from the training data's loader) and the [0, 1] scaling."""
        c, h, _ = self.image_shape
        try:
            invert = bool((self.training_data().info.get("preprocess") or {}).get("invert", False))
        except (DatasetError, FileNotFoundError, ValueError):
            invert = bool(self.config.data.options.get("invert", False))
        return {"image_size": h, "channels": c, "invert": invert, "scale": "pixel / 255"}

    def training_stats(self) -> dict[str, Any] | None:
        """:func:`~metamem.data.stats.pixel_stats` of the training split (``None`` when it
        cannot be loaded here)."""
        if self._train_stats is None:
            try:
                self._train_stats = pixel_stats(self.training_data())
            except (DatasetError, FileNotFoundError, ValueError):
                return None
        return self._train_stats

    def dataset(self, name: str | None = None, split: str | None = None, *,
                check: bool = True, **options: Any) -> ImageDataset:
        """A dataset split prepared the way the run's training data was.

        Args:
            name: a registered dataset (``"folder"``, ``"omniglot"``...); ``None``: the run's
                own dataset, whose ``train``/``val``/``test`` name its configured splits.
            split: the split (``None``: ``test`` for the run's own data, every class of a folder).
            check: compare pixel statistics with the training data and warn.
            **options: loader options; they win over the run's preprocessing (for instance
                ``invert=False`` for a folder of light drawings on dark).

        Raises:
            DatasetError: for images that do not come out at the run's image shape.
        """
        if name is None or (name == self.data_name and not options):
            return self._own_split(split or "test")
        check_loader_options(name, options, section="options", source=f"Run.dataset({name!r})")
        accepted = _accepts(name)
        prep = {k: v for k, v in self.preprocess.items() if k in accepted}
        ds = load_dataset(name, split=split, **{**prep, **options})
        if check:
            self.check_data(ds, fix=_invert_fix(bool({**prep, **options}.get("invert", False))))
            ds.info[_CHECKED] = str(self.path)  # evaluate() does not check (and warn) again
        return ds

    def check_data(self, ds: ImageDataset, *, fix: str | None = None) -> list[str]:
        """Check ``ds`` against the run: the image shape (an error), then the pixel
        statistics (one :class:`DataMismatchWarning` per difference, also returned).

        ``fix`` is the polarity advice; by default the opposite of the inversion ``ds`` was
        loaded with (``ds.info["preprocess"]["invert"]``, else not inverted)."""
        if fix is None:
            fix = _invert_fix(bool((ds.info.get("preprocess") or {}).get("invert", False)))
        if tuple(ds.image_shape) != tuple(self.image_shape):
            raise DatasetError(
                f"dataset {ds.name!r} gives images of shape {tuple(ds.image_shape)} but run "
                f"{self.path} reads {tuple(self.image_shape)}; load it with "
                f"image_size={self.image_shape[1]} and channels={self.image_shape[0]}"
            )
        trained = self.training_stats()
        if trained is None:
            return []
        where = str(ds.info.get("source") or f"dataset {ds.name!r}")
        msgs = compare_pixel_stats(trained, pixel_stats(ds), what=where, fix=fix)
        for m in msgs:
            warnings.warn(m, DataMismatchWarning, stacklevel=3)
        return msgs

    # ------------------------------------------------------------------ scoring
    @property
    def eval_settings(self) -> dict[str, Any]:
        """The run's ``eval:`` section (the protocol its training ended with)."""
        return config_to_dict(self.config.eval)  # type: ignore[no-any-return]

    def evaluate(self, dataset: ImageDataset | None = None, *, progress: bool | None = None,
                 **settings: Any) -> EvalResult:
        """Score the run on the fixed episodes of its ``eval:`` protocol, changed by
        ``settings`` (``n_way``, ``k_shot``, ``n_query``, ``episodes``, ``seed``,
        ``protocol``, ``batch_size``, ``within_group``, ``split``, ``data_options``).

        Args:
            dataset: the data (default: the run's own ``split``, ``test`` unless given);
                one from another source is checked with :meth:`check_data`.
            progress: a tqdm bar (``None``: on a terminal, for work over a few seconds).
        """
        sweeps = {k: v for k, v in self.eval_settings.items() if isinstance(v, list) and k not in settings}
        if sweeps:
            k, v = next(iter(sweeps.items()))
            raise ValueError(f"the run's eval.{k} is a sweep {v}; pass one value, e.g. {k}={v[0]}")
        (resolved,), notes = eval_protocols(self.eval_settings, {k: [v] for k, v in settings.items()})
        for n in notes:
            warnings.warn(n, UserWarning, stacklevel=2)
        split = resolved.pop("split", "test")
        data_options = resolved.pop("data_options", None) or {}
        if data_options:
            check_loader_options(self.data_name, data_options, section="data_options", source="Run.evaluate")
        if dataset is None:
            dataset = self._own_split(split, data_options)
        elif dataset.name != self.data_name and dataset.info.get(_CHECKED) != str(self.path):
            self.check_data(dataset)
        return evaluate(self.learner, dataset, device=self.device, progress=progress,
                        config=config_to_dict(self.config), source=str(self.path),
                        data_options=data_options or None, **resolved)

    def __repr__(self) -> str:
        name = self.config.learner.name if self.config.learner else "?"
        return f"Run({str(self.path)!r}, learner={name!r}, image_shape={self.image_shape}, device={self.device})"


def load_run(path: str | os.PathLike[str], device: str | torch.device = "auto", *,
             weights: str | os.PathLike[str] | None = None, sha256: str | None = None) -> Run:
    """Load a trained run directory (its ``checkpoints/best.pt``, else ``last.pt``, else the
    weights its ``checkpoints/weights.yaml`` points at) or a checkpoint file: the one loader
    of trained runs.

    Args:
        path: the run directory or ``.pt`` file.
        device: ``"auto"`` (CUDA when available, else CPU), ``"cpu"``, ``"cuda"``...
        weights: the run's weights from elsewhere: an http(s) URL (downloaded once into the
            cache, checked against ``sha256``), a checkpoint file or a folder holding one
            (:func:`metamem.runs.fetch_weights`); they must fit the run's config.
        sha256: the sha256 of ``weights`` (required for a URL).

    Raises:
        FileNotFoundError: for a missing run or checkpoint.
        CheckpointError: for a file that is not a metamem checkpoint, or weights that do not
            fit the learner its config describes.
        ConfigError: for a saved config this version cannot read.
        RuntimeError: for a CUDA device on a machine without CUDA (one line).
    """
    ckpt = load_checkpoint(path, weights=weights, sha256=sha256)
    dev = resolve_device(device)
    config = config_from_dict(ckpt["config"], source=f"{ckpt['path']} (its config)")
    learner = learner_from_checkpoint(ckpt).to(dev).eval()
    c, h, w = (int(v) for v in ckpt["image_shape"])
    return Run(Path(path), learner, config, (c, h, w), dev)
