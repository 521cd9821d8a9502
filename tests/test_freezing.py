"""freeze_backbone and unfreeze: exactly the right parameters train, stale grads cleared."""

from __future__ import annotations

import pytest
import torch
import torchvision.models as tvm
from hypothesis import given
from torch import nn

from transferlearn import freeze_backbone, layer_groups, unfreeze
from transferlearn.model.freezing import head_parameters

from .strategies import conv_stacks


def trainable(model: nn.Module) -> set[str]:
    return {n for n, p in model.named_parameters() if p.requires_grad}


@given(conv_stacks())
def test_freeze_backbone_leaves_exactly_the_head(stack):
    model, head = stack
    freeze_backbone(model, head=head)
    last = str(len(model) - 1)
    assert trainable(model) == {n for n, _ in model.named_parameters() if n.startswith(last + ".")}


def test_vit_bare_parameters_are_frozen():
    model = tvm.vit_b_32(weights=None)
    freeze_backbone(model)
    assert trainable(model) == {"heads.head.weight", "heads.head.bias"}
    assert not model.class_token.requires_grad and not model.encoder.pos_embedding.requires_grad


def test_stale_grads_cannot_move_frozen_weights(tiny):
    opt = torch.optim.SGD(tiny.parameters(), lr=0.1, momentum=0.9, weight_decay=0.1)
    tiny(torch.randn(4, 3, 8, 8)).sum().backward()
    opt.step()                                   # momentum buffers now exist everywhere
    freeze_backbone(tiny)
    before = {n: p.clone() for n, p in tiny.named_parameters()}
    opt.zero_grad(set_to_none=False)
    tiny(torch.randn(4, 3, 8, 8)).sum().backward()
    opt.step()
    moved = {n for n, p in tiny.named_parameters() if not torch.equal(p, before[n])}
    assert moved == {"fc.weight", "fc.bias"}


def test_train_bn_keeps_bn_affine_trainable(tiny):
    freeze_backbone(tiny, train_bn=True)
    assert trainable(tiny) == {"fc.weight", "fc.bias", "stem.1.weight", "stem.1.bias",
                               "stage1.1.weight", "stage1.1.bias", "stage2.1.weight", "stage2.1.bias"}


def test_freeze_does_not_touch_bn_statistics_or_mode(tiny):
    tiny.train()
    freeze_backbone(tiny)
    assert tiny.stem[1].training


@pytest.mark.parametrize("last, expected_groups", [(0, 0), (1, 1), (2, 2), (99, 3)])
def test_unfreeze_last_n_groups(tiny, last, expected_groups):
    freeze_backbone(tiny)
    unfreeze(tiny, last=last)
    groups = layer_groups(tiny)[:-1]
    on = [g for g, ps in groups if all(p.requires_grad for p in ps)]
    off = [g for g, ps in groups if not any(p.requires_grad for p in ps)]
    assert on == [g for g, _ in groups][len(groups) - expected_groups:]
    assert len(on) + len(off) == len(groups)
    assert all(p.requires_grad for p in head_parameters(tiny))


def test_unfreeze_all(tiny):
    freeze_backbone(tiny)
    assert unfreeze(tiny) is tiny
    assert all(p.requires_grad for p in tiny.parameters())


@pytest.mark.parametrize("call, exc, pattern", [
    (lambda m: unfreeze(m, last=-1), ValueError, r"last must be an int >= 0, got -1"),
    (lambda m: unfreeze(m, last=1.5), TypeError, r"last must be an int >= 0, got 1.5 \(float\)"),
    (lambda m: freeze_backbone(m, train_bn="yes"), TypeError, r"train_bn must be True or False, got 'yes'"),
    (lambda m: freeze_backbone(m, head="missing"), ValueError, r"head='missing' is not a submodule"),
    (lambda m: freeze_backbone([m]), TypeError, r"model must be a torch.nn.Module, got \[TinyNet"),
])
def test_errors(tiny, call, exc, pattern):
    with pytest.raises(exc, match=pattern):
        call(tiny)


def test_set_phase_is_what_the_trainer_does_at_each_switch(tiny):
    from transferlearn import is_bn_frozen
    from transferlearn.model.freezing import set_phase
    assert set_phase(tiny, "warmup") is tiny
    assert [n for n, p in tiny.named_parameters() if p.requires_grad] == ["fc.weight", "fc.bias"]
    assert all(is_bn_frozen(m) for m in tiny.modules() if isinstance(m, nn.BatchNorm2d))
    set_phase(tiny, "finetune", last=1, freeze_bn=False)
    assert not any(p.requires_grad for p in tiny.stem.parameters()) and tiny.stage2[0].weight.requires_grad
    assert not any(is_bn_frozen(m) for m in tiny.modules())
    with pytest.raises(ValueError, match=r"phase must be 'warmup' or 'finetune', got 'train'"):
        set_phase(tiny, "train")
    with pytest.raises(TypeError, match=r"freeze_bn must be True, False or 'early', got 1"):
        set_phase(tiny, "finetune", freeze_bn=1)
