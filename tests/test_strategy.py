"""recommend_strategy: every row of the decision table, and fit(strategy=...) applying it."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st
from torch.utils.data import DataLoader

from transferlearn import Strategy, Trainer, recommend_strategy

from .test_trainer import model, separable


@pytest.mark.parametrize("n, kwargs, kind, backbone_lr, unfreeze, freeze_bn, augment", [
    (1, {}, "feature_extraction", None, 0, True, False),           # < 30 per class: a head on features
    (29, {}, "feature_extraction", None, 0, True, False),          # boundary: < 30
    (30, {}, "fine_tune_all", 1e-4, None, True, False),            # 30 - 1000 (was feature extraction)
    (1000, {}, "fine_tune_all", 1e-4, None, True, False),
    (1001, {}, "fine_tune_last", 1e-4, 2, True, False),            # 1000 - 10000 (the chapter's row)
    (10000, {}, "fine_tune_last", 1e-4, 2, True, False),
    (10001, {}, "fine_tune_all", 1e-4, None, True, False),         # > 10000
    (29, {"similar_domain": False}, "feature_extraction", None, 0, True, False),
    (30, {"similar_domain": False}, "fine_tune_all", 1e-4, None, True, False),   # no aug., flat lr, pinned
    (50000, {"similar_domain": False}, "fine_tune_all", 1e-4, None, True, False),
    (5000, {"similar_domain": False, "total_images": 999_999}, "fine_tune_all", 1e-4, None, True, False),
    (5000, {"similar_domain": False, "total_images": 2_000_000}, "from_scratch", 1e-3, None, False, True),
    (10, {"similar_domain": False, "total_images": 2_000_000}, "from_scratch", 1e-3, None, False, True),
    (5000, {"similar_domain": True, "total_images": 2_000_000}, "fine_tune_last", 1e-4, 2, True, False),
])
def test_table_rows(n, kwargs, kind, backbone_lr, unfreeze, freeze_bn, augment):
    s = recommend_strategy(n, **kwargs)
    assert (s.kind, s.backbone_lr, s.unfreeze, s.freeze_bn, s.augment) == (kind, backbone_lr, unfreeze, freeze_bn, augment)
    assert s.head_lr == 1e-3 and s.reason
    assert s.pretrained == (kind != "from_scratch")
    if kind == "feature_extraction":
        assert s.finetune_epochs == 0 and s.warmup_epochs > 0
    elif kind == "from_scratch":
        assert s.warmup_epochs == 0
    else:
        assert s.warmup_epochs > 0 and s.finetune_epochs > 0


def test_strategy_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        recommend_strategy(10).kind = "x"


@given(n=st.integers(1, 10**7), similar=st.booleans())
def test_every_size_gets_a_valid_strategy(n, similar):
    s = recommend_strategy(n, similar_domain=similar)
    assert s.kind in {"feature_extraction", "fine_tune_last", "fine_tune_all"}
    assert s.warmup_epochs + s.finetune_epochs > 0


@pytest.mark.parametrize("args, kwargs, exc, pattern", [
    ((0,), {}, ValueError, r"images_per_class must be an int >= 1, got 0"),
    ((-5,), {}, ValueError, r"images_per_class must be an int >= 1, got -5"),
    ((10.5,), {}, TypeError, r"images_per_class must be an int >= 1, got 10.5 \(float\)"),
    ((10,), {"similar_domain": "no"}, TypeError, r"similar_domain must be True or False, got 'no'"),
    ((10,), {"total_images": 5}, ValueError, r"total_images must be >= images_per_class, got total_images=5"),
])
def test_errors(args, kwargs, exc, pattern):
    with pytest.raises(exc, match=pattern):
        recommend_strategy(*args, **kwargs)


def test_fit_applies_the_strategy_and_explicit_arguments_win():
    train = DataLoader(separable(32), batch_size=16)
    s = recommend_strategy(20)                      # feature extraction: 200 cached warm-up epochs, 0 fine-tune
    h = Trainer(model(), progress=False).fit(train, strategy=s)
    assert [r["phase"] for r in h] == ["warmup"] * 200 and h[0]["lr"] == {"fc": 1e-3}
    h = Trainer(model(), progress=False).fit(train, strategy=s, warmup_epochs=1, finetune_epochs=1,
                                             head_lr=1e-2)
    assert [r["phase"] for r in h] == ["warmup", "finetune"] and h[0]["lr"] == {"fc": 1e-2}
    assert set(h[1]["lr"]) == {"fc"}               # the strategy's unfreeze=0 still applies


@given(n=st.integers(1, 10**6), similar=st.booleans())
def test_feature_extraction_below_30_per_class_with_a_converged_head(n, similar):
    s = recommend_strategy(n, similar_domain=similar)
    assert (s.kind == "feature_extraction") == (n < 30)
    if s.kind == "feature_extraction":
        assert (s.warmup_epochs, s.finetune_epochs) == (200, 0)   # cached: nearly free
    else:                                                          # the chapter's 2 + 3 everywhere
        assert (s.warmup_epochs, s.finetune_epochs, s.augment) == (2, 3, False)


def test_fit_kwargs_cover_the_training_settings():
    s = Strategy("fine_tune_all", 1, 2, 1e-3, (1e-5, 1e-4), None, "early", True, True, "test")
    assert s.fit_kwargs() == {"warmup_epochs": 1, "finetune_epochs": 2, "head_lr": 1e-3,
                              "backbone_lr": (1e-5, 1e-4), "unfreeze": None, "freeze_bn": "early"}


@pytest.mark.slow
def test_default_feature_extraction_converges_on_real_features(mobilenet_weights):
    """The feature-extraction default trains the head to about where a converged logistic probe
    on the same frozen MobileNetV2 features gets (real digits); the old 5 epochs did not."""
    import numpy as np
    import torch
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression
    from torch.utils.data import TensorDataset

    from transferlearn import extract_features, imagenet_transform, load_model

    digits = load_digits()
    rng = np.random.default_rng(0)
    order = np.concatenate([rng.permutation(np.flatnonzero(digits.target == c))[:50] for c in range(10)])
    tf = imagenet_transform(size=32, resize=32)
    x = torch.stack([tf(torch.from_numpy(digits.images[i] / 16.0).float()[None]) for i in order])
    y = torch.from_numpy(digits.target[order])
    is_train = np.tile(np.arange(50) < 20, 10)
    train, test = TensorDataset(x[is_train], y[is_train]), TensorDataset(x[~is_train], y[~is_train])

    def head_accuracy(epochs: int | None) -> float:
        torch.manual_seed(0)
        net = load_model("mobilenet_v2", weights=mobilenet_weights, num_classes=10)
        trainer = Trainer(net, seed=0, progress=False)
        trainer.fit(DataLoader(train, batch_size=32, shuffle=True, generator=torch.Generator().manual_seed(0)),
                    strategy=recommend_strategy(20), **({} if epochs is None else {"warmup_epochs": epochs}))
        return trainer.evaluate(DataLoader(test, batch_size=128))["accuracy"]

    net = load_model("mobilenet_v2", weights=mobilenet_weights, num_classes=10)
    feats = [extract_features(net, DataLoader(d, batch_size=128)).tensors for d in (train, test)]
    probe = LogisticRegression(max_iter=5000).fit(feats[0][0].numpy(), feats[0][1].numpy())
    probe_accuracy = probe.score(feats[1][0].numpy(), feats[1][1].numpy())
    default, five = head_accuracy(None), head_accuracy(5)
    assert default >= probe_accuracy - 0.02, (default, probe_accuracy)
    assert five < default - 0.02, (five, default)                # the old default stopped short
