"""One rule for what a batch is, shared by fit, evaluate, predict and extract_features."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from transferlearn import Trainer, extract_features
from transferlearn.data.batches import INPUT_KEYS, TARGET_KEYS, split_batch
from transferlearn.train.evaluation import evaluate, predict

from .test_trainer import model, separable


class Dicts(Dataset):
    def __init__(self, keys=("image", "label")) -> None:
        self.base, self.keys = separable(20), keys

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i):
        x, y = self.base[i]
        return {self.keys[0]: x, self.keys[1]: y, "id": i}


@pytest.mark.parametrize("inp", INPUT_KEYS)
@pytest.mark.parametrize("tgt", TARGET_KEYS)
def test_every_documented_dict_key_pair(inp, tgt):
    x, y = split_batch({inp: torch.zeros(2, 3), tgt: [1, 0], "path": ["a", "b"]})
    assert x.shape == (2, 3) and y.tolist() == [1, 0]


def test_tuples_tensors_and_numpy():
    x, y = split_batch((np.ones((2, 3), dtype=np.float32), np.array([1, 2]), ["ids"]))
    assert isinstance(x, torch.Tensor) and x.dtype == torch.float32 and y.tolist() == [1, 2]
    assert split_batch(torch.zeros(4))[1] is None and split_batch(np.zeros((1, 2)))[1] is None


@pytest.mark.parametrize("batch, exc, pattern", [
    (3, TypeError, r"train_loader yielded a batch of type int; expected a tensor of inputs"),
    ((), ValueError, r"train_loader yielded an empty batch"),
    ({"image": 1, "pixel_values": 2}, ValueError, r"yielded a dict with keys \['image', 'pixel_values'\]; expected "
                                                 r"exactly one input key"),
    ({"label": 1}, ValueError, r"expected exactly one input key"),
    ((["a.jpg", "b.jpg"], [0, 1]), TypeError, r"yielded inputs of type list, expected a tensor or numpy array; "
                                              r"file paths are read by load_image"),
    ((torch.zeros(2), "cat"), TypeError, r"yielded targets of type str"),
    ((np.array([object()]), None), TypeError, r"numpy array of Python objects"),
])
def test_refused_batches_say_what_they_got(batch, exc, pattern):
    with pytest.raises(exc, match=pattern):
        split_batch(batch, source="train_loader")


def test_pil_inputs_get_a_hint():
    from PIL import Image
    with pytest.raises(TypeError, match=r"inputs of type Image, .*imagenet_transform"):
        split_batch((Image.new("RGB", (4, 4)), 0))


def test_dict_batches_train_evaluate_predict_and_extract_like_tuples():
    tuples = DataLoader(separable(20), batch_size=8)
    dicts = DataLoader(Dicts(("pixel_values", "labels")), batch_size=8)
    m = model()
    assert evaluate(m, dicts) == evaluate(m, tuples)
    assert torch.equal(predict(m, dicts), predict(m, tuples))
    assert torch.equal(extract_features(m, dicts).tensors[0], extract_features(m, tuples).tensors[0])
    history = Trainer(model(), progress=False).fit(dicts, dicts, warmup_epochs=1, finetune_epochs=1)
    assert history[-1]["val_accuracy"] is not None


def test_predict_takes_numpy_and_returns_0_by_classes_for_nothing():
    m = model()
    x = np.random.default_rng(0).normal(size=(5, 3, 8, 8)).astype(np.float32)
    assert torch.equal(predict(m, x), predict(m, torch.from_numpy(x)))
    assert predict(m, torch.empty(0, 3, 8, 8)).shape == (0, 3)
    assert predict(m, []).shape == (0, 3)


@pytest.mark.parametrize("data", ["cat.jpg", Path("cat.jpg")])
def test_predict_on_a_path_points_to_the_classifier(data):
    with pytest.raises(TypeError, match=r"data must be a tensor or an iterable of batches, got .*load_classifier"):
        predict(model(), data)
