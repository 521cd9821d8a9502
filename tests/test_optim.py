"""param_groups: a checked partition with explicit lr / weight_decay in every group."""

from __future__ import annotations

import math

import pytest
import torch
import torchvision.models as tvm
from hypothesis import given
from hypothesis import strategies as st

from transferlearn import freeze_backbone, layer_groups, param_groups

from .strategies import conv_stacks

rates = st.floats(1e-6, 1.0)
backbone = st.one_of(st.none(), st.floats(0.0, 1.0), st.tuples(rates, rates).map(sorted).map(tuple))


@given(stack=conv_stacks(), head_lr=rates, backbone_lr=backbone, wd=st.sampled_from([0.0, 1e-4]),
       frozen=st.booleans(), trainable_only=st.booleans())
def test_partition_for_any_options(stack, head_lr, backbone_lr, wd, frozen, trainable_only):
    model, head = stack
    if frozen:
        freeze_backbone(model, head=head)
    groups = param_groups(model, head_lr=head_lr, backbone_lr=backbone_lr, weight_decay=wd,
                          head=head, trainable_only=trainable_only)
    ids = [id(p) for g in groups for p in g["params"]]
    expected = [p for p in model.parameters() if p.requires_grad or not trainable_only]
    assert len(ids) == len(set(ids)) and set(ids) == {id(p) for p in expected}
    for g in groups:
        assert set(g) >= {"params", "lr", "weight_decay", "name"} and g["params"]
        if g["weight_decay"]:
            assert all(p.ndim > 1 for p in g["params"])
    torch.optim.AdamW(groups, lr=123.0)          # any optimizer accepts them
    assert all(g["lr"] != 123.0 for g in groups)


def test_default_backbone_is_head_over_ten(tiny):
    groups = param_groups(tiny, head_lr=1e-3)
    assert [(g["name"], g["lr"]) for g in groups] == [("backbone", 1e-4), ("fc", 1e-3)]
    assert all(g["weight_decay"] == 0.0 for g in groups)


def test_geometric_spread_over_layer_groups():
    model = tvm.resnet18(weights=None)
    groups = param_groups(model, head_lr=1e-3, backbone_lr=(1e-5, 1e-4))
    lrs = [g["lr"] for g in groups]
    names = [g["name"] for g in groups]
    assert names == [n for n, _ in layer_groups(model)]
    assert lrs[0] == pytest.approx(1e-5) and lrs[-2] == pytest.approx(1e-4) and lrs[-1] == 1e-3
    assert all(a < b for a, b in zip(lrs[:-2], lrs[1:-1]))                  # monotone
    ratios = [b / a for a, b in zip(lrs[:-2], lrs[1:-1])]
    assert all(math.isclose(r, ratios[0], rel_tol=1e-9) for r in ratios)   # geometric


def test_weight_decay_twins(tiny):
    groups = {g["name"]: g for g in param_groups(tiny, head_lr=0.1, weight_decay=0.05)}
    assert groups["fc"]["weight_decay"] == 0.05 and [p.ndim for p in groups["fc"]["params"]] == [2]
    assert groups["fc/no_decay"]["weight_decay"] == 0.0 and groups["fc/no_decay"]["params"][0] is tiny.fc.bias
    assert groups["backbone/no_decay"]["weight_decay"] == 0.0


def test_frozen_parameters_included_unless_trainable_only(tiny):
    freeze_backbone(tiny)
    assert sum(len(g["params"]) for g in param_groups(tiny, head_lr=1e-3)) == len(list(tiny.parameters()))
    only = param_groups(tiny, head_lr=1e-3, trainable_only=True)
    assert [g["name"] for g in only] == ["fc"]


def test_optimizer_built_before_warmup_leaves_frozen_weights_alone(tiny):
    opt = torch.optim.AdamW(param_groups(tiny, head_lr=1e-2, weight_decay=0.1))
    freeze_backbone(tiny)
    before = [p.clone() for p in tiny.stem.parameters()]
    tiny(torch.randn(2, 3, 8, 8)).sum().backward()
    opt.step()
    assert all(torch.equal(a, b) for a, b in zip(before, tiny.stem.parameters()))


@pytest.mark.parametrize("kwargs, exc, pattern", [
    ({"head_lr": 0}, ValueError, r"head_lr must be a finite number > 0.0, got 0"),
    ({"head_lr": "1e-3"}, TypeError, r"head_lr must be a real number, got '1e-3' \(str\)"),
    ({"head_lr": 1e-3, "backbone_lr": -1.0}, ValueError, r"backbone_lr must be a finite number >= 0.0"),
    ({"head_lr": 1e-3, "backbone_lr": (1e-3, 1e-5)}, ValueError, r"needs low <= high, got \(0.001, 1e-05\)"),
    ({"head_lr": 1e-3, "backbone_lr": (0.0, 1e-5)}, ValueError, r"backbone_lr\[0\] must be a finite number > 0.0"),
    ({"head_lr": 1e-3, "backbone_lr": (1e-5, 1e-4, 1e-3)}, TypeError, r"backbone_lr must be None, a float or a \(low, high\) pair"),
    ({"head_lr": 1e-3, "weight_decay": float("nan")}, ValueError, r"weight_decay must be a finite number >= 0.0, got nan"),
    ({"head_lr": 1e-3, "trainable_only": 1}, TypeError, r"trainable_only must be True or False, got 1 \(int\)"),
])
def test_errors(tiny, kwargs, exc, pattern):
    with pytest.raises(exc, match=pattern):
        param_groups(tiny, **kwargs)
