"""Scoring a learner on episodes you provide: tensors, or folders of images.

Two ways in:

* :func:`episode_from_tensors` builds a one-episode :class:`~metamem.types.EpisodeBatch`
  from ``support_x [S, C, H, W]``, ``support_y [S]``, ``query_x [Qn, C, H, W]`` (and
  optionally ``query_y [Qn]``).
* :func:`load_image_folders` reads a support folder (one sub-folder per class, its name is
  the class name) and a query folder (images, or one sub-folder per class when the query
  labels are known) and preprocesses the images like the learner's training data
  (:class:`Preprocess`: grayscale or RGB, inversion for Omniglot, resize).

:func:`predict_episode` then returns the predicted label of every query and, when the query
labels are known, the accuracy.
"""

from __future__ import annotations

import os
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image

from metamem.data.base import ImageDataset
from metamem.data.folder import nfc_names
from metamem.data.sources import IMAGE_EXTENSIONS, image_to_array
from metamem.evaluation.scoring import _learner_device, learner_name
from metamem.learners.capabilities import SetPrediction
from metamem.types import EpisodeBatch

__all__ = [
    "EpisodeInputError",
    "Predictions",
    "Preprocess",
    "UserEpisode",
    "episode_from_tensors",
    "load_image_folders",
    "predict_episode",
]



class EpisodeInputError(ValueError):
    """User-provided episode data that cannot be scored as given."""


def _shape_str(shape: tuple[int, ...]) -> str:
    return "x".join(str(int(s)) for s in shape)


@dataclass(frozen=True)
class Preprocess:
    """How raw images become the learner's inputs (as for its training data).

    Attributes:
        mode: ``"L"`` (grayscale, C=1) or ``"RGB"`` (C=3).
        size: ``(H, W)`` of the training images.
        invert: ``255 - x`` before resizing (Omniglot: strokes become 255).
        resample: PIL resampling filter name (``"lanczos"``, ``"box"``, ``"bilinear"``).
    """

    mode: Literal["L", "RGB"]
    size: tuple[int, int]
    invert: bool = False
    resample: str = "lanczos"

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return (1 if self.mode == "L" else 3, *self.size)

    @classmethod
    def like(cls, dataset: ImageDataset) -> Preprocess:
        """The preprocessing of ``dataset``: channels and size from its images, inversion and
        resampling from ``dataset.info`` (keys ``invert``/``resample``, also looked up under
        ``info["preprocess"]``); Omniglot is inverted when its info does not say."""
        c, h, w = dataset.image_shape
        if c not in (1, 3):
            raise EpisodeInputError(
                f"dataset {dataset.name!r} has {c}-channel images; only 1 (grayscale) or 3 "
                "(RGB) channels can be read from image files"
            )
        info = dict(dataset.info.get("preprocess") or {}, **dataset.info)
        invert = bool(info.get("invert", dataset.name == "omniglot"))
        return cls(
            mode="L" if c == 1 else "RGB", size=(h, w), invert=invert,
            resample=str(info.get("resample", "lanczos")),
        )

    def load(self, path: Path, *, resize: bool = True) -> np.ndarray:
        """Read one image file as uint8 ``[C, H, W]``.

        Raises:
            EpisodeInputError: for an unreadable file, or (``resize=False``) an image whose
                size differs from the training size (both sizes are named).
        """
        h, w = self.size
        if h != w:
            raise EpisodeInputError(
                f"the training images are {h}x{w} (HxW); only square sizes can be read from files"
            )
        try:
            with Image.open(path) as img:
                if not resize and (img.height, img.width) != self.size:
                    raise EpisodeInputError(
                        f"image {path} is {img.height}x{img.width} (HxW) but the learner was "
                        f"trained on {h}x{w} images; resize it or pass resize=True"
                    )
                # the data helper's decoder: convert, invert, then resize (as for the dataset)
                return image_to_array(
                    img, mode=self.mode, size=h, invert=self.invert,
                    resample=getattr(Image.Resampling, self.resample.upper()),
                )
        except EpisodeInputError:
            raise
        except Exception as e:  # PIL raises OSError, SyntaxError, ValueError, struct.error...
            raise EpisodeInputError(
                f"cannot read image {path} ({type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}); "
                "replace or remove it"
            ) from None


@dataclass
class UserEpisode:
    """One user-provided episode.

    Attributes:
        batch: the episode as a one-episode :class:`EpisodeBatch` (``B = 1``; support items
            class-major, ``k_shot`` the smallest number of shots of a class).
        class_names: name of each label 0..N-1.
        query_names: a name for each query (file path, or ``"query[i]"``).
        has_query_labels: whether ``batch.query_y`` holds real labels.
    """

    batch: EpisodeBatch
    class_names: list[str]
    query_names: list[str]
    has_query_labels: bool


def _as_images(images: Any, what: str) -> torch.Tensor:
    x = torch.as_tensor(images)
    if x.dim() != 4:
        raise EpisodeInputError(f"{what} must be [count, C, H, W], got shape {tuple(x.shape)}")
    if x.dtype == torch.uint8:
        return x.float() / 255.0
    if not x.is_floating_point():
        raise EpisodeInputError(f"{what} must be float in [0, 1] or uint8, got {x.dtype}")
    return x.float()


