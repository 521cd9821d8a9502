"""Class balance on the data side: balanced_sampler, load_image_folder(balance=...), loaders(balance=...)."""

from __future__ import annotations

import warnings
from collections import Counter

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils.data import WeightedRandomSampler

from transferlearn import Trainer, load_image_folder
from transferlearn.data.balance import balanced_sampler, check_balance
from transferlearn.train.recipe import use_feature_cache

from .conftest import TinyNet
from .test_folder import SMALL, make_folder
from .test_trainer_sampling import Recorder


@pytest.fixture(scope="module")
def skewed(tmp_path_factory):
    """A 1:5 folder: 4 images of 'few', 20 of 'many' (all training: val_fraction=0)."""
    return make_folder(tmp_path_factory.mktemp("skewed"), {"few": 4, "many": 20})


def draws(loader, epochs: int) -> list[int]:
    return [i for _ in range(epochs) for batch in loader.batch_sampler for i in batch]


def test_balanced_sampler_draws_each_class_equally_often_on_a_1_to_5_split():
    targets = [0] * 10 + [1] * 50
    sampler = balanced_sampler(targets, seed=3)
    assert isinstance(sampler, WeightedRandomSampler) and sampler.replacement and sampler.num_samples == 60
    torch.testing.assert_close(sampler.weights, torch.tensor([1 / 10] * 10 + [1 / 50] * 50, dtype=torch.double))
    drawn = [targets[i] for _ in range(200) for i in sampler]          # 12,000 draws
    share = Counter(drawn)[0] / len(drawn)
    assert abs(share - 0.5) < 0.02
    assert Counter(targets)[0] / len(targets) < 0.17                    # what plain shuffling would give


@settings(max_examples=25, deadline=None)
@given(counts=st.lists(st.integers(1, 30), min_size=2, max_size=5), seed=st.integers(0, 2**31))
def test_every_class_carries_the_same_total_weight(counts, seed):
    targets = [c for c, n in enumerate(counts) for _ in range(n)]
    sampler = balanced_sampler(targets, seed=seed)
    totals = [float(sampler.weights[[i for i, t in enumerate(targets) if t == c]].sum()) for c in range(len(counts))]
    torch.testing.assert_close(torch.tensor(totals, dtype=torch.double), torch.ones(len(counts), dtype=torch.double))
    assert list(balanced_sampler(targets, seed=seed)) == list(sampler.__class__(
        sampler.weights, len(targets), generator=torch.Generator().manual_seed(seed)))


def test_the_seed_decides_the_draws():
    targets = [0] * 5 + [1] * 25
    assert list(balanced_sampler(targets, seed=1)) == list(balanced_sampler(targets, seed=1))
    assert list(balanced_sampler(targets, seed=1)) != list(balanced_sampler(targets, seed=2))
    assert len(list(balanced_sampler(targets, num_samples=7))) == 7


def test_folder_loaders_are_class_balanced_and_reproducible(skewed):
    data = load_image_folder(skewed, val_fraction=0, balance="sampler", seed=5, max_imbalance=None, **SMALL)
    assert data.counts["train"] == {"few": 4, "many": 20} and data.balance == "sampler"
    train, val = data.loaders(batch_size=6, num_workers=0)
    assert val is None and isinstance(train.sampler, WeightedRandomSampler) and train.sampler.num_samples == 24
    indices = draws(train, 250)                                        # 6,000 draws
    labels = [data.train.targets[i] for i in indices]
    assert abs(Counter(labels)[0] / len(labels) - 0.5) < 0.03
    assert set(indices) == set(range(24))                              # every image is drawn at some point
    again = load_image_folder(skewed, val_fraction=0, balance="sampler", seed=5, max_imbalance=None, **SMALL)
    assert draws(again.loaders(batch_size=6, num_workers=0)[0], 5) == indices[:5 * 24]
    assert draws(data.loaders(batch_size=6, num_workers=0)[0], 5) == indices[:5 * 24]   # a fresh sampler per call
    other = load_image_folder(skewed, val_fraction=0, balance="sampler", seed=6, max_imbalance=None, **SMALL)
    assert draws(other.loaders(batch_size=6, num_workers=0)[0], 5) != indices[:5 * 24]
    first = next(iter(data.loaders(batch_size=6, num_workers=0)[0]))   # what the batches hold is what was drawn
    assert first[1].tolist() == [data.train.targets[i] for i in indices[:6]]


