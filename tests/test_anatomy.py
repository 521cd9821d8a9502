"""anatomy(model): stages by the model's own structure, no-decay names, data config, read once."""

from __future__ import annotations

import copy
import json

import pytest
import torch
import torchvision.models as tvm
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from transferlearn import (
    Anatomy,
    anatomy,
    extract_features,
    freeze_backbone,
    imagenet_transform,
    layer_groups,
    load_image,
    load_image_folder,
    load_model,
    param_groups,
    unfreeze,
)
from transferlearn.model import anatomy as anatomy_module
from transferlearn.model.batchnorm import is_bn_frozen, pin_early_bn
from transferlearn.model.data_config import DataConfig
from transferlearn.model.freezing import set_phase
from transferlearn.train.feature_cache import cached_step_module

from .conftest import TinyNet
from .strategies import conv_stacks


def grown() -> nn.Module:
    """A TinyNet with one more layer (the last Linear, so the head there)."""
    model = TinyNet()
    model.extra = nn.Linear(3, 3)
    return model


def trained_names(model: nn.Module) -> set[str]:
    return {n for n, p in model.named_parameters() if p.requires_grad}


def under(model: nn.Module, *prefixes: str) -> set[str]:
    return {n for n, _ in model.named_parameters() if n.startswith(prefixes)}


@pytest.mark.parametrize("arch", ["resnet18", "resnet50", "resnet101"])
def test_unfreeze_last_two_is_layer3_and_layer4_at_every_depth(arch):
    model = tvm.get_model(arch, weights=None)
    unfreeze(model, last=2)
    assert trained_names(model) == under(model, "layer3.", "layer4.", "fc.")


@pytest.mark.parametrize("arch, last_two", [
    ("efficientnet_b0", ("features.7.", "features.8.")),      # the last block row and the 1x1 conv head
    ("convnext_tiny", ("features.4.", "features.5.", "features.6.", "features.7.", "classifier.0.")),
    ("vit_b_16", tuple(f"encoder.layers.encoder_layer_{i}." for i in range(6, 12)) + ("encoder.ln.",)),
    ("mobilenet_v2", ("features.17.", "features.18.")),       # as timm: blocks.6 and conv_head
    ("mnasnet0_5", ("layers.13.", "layers.14.", "layers.15.")),
])
def test_unfreeze_last_two_stages_on_other_families(arch, last_two):
    model = tvm.get_model(arch, weights=None)
    found = anatomy(model)
    unfreeze(model, last=2, anatomy=found)
    assert trained_names(model) == under(model, *last_two) | set(found.head_params)


@pytest.mark.parametrize("name, last_two", [
    ("resnet18", ("layer3.", "layer4.", "fc.")),
    ("vit_tiny_patch16_224", ("blocks.10.", "blocks.11.", "norm.", "head.")),
])
def test_timm_stages_come_from_its_group_matcher(name, last_two):
    timm = pytest.importorskip("timm")
    from timm.models import group_parameters
    model = timm.create_model(name, pretrained=False)
    found = anatomy(model)
    assert found.stages_from == "timm group_matcher"
    theirs = [names for _, names in sorted(group_parameters(model, model.group_matcher(coarse=True)).items())]
    assert [list(ps) for _, ps in found.stages] == [[n for n in g if n not in found.head_params] for g in theirs
                                                   if set(g) - set(found.head_params)]
    unfreeze(model, last=2)
    assert trained_names(model) == under(model, *last_two)


def test_vit_tokens_and_position_embeddings_take_no_weight_decay():
    model = tvm.vit_b_16(weights=None)
    groups = param_groups(model, head_lr=1e-3, weight_decay=0.05)
    decay_of = {id(p): g["weight_decay"] for g in groups for p in g["params"]}
    assert decay_of[id(model.class_token)] == decay_of[id(model.encoder.pos_embedding)] == 0.0
    assert decay_of[id(model.conv_proj.weight)] == decay_of[id(model.heads.head.weight)] == 0.05
    assert decay_of[id(model.conv_proj.bias)] == 0.0


