"""Recipe and Phase: fit's arguments (or a Strategy) as a frozen, checked list of phases."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st
from torch.utils.data import DataLoader

from transferlearn import Trainer, recommend_strategy
from transferlearn.train.recipe import DEFAULT, Phase, Recipe

from .conftest import TinyNet
from .test_trainer import separable


def test_the_default_is_the_two_phase_fit():
    recipe = Recipe.from_fit()
    assert recipe.phases == (Phase("warmup", 2, trains="head", head_lr=1e-3),
                             Phase("finetune", 3, trains="all", head_lr=1e-3, cache=False))
    assert recipe.plan == (0, 0, 1, 1, 1) and recipe.epochs == 5
    assert (recipe.weight_decay, recipe.monitor, recipe.patience, recipe.restore_best) == (0.0, "val_loss", None, True)
    assert recipe.describe() == "2 warm-up and 3 fine-tune epochs"


def test_a_strategy_applies_and_explicit_arguments_win():
    s = recommend_strategy(2000)  # fine_tune_last: 2 + 3, unfreeze 2, backbone 1e-4
    recipe = Recipe.from_fit(s, warmup_epochs=DEFAULT, head_lr=5e-3, unfreeze=None)
    warm, tune = recipe.phases
    assert (warm.epochs, tune.epochs, warm.head_lr, tune.head_lr) == (2, 3, 5e-3, 5e-3)
    assert tune.backbone_lr == 1e-4 and tune.trains == "all"      # unfreeze=None given: it wins over the 2
    assert Recipe.from_fit(s).phases[1].trains == 2


def test_cache_features_goes_to_the_head_phase_only():
    recipe = Recipe.from_fit(cache_features=False, freeze_bn="early", unfreeze=1)
    assert [(p.cache, p.freeze_bn, p.trains) for p in recipe.phases] == [(False, True, "head"), (False, "early", 1)]
    assert recipe.phases[0].cacheable and not recipe.phases[1].cacheable


def test_gradual_unfreezing_is_a_longer_list():
    recipe = Recipe.from_fit(warmup_epochs=1, finetune_epochs=2, unfreeze=(1, 3, None))
    assert [(p.name, p.epochs, p.trains) for p in recipe.phases] == [
        ("warmup", 1, "head"), ("finetune:last1", 2, 1), ("finetune:last3", 2, 3), ("finetune:all", 2, "all")]
    per_phase = Recipe.from_fit(warmup_epochs=0, finetune_epochs=(1, 0, 4), unfreeze=[1, 2, None])
    assert [p.epochs for p in per_phase.phases] == [0, 1, 0, 4] and per_phase.plan == (1, 3, 3, 3, 3)
    assert per_phase.first_epoch(3) == 1 and per_phase.first_epoch(2) == 1
    assert per_phase.describe() == ("phases warmup (0 epochs), finetune:last1 (1 epochs), finetune:last2 (0 epochs), "
                                    "finetune:all (4 epochs)")


def test_explicit_phases():
    phases = [Phase("head", 2, trains="head", head_lr=1e-2), Phase("top", 1, trains=1, backbone_lr=(1e-5, 1e-4))]
    with pytest.raises(ValueError, match="the phases must agree on the kind of backbone_lr"):
        Recipe.from_fit(phases=phases)
    phases[0] = dataclasses.replace(phases[0], backbone_lr=(1e-6, 1e-5))
    recipe = Recipe.from_fit(phases=phases, weight_decay=0.01, patience=2)
    assert recipe.phases == tuple(phases) and recipe.weight_decay == 0.01 and recipe.patience == 2


def test_values_are_frozen_and_lists_become_tuples():
    phase = Phase("p", 1, backbone_lr=[1e-5, 1e-4])
    assert phase.backbone_lr == (1e-5, 1e-4)
    with pytest.raises(dataclasses.FrozenInstanceError):
        phase.epochs = 3
    with pytest.raises(dataclasses.FrozenInstanceError):
        Recipe.from_fit().weight_decay = 1.0


@pytest.mark.parametrize("make, exc, pattern", [
    (lambda: Phase("", 1), TypeError, r"Phase name must be a non-empty string, got ''"),
    (lambda: Phase("p", -1), ValueError, r"epochs must be an int >= 0, got -1"),
    (lambda: Phase("p", 1, trains="backbone"), TypeError, r"trains must be 'head', 'all' or an int >= 0"),
    (lambda: Phase("p", 1, trains=-1), ValueError, r"trains must be an int >= 0, got -1"),
    (lambda: Phase("p", 1, trains=True), TypeError, r"trains must be 'head', 'all' or an int"),
    (lambda: Phase("p", 1, head_lr=0.0), ValueError, r"head_lr must be a finite number > 0.0, got 0.0"),
    (lambda: Phase("p", 1, backbone_lr=(1e-3, 1e-4)), ValueError, r"backbone_lr=\(low, high\) needs low <= high"),
    (lambda: Phase("p", 1, freeze_bn="late"), ValueError, r"freeze_bn must be True, False or 'early', got 'late'"),
    (lambda: Phase("p", 1, cache=1), TypeError, r"cache must be 'auto', True or False, got 1 \(int\)"),
    (lambda: Phase("p", 1, trains="all", cache=True), ValueError,
     r"Phase 'p': cache=True needs a phase that trains the head alone \(trains='head'\) with BatchNorm pinned"),
    (lambda: Phase("p", 1, trains="head", freeze_bn=False, cache=True), ValueError, r"freeze_bn=False"),
    (lambda: Recipe(()), TypeError, r"phases must be a non-empty list of Phase, got \(\)"),
    (lambda: Recipe(("warmup",)), TypeError, r"phases\[0\] must be a Phase, got 'warmup'"),
    (lambda: Recipe((Phase("p", 0),)), ValueError, r"the phases have 0 epochs in total: nothing to train"),
    (lambda: Recipe((Phase("p", 1),), patience=0), ValueError, r"patience must be an int >= 1, got 0"),
    (lambda: Recipe((Phase("p", 1),), weight_decay=-1.0), ValueError, r"weight_decay must be a finite number >= 0"),
    (lambda: Recipe.from_fit(unfreeze=()), ValueError, r"unfreeze=\(\) has no phases"),
    (lambda: Recipe.from_fit(unfreeze=(1, "all")), TypeError, r"unfreeze must be None \(all\), an int >= 0 or a tuple"),
    (lambda: Recipe.from_fit(unfreeze=(1, -1)), ValueError, r"unfreeze must be an int >= 0, got -1"),
    (lambda: Recipe.from_fit(unfreeze=(1, 2), finetune_epochs=(1, 2, 3)), ValueError,
     r"finetune_epochs=\(1, 2, 3\) needs one count per unfreeze entry \(2\)"),
    (lambda: Recipe.from_fit(warmup_epochs=0, finetune_epochs=(0, 0), unfreeze=(1, None)), ValueError,
     r"warmup_epochs and finetune_epochs are both 0"),
    (lambda: Recipe.from_fit(phases=[Phase("p", 1)], head_lr=1e-2, cache_features=False), ValueError,
     r"phases= describes every phase; do not also pass head_lr, cache_features"),
    (lambda: Recipe.from_fit(recommend_strategy(300), phases=[Phase("p", 1)]), ValueError,
     r"do not also pass strategy"),
    (lambda: Recipe.from_fit(phases=Phase("p", 1)), TypeError, r"phases must be a non-empty list of Phase"),
])
def test_bad_recipes_are_refused_by_name(make, exc, pattern):
    with pytest.raises(exc, match=pattern):
        make()


@given(warmup=st.integers(0, 3), steps=st.lists(st.one_of(st.none(), st.integers(0, 4)), min_size=1, max_size=4),
       epochs=st.integers(0, 3))
def test_the_plan_lists_every_epoch_of_every_phase_in_order(warmup, steps, epochs):
    if warmup + epochs * len(steps) == 0:
        return
    recipe = Recipe.from_fit(warmup_epochs=warmup, finetune_epochs=epochs, unfreeze=tuple(steps))
    assert recipe.epochs == warmup + epochs * len(steps) == len(recipe.plan)
    assert list(recipe.plan) == sorted(recipe.plan)                      # phases top to bottom
    for index, phase in enumerate(recipe.phases):
        first = recipe.first_epoch(index)
        assert [recipe.phase_at(e) for e in range(first, first + phase.epochs)] == [phase] * phase.epochs
    assert [p.trains for p in recipe.phases[1:]] == ["all" if s is None else s for s in steps]


def test_fit_takes_phases_and_names_the_history_by_them():
    train = DataLoader(separable(16), batch_size=8)
    phases = [Phase("head", 1, trains="head", head_lr=1e-2), Phase("top", 1, trains=1, head_lr=1e-2),
              Phase("all", 1, head_lr=1e-2)]
    history = Trainer(TinyNet(), progress=False).fit(train, phases=phases)
    assert [r["phase"] for r in history] == ["head", "top", "all"]
    with pytest.raises(ValueError, match="do not also pass warmup_epochs"):
        Trainer(TinyNet(), progress=False).fit(train, phases=phases, warmup_epochs=1)
