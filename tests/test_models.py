"""load_model / install_weights, and the real pretrained MobileNetV2 on real photos."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch
from PIL import Image
from torch import nn
from torchvision.models import MobileNet_V2_Weights, ResNet18_Weights

from transferlearn import find_head, imagenet_transform, install_weights, load_model, replace_head
from transferlearn.model.load import checkpoint_path

CATS = {"tabby", "tiger cat", "Persian cat", "Siamese cat", "Egyptian cat"}


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """An empty, private torch hub cache."""
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))
    return tmp_path / "hub"


def test_random_init_with_new_head():
    model = load_model("resnet18", weights=None, num_classes=4)
    assert find_head(model)[1].out_features == 4


def test_kwargs_reach_torchvision():
    model = load_model("googlenet", weights=None, aux_logits=False, init_weights=False)
    assert model.aux1 is None


def test_missing_checkpoint_raises_instead_of_downloading(hub):
    with pytest.raises(FileNotFoundError, match=r"weights ResNet18_Weights.IMAGENET1K_V1 are not in the torch "
                                                r"hub cache .*install_weights\(file, ResNet18_Weights.IMAGENET1K_V1\)"):
        load_model("resnet18", weights="IMAGENET1K_V1")


@pytest.mark.parametrize("kwargs, exc, pattern", [
    ({"arch": "resnet9000"}, ValueError, r"arch='resnet9000' is not a torchvision model"),
    ({"arch": 18}, TypeError, r"arch must be a model name string, got 18 \(int\)"),
    ({"arch": "resnet18", "weights": "IMAGENET9K"}, ValueError, r"weights='IMAGENET9K' is not one of resnet18's weights: \['DEFAULT', 'IMAGENET1K_V1'\]"),
    ({"arch": "resnet18", "weights": 1}, TypeError, r"weights must be None, a WeightsEnum member or a name"),
    ({"arch": "resnet18", "weights": None, "num_classes": -2}, ValueError, r"num_classes must be an int >= 0, got -2"),
])
def test_load_model_errors(kwargs, exc, pattern):
    with pytest.raises(exc, match=pattern):
        load_model(**kwargs)


def test_install_weights_checks_hash(hub, tmp_path):
    fake = tmp_path / "resnet18.pth"
    fake.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match=r"has SHA-256 [0-9a-f]{16}\.\.\., but ResNet18_Weights.IMAGENET1K_V1 "
                                         r"expects a hash starting with 'f37072fd'"):
        install_weights(fake, ResNet18_Weights.IMAGENET1K_V1)
    assert not checkpoint_path(ResNet18_Weights.IMAGENET1K_V1).exists()   # nothing half-written
    assert not list(hub.rglob("*.tmp"))


def test_install_weights_unknown_weights(tmp_path):
    with pytest.raises(ValueError, match=r"weights='ResNet18_Weights.IMAGENET9K' is not a torchvision weights name"):
        install_weights(tmp_path / "x.pth", "ResNet18_Weights.IMAGENET9K")
    with pytest.raises(TypeError, match=r"weights must be a torchvision WeightsEnum member or its name, got 18"):
        install_weights(tmp_path / "x.pth", 18)


def test_install_weights_missing_file(hub, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"file='.*nope.pth' does not exist"):
        install_weights(tmp_path / "nope.pth", "ResNet18_Weights.IMAGENET1K_V1")


def test_install_weights_copies_under_torchvision_name(hub, mobilenet_weights, monkeypatch):
    import os
    real = os.path.join(os.environ["TORCH_HOME"], "hub", "checkpoints", "mobilenet_v2-b0353104.pth")
    target = install_weights(real, mobilenet_weights)
    assert target == hub / "checkpoints" / "mobilenet_v2-b0353104.pth"
    assert hashlib.sha256(target.read_bytes()).hexdigest().startswith("b0353104")
    model = load_model("mobilenet_v2", weights="IMAGENET1K_V1")      # torchvision's own hash check passes
    assert isinstance(model, nn.Module)


def classify(model, weights, image) -> str:
    x = imagenet_transform(weights=weights)(Image.fromarray(image)).unsqueeze(0)
    with torch.inference_mode():
        return weights.meta["categories"][model(x).argmax().item()]


@pytest.mark.pretrained
def test_pretrained_mobilenet_sees_a_cat_and_an_espresso(mobilenet_weights):
    from skimage import data
    model = load_model("mobilenet_v2", weights=mobilenet_weights).eval()
    assert classify(model, mobilenet_weights, data.chelsea()) in CATS
    assert classify(model, mobilenet_weights, data.coffee()) == "espresso"


@pytest.mark.pretrained
def test_pretrained_head_replacement_keeps_backbone_features(mobilenet_weights):
    full = load_model("mobilenet_v2", weights=MobileNet_V2_Weights.IMAGENET1K_V1).eval()
    feats = replace_head(load_model("mobilenet_v2", weights="IMAGENET1K_V1"), 0).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        torch.testing.assert_close(full.classifier(feats(x)), full(x))


def test_timm_models_go_through_get_classifier():
    pytest.importorskip("timm")
    model = load_model("timm/resnet18", weights=None, num_classes=3)
    assert find_head(model)[0] == "fc" and model.get_classifier().out_features == 3
    assert model.num_classes == 3
    replace_head(model, 0)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 512)
    vit = load_model("timm/vit_tiny_patch16_224", weights=None, num_classes=5)
    assert find_head(vit)[0] == "head" and vit(torch.randn(1, 3, 224, 224)).shape == (1, 5)


def test_timm_reset_classifier_keeps_dtype_and_takes_dropout():
    pytest.importorskip("timm")
    from transferlearn.model.heads import DropoutHead
    model = load_model("timm/resnet18", weights=None).double()
    replace_head(model, 4, dropout=0.25)
    assert isinstance(model.fc, DropoutHead) and model.fc[1].weight.dtype == torch.float64
    assert model.get_classifier() is model.fc and model.num_classes == 4
    assert model(torch.randn(2, 3, 32, 32, dtype=torch.float64)).shape == (2, 4)


def test_timm_weights_option_is_checked():
    pytest.importorskip("timm")
    with pytest.raises(ValueError, match=r"for timm models weights must be None or 'DEFAULT', got 'IMAGENET1K_V1'"):
        load_model("timm/resnet18", weights="IMAGENET1K_V1")


def test_timm_pretrained_never_downloads_silently():
    pytest.importorskip("timm")
    with pytest.raises(FileNotFoundError, match=r"pretrained weights for timm model 'resnet18' are not in the local "
                                                r"Hugging Face cache; pass download=True"):
        load_model("timm/resnet18")


def test_install_weights_without_hash_in_name(hub, tmp_path):
    from torchvision.models._api import Weights, WeightsEnum

    class NoHash(WeightsEnum):
        V1 = Weights(url="https://example.invalid/models/plain.pth", transforms=lambda: None, meta={})

    src = tmp_path / "plain.pth"
    src.write_bytes(b"weights")
    with pytest.raises(ValueError, match=r"plain.pth carries no hash prefix to check; pass check_hash=False"):
        install_weights(src, NoHash.V1)
    target = install_weights(src, NoHash.V1, check_hash=False)
    assert target.read_bytes() == b"weights" and target.name == "plain.pth"


def test_timm_distilled_model_has_two_heads():
    pytest.importorskip("timm")
    from transferlearn import freeze_backbone, layer_groups
    model = load_model("timm/deit_tiny_distilled_patch16_224", weights=None, num_classes=4)
    assert find_head(model)[0] == "head" and model.head_dist.out_features == 4
    assert layer_groups(model)[-1][0] == "head+head_dist"
    freeze_backbone(model)
    assert {n for n, p in model.named_parameters() if p.requires_grad} == {
        "head.weight", "head.bias", "head_dist.weight", "head_dist.bias"}


def test_load_model_records_how_it_was_built():
    import copy
    import pickle
    model = load_model("resnet18", weights=None, num_classes=3, zero_init_residual=True)
    assert model.transferlearn_arch == "resnet18" and model.transferlearn_weights is None
    assert model.transferlearn_kwargs == {"zero_init_residual": True}
    assert not any("transferlearn" in key for key in model.state_dict())
    for clone in (copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
        assert clone.transferlearn_arch == "resnet18"
        assert clone.transferlearn_kwargs == {"zero_init_residual": True}


def test_load_model_records_the_weights_full_name(mobilenet_weights):
    model = load_model("mobilenet_v2", weights="IMAGENET1K_V1")
    assert model.transferlearn_weights == "MobileNet_V2_Weights.IMAGENET1K_V1"
    assert load_model("mobilenet_v2", weights=mobilenet_weights).transferlearn_weights == \
        "MobileNet_V2_Weights.IMAGENET1K_V1"


def _fake_hf_cache(root, repo: str, filename: str, tensors: dict) -> None:
    from safetensors.torch import save_file
    folder = root / ("models--" + repo.replace("/", "--"))
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text("0123abcd")
    (folder / "snapshots" / "0123abcd").mkdir(parents=True)
    save_file(tensors, str(folder / "snapshots" / "0123abcd" / filename))


def test_timm_pretrained_loads_from_the_local_hf_cache_without_process_wide_switches(tmp_path, monkeypatch):
    timm = pytest.importorskip("timm")
    import huggingface_hub
    from huggingface_hub import constants
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    torch.manual_seed(3)
    reference = {k: v.clone() for k, v in timm.create_model("resnet18").state_dict().items()}
    _fake_hf_cache(tmp_path / "hf", "timm/resnet18.a1_in1k", "model.safetensors", reference)

    def no_network(*args, **kwargs):
        raise AssertionError("hf_hub_download must not be called")
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", no_network)
    monkeypatch.setattr("timm.models._hub.hf_hub_download", no_network, raising=False)
    seen = []
    real_create = timm.create_model

    def spy(*args, **kwargs):
        seen.append(constants.HF_HUB_OFFLINE)
        return real_create(*args, **kwargs)
    monkeypatch.setattr(timm, "create_model", spy)
    before = constants.HF_HUB_OFFLINE
    model = load_model("timm/resnet18")
    assert seen == [before] and constants.HF_HUB_OFFLINE == before      # never flipped, not even during
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, reference[key], msg=key)
    assert model.transferlearn_arch == "timm/resnet18" and model.transferlearn_weights == "DEFAULT"


def test_timm_pretrained_legacy_url_cache(hub):
    timm = pytest.importorskip("timm")
    from huggingface_hub import constants
    torch.manual_seed(4)
    reference = timm.create_model("resnet18.tv_in1k").state_dict()
    (hub / "checkpoints").mkdir(parents=True)
    torch.save(reference, hub / "checkpoints" / "resnet18-f37072fd.pth")
    if (Path(constants.HF_HUB_CACHE) / "models--timm--resnet18.tv_in1k").exists():
        pytest.skip("the real HF cache holds this model")
    model = load_model("timm/resnet18.tv_in1k")
    torch.testing.assert_close(model.fc.weight, reference["fc.weight"])


def test_install_weights_never_replaces_a_different_cached_checkpoint_without_force(hub, tmp_path):
    """review finding 2: install_weights replaced whatever the cache held for those weights."""
    first, second = tmp_path / "first.pth", tmp_path / "second.pth"
    first.write_bytes(b"the checkpoint installed first")
    second.write_bytes(b"another file")
    target = install_weights(first, ResNet18_Weights.IMAGENET1K_V1, check_hash=False)
    assert install_weights(first, ResNet18_Weights.IMAGENET1K_V1, check_hash=False) == target   # same bytes: fine
    with pytest.raises(FileExistsError, match=r"resnet18-f37072fd.pth already holds a different checkpoint of "
                                              r"ResNet18_Weights.IMAGENET1K_V1; pass force=True to replace it"):
        install_weights(second, ResNet18_Weights.IMAGENET1K_V1, check_hash=False)
    assert target.read_bytes() == b"the checkpoint installed first"
    assert install_weights(second, ResNet18_Weights.IMAGENET1K_V1, check_hash=False, force=True) == target
    assert target.read_bytes() == b"another file"
    with pytest.raises(TypeError, match=r"force must be True or False, got .yes."):
        install_weights(second, ResNet18_Weights.IMAGENET1K_V1, check_hash=False, force="yes")


@pytest.mark.parametrize("content", [b"nope", b"PK\x03\x04 a truncated zip", b""])
def test_a_cached_checkpoint_that_cannot_be_loaded_is_named_with_how_to_reinstall_it(hub, content):
    """review finding 2: a damaged checkpoint in the cache surfaced as a raw unpickling error."""
    path = checkpoint_path(ResNet18_Weights.IMAGENET1K_V1)
    path.parent.mkdir(parents=True)
    path.write_bytes(content)
    with pytest.raises(ValueError, match=rf"the cached checkpoint {path} of ResNet18_Weights.IMAGENET1K_V1 cannot "
                                         r"be loaded \(.*\); it is damaged or not these weights: reinstall it with "
                                         r"install_weights\(file, 'ResNet18_Weights.IMAGENET1K_V1', force=True\)"):
        load_model("resnet18", weights="IMAGENET1K_V1")
