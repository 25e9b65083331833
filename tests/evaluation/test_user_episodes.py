"""Scoring user-provided episodes: tensors and folders of images."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from eval_learners import NearestNeighbourLearner, OracleSetLearner
from PIL import Image

from metamem.data import ImageDataset
from metamem.evaluation import (
    EpisodeInputError,
    Preprocess,
    episode_from_tensors,
    load_image_folders,
    predict_episode,
)


def _coded_images(codes: list[int], size: int = 3) -> torch.Tensor:
    x = torch.zeros(len(codes), 1, size, size)
    x[:, 0, 0, 0] = torch.tensor(codes, dtype=torch.float32) / 255
    return x


def test_tensor_episode_predictions_and_accuracy():
    sx = _coded_images([7, 9, 7, 4])  # labels: code 7 -> 1, 9 -> 0, 4 -> 2
    sy = torch.tensor([1, 0, 1, 2])
    qx = _coded_images([4, 9, 7, 9])
    ep = episode_from_tensors(sx, sy, qx, torch.tensor([2, 0, 1, 1]), image_shape=(1, 3, 3),
                              class_names=["nine", "seven", "four"])
    b = ep.batch
    assert b.n_way == 3 and b.k_shot == 1 and b.support_y.tolist() == [[0, 1, 1, 2]]  # class-major
    pred = predict_episode(OracleSetLearner(), ep)
    assert pred.labels.tolist() == [2, 0, 1, 0]
    assert pred.predicted_names == ["four", "nine", "seven", "nine"]
    assert pred.accuracy == pytest.approx(0.75)
    assert pred.table().splitlines()[0] == "query[0]\tfour"
    no_labels = predict_episode(OracleSetLearner(), episode_from_tensors(sx, sy, qx))
    assert no_labels.accuracy is None and no_labels.labels.tolist() == [2, 0, 1, 0]


def test_tensor_episode_bad_input():
    sx, qx = _coded_images([1, 2, 3, 4]), _coded_images([1])
    with pytest.raises(EpisodeInputError, match=r"support_y has 3 labels \(shape \(3,\)\) but support_x has 4 images"):
        episode_from_tensors(sx, torch.tensor([0, 1, 1]), qx)
    with pytest.raises(EpisodeInputError, match=r"query_y has 2 labels .* query_x has 1 images"):
        episode_from_tensors(sx, torch.tensor([0, 1, 1, 0]), qx, torch.tensor([0, 1]))
    with pytest.raises(EpisodeInputError, match=r"images are 1x3x3 \(CxHxW\) but the learner was trained on 1x28x28 images; resize them to 28x28"):
        episode_from_tensors(sx, torch.tensor([0, 1, 1, 0]), qx, image_shape=(1, 28, 28))
    with pytest.raises(EpisodeInputError, match=r"every label 0..3 at least once; missing \[1, 2\]"):
        episode_from_tensors(sx, torch.tensor([0, 3, 3, 0]), qx)
    with pytest.raises(EpisodeInputError, match=r"support images are 1x3x3 \(CxHxW\) but query images are 1x4x4"):
        episode_from_tensors(sx, torch.tensor([0, 1, 1, 0]), _coded_images([1], size=4))
    with pytest.raises(EpisodeInputError, match=r"query_y\[0\] = 5 is not a support label 0..1"):
        episode_from_tensors(sx, torch.tensor([0, 1, 1, 0]), qx, torch.tensor([5]))


def _save(path, arr):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr.astype(np.uint8), mode="L").save(path)


def _blob(size: int, where: int) -> np.ndarray:
    a = np.full((size, size), 255, dtype=np.uint8)  # white background, dark strokes
    a[where, :] = 0
    return a


def test_image_folders_preprocessed_like_omniglot(tmp_path):
    ds = ImageDataset(images=torch.zeros(2, 1, 6, 6, dtype=torch.uint8),
                      labels=torch.tensor([0, 1]), class_names=["x", "y"], name="omniglot")
    pre = Preprocess.like(ds)
    assert pre == Preprocess(mode="L", size=(6, 6), invert=True)
    for cls, row in (("alpha", 1), ("beta", 4)):
        for i in range(2):
            _save(tmp_path / "support" / cls / f"{i}.png", _blob(6, row))
    _save(tmp_path / "query" / "beta" / "q0.png", _blob(12, 8))  # resized 12 -> 6: row 4
    _save(tmp_path / "query" / "alpha" / "q1.png", _blob(6, 1))
    ep = load_image_folders(tmp_path / "support", tmp_path / "query", pre)
    assert ep.class_names == ["alpha", "beta"] and ep.has_query_labels
    sx = ep.batch.support_x[0]
    assert sx.shape == (4, 1, 6, 6)
    assert float(sx[0, 0, 1].min()) == 1.0 and float(sx[0, 0, 0].max()) == 0.0  # inverted
    assert ep.batch.query_y.tolist() == [[0, 1]]  # query sub-folders in sorted order
    assert [n.rsplit("/", 2)[-2] for n in ep.query_names] == ["alpha", "beta"]
    pred = predict_episode(NearestNeighbourLearner(), ep)
    assert pred.accuracy == 1.0
    with pytest.raises(EpisodeInputError, match=r"image .*q0.png is 12x12 \(HxW\) but the learner was trained on 6x6 images"):
        load_image_folders(tmp_path / "support", tmp_path / "query", pre, resize=False)


def test_image_folders_bad_input(tmp_path):
    pre = Preprocess(mode="L", size=(6, 6))
    _save(tmp_path / "s" / "a" / "0.png", _blob(6, 1))
    _save(tmp_path / "q" / "zeta" / "0.png", _blob(6, 1))
    with pytest.raises(EpisodeInputError, match=r"query class folder .*zeta names no support class; support classes: a"):
        load_image_folders(tmp_path / "s", tmp_path / "q", pre)
    with pytest.raises(EpisodeInputError, match=r"support folder .*q2 does not exist"):
        load_image_folders(tmp_path / "q2", tmp_path / "q", pre)
    (tmp_path / "flat").mkdir()
    _save(tmp_path / "flat" / "x.png", _blob(6, 1))
    with pytest.raises(EpisodeInputError, match=r"support folder .*flat has no class sub-folders"):
        load_image_folders(tmp_path / "flat", tmp_path / "q", pre)
    (tmp_path / "flat" / "bad.png").write_bytes(b"not a png")
    with pytest.raises(EpisodeInputError, match=r"cannot read image .*bad.png"):
        load_image_folders(tmp_path / "s", tmp_path / "flat", pre)
