"""Contract tests over the torchvision architecture table.

The default suite takes one model per family; ``-m slow`` sweeps all classification models
in ``torchvision.models`` (scripts/test.sh runs both).
"""

from __future__ import annotations

import pytest
import torch
import torchvision.models as tvm
from torch import nn

from transferlearn import anatomy, find_head, freeze_backbone, layer_groups, replace_head
from transferlearn.model.freezing import head_parameters

ALL = tvm.list_models(module=tvm)
FAMILY_SAMPLE = ["alexnet", "convnext_tiny", "densenet121", "efficientnet_b0", "googlenet",
                 "inception_v3", "maxvit_t", "mnasnet0_5", "mobilenet_v2", "mobilenet_v3_small",
                 "regnet_x_400mf", "resnet18", "shufflenet_v2_x0_5", "squeezenet1_1", "swin_t",
                 "vgg11_bn", "vit_b_32"]
HEADS = {"resnet": "fc", "wide_resnet": "fc", "resnext": "fc", "regnet": "fc", "shufflenet": "fc",
         "googlenet": "fc", "inception": "fc", "vgg": "classifier.6", "alexnet": "classifier.6",
         "mobilenet_v2": "classifier.1", "mobilenet_v3": "classifier.3",
         "efficientnet": "classifier.1", "convnext": "classifier.2", "mnasnet": "classifier.1",
         "maxvit": "classifier.5", "densenet": "classifier", "squeezenet": "classifier.1",
         "vit": "heads.head", "swin": "head"}
AUX = {"googlenet": ["aux1.fc2", "aux2.fc2"], "inception_v3": ["AuxLogits.fc"]}


def expected_head(arch: str) -> str:
    return next(h for prefix, h in sorted(HEADS.items(), key=lambda kv: -len(kv[0]))
                if arch.startswith(prefix))


def input_side(arch: str) -> int:
    if arch.startswith(("vit", "maxvit")):
        return 224
    return 299 if arch == "inception_v3" else 64


def build(arch: str) -> nn.Module:
    torch.manual_seed(0)
    extra = {"init_weights": False} if arch in ("googlenet", "inception_v3") else {}
    return tvm.get_model(arch, weights=None, **extra)


def outputs(out) -> list[torch.Tensor]:
    """Main and auxiliary logits of a torchvision model in train mode."""
    return [t for t in out if t is not None] if isinstance(out, tuple) else [out]


def check_stages(model: nn.Module, rule: str, least: int) -> None:
    """The stages partition the backbone: every parameter outside the heads in exactly one
    stage, in registration (input) order, by the expected rule."""
    found = anatomy(model)
    assert found.stages_from == rule
    flat = [n for _, names in found.stages for n in names]
    assert flat == [n for n, _ in model.named_parameters() if n not in set(found.head_params)]
    assert len(found.stages) >= least and all(names for _, names in found.stages)


def check_contract(arch: str) -> None:
    model = build(arch)
    name, old = find_head(model)
    assert name == expected_head(arch)
    rule = "vision transformer: stem, encoder layers in 4 groups" if arch.startswith("vit") else \
        "output stride and width (block rows)" if arch.startswith(("mobilenet", "efficientnet", "mnasnet")) else \
        "output stride"
    check_stages(model, rule, 4)
    width = next(m for m in old.modules() if isinstance(m, (nn.Linear, nn.Conv2d))).weight.shape[1]
    replace_head(model, 7)
    for aux in AUX.get(arch, []):
        assert model.get_submodule(aux).out_features == 7
    x = torch.randn(2, 3, input_side(arch), input_side(arch))
    model.train()
    outs = outputs(model(x))
    assert outs[0].shape == (2, 7) and len(outs) == 1 + len(AUX.get(arch, []))
    sum(o.square().mean() for o in outs).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, f"parameters without gradient (orphans): {missing[:5]}"

    groups = layer_groups(model)
    assert groups[-1][0].split("+")[0] == name
    assert sum(len(ps) for _, ps in groups) == len(list(model.parameters()))

    freeze_backbone(model)
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert trainable == {id(p) for p in head_parameters(model)}
    assert all(p.grad is None for p in model.parameters() if not p.requires_grad)

    replace_head(model, 0)
    model.eval()
    with torch.inference_mode():
        assert model(x).shape == (2, width)


@pytest.mark.parametrize("arch", FAMILY_SAMPLE)
def test_family_contract(arch):
    check_contract(arch)


@pytest.mark.slow
@pytest.mark.parametrize("arch", [a for a in ALL if a not in FAMILY_SAMPLE])
def test_full_sweep_contract(arch):
    check_contract(arch)


def test_sample_covers_every_family():
    assert {expected_head(a) for a in ALL} == {expected_head(a) for a in FAMILY_SAMPLE}
    assert len(ALL) >= 80


TIMM_SAMPLE = ["resnet18", "vit_tiny_patch16_224", "convnext_atto", "efficientnet_b0",
               "deit_tiny_distilled_patch16_224", "mobilenetv3_small_050", "regnetx_002"]


@pytest.mark.parametrize("name", TIMM_SAMPLE)
def test_timm_contract(name):
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False)
    heads = model.get_classifier()
    heads = list(heads) if isinstance(heads, tuple) else [heads]
    head_name = next(n for n, m in model.named_modules() if m is heads[0])
    assert find_head(model)[0] == head_name
    check_stages(model, "timm group_matcher", 5)
    width = heads[0].in_features
    replace_head(model, 7)
    side = 224 if "patch16_224" in name else 64
    x = torch.randn(2, 3, side, side)
    model.train()
    out = model(x)
    assert out.shape == (2, 7)
    out.square().mean().backward()
    assert not [n for n, p in model.named_parameters() if p.grad is None]
    groups = layer_groups(model)
    assert sum(len(ps) for _, ps in groups) == len(list(model.parameters()))
    freeze_backbone(model)
    assert {id(p) for p in model.parameters() if p.requires_grad} == {id(p) for p in head_parameters(model)}
    replace_head(model, 0)
    model.eval()
    with torch.inference_mode():
        assert model(x).shape == (2, width)
