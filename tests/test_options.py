"""Options mean what they say: a bool option takes True or False, never 0/1/None; numbers are finite."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader

import transferlearn as tl

from .conftest import TinyNet
from .test_trainer import separable


def fit(**kwargs):
    tl.Trainer(TinyNet(), progress=False).fit(DataLoader(separable(8), batch_size=4), **kwargs)


BOOL_OPTIONS = [
    ("Trainer(amp=)", lambda v: tl.Trainer(TinyNet(), amp=v), "amp"),
    ("Trainer(progress=)", lambda v: tl.Trainer(TinyNet(), progress=v), "progress"),
    ("fit(freeze_bn=)", lambda v: fit(freeze_bn=v), "freeze_bn"),
    ("fit(cache_features=)", lambda v: fit(cache_features=v), "cache_features"),
    ("fit(restore_best=)", lambda v: fit(restore_best=v), "restore_best"),
    ("fit(resume=)", lambda v: fit(resume=v), "resume"),
    ("Trainer(channels_last=)", lambda v: tl.Trainer(TinyNet(), channels_last=v), "channels_last"),
    ("Trainer(compile=)", lambda v: tl.Trainer(TinyNet(), compile=v), "compile"),
    ("freeze_backbone(train_bn=)", lambda v: tl.freeze_backbone(TinyNet(), train_bn=v), "train_bn"),
    ("freeze_bn_running_stats(strict=)", lambda v: tl.freeze_bn_running_stats(TinyNet(), strict=v), "strict"),
    ("param_groups(trainable_only=)", lambda v: tl.param_groups(TinyNet(), head_lr=1e-3, trainable_only=v),
     "trainable_only"),
    ("imagenet_transform(train=)", lambda v: tl.imagenet_transform(v), "train"),
    ("recommend_strategy(similar_domain=)", lambda v: tl.recommend_strategy(10, similar_domain=v),
     "similar_domain"),
]


@pytest.mark.parametrize("value", [0, 1, None, "True"])
@pytest.mark.parametrize("label, call, name", BOOL_OPTIONS, ids=[o[0] for o in BOOL_OPTIONS])
def test_bool_options_refuse_ints_none_and_strings(label, call, name, value):
    if value == "True" and name == "resume":
        pytest.skip("a string is a checkpoint path for resume=")
    with pytest.raises((TypeError, ValueError), match=rf"{name}"):
        call(value)


@pytest.mark.parametrize("kwargs, name", [
    ({"head_lr": float("nan")}, "head_lr"),
    ({"head_lr": float("inf")}, "head_lr"),
    ({"backbone_lr": float("nan")}, "backbone_lr"),
    ({"backbone_lr": (1e-5, float("inf"))}, r"backbone_lr\[1\]"),
    ({"weight_decay": float("nan")}, "weight_decay"),
])
def test_non_finite_numbers_are_refused(kwargs, name):
    with pytest.raises(ValueError, match=rf"{name} must be a finite number"):
        fit(warmup_epochs=1, finetune_epochs=1, **kwargs)


@pytest.mark.parametrize("kwargs, pattern", [
    ({"grad_clip": float("nan")}, r"grad_clip must be a finite number"),
    ({"aux_weight": float("inf")}, r"aux_weight must be a finite number"),
    ({"seed": -1}, r"seed must be an int in \[0, 4294967295\], got -1"),
])
def test_trainer_numbers_are_checked(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        tl.Trainer(TinyNet(), **kwargs)


def test_statistics_must_be_finite():
    with pytest.raises(ValueError, match="mean"):
        tl.imagenet_transform(mean=(float("nan"), 1.0, 1.0))
    with pytest.raises(ValueError, match="std"):
        tl.imagenet_transform(std=(1.0, float("inf"), 1.0))
    assert torch.isfinite(tl.imagenet_transform(size=8)(torch.rand(3, 8, 8))).all()