def _as_labels(labels: Any, count: int, what: str, images: str) -> torch.Tensor:
    y = torch.as_tensor(labels)
    if y.dim() != 1 or y.numel() != count:
        raise EpisodeInputError(
            f"{what} has {y.numel()} labels (shape {tuple(y.shape)}) but {images} has {count} "
            f"images; give exactly one label per image"
        )
    if y.is_floating_point() or y.dtype == torch.bool:
        raise EpisodeInputError(f"{what} must hold integer labels, got {y.dtype}")
    return y.to(torch.int64)


def episode_from_tensors(
    support_x: Any,
    support_y: Any,
    query_x: Any,
    query_y: Any = None,
    *,
    image_shape: tuple[int, int, int] | None = None,
    class_names: list[str] | None = None,
) -> UserEpisode:
    """Build one episode from tensors.

    Args:
        support_x: float in [0, 1] or uint8 ``[S, C, H, W]``.
        support_y: int ``[S]`` labels 0..N-1, every label present at least once.
        query_x: ``[Qn, C, H, W]`` like ``support_x``.
        query_y: optional int ``[Qn]`` labels (to get an accuracy).
        image_shape: ``(C, H, W)`` the learner was trained on; checked when given.
        class_names: optional name of each label.

    Raises:
        EpisodeInputError: mismatched labels and images, labels that are not ``0..N-1``,
            or images whose size differs from ``image_shape`` (both sizes are named).
    """
    sx = _as_images(support_x, "support_x")
    qx = _as_images(query_x, "query_x")
    sy = _as_labels(support_y, sx.shape[0], "support_y", "support_x")
    if sx.shape[0] == 0:
        raise EpisodeInputError("support_x holds no images; give at least one per class")
    if sx.shape[1:] != qx.shape[1:]:
        raise EpisodeInputError(
            f"support images are {_shape_str(sx.shape[1:])} (CxHxW) but query images are "
            f"{_shape_str(qx.shape[1:])}; give images of one size"
        )
    if image_shape is not None and tuple(sx.shape[1:]) != tuple(image_shape):
        raise EpisodeInputError(
            f"the episode's images are {_shape_str(sx.shape[1:])} (CxHxW) but the learner was "
            f"trained on {_shape_str(image_shape)} images; resize them to "
            f"{_shape_str(image_shape[1:])} (or load folders with resize=True)"
        )
    if int(sy.min()) < 0:
        raise EpisodeInputError(f"support_y holds a negative label {int(sy.min())}; use 0..N-1")
    n_way = int(sy.max()) + 1
    counts = torch.bincount(sy, minlength=n_way)
    missing = (counts == 0).nonzero().flatten().tolist()
    if missing:
        raise EpisodeInputError(
            f"support_y must use every label 0..{n_way - 1} at least once; missing {missing}"
        )
    names = list(class_names) if class_names is not None else [str(i) for i in range(n_way)]
    if len(names) != n_way:
        raise EpisodeInputError(
            f"{len(names)} class_names given for {n_way} support labels; give one per label"
        )
    has_qy = query_y is not None
    if has_qy:
        qy = _as_labels(query_y, qx.shape[0], "query_y", "query_x")
        bad = ((qy < 0) | (qy >= n_way)).nonzero().flatten().tolist()
        if bad:
            raise EpisodeInputError(
                f"query_y[{bad[0]}] = {int(qy[bad[0]])} is not a support label 0..{n_way - 1}"
            )
    else:
        qy = torch.zeros(qx.shape[0], dtype=torch.int64)
    order = torch.argsort(sy, stable=True)  # class-major, as in sampled episodes
    minus = torch.full((1, 1), -1, dtype=torch.int64)
    batch = EpisodeBatch(
        support_x=sx[order][None],
        support_y=sy[order][None],
        query_x=qx[None],
        query_y=qy[None],
        classes=torch.arange(n_way)[None],
        support_index=minus.expand(1, sx.shape[0]),
        query_index=minus.expand(1, qx.shape[0]),
        episode_keys=torch.zeros(1, dtype=torch.int64),
        n_way=n_way,
        k_shot=int(counts.min()),
        n_query=0,
    )
    return UserEpisode(batch, names, [f"query[{i}]" for i in range(qx.shape[0])], has_qy)


def _visible(folder: Path) -> list[Path]:
    """Entries of ``folder`` except hidden ones (``.ipynb_checkpoints/``, ``.DS_Store``)."""
    return sorted(p for p in folder.iterdir() if not p.name.startswith("."))


def _images_in(folder: Path) -> list[Path]:
    return [p for p in _visible(folder) if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS]


def _class_dirs(folder: Path) -> list[str]:
    return [p.name for p in _visible(folder) if p.is_dir()]


