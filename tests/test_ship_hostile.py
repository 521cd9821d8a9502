"""The shipping layer under hostile files, second round (the adversarial review of 0.3): a
classifier.json, a weights file or an argument never makes loading reach the network, read
outside the run or allocate beyond the file's weights. Each test failed before its fix
(see docs/reliability.md, section 9)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import timm
import torch

from transferlearn import load_model
from transferlearn.cli import main
from transferlearn.ship.classifier import load_classifier, save_classifier

from .test_ship_safety import CLASSES, TF, _edit, _informative, _one_error, offline, run, saved  # noqa: F401

SOURCES = ["timm/hf-hub:timm/resnet18.a1_in1k", "timm/hf_hub:timm/resnet18.a1_in1k", "timm/local-dir:{dir}",
           "timm/../resnet18", "timm/sub/resnet18", "timm/resnet18\\x"]


@pytest.fixture()
def no_timm_builder(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError(f"timm.create_model was called with {args[:1]}")
    monkeypatch.setattr(timm, "create_model", refuse)


def _local_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "outside"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"architecture": "resnet18", "num_classes": 3}))
    return folder


# --- 10. a timm name with a model source is refused before timm sees it ------------------------

@pytest.mark.parametrize("arch", SOURCES)
def test_a_timm_name_with_a_model_source_is_refused_before_timm_sees_it(arch, tmp_path, no_timm_builder, offline):
    arch = arch.format(dir=_local_dir(tmp_path))
    with pytest.raises(ValueError, match=r"arch='timm/.*' is not a timm model name: .*'hf-hub:', 'hf_hub:' or "
                                         r"'local-dir:' and paths are not accepted"):
        load_model(arch, weights=None)


@pytest.mark.parametrize("arch", SOURCES)
def test_a_classifier_json_naming_a_timm_model_source_is_refused_naming_the_field(arch, run, tmp_path,
                                                                                 no_timm_builder, offline, capsys):
    _edit(run, arch=arch.format(dir=_local_dir(tmp_path)))
    with pytest.raises(ValueError, match=r"run/classifier.json: field 'arch'='timm/.*' is not a timm model name"):
        load_classifier(run)
    assert main(["predict", str(run), "x.png"]) == 2
    assert "field 'arch'" in _one_error(capsys)


def test_fit_arch_with_a_timm_model_source_is_one_line(tmp_path, no_timm_builder, offline, capsys):
    (tmp_path / "data").mkdir()
    code = main(["fit", str(tmp_path / "data"), "--out", str(tmp_path / "run"), "--weights", "none",
                 "--arch", f"timm/local-dir:{_local_dir(tmp_path)}"])
    assert code == 2
    assert "is not a timm model name" in _one_error(capsys)
    assert not (tmp_path / "run").exists()


# --- 11. model_kwargs cannot size a tensor beyond the file's weights ---------------------------

def test_a_model_kwargs_num_classes_other_than_the_files_is_refused_naming_the_field(run, tmp_path):
    _edit(run, model_kwargs={"num_classes": 10**12})      # a head of 1.28e15 floats, were it built
    with pytest.raises(ValueError, match=r"run/classifier.json: field 'model_kwargs.num_classes' is 1000000000000 "
                                         r"but 'num_classes' is 3; they must be equal"):
        load_classifier(run)
    _edit(run, model_kwargs={"num_classes": 3})           # the same number is what the file holds
    assert load_classifier(run).classes == tuple(CLASSES)
    with pytest.raises(ValueError, match=r"field 'model_kwargs.num_classes' is 1000 but 'num_classes' is 3"):
        save_classifier(_informative(), tmp_path / "out", classes=CLASSES, transform=TF,
                        model_kwargs={"num_classes": 1000})
    assert not (tmp_path / "out").exists()


def test_a_buffer_outside_the_state_dict_larger_than_the_weights_is_refused_before_the_real_build(run, monkeypatch):
    import transferlearn.ship._parts as parts
    real, built = parts.load_model, []

    def with_buffer(*args, **kwargs):                     # what a structural kwarg could make a builder do
        model = real(*args, **kwargs)
        built.append(torch.empty(0).device.type)
        model.register_buffer("table", torch.empty(10**12), persistent=False)
        return model
    monkeypatch.setattr(parts, "load_model", with_buffer)
    with pytest.raises(ValueError, match=r"its buffer 'table' would hold 1000000000000 values, more than the "
                                         r"\d+ of the whole weights file"):
        load_classifier(run)
    assert built == ["meta"]                              # never built for real


# --- 12. the weights file is a regular file of the run, its size the header's -------------------

def _weights(run: Path) -> Path:
    return run / json.loads((run / "classifier.json").read_text())["weights_file"]


def test_a_weights_file_that_is_a_symlink_is_refused_even_to_the_right_bytes(run, tmp_path):
    weights = _weights(run)
    outside = tmp_path / "outside.safetensors"
    weights.rename(outside)                               # the very bytes recorded, but outside the run
    weights.symlink_to(outside)
    with pytest.raises(ValueError, match=r"model-\w+\.safetensors is a symbolic link; a classifier's weights file "
                                         r"must be a regular file inside its directory"):
        load_classifier(run)


def test_a_weights_file_that_is_not_a_regular_file_is_named_as_such(run):
    weights = _weights(run)
    weights.unlink()
    os.mkfifo(weights)                                    # reading it would block forever
    with pytest.raises(ValueError, match=r"model-\w+\.safetensors is not a regular file"):
        load_classifier(run)


def test_a_weights_file_larger_than_its_header_says_is_refused_before_it_is_read(run, monkeypatch):
    weights = _weights(run)
    size = weights.stat().st_size
    with open(weights, "r+b") as handle:
        handle.truncate(size + (1 << 30))                 # 1 GiB (sparse) appended
    with pytest.raises(ValueError, match=rf"is {size + (1 << 30)} bytes but its safetensors header describes {size}"):
        load_classifier(run)
    with open(weights, "r+b") as handle:
        handle.truncate(size)
        handle.write(b"\xff" * 8)                         # a header length beyond the file
    with pytest.raises(ValueError, match=r"is not a safetensors file: its header length \d+ does not fit"):
        load_classifier(run)


# --- 9. finite weights that compute NaN -----------------------------------------------------------

def _negative_variance(model: torch.nn.Module) -> torch.nn.Module:
    with torch.no_grad():
        model.features[0][1].running_var[2] = -0.5        # finite, but sqrt(var + eps) is NaN
    return model


def test_a_negative_batchnorm_running_var_is_refused_at_save_and_at_load(run, tmp_path):
    import hashlib

    from safetensors.torch import load, save
    with pytest.raises(ValueError, match=r"save_classifier refuses the model: tensor 'features.0.1.running_var' "
                                         r"\(a BatchNorm running variance\) holds 1 negative value\(s\) of 32"):
        save_classifier(_negative_variance(_informative()), tmp_path / "out", classes=CLASSES, transform=TF)
    assert not (tmp_path / "out").exists()
    config = json.loads((run / "classifier.json").read_text())
    tensors = load((run / config["weights_file"]).read_bytes())
    tensors["features.0.1.running_var"][2] = -0.5
    blob = save(tensors)
    (run / config["weights_file"]).write_bytes(blob)
    _edit(run, sha256=hashlib.sha256(blob).hexdigest())   # a consistent, tampered file
    with pytest.raises(ValueError, match=r"model-[0-9a-f]{12}.safetensors is refused: tensor "
                                         r"'features.0.1.running_var' \(a BatchNorm running variance\) holds 1 negative"):
        load_classifier(run)


def test_non_finite_probabilities_are_an_error_naming_the_items_not_a_nan_class(saved):
    from transferlearn.ship.classifier import Classifier
    clf = load_classifier(saved)
    broken = Classifier(_negative_variance(clf.model), clf.classes, clf.transform)
    images = [torch.rand(3, 40, 40) for _ in range(3)]
    with pytest.raises(ValueError, match=r"non-finite \(NaN or inf\) probabilities for items\[0\], items\[1\], "
                                         r"items\[2\]"):
        broken.predict(images)
    with pytest.raises(ValueError, match=r"non-finite \(NaN or inf\) probabilities for items\[0\]"):
        broken.predict_proba(images[:1])


# --- 14. half-precision classifiers evaluate and explain ------------------------------------------

@pytest.mark.parametrize("dtype, min_corr", [(torch.float16, 0.95), (torch.bfloat16, None)])  # bf16: 8-bit mantissa
def test_a_half_precision_classifier_evaluates_and_explains_in_its_dtype(saved, tmp_path, dtype, min_corr):
    from torch.utils.data import TensorDataset

    from transferlearn import classification_report
    reference = load_classifier(saved)
    save_classifier(_informative().to(dtype), tmp_path / "half", classes=CLASSES, transform=TF)
    half = load_classifier(tmp_path / "half")
    assert next(half.model.parameters()).dtype == dtype
    torch.manual_seed(0)
    images = torch.rand(4, 3, 32, 32)
    data = TensorDataset(images, torch.tensor([0, 1, 2, 0]))
    ours, theirs = classification_report(half, data), classification_report(reference, data)
    assert ours.loss == pytest.approx(theirs.loss, rel=0.05)       # logits of ~50: half precision's few %
    torch.testing.assert_close(ours.confusion_matrix, theirs.confusion_matrix)
    cams, expected = half.explain(list(images)), reference.explain(list(images))
    for cam, want in zip(cams, expected):
        assert cam.dtype == torch.float32 and torch.isfinite(cam).all()
        assert cam.shape == want.shape and float(cam.max()) == pytest.approx(1.0)
        if min_corr is not None:
            assert float(torch.corrcoef(torch.stack([cam.flatten(), want.flatten()]))[0, 1]) > min_corr


# --- 15. an unknown timm name is a ValueError naming it ---------------------------------------------

def test_an_unknown_timm_name_is_a_value_error_naming_it(capsys, tmp_path):
    with pytest.raises(ValueError, match=r"arch='timm/resnet_nope.a1_in1k' is not a timm model: timm \S+ has no "
                                         r"'resnet_nope'; see timm.list_models\(\)"):
        load_model("timm/resnet_nope.a1_in1k", weights=None)
    assert load_model("timm/resnet18.a1_in1k", weights=None, num_classes=3).fc.out_features == 3
    (tmp_path / "data").mkdir()
    assert main(["fit", str(tmp_path / "data"), "--out", str(tmp_path / "run"), "--weights", "none",
                 "--arch", "timm/resnet_nope"]) == 2
    assert "is not a timm model" in _one_error(capsys)


# --- 16. a deeply nested classifier.json is a ValueError naming the file ------------------------------

@pytest.mark.parametrize("text, reason", [("[" * 100_000 + "]" * 100_000, "nested too deeply"),
                                          ('{"format": 1, "n": ' + "9" * 5000 + "}", "integer string conversion")])
def test_a_classifier_json_the_parser_cannot_take_is_a_value_error_naming_the_file(run, tmp_path, capsys, text, reason):
    (run / "classifier.json").write_text(text)
    with pytest.raises(ValueError, match=rf"run/classifier.json is not a classifier.json this library reads \(.*{reason}"):
        load_classifier(run)
    assert main(["predict", str(run), "x.png"]) == 2
    assert "run/classifier.json is not a classifier.json" in _one_error(capsys)
