"""save_classifier / load_classifier / Classifier.predict: round trips, oracles, every error."""

from __future__ import annotations

import copy
import functools
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image
from torch import nn
from torchvision import models as tvm

import transferlearn.ship.classifier as classifier_module
from transferlearn import freeze_bn_running_stats, imagenet_transform, load_model, replace_head
from transferlearn.ship._parts import cpu_tensors
from transferlearn.ship.classifier import Classifier, load_classifier, save_classifier
from transferlearn.ship.format import ClassifierConfig

from .conftest import TinyNet

CLASSES = ["cat", "cup", "rocket"]
TF = imagenet_transform(size=48, resize=56)


@functools.lru_cache(maxsize=None)
def _base() -> nn.Module:
    torch.manual_seed(0)
    model = load_model("mobilenet_v2", weights=None).train()
    with torch.no_grad():                       # move BatchNorm statistics off their defaults
        model(torch.rand(4, 3, 48, 48))
    return model


def _mobilenet(num_classes: int = 3, dropout: float | None = None) -> nn.Module:
    """A MobileNetV2 built by load_model (a copy of one, to keep the tests fast), new head."""
    model = copy.deepcopy(_base())
    torch.manual_seed(num_classes)
    return replace_head(model, num_classes, dropout=dropout)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    model = _mobilenet()
    directory = tmp_path_factory.mktemp("clf")
    save_classifier(model, directory, classes=CLASSES, transform=TF)
    return model, directory


def _photo(seed: int = 0, size=(70, 60)) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def _oracle(model: nn.Module, image) -> torch.Tensor:
    with torch.inference_mode():
        return model.eval()(TF(image).unsqueeze(0)).softmax(1)[0]


# --- round trips ---------------------------------------------------------------------------

def test_round_trip_is_bitwise_and_in_eval_mode(saved):
    model, directory = saved
    clf = load_classifier(directory)
    assert clf.classes == tuple(CLASSES) and not clf.model.training
    assert all(not m.training for m in clf.model.modules())
    loaded, original = clf.model.state_dict(), model.state_dict()
    assert list(loaded) == list(original)
    for key in original:
        assert torch.equal(loaded[key], original[key]), key
    assert (clf.transform.size, clf.transform.resize, clf.transform.train) == (48, 56, False)
    assert clf.transform.mean == TF.mean and clf.transform.interpolation == TF.interpolation
    config = json.loads((directory / "classifier.json").read_text())
    assert config["format"] == 1 and config["arch"] == "mobilenet_v2" and config["classes"] == CLASSES
    assert set(config["versions"]) == {"transferlearn", "torch", "torchvision"}
    assert sorted(p.name for p in directory.iterdir()) == ["classifier.json", config["weights_file"]]


def test_dropout_head_rebuilds_with_identical_keys(tmp_path):
    model = _mobilenet(dropout=0.25)
    save_classifier(model, tmp_path, classes=CLASSES, transform=TF)
    clf = load_classifier(tmp_path)
    assert list(clf.model.state_dict()) == list(model.state_dict())
    assert "classifier.1.1.weight" in clf.model.state_dict() and clf.model.classifier[1][0].p == 0.25
    assert clf.config.head == {"name": "classifier.1", "dropout": 0.25}


@pytest.mark.parametrize("augment", ["light", "trivial", "randaugment"])
def test_training_transform_is_saved_as_its_eval_counterpart(tmp_path, augment):
    train_tf = imagenet_transform(True, size=40, resize=50, mean=(0.5, 0.5, 0.5), std=(0.2, 0.3, 0.4),
                                  augment=augment)
    save_classifier(_mobilenet(), tmp_path, classes=CLASSES, transform=train_tf)
    saved = json.loads((tmp_path / "classifier.json").read_text())["transform"]
    assert saved == {"size": 40, "resize": 50, "mean": [0.5] * 3, "std": [0.2, 0.3, 0.4], "interpolation": "bilinear"}
    tf = load_classifier(tmp_path).transform
    assert (tf.train, tf.augment, tf.size, tf.resize, tf.mean, tf.std) == (False, "none", 40, 50, [0.5] * 3,
                                                                            [0.2, 0.3, 0.4])
    assert Classifier(_mobilenet(), CLASSES, train_tf).transform.augment == "none"
    image = _photo()
    torch.testing.assert_close(tf(image), imagenet_transform(size=40, resize=50, mean=(0.5,) * 3,
                                                             std=(0.2, 0.3, 0.4))(image), rtol=0, atol=0)