def test_timm_no_weight_decay_is_honoured():
    timm = pytest.importorskip("timm")
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False)
    decay_of = {id(p): g["weight_decay"] for g in param_groups(model, head_lr=1e-3, weight_decay=0.1)
                for p in g["params"]}
    assert decay_of[id(model.cls_token)] == decay_of[id(model.pos_embed)] == 0.0
    assert decay_of[id(model.blocks[0].attn.qkv.weight)] == 0.1
    assert set(model.no_weight_decay()) & {n for n, _ in model.named_parameters()} <= set(anatomy(model).no_decay)


def test_backbone_lr_pair_spreads_over_the_stages():
    model = tvm.resnet50(weights=None)
    groups = param_groups(model, head_lr=1e-3, backbone_lr=(1e-5, 1e-4))
    assert [g["name"] for g in groups] == ["conv1+bn1", "layer1", "layer2", "layer3", "layer4", "fc"]
    rates = [g["lr"] for g in groups[:-1]]
    torch.testing.assert_close(torch.tensor(rates), torch.logspace(-5, -4, 5, dtype=torch.float64).float())


def test_early_bn_pins_the_first_half_of_the_stages():
    model = tvm.resnet18(weights=None)
    pin_early_bn(model)
    pinned = {n for n, m in model.named_modules() if is_bn_frozen(m)}
    assert pinned == {n for n, m in model.named_modules()
                      if isinstance(m, nn.BatchNorm2d) and (n == "bn1" or n.startswith("layer1."))}


def test_the_value_survives_deepcopy_to_and_json():
    model = tvm.mobilenet_v2(weights=None)
    found = anatomy(model)
    assert copy.deepcopy(found) == found
    assert Anatomy.from_dict(json.loads(json.dumps(found.to_dict()))) == found
    moved = copy.deepcopy(model).to(torch.float64)
    assert anatomy(moved) == found
    assert [id(p) for _, ps in layer_groups(moved, anatomy=found) for p in ps] == [id(p) for p in moved.parameters()]
    assert found.pre_head == ("classifier.0",) and (found.feature_dim, found.num_classes) == (1280, 1000)


def test_source_is_what_load_model_recorded():
    model = load_model("resnet18", weights=None, num_classes=3, zero_init_residual=True)
    found = anatomy(model)
    assert (found.source.arch, found.source.weights, dict(found.source.kwargs)) == \
        ("resnet18", None, {"zero_init_residual": True})
    assert anatomy(tvm.resnet18(weights=None)).source is None
    assert Anatomy.from_dict(json.loads(json.dumps(found.to_dict()))) == found


@given(conv_stacks(), st.integers(0, 6))
def test_for_any_model_the_stages_and_heads_partition_it_and_last_counts_stages(stack, last):
    model, head = stack
    found = anatomy(model, head=head)
    assert Anatomy.from_dict(json.loads(json.dumps(found.to_dict()))) == found
    names = [n for _, ps in found.stages for n in ps] + list(found.head_params)
    assert sorted(names) == sorted(n for n, _ in model.named_parameters()) and len(set(names)) == len(names)
    unfreeze(model, last=last, anatomy=found)
    kept = found.stages[len(found.stages) - last:] if last else ()
    expected = {n for _, ps in kept for n in ps}
    assert trained_names(model) == expected | set(found.head_params)


def test_custom_models_keep_the_generic_rule(tiny):
    found = anatomy(tiny)
    assert found.stages_from == "heuristic"   # the names 0.1.0's layer_groups gave (fe7e29a)
    assert [n for n, _ in found.stages] == ["stem", "stage1.0+stage1.1", "stage2.0+stage2.1"]
    mlp = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
    assert [n for n, _ in layer_groups(mlp)] == ["0", "2+3", "4"]