def load_image_folders(
    support_dir: str | os.PathLike[str],
    query_dir: str | os.PathLike[str],
    preprocess: Preprocess,
    *,
    resize: bool = True,
) -> UserEpisode:
    """Read an episode from folders of images.

    Args:
        support_dir: one sub-folder per class (sorted names give labels 0..N-1), each
            holding that class's support images.
        query_dir: the query images; or one sub-folder per class named like the support
            classes, when the query labels are known (then an accuracy is reported).
        preprocess: how to turn files into the learner's inputs (``Preprocess.like(ds)``).
        resize: resize images to the training size; with ``False`` an image of another
            size is an error naming both sizes.

    Raises:
        EpisodeInputError: naming the folder or file at fault.
    """
    sdir, qdir = Path(support_dir), Path(query_dir)
    for d, what in ((sdir, "support"), (qdir, "query")):
        if not d.is_dir():
            raise EpisodeInputError(f"{what} folder {d} does not exist or is not a folder")
    classes = _class_dirs(sdir)
    if not classes:
        raise EpisodeInputError(
            f"support folder {sdir} has no class sub-folders; put each class's images in "
            f"{sdir}/<class name>/"
        )
    loose = _images_in(sdir)
    if loose:
        raise EpisodeInputError(
            f"support image {loose[0]} lies beside the class folders, where it has no class; "
            f"move it into {sdir}/<class name>/"
        )
    label_of = {name: i for i, name in enumerate(nfc_names(sdir, classes, EpisodeInputError))}
    sx, sy = [], []
    for label, name in enumerate(classes):
        files = _images_in(sdir / name)
        if not files:
            raise EpisodeInputError(f"support class folder {sdir / name} holds no images")
        sx += [preprocess.load(f, resize=resize) for f in files]
        sy += [label] * len(files)
    qsub = _class_dirs(qdir)
    qfiles: list[Path] = []
    qy: list[int] | None = None
    loose = _images_in(qdir)
    if qsub and loose:
        raise EpisodeInputError(
            f"query folder {qdir} mixes loose images ({loose[0].name}) with class sub-folders "
            f"({qsub[0]}/); put every query image in its class folder (labels known) or none "
            "(labels unknown)"
        )
    if qsub:
        unknown = sorted(n for n in qsub if unicodedata.normalize("NFC", n) not in label_of)
        if unknown:
            raise EpisodeInputError(
                f"query class folder {qdir / unknown[0]} names no support class; support "
                f"classes: {', '.join(classes)}"
            )
        qy = []
        for name in qsub:
            files = _images_in(qdir / name)
            qfiles += files
            qy += [label_of[unicodedata.normalize("NFC", name)]] * len(files)
    else:
        qfiles = _images_in(qdir)
    if not qfiles:
        raise EpisodeInputError(f"query folder {qdir} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
    qx = [preprocess.load(f, resize=resize) for f in qfiles]
    ep = episode_from_tensors(
        torch.from_numpy(np.stack(sx)),
        torch.tensor(sy),
        torch.from_numpy(np.stack(qx)),
        None if qy is None else torch.tensor(qy),
        image_shape=preprocess.image_shape,
        class_names=list(label_of),  # the names in NFC, in label order
    )
    ep.query_names = [str(f) for f in qfiles]
    return ep


@dataclass
class Predictions:
    """Predictions of a learner on one user episode.

    Attributes:
        logits: float ``[Qn, N]``.
        labels: int64 ``[Qn]`` predicted labels.
        class_names: name of each label.
        query_names: name of each query.
        accuracy: fraction of correct queries, or ``None`` without query labels.
    """

    logits: torch.Tensor
    labels: torch.Tensor
    class_names: list[str]
    query_names: list[str]
    accuracy: float | None

    @property
    def predicted_names(self) -> list[str]:
        return [self.class_names[int(i)] for i in self.labels]

    def table(self) -> str:
        """One line per query: ``name<TAB>predicted class``."""
        return "\n".join(f"{q}\t{c}" for q, c in zip(self.query_names, self.predicted_names, strict=True))


def predict_episode(
    learner: Any, episode: UserEpisode, *, device: torch.device | str | None = None
) -> Predictions:
    """Predict the query labels of a user episode with ``learner.predict``.

    Runs under ``torch.no_grad()`` with the learner in eval mode (its mode is restored).
    """
    if not isinstance(learner, SetPrediction):
        raise TypeError(f"learner {learner_name(learner)} has no set prediction (predict()); it cannot score an episode")
    dev = torch.device(device) if device is not None else _learner_device(learner)
    batch = episode.batch.to(dev)
    training = isinstance(learner, torch.nn.Module) and learner.training
    if isinstance(learner, torch.nn.Module):
        learner.eval()
    try:
        with torch.no_grad():
            logits = learner.predict(
                batch.support_x, batch.support_y, batch.query_x, n_way=batch.n_way
            )
    finally:
        if isinstance(learner, torch.nn.Module):
            learner.train(training)
    logits = logits[0].cpu()
    acc = None
    if episode.has_query_labels:
        acc = float((logits.argmax(-1) == episode.batch.query_y[0]).to(torch.float64).mean())
    return Predictions(logits, logits.argmax(-1), episode.class_names, episode.query_names, acc)