def test_pinned_batchnorm_saves_the_same_state_and_loads_in_eval_mode(tmp_path):
    model = _mobilenet()
    plain = {k: v.clone() for k, v in model.state_dict().items()}
    freeze_bn_running_stats(model)
    save_classifier(model, tmp_path, classes=CLASSES, transform=TF)
    clf = load_classifier(tmp_path)
    for key, value in plain.items():
        assert torch.equal(clf.model.state_dict()[key], value)
    assert not any(m.training for m in clf.model.modules())


def test_torchvision_model_needs_arch_and_keeps_what_pretrained_weights_switch_on(tmp_path):
    torch.manual_seed(0)
    model = tvm.googlenet(weights=None, num_classes=3, aux_logits=False, transform_input=True,
                          init_weights=False).eval()
    with pytest.raises(ValueError, match=r"arch is required: the model was not built by load_model"):
        save_classifier(model, tmp_path, classes=CLASSES, transform=TF)
    save_classifier(model, tmp_path, classes=CLASSES, transform=TF, arch="googlenet")
    clf = load_classifier(tmp_path)
    assert clf.model.transform_input is True and clf.model.aux1 is None
    x = torch.rand(2, 3, 48, 48)
    with torch.inference_mode():
        torch.testing.assert_close(clf.model(x), model(x))


def test_timm_model_and_float64_round_trip(tmp_path):
    pytest.importorskip("timm")
    torch.manual_seed(0)
    model = load_model("timm/resnet18", weights=None, num_classes=3).double().eval()
    save_classifier(model, tmp_path, classes=CLASSES, transform=TF)
    clf = load_classifier(tmp_path)
    assert clf.config.dtype == "float64" and clf.model.fc.weight.dtype == torch.float64
    x = torch.rand(1, 3, 48, 48, dtype=torch.float64)
    with torch.inference_mode():
        torch.testing.assert_close(clf.model(x), model(x), rtol=0, atol=0)


def test_shared_tensors_are_written_apart():
    from safetensors.torch import load, save
    layer = nn.Linear(3, 3)
    module = nn.Module()
    module.a, module.b = layer, layer                 # the same weights under two names
    tensors = cpu_tensors(module)
    back = load(save(tensors))
    assert set(back) == {"a.weight", "a.bias", "b.weight", "b.bias"}
    assert torch.equal(back["b.weight"], layer.weight.detach())


def test_history_and_metrics_are_strict_json(tmp_path):
    history = [{"epoch": 1, "val_loss": float("nan"), "lr": {"head": 1e-3}}]
    save_classifier(_mobilenet(), tmp_path, classes=CLASSES, transform=TF, history=history,
                    metrics={"accuracy": 0.5})
    assert json.loads((tmp_path / "history.json").read_text()) == [{"epoch": 1, "val_loss": None,
                                                                    "lr": {"head": 1e-3}}]
    assert json.loads((tmp_path / "metrics.json").read_text()) == {"accuracy": 0.5}


@given(st.lists(st.text(min_size=1, max_size=12), min_size=2, max_size=6, unique=True))
def test_any_class_names_round_trip_through_the_config(names):
    config = ClassifierConfig(
        format=1, arch="resnet18", num_classes=len(names), classes=tuple(names),
        transform={"size": 8, "resize": 9, "mean": [0.1, 0.2, 0.3], "std": [1.0, 1.0, 1.0],
                   "interpolation": "bicubic"},
        head={"name": "fc", "dropout": None}, model_kwargs={}, weights=None,
        weights_file="model-0123456789ab.safetensors", sha256="a" * 64, dtype="float32", versions={})
    assert ClassifierConfig.from_json(config.to_json(), "x.json") == config