@pytest.fixture
def derivations(monkeypatch) -> dict[str, int]:
    """How often the anatomy finds a head and splits stages, from now on."""
    calls = {"find_head": 0, "stages": 0}

    def spy(name, fn):
        def counted(*args, **kwargs):
            calls[name] += 1
            return fn(*args, **kwargs)
        return counted
    monkeypatch.setattr(anatomy_module, "find_head", spy("find_head", anatomy_module.find_head))
    monkeypatch.setattr(anatomy_module, "backbone_stages", spy("stages", anatomy_module.backbone_stages))
    return calls


def test_one_derivation_serves_every_consumer(derivations, tiny):
    calls = derivations
    found = anatomy(tiny)
    assert calls == {"find_head": 1, "stages": 1}
    loader = DataLoader(TensorDataset(torch.randn(4, 3, 8, 8), torch.tensor([0, 1, 2, 0])), batch_size=2)
    extract_features(tiny, loader, anatomy=found)
    layer_groups(tiny, anatomy=found)
    param_groups(tiny, head_lr=1e-3, backbone_lr=(1e-5, 1e-4), weight_decay=0.1, anatomy=found)
    freeze_backbone(tiny, anatomy=found)
    unfreeze(tiny, last=1, anatomy=found)
    set_phase(tiny, "finetune", last=1, freeze_bn="early", anatomy=found)
    cached_step_module(tiny, anatomy=found)
    assert calls == {"find_head": 1, "stages": 1}
    layer_groups(tiny)  # without it, each call reads the model again
    assert calls == {"find_head": 2, "stages": 2}


@pytest.mark.parametrize("call, exc, pattern", [
    (lambda m: layer_groups(m, anatomy="fc"), TypeError, r"anatomy must be an Anatomy .* got 'fc' \(str\)"),
    (lambda m: unfreeze(m, last=1, head="stage2", anatomy=anatomy(m)), ValueError,
     r"head='stage2' disagrees with anatomy.head='fc'"),
    (lambda m: param_groups(m, head_lr=1e-3, anatomy=anatomy(grown())), ValueError,
     r"anatomy does not match this TinyNet: parameters not in it \[\], names it has that the model lacks "
     r"\['extra.bias', 'extra.weight'\]"),
    (lambda m: Anatomy.from_dict({"head": "fc"}), ValueError, r"anatomy fields must be \["),
    (lambda m: Anatomy.from_dict([]), TypeError, r"anatomy must be a dict, got \[\] \(list\)"),
])
def test_errors(tiny, call, exc, pattern):
    with pytest.raises(exc, match=pattern):
        call(tiny)


# ------------------------------------------------------------------------------ data config
def timm_vit():
    pytest.importorskip("timm")
    return load_model("timm/vit_small_patch16_224.augreg_in21k", weights=None)


def chelsea() -> Image.Image:
    from skimage import data
    return Image.fromarray(data.chelsea())


def test_a_timm_model_gets_exactly_timms_own_preprocessing():
    from timm.data import create_transform, resolve_data_config
    model = timm_vit()
    ours = imagenet_transform(model=model)
    assert (ours.size, ours.resize, ours.mean, ours.interpolation.value) == (224, 248, [0.5] * 3, "bicubic")
    theirs = create_transform(**resolve_data_config({}, model=model))
    img = chelsea()
    torch.testing.assert_close(ours(img), theirs(img))
    torch.testing.assert_close(imagenet_transform(model=anatomy(model))(img), theirs(img))


def test_explicit_arguments_win_over_the_models_config():
    tf = imagenet_transform(model=timm_vit(), size=112, mean=(0.1, 0.2, 0.3))
    assert (tf.size, tf.resize, tf.mean, tf.std) == (112, 124, [0.1, 0.2, 0.3], [0.5] * 3)


