"""export_onnx: onnxruntime on another batch size gives the PyTorch probabilities (max abs diff <= 1e-4)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from transferlearn import imagenet_transform, load_model
from transferlearn.ship.classifier import Classifier
from transferlearn.ship.onnx_export import export_onnx

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

CLASSES = ("cat", "cup", "rocket")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """MobileNetV2 at 64 px, random init made informative: BatchNorm statistics from real photos
    (a random network's eval-mode activations otherwise vanish) and a scaled-up head, so the
    probabilities are far from uniform and differ between images."""
    torch.manual_seed(0)
    model = load_model("mobilenet_v2", weights=None, num_classes=3)
    tf = imagenet_transform(size=64, resize=73)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.momentum = None                      # running statistics = those of this batch
    with torch.no_grad():
        model.train()(torch.stack([tf(im) for im in _photos(8)]))
        model.classifier[1].weight.mul_(20)
    clf = Classifier(model.eval(), CLASSES, tf)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    path = export_onnx(clf, tmp_path_factory.mktemp("onnx") / "clf.onnx")
    return clf, path, before


def _photos(n: int) -> list[Image.Image]:
    from skimage import data
    sources = [data.chelsea(), data.coffee(), data.astronaut(), data.rocket()]
    return [Image.fromarray(sources[i % 4]).rotate(15 * i) for i in range(n)]


@pytest.mark.parametrize("batch", [1, 5])
def test_onnxruntime_matches_pytorch_on_another_batch_size(exported, batch):
    clf, path, _ = exported
    images = _photos(batch)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    inputs = torch.stack([clf.transform(im) for im in images]).numpy()
    got = session.run(None, {"input": inputs})[0]
    expected = clf.predict_proba(images).numpy()
    assert got.shape == (batch, 3)
    assert np.abs(got - expected).max() <= 1e-4
    np.testing.assert_allclose(got.sum(1), 1.0, atol=1e-5)
    assert expected.max() > 0.6                        # not a uniform output that would match anything


def test_graph_signature_and_metadata(exported):
    clf, path, _ = exported
    import onnx
    model = onnx.load(str(path))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (inp,), (out,) = session.get_inputs(), session.get_outputs()
    assert (inp.name, out.name) == ("input", "probabilities")
    assert isinstance(inp.shape[0], str) and inp.shape[1:] == [3, 64, 64]
    meta = {p.key: p.value for p in model.metadata_props}
    assert json.loads(meta["classes"]) == list(CLASSES)
    prep = json.loads(meta["preprocessing"])
    assert (prep["size"], prep["resize"], prep["interpolation"]) == (64, 73, "bilinear")
    assert prep["mean"] == clf.transform.mean


def test_the_classifier_is_left_as_it_was(exported):
    clf, path, before = exported
    assert not clf.model.training and next(clf.model.parameters()).dtype == torch.float32
    for key, value in clf.model.state_dict().items():
        assert torch.equal(value, before[key])
    assert [p.name for p in path.parent.iterdir()] == ["clf.onnx"]       # no temporary file left


@pytest.mark.parametrize("args, kwargs, exc, pattern", [
    (("model", "x.onnx"), {}, TypeError, r"classifier must be a Classifier \(see load_classifier\), got 'model' \(str\)"),
    ((None, 5), {}, TypeError, r"path must be a str or os.PathLike, got 5 \(int\)"),
    ((None, "x.onnx"), {"opset_version": 3}, ValueError, r"opset_version must be an int >= 7, got 3"),
])
def test_errors(exported, args, kwargs, exc, pattern):
    args = (exported[0] if args[0] is None else args[0], args[1])
    with pytest.raises(exc, match=pattern):
        export_onnx(*args, **kwargs)