# --- crashes never leave a half-written classifier ---------------------------------------------

def test_a_crash_before_the_config_is_written_keeps_the_previous_classifier(tmp_path, monkeypatch):
    first = _mobilenet()
    save_classifier(first, tmp_path, classes=CLASSES, transform=TF)
    real = classifier_module.atomic_write

    def crash_on_config(path, write):
        if Path(path).name == "classifier.json":
            raise KeyboardInterrupt("killed")
        return real(path, write)
    monkeypatch.setattr(classifier_module, "atomic_write", crash_on_config)
    second = _mobilenet(num_classes=4)
    with pytest.raises(KeyboardInterrupt):
        save_classifier(second, tmp_path, classes=CLASSES + ["dog"], transform=TF)
    clf = load_classifier(tmp_path)                          # the old one, complete
    assert clf.classes == tuple(CLASSES)
    assert torch.equal(clf.model.classifier[1].weight, first.classifier[1].weight)
    monkeypatch.setattr(classifier_module, "atomic_write", real)
    save_classifier(second, tmp_path, classes=CLASSES + ["dog"], transform=TF)
    assert len(list(tmp_path.glob("model-*.safetensors"))) == 1 and not list(tmp_path.glob(".*tmp"))
    assert load_classifier(tmp_path).classes == tuple(CLASSES + ["dog"])


# --- predict -------------------------------------------------------------------------------

def test_predict_equals_the_models_softmax_on_the_transformed_image(saved, tmp_path):
    model, directory = saved
    clf = load_classifier(directory)
    image = _photo(1)
    image.save(tmp_path / "x.png")
    uint8 = torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1)
    items = [tmp_path / "x.png", str(tmp_path / "x.png"), image, uint8, uint8.float() / 255,
             np.asarray(image)]
    expected = _oracle(model, image)
    out = clf.predict(items, top_k=3, batch_size=4)
    assert len(out) == len(items)
    for i, row in enumerate(out):
        probs = dict(row["top_k"])
        got = torch.tensor([probs[c] for c in CLASSES])
        want = expected if i < 3 or i == 5 else _oracle(model, items[i])
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
        assert [p for _, p in row["top_k"]] == sorted(probs.values(), reverse=True)
        assert row["class"] == row["top_k"][0][0] == CLASSES[int(want.argmax())]
        assert row["probability"] == row["top_k"][0][1]


def test_predict_single_item_batch_tensor_and_empty_list(saved):
    _, directory = saved
    clf = load_classifier(directory)
    batch = torch.rand(5, 3, 50, 50)
    many = clf.predict(batch, batch_size=2)
    assert len(many) == 5 and len(many[0]["top_k"]) == 1
    one = clf.predict(batch[3])
    assert len(one) == 1 and one[0]["class"] == many[3]["class"]
    assert one[0]["probability"] == pytest.approx(many[3]["probability"], abs=1e-6)
    assert clf.predict([]) == [] and clf.predict_proba([]).shape == (0, 3)
    torch.testing.assert_close(clf.predict_proba(batch).sum(1), torch.ones(5))


@pytest.mark.parametrize("kwargs, exc, pattern", [
    ({"top_k": 0}, ValueError, r"top_k must be an int in \[1, 3\], got 0"),
    ({"top_k": 4}, ValueError, r"top_k must be an int in \[1, 3\], got 4"),
    ({"top_k": True}, TypeError, r"top_k must be an int in \[1, 3\], got True \(bool\)"),
    ({"batch_size": 0}, ValueError, r"batch_size must be an int >= 1, got 0"),
])
def test_predict_option_errors(saved, kwargs, exc, pattern):
    clf = load_classifier(saved[1])
    with pytest.raises(exc, match=pattern):
        clf.predict(torch.rand(3, 8, 8), **kwargs)