def test_torchvision_weights_recorded_by_load_model_are_used():
    model = tvm.resnet50(weights=None)
    model.transferlearn_weights = "ResNet50_Weights.IMAGENET1K_V2"   # as load_model records it
    ours, theirs = imagenet_transform(model=model), tvm.ResNet50_Weights.IMAGENET1K_V2.transforms()
    assert (ours.resize, ours.size) == (232, 224)
    torch.testing.assert_close(ours(chelsea()), theirs(chelsea()), atol=1e-4, rtol=0)
    assert anatomy(tvm.resnet50(weights=None)).data_config.source == "default"


def test_load_image_folder_uses_the_models_preprocessing(tmp_path):
    from timm.data import create_transform, resolve_data_config
    model = timm_vit()
    for name in ("cat", "dog"):
        (tmp_path / name).mkdir()
        for i in range(3):
            chelsea().crop((i * 20, 0, 300 + i * 20, 280)).save(tmp_path / name / f"{i}.png")
    data = load_image_folder(tmp_path, val_fraction=0.34, model=model, cache_bytes=0, draft=False)
    theirs = create_transform(**resolve_data_config({}, model=model))
    for split in (data.train, data.val):
        path, _ = split.samples[0]
        torch.testing.assert_close(split[0][0], theirs(load_image(path)))


@pytest.mark.parametrize("call, exc, pattern", [
    (lambda: imagenet_transform(weights="ResNet50_Weights.IMAGENET1K_V2", model=tvm.resnet18()), ValueError,
     r"pass weights= or model=, not both"),
    (lambda: imagenet_transform(model="resnet18"), TypeError,
     r"model must be an nn.Module, an Anatomy or a DataConfig, got 'resnet18' \(str\)"),
    (lambda: imagenet_transform(model=DataConfig((224, 224), 256, (0.5,) * 3, (0.5,) * 3, "bicubic", 0.875,
                                                 "squash", "timm:x")), ValueError,
     r"the data config from timm:x uses crop_mode='squash'; imagenet_transform makes centre crops only"),
    (lambda: imagenet_transform(model=DataConfig((224, 320), 256, (0.5,) * 3, (0.5,) * 3, "bicubic", 0.875)),
     ValueError, r"the data config from default has a 224x320 crop"),
    (lambda: DataConfig.from_dict({"size": 3}), ValueError, r"data_config fields must be \["),
])
def test_data_config_errors(call, exc, pattern):
    with pytest.raises(exc, match=pattern):
        call()


@pytest.mark.parametrize("cache", ["auto", False])
def test_one_fit_derives_the_head_and_the_stages_once(cache, request):
    """A whole fit (warm-up, fine-tuning with a (low, high) spread, early BatchNorm pinning,
    validation, a checkpoint) reads the model's structure once: one find_head, one stage split."""
    from torchvision.models import resnet18

    import transferlearn as tl

    model = tl.replace_head(resnet18(weights=None), 3)
    trainer = tl.Trainer(model, seed=0, progress=False)
    calls = request.getfixturevalue("derivations")  # counting from here: the Trainer was built before
    data = TensorDataset(torch.randn(8, 3, 32, 32), torch.tensor([0, 1, 2, 0, 1, 2, 0, 1]))
    trainer.fit(DataLoader(data, batch_size=4), DataLoader(data, batch_size=4), warmup_epochs=1,
                finetune_epochs=1, backbone_lr=(1e-5, 1e-4), weight_decay=0.01, freeze_bn="early",
                cache_features=cache)
    assert calls == {"find_head": 1, "stages": 1}


@pytest.mark.parametrize("arch, rows", [
    ("mobilenet_v2", ["features.0", "features.1", "features.2-3", "features.4-6", "features.7-10",
                      "features.11-13", "features.14-16", "features.17", "features.18"]),
    ("efficientnet_b0", [f"features.{i}" for i in range(9)]),
])
def test_inverted_residual_families_are_staged_by_their_block_rows(arch, rows):
    """Stem, one stage per row of the block table (same stride and width), the 1x1 conv head:
    the same split as timm's group_matcher for its EfficientNet/MobileNet classes."""
    assert [name for name, _ in anatomy(tvm.get_model(arch, weights=None)).stages] == rows
