"""layer_groups: a partition, by depth, input side first, head last."""

from __future__ import annotations

import torchvision.models as tvm
from hypothesis import given

from transferlearn import layer_groups, replace_head

from .strategies import conv_stacks


def test_resnet18_groups_by_name():
    names = [n for n, _ in layer_groups(tvm.resnet18(weights=None))]
    assert names == ["conv1+bn1", "layer1", "layer2", "layer3", "layer4.0", "layer4.1", "fc"]


def test_vit_bare_parameters_join_the_input_side():
    names = [n for n, _ in layer_groups(tvm.vit_b_32(weights=None))]
    assert names[0] == "class_token+conv_proj"
    assert names[1] == "encoder.pos_embedding+encoder.layers.encoder_layer_0"
    assert names[-2] == "encoder.layers.encoder_layer_11+encoder.ln" and names[-1] == "heads.head"


def test_non_head_parts_of_a_classifier_stay_in_the_backbone():
    names = [n for n, _ in layer_groups(tvm.vgg11(weights=None))]
    assert names[-3:] == ["classifier.0", "classifier.3", "classifier.6"]
    assert names[0] == "features.0"


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