@pytest.mark.parametrize("item, exc, pattern", [
    (torch.randn(3, 8, 8) * 3, ValueError, r"items must hold unnormalised pixels \(float in \[0, 1\] or uint8\), "
                                           r"got values in \[-"),
    (torch.zeros(3, 8, 8, dtype=torch.int32), TypeError, r"items must be a uint8 or float tensor, got dtype torch.int32"),
    (torch.zeros(4, 8, 8), ValueError, r"items must be an image tensor shaped \(C, H, W\) with C in \(1, 3\), got shape \(4, 8, 8\)"),
    ([torch.zeros(1, 3, 8, 8)], ValueError, r"items\[0\] must be an image tensor shaped"),
    (42, TypeError, r"items must be a file path, a PIL image or an image tensor, got 42 \(int\)"),
    ([b"x.png"], TypeError, r"items\[0\] must be a file path"),
])
def test_predict_item_errors(saved, item, exc, pattern):
    with pytest.raises(exc, match=pattern):
        load_classifier(saved[1]).predict(item)


def test_predict_on_a_broken_file_names_it(saved, tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff not really a jpeg")
    with pytest.raises(ValueError, match=r"cannot read image '.*broken.jpg'"):
        load_classifier(saved[1]).predict([bad])
    with pytest.raises(FileNotFoundError, match=r"nope.png"):
        load_classifier(saved[1]).predict(tmp_path / "nope.png")


def test_classifier_by_hand_uses_the_eval_transform():
    clf = Classifier(TinyNet().train(), ["a", "b", "c"], imagenet_transform(True, size=16, resize=20))
    assert not clf.model.training and clf.transform.train is False and clf.config is None
    assert repr(clf).startswith("Classifier(TinyNet, 3 classes")


# --- save errors ---------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, exc, pattern", [
    ({"classes": ["a", "a", "b"]}, ValueError, r"classes must be at least 2 unique names, got \['a', 'a', 'b'\].*\(repeated: \['a'\]\)"),
    ({"classes": ["a", "b"]}, ValueError, r"classes has 2 names but the model's head 'classifier.1' has 3 outputs"),
    ({"classes": ["a"]}, ValueError, r"classes must be at least 2 unique names"),
    ({"classes": "abc"}, TypeError, r"classes must be a list of class-name strings, got 'abc' \(str\)"),
    ({"classes": ["a", 2, "c"]}, TypeError, r"classes must be non-empty strings, got 2 \(int\)"),
    ({"transform": lambda x: x}, TypeError, r"transform must be an ImagePreprocess from imagenet_transform\(\)"),
    ({"arch": "resnet18"}, ValueError, r"arch='resnet18' but the model was built by load_model\('mobilenet_v2'\)"),
    ({"arch": 7}, TypeError, r"arch must be a load_model architecture name, got 7 \(int\)"),
    ({"model_kwargs": {"norm_layer": nn.BatchNorm2d}}, ValueError, r"model_kwargs must be JSON values to be saved"),
    ({"model_kwargs": {"width_mult": 0.5}}, ValueError, r"load_model\('mobilenet_v2', \*\*\{'width_mult': 0.5\}\) does not rebuild this model"),
    ({"metrics": {"accuracy": object()}}, TypeError, r"metrics must hold JSON values"),
])
def test_save_errors(tmp_path, kwargs, exc, pattern):
    args = {"classes": CLASSES, "transform": TF, **kwargs}
    with pytest.raises(exc, match=pattern):
        save_classifier(_mobilenet(), tmp_path / "out", **args)
    assert not (tmp_path / "out").exists()                     # nothing written on a refused call