def test_loaders_balance_overrides_the_folders_default(skewed):
    plain = load_image_folder(skewed, val_fraction=0, max_imbalance=None, **SMALL)
    assert plain.balance is None
    assert isinstance(plain.loaders(num_workers=0, balance="sampler")[0].sampler, WeightedRandomSampler)
    balanced = load_image_folder(skewed, val_fraction=0, balance="sampler", max_imbalance=None, **SMALL)
    loader = balanced.loaders(num_workers=0, balance=None)[0]
    assert type(loader.sampler).__name__ == "RandomSampler"
    assert type(balanced.loaders(num_workers=0, balance=None, shuffle=False)[0].sampler).__name__ == "SequentialSampler"


def test_the_imbalance_warning_names_balance_and_is_quiet_once_balanced(skewed):
    with pytest.warns(UserWarning, match=r"ratio 5.0 > max_imbalance=2\); consider balance='sampler'"):
        load_image_folder(skewed, val_fraction=0, max_imbalance=2.0, **SMALL)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_image_folder(skewed, val_fraction=0, max_imbalance=2.0, balance="sampler", **SMALL)


@pytest.mark.parametrize("call, exc, pattern", [
    (lambda d: load_image_folder(d, balance="loss"), ValueError,
     r"balance must be None or 'sampler', got 'loss' \('loss' weights the loss: pass it to Trainer.fit\)"),
    (lambda d: load_image_folder(d, balance=True), TypeError, r"balance must be None or 'sampler', got True"),
    (lambda d: load_image_folder(d, **SMALL).loaders(balance="weights"), ValueError,
     r"balance must be None or 'sampler', got 'weights'"),
    (lambda d: load_image_folder(d, **SMALL).loaders(balance="sampler", shuffle=True), ValueError,
     r"balance='sampler' draws the training batches itself; shuffle=True would choose them too"),
    (lambda d: load_image_folder(d, **SMALL).loaders(balance="sampler", sampler=[0, 1]), ValueError,
     r"balance='sampler' draws the training batches itself; sampler= would choose them too"),
    (lambda d: balanced_sampler([]), ValueError, r"targets is empty"),
    (lambda d: balanced_sampler([0, 1.0]), TypeError, r"targets must be int class labels, got 1.0"),
    (lambda d: balanced_sampler([0, 1], seed=-1), ValueError, r"seed must be an int >= 0, got -1"),
    (lambda d: check_balance(3), TypeError, r"balance must be None or 'sampler', got 3"),
])
def test_errors(skewed, call, exc, pattern):
    with pytest.raises(exc, match=pattern):
        call(skewed)


def test_a_cached_warmup_on_a_balanced_loader_trains_on_the_samplers_own_draws(skewed):
    data = load_image_folder(skewed, val_fraction=0, balance="sampler", seed=2, max_imbalance=None, **SMALL)
    expected_indices = draws(data.loaders(batch_size=5, num_workers=0)[0], 3)
    expected = [data.train.targets[i] for i in expected_indices]
    runs = {}
    for cache in (True, False):
        loader = data.loaders(batch_size=5, num_workers=0)[0]
        assert use_feature_cache("auto", loader, 3) is True
        torch.manual_seed(0)
        model, recorder = TinyNet(num_classes=2), Recorder()
        history = Trainer(model, seed=0, progress=False, criterion=recorder).fit(
            loader, warmup_epochs=3, finetune_epochs=0, cache_features=cache)
        assert [label for batch in recorder.batches for label in batch] == expected
        assert [len(b) for b in recorder.batches] == [5, 5, 5, 5, 4] * 3
        runs[cache] = (model.fc.weight.detach().clone(), [r["train_loss"] for r in history])
    torch.testing.assert_close(runs[True][0], runs[False][0], rtol=1e-4, atol=1e-6)   # same draws, same steps
    torch.testing.assert_close(runs[True][1], runs[False][1], rtol=1e-4, atol=1e-6)
