"""Test-time augmentation: Classifier.predict(..., tta=True) against torchvision's own crops."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from torchvision import transforms as T

from transferlearn import IMAGENET_MEAN, IMAGENET_STD, imagenet_transform
from transferlearn.ship import _tta
from transferlearn.ship.classifier import Classifier, load_classifier, save_classifier

from .conftest import TinyNet

CLASSES = ["a", "b", "c"]


def photo(seed: int, w: int = 70, h: int = 52) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))


def tiny() -> TinyNet:
    """A small CNN (run in channels_last by the classifier, as the Trainer runs it)."""
    torch.manual_seed(0)
    model = TinyNet(num_classes=3)
    with torch.no_grad():
        model(torch.rand(4, 3, 32, 32))          # BatchNorm statistics off their defaults
    return model.eval()


def pixels() -> nn.Module:
    """A linear model of the 32 x 32 pixels: every crop and mirror changes its answer."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 3)).eval()


class Mirrored(nn.Module):
    """A model that sees an image and its mirror alike: its answer cannot depend on a flip."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x) + self.inner(x.flip(-1))


def oracle(model: nn.Module, images: list[Image.Image], size: int, resize: int) -> torch.Tensor:
    """torchvision's FiveCrop and the mirror of each crop (or centre crop + mirror without room),
    on the PIL image, then the mean softmax. (``TenCrop`` would crop the mirrored image instead:
    with an odd margin its mirrored centre lies one pixel off the centre the eval pipeline sees.)
    The views' order differs, so the means agree to rounding, not bitwise."""
    def mirrored(crops):
        return list(crops) + [T.functional.hflip(c) for c in crops]
    crops = T.FiveCrop(size) if resize > size else T.Compose([T.CenterCrop(size), lambda c: [c]])
    tail = T.Compose([T.PILToTensor(), T.ConvertImageDtype(torch.float), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
    rows = []
    for image in images:
        views = torch.stack([tail(v) for v in mirrored(crops(T.Resize(resize, antialias=True)(image)))])
        with torch.inference_mode():
            rows.append(model(views).softmax(1).mean(0))
    return torch.stack(rows)


@pytest.mark.parametrize("size, resize, count", [(32, 40, 10), (32, 32, 2)])
def test_tta_is_the_mean_softmax_over_torchvisions_crops(size, resize, count):
    model = pixels()
    clf = Classifier(model, CLASSES, imagenet_transform(size=size, resize=resize))
    images = [photo(i) for i in range(3)] + [photo(9, w=40, h=90)]
    assert _tta.view_count(clf.transform) == count
    got = clf.predict_proba(images, tta=True, batch_size=2)
    torch.testing.assert_close(got, oracle(model, images, size, resize), rtol=1e-5, atol=1e-6)
    assert (got - clf.predict_proba(images)).abs().max() > 0.01      # the views do change the answer
    torch.testing.assert_close(got.sum(1), torch.ones(4))


@pytest.mark.parametrize("make", [pixels, tiny])
def test_tta_false_is_bitwise_the_plain_prediction(make):
    from transferlearn.train.evaluation import predict
    from transferlearn.train.runtime import memory_layout
    model = make()
    tf = imagenet_transform(size=32, resize=40)
    clf = Classifier(model, CLASSES, tf)
    images = [photo(i) for i in range(3)]
    with memory_layout(model, isinstance(model, TinyNet)):      # "auto": channels_last for a CNN on the CPU
        plain = predict(model, torch.stack([tf(x) for x in images]))
    assert torch.equal(clf.predict_proba(images, tta=False), plain)
    assert torch.equal(clf.predict_proba(images), plain)
    assert clf.predict(images, tta=False) == clf.predict(images)


def test_a_cnn_with_tta_is_the_mean_over_the_crops_too():
    model = tiny()
    clf = Classifier(model, CLASSES, imagenet_transform(size=32, resize=40))
    images = [photo(i) for i in range(2)]
    torch.testing.assert_close(clf.predict_proba(images, tta=True), oracle(model, images, 32, 40),
                               rtol=1e-4, atol=1e-5)           # channels_last convolutions round differently


def test_a_flip_invariant_model_answers_the_same_with_and_without_tta():
    clf = Classifier(Mirrored(pixels()), CLASSES, imagenet_transform(size=32, resize=32))   # no room: 2 views
    images = [photo(i) for i in range(3)]
    torch.testing.assert_close(clf.predict_proba(images, tta=True), clf.predict_proba(images), rtol=1e-6, atol=1e-7)
    assert [r["class"] for r in clf.predict(images, tta=True)] == [r["class"] for r in clf.predict(images)]


def test_the_first_view_is_bitwise_the_eval_pipeline_and_the_batch_size_does_not_matter():
    tf = imagenet_transform(size=32, resize=40)
    image = photo(1)
    views = _tta.views(tf.prepare(image), tf)
    assert views.shape == (10, 3, 32, 32) and torch.equal(views[0], tf(image))
    assert torch.equal(views[1], tf(image).flip(-1))
    clf = Classifier(pixels(), CLASSES, tf)
    images = [photo(i) for i in range(5)]
    torch.testing.assert_close(clf.predict_proba(images, tta=True, batch_size=1),
                               clf.predict_proba(images, tta=True, batch_size=4), rtol=1e-4, atol=1e-5)


def test_tta_reads_files(tmp_path):
    model = pixels()
    paths = []
    for i in range(2):
        photo(i).save(tmp_path / f"{i}.png")
        paths.append(str(tmp_path / f"{i}.png"))
    clf = Classifier(model, CLASSES, imagenet_transform(size=32, resize=40))
    torch.testing.assert_close(clf.predict_proba(paths, tta=True), oracle(model, [photo(0), photo(1)], 32, 40),
                               rtol=1e-4, atol=1e-5)
    rows = clf.predict(paths, top_k=2, tta=True)
    assert [len(r["top_k"]) for r in rows] == [2, 2]


def test_tta_on_a_loaded_mobilenet_classifier(tmp_path):
    from transferlearn import load_model
    torch.manual_seed(0)
    save_classifier(load_model("mobilenet_v2", weights=None, num_classes=2), tmp_path,
                    classes=["x", "y"], transform=imagenet_transform(size=32, resize=36))
    clf = load_classifier(tmp_path)
    images = [photo(i) for i in range(2)]
    torch.testing.assert_close(clf.predict_proba(images, tta=True), oracle(clf.model, images, 32, 36),
                               rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("value", [1, "yes", None])
def test_tta_must_be_a_bool(value):
    clf = Classifier(tiny(), CLASSES, imagenet_transform(size=32))
    with pytest.raises(TypeError, match=r"tta must be True or False, got "):
        clf.predict_proba([photo(0)], tta=value)
    with pytest.raises(TypeError, match=r"tta must be True or False, got "):
        clf.predict([photo(0)], tta=value)