def test_save_errors_for_model_and_directory(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match=r"directory='.*file' exists and is not a directory"):
        save_classifier(_mobilenet(), tmp_path / "file", classes=CLASSES, transform=TF)
    with pytest.raises(TypeError, match=r"directory must be a str or os.PathLike, got 3 \(int\)"):
        save_classifier(_mobilenet(), 3, classes=CLASSES, transform=TF)
    with pytest.raises(TypeError, match=r"model must be a torch.nn.Module, got 'm' \(str\)"):
        save_classifier("m", tmp_path, classes=CLASSES, transform=TF)
    custom = load_model("resnet18", weights=None)
    custom.fc = nn.Sequential(nn.Linear(512, 3), nn.ReLU())
    with pytest.raises(ValueError, match=r"the model's head 'fc.0' is Linear|head 'fc' is Sequential|does not rebuild"):
        save_classifier(custom, tmp_path / "c", classes=CLASSES, transform=TF)


# --- load errors ---------------------------------------------------------------------------

def _edit(directory: Path, **changes) -> None:
    path = directory / "classifier.json"
    data = json.loads(path.read_text())
    for key, value in changes.items():
        if value is KeyError:
            del data[key]
        else:
            data[key] = value
    path.write_text(json.dumps(data))


@pytest.fixture
def copy_of(saved, tmp_path):
    import shutil
    shutil.copytree(saved[1], tmp_path / "c")
    return tmp_path / "c"


@pytest.mark.parametrize("changes, pattern", [
    ({"format": 2}, r"classifier.json: format 2 is not one this version of transferlearn reads \(it reads format 1\)"),
    ({"format": "1"}, r"classifier.json: field 'format' must be an int >= 1, got \"1\""),
    ({"arch": KeyError}, r"classifier.json: missing field 'arch'"),
    ({"classes": ["a", "a", "b"]}, r"field 'classes' must be a list of unique, non-empty strings"),
    ({"classes": ["a", "b"]}, r"field 'classes' has 2 names but 'num_classes' is 3"),
    ({"transform": {"size": 0}}, r"field 'transform' must be an object with 'size'"),
    ({"head": {"name": "fc", "dropout": 1.5}}, r"field 'head' must be an object with 'name'"),
    ({"weights_file": "../../etc/passwd"}, r"field 'weights_file' must be a file name like"),
    ({"dtype": "int8"}, r"field 'dtype' must be one of \['float32'"),
    ({"sha256": "0" * 64}, r"model-[0-9a-f]{12}.safetensors does not match the SHA-256 recorded in classifier.json"),
    ({"weights_file": "model-000000000000.safetensors", "files": ["model-000000000000.safetensors"]}, r"names the weights file 'model-000000000000.safetensors', which is missing"),
    ({"arch": "resnet18"}, r"rebuilding 'resnet18' puts its head at 'fc', not 'classifier.1' as saved"),
    ({"num_classes": 4, "classes": ["a", "b", "c", "d"]}, r"model-[0-9a-f]{12}.safetensors does not fit 'mobilenet_v2': "
                                                          r"classifier.1.weight is \(3, 1280\) in the file, \(4, 1280\) in the model"),
])
def test_load_checks_every_field(copy_of, changes, pattern):
    _edit(copy_of, **changes)
    with pytest.raises(ValueError, match=pattern):
        load_classifier(copy_of)


