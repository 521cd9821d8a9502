"""layer_groups: a partition, by depth, input side first, head last."""

from __future__ import annotations

import pytest
import torchvision.models as tvm
from hypothesis import given

from transferlearn import layer_groups, replace_head

from .strategies import conv_stacks


@pytest.mark.parametrize("arch", ["resnet18", "resnet101"])
def test_resnet_groups_are_its_stages_at_any_depth(arch):
    names = [n for n, _ in layer_groups(tvm.get_model(arch, weights=None))]
    assert names == ["conv1+bn1", "layer1", "layer2", "layer3", "layer4", "fc"]


def test_vit_stem_then_four_equal_groups_of_encoder_layers():
    names = [n for n, _ in layer_groups(tvm.vit_b_32(weights=None))]
    assert names == ["class_token+conv_proj+encoder.pos_embedding", "encoder.layers.encoder_layer_0-2",
                     "encoder.layers.encoder_layer_3-5", "encoder.layers.encoder_layer_6-8",
                     "encoder.layers.encoder_layer_9-11+encoder.ln", "heads.head"]


def test_non_head_parts_of_a_classifier_join_the_last_stage():
    groups = layer_groups(tvm.vgg11(weights=None))
    assert [n for n, _ in groups] == ["features.0", "features.3", "features.6-8", "features.11-13",
                                      "features.16-18", "classifier.0-3", "classifier.6"]
    model = tvm.vgg11(weights=None)
    assert [id(p) for p in layer_groups(model)[-2][1]] == \
        [id(p) for m in (model.classifier[0], model.classifier[3]) for p in m.parameters()]


def test_identity_head_leaves_no_empty_group(tiny):
    replace_head(tiny, 0)
    groups = layer_groups(tiny)
    assert all(ps for _, ps in groups) and groups[-1][0] != "fc"


def test_shared_parameters_appear_once():
    from torch import nn
    shared = nn.Linear(4, 4)
    model = nn.Sequential(shared, nn.ReLU(), shared, nn.Linear(4, 2))
    groups = layer_groups(model)
    ids = [id(p) for _, ps in groups for p in ps]
    assert len(ids) == len(set(ids)) == len(list(model.parameters())) == 4
    assert [n for n, _ in groups] == ["0", "3"]


@given(conv_stacks())
def test_partition_in_registration_order(stack):
    model, head = stack
    groups = layer_groups(model, head=head)
    flat = [id(p) for _, ps in groups for p in ps]
    assert flat == [id(p) for p in model.parameters()]       # complete, disjoint, by depth
    assert groups[-1][0] == str(len(model) - 1)               # the head last