def test_load_errors_for_what_is_not_a_classifier(copy_of, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"directory='.*nowhere' does not exist"):
        load_classifier(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"'.*empty' is not a saved classifier: it has no classifier.json"):
        load_classifier(tmp_path / "empty")
    with pytest.raises(ValueError, match=r"directory='.*classifier.json' exists and is not a directory"):
        load_classifier(copy_of / "classifier.json")
    (copy_of / "classifier.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"classifier.json is not valid JSON"):
        load_classifier(copy_of)
    (copy_of / "classifier.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match=r"classifier.json must hold a JSON object, got list"):
        load_classifier(copy_of)


# --- another process, offline ------------------------------------------------------------------

@pytest.mark.pretrained
def test_loads_and_predicts_in_a_fresh_offline_process(mobilenet_weights, tmp_path):
    from skimage import data
    model = load_model("mobilenet_v2", weights=mobilenet_weights, num_classes=3).eval()
    save_classifier(model, tmp_path / "clf", classes=CLASSES, transform=imagenet_transform(weights=mobilenet_weights))
    Image.fromarray(data.chelsea()).save(tmp_path / "cat.png")
    clf = load_classifier(tmp_path / "clf")
    assert clf.config.weights == "MobileNet_V2_Weights.IMAGENET1K_V1"
    expected = clf.predict_proba([tmp_path / "cat.png"])[0].tolist()
    script = textwrap.dedent(f"""
        import json, socket
        def refuse(*a, **k):
            raise OSError("network is off in this test")
        socket.socket.connect = refuse
        import transferlearn.ship.classifier as c
        clf = c.load_classifier({str(tmp_path / 'clf')!r})
        print(json.dumps(clf.predict_proba([{str(tmp_path / 'cat.png')!r}])[0].tolist()))
    """)
    empty_home = tmp_path / "no_torch_cache"          # no pretrained checkpoint to be found here
    env = {"TORCH_HOME": str(empty_home), "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env,
                          cwd=Path(__file__).parents[1], timeout=300)
    assert done.returncode == 0, done.stderr
    np.testing.assert_allclose(json.loads(done.stdout), expected, rtol=1e-5, atol=1e-6)
    assert not empty_home.exists() or not list(empty_home.rglob("*.pth"))


def test_draft_true_sees_files_as_load_image_folder_does_and_the_default_decodes_in_full(saved, tmp_path):
    from transferlearn import load_image_folder
    from transferlearn.data.images import load_image
    model, directory = saved
    clf = load_classifier(directory)
    for c, name in enumerate(CLASSES):
        (tmp_path / name).mkdir()
        for k in range(2):
            _photo(10 * c + k, size=(300, 220)).save(tmp_path / name / f"{k}.jpg", quality=90)
    data = load_image_folder(tmp_path, val_fraction=0.5, size=48, resize=56, max_imbalance=None)
    paths = [p for p, _ in data.val.samples]
    with torch.inference_mode():
        expected = model.eval()(torch.stack([data.val[i][0] for i in range(len(paths))])).softmax(1)
    torch.testing.assert_close(clf.predict_proba(paths, draft=True), expected, rtol=1e-5, atol=1e-6)
    full = torch.stack([_oracle(model, load_image(p)) for p in paths])
    torch.testing.assert_close(clf.predict_proba(paths), full, rtol=1e-5, atol=1e-6)
    assert not torch.equal(TF(load_image(paths[0])), data.val[0][0])   # the draft decode is a real difference
    with pytest.raises(TypeError, match=r"draft must be True or False, got 1 \(int\)"):
        clf.predict(paths, draft=1)


def test_predict_runs_in_channels_last_and_gives_the_model_back_contiguous(tmp_path, monkeypatch):
    from transferlearn.ship import _inputs as module  # predict_proba's loop
    seen = []
    real = module.predict

    def spy(model, batch, **kwargs):
        seen.append(next(p for p in model.parameters() if p.ndim == 4 and p.shape[-1] > 1)
                    .is_contiguous(memory_format=torch.channels_last))
        return real(model, batch, **kwargs)
    m = load_model("mobilenet_v2", weights=None, num_classes=2)
    save_classifier(m, tmp_path / "c", classes=["a", "b"], transform=imagenet_transform(size=32))
    clf = load_classifier(tmp_path / "c")
    monkeypatch.setattr(module, "predict", spy)
    probs = clf.predict_proba([torch.rand(3, 40, 40)])
    assert seen == [True] and all(p.is_contiguous() for p in clf.model.parameters())
    monkeypatch.setattr(module, "predict", real)
    torch.testing.assert_close(clf.predict_proba([torch.rand(3, 40, 40)]).sum(1), torch.ones(1))
    assert probs.shape == (1, 2)
