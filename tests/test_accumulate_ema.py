"""Gradient accumulation (N batches = one batch N times larger) and the EMA of the weights; both resume bitwise."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, IterableDataset

from transferlearn import Trainer
from transferlearn.train.checkpoint import LAST, load_checkpoint
from transferlearn.train.recipe import Recipe

from .interrupts import Interrupt, StopAt
from .test_schedules import Rates, torch_rates
from .test_trainer import model, separable


class NoBN(nn.Module):
    """TinyNet's layout without BatchNorm: stem, two stages, pooled features, ``fc``."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU())
        self.stage1 = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.ReLU())
        self.stage2 = nn.Sequential(nn.Conv2d(4, 8, 3, padding=1), nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, 3)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(self.stage2(self.stage1(self.stem(x)))), 1))


def trained(make, batch_size, accumulate, n=40, **options):
    torch.manual_seed(0)
    m = make()
    Trainer(m, seed=0, progress=False).fit(DataLoader(separable(n), batch_size=batch_size), head_lr=1e-2,
                                           warmup_epochs=1, finetune_epochs=2, accumulate=accumulate, **options)
    return m.state_dict()


@pytest.mark.parametrize("make, options", [(NoBN, {}), (model, {}), (model, {"cache_features": False})])
def test_two_batches_of_8_step_as_one_batch_of_16(make, options):
    big = trained(make, 16, 1, **options)        # 40 samples: 16, 16, 8
    small = trained(make, 8, 2, **options)       # (8, 8), (8, 8), (8): the same groups, the short one last
    torch.testing.assert_close(small, big, rtol=1e-5, atol=1e-6)
    assert not all(torch.equal(a, b) for a, b in zip(small.values(), trained(make, 8, 1, **options).values()))


def test_adapting_batchnorm_sees_micro_batches():
    """With freeze_bn=False the statistics (and the normalisation) are per micro-batch: not the big batch's."""
    big, small = trained(model, 16, 1, freeze_bn=False), trained(model, 8, 2, freeze_bn=False)
    assert not torch.allclose(small["stem.1.running_mean"], big["stem.1.running_mean"], atol=1e-6)


class Steps:
    def __init__(self):
        self.stepped = []

    def on_step_end(self, trainer, step):
        self.stepped.append((step.epoch, step.batch, step.stepped))


def test_the_optimizer_steps_every_n_batches_and_after_the_last():
    steps, taken = Steps(), []
    trainer = Trainer(model(), progress=False, callbacks=[steps])
    m = trainer.model
    original = torch.optim.AdamW

    def counting(groups):
        opt = original(groups)
        opt.register_step_post_hook(lambda *_: taken.append(len(steps.stepped)))
        return opt
    trainer.make_optimizer = counting
    trainer.fit(DataLoader(separable(40), batch_size=8), warmup_epochs=1, finetune_epochs=1, accumulate=2)
    assert [s for _, _, s in steps.stepped] == [False, True, False, True, True] * 2
    assert taken == [1, 3, 4, 6, 8, 9]  # after batches 2, 4, 5 of each epoch (the hook counts batches so far)
    assert m is trainer.model


def test_a_schedule_counts_optimizer_steps_not_batches():
    rates = Rates()
    Trainer(model(), progress=False, callbacks=[rates]).fit(
        DataLoader(separable(40), batch_size=8), warmup_epochs=2, finetune_epochs=0, head_lr=1e-2,
        schedule="one_cycle", accumulate=2)
    used = [r[1] for (_, r), s in zip(rates.rates, [False, True, False, True, True] * 2) if s]
    expected = torch_rates(lambda o: torch.optim.lr_scheduler.OneCycleLR(o, 1e-2, total_steps=6,
                                                                         cycle_momentum=False), [1e-2], 6)
    torch.testing.assert_close([[r] for r in used], expected, rtol=1e-9, atol=0)


class Weights:
    """The model's weights after every optimizer step (EMA has updated before this runs)."""

    def __init__(self):
        self.after = []

    def on_step_end(self, trainer, step):
        if step.stepped:
            self.after.append({k: v.detach().clone() for k, v in trainer.model.state_dict().items()})


def test_the_ema_is_the_warmed_up_moving_average_of_every_step():
    weights = Weights()
    m = model()
    start = {k: v.clone() for k, v in m.state_dict().items()}
    trainer = Trainer(m, seed=0, progress=False, callbacks=[weights])
    trainer.fit(DataLoader(separable(32), batch_size=8, shuffle=True), warmup_epochs=1, finetune_epochs=2,
                head_lr=1e-2, ema=0.9, freeze_bn=False)
    expected = start
    for n, after in enumerate(weights.after):
        d = min(0.9, (1 + n) / (10 + n))
        expected = {k: v if not v.is_floating_point() else expected[k] + (1 - d) * (v - expected[k])
                    for k, v in after.items()}
    assert len(weights.after) == 12
    torch.testing.assert_close(m.state_dict(), expected, rtol=1e-5, atol=1e-7)  # no val: fit ends with the EMA
    assert not torch.allclose(m.fc.weight, weights.after[-1]["fc.weight"])


def test_the_ema_validates_is_kept_and_leaves_pinned_statistics_bitwise():
    m = model()
    stats = {k: v.clone() for k, v in m.state_dict().items() if "running" in k}
    val = DataLoader(separable(16, seed=5), batch_size=8)
    trainer = Trainer(m, seed=0, progress=False)
    history = trainer.fit(DataLoader(separable(32), batch_size=8), val, warmup_epochs=2, finetune_epochs=2,
                          head_lr=1e-2, ema=0.5, restore_best=False)
    assert all(r["validated"] == "ema" for r in history)
    scores = trainer.evaluate(val)  # the model now holds the final average: what the last epoch validated
    assert (scores["loss"], scores["accuracy"]) == (history[-1]["val_loss"], history[-1]["val_accuracy"])
    assert all(torch.equal(m.state_dict()[k], v) for k, v in stats.items())
    best = Trainer(m2 := model(), seed=0, progress=False).fit(
        DataLoader(separable(32), batch_size=8), val, warmup_epochs=2, finetune_epochs=2, head_lr=1e-2, ema=0.5)
    again = Trainer(m2, progress=False).evaluate(val)  # the best epoch's average is what fit kept
    assert (again["loss"], again["accuracy"]) == (best.best["val_loss"], best.best["val_accuracy"])




def combined_run(path, stop=None, resume=False, cache="auto"):
    m, rates = model(seed=1), Rates()
    callbacks = [rates] + ([StopAt(stop)] if stop else [])
    history = Trainer(m, seed=3, progress=False, checkpoint_dir=path, callbacks=callbacks).fit(
        DataLoader(separable(40), batch_size=8, shuffle=True), DataLoader(separable(16, seed=9), batch_size=8),
        warmup_epochs=2, finetune_epochs=2, head_lr=1e-2, schedule="cosine", warmup_steps=2, ema=0.8,
        accumulate=2, cache_features=cache, freeze_bn=False, resume=resume)
    return m, rates.rates, history


@pytest.mark.parametrize("stop", [1, 2, 3])
@pytest.mark.parametrize("cache", ["auto", False])
def test_schedule_ema_and_accumulation_resume_bitwise(tmp_path, stop, cache):
    full, full_rates, full_history = combined_run(tmp_path / "full", cache=cache)
    with pytest.raises(Interrupt):
        combined_run(tmp_path / "cut", stop=stop + 1, cache=cache)
    saved = load_checkpoint(tmp_path / "cut" / LAST)
    assert [name for name, _ in saved["callbacks"]] == ["LRSchedule", "WeightEMA"]  # Rates has no state
    assert saved["callbacks"][1][1]["updates"] == 3 * stop
    resumed, resumed_rates, resumed_history = combined_run(tmp_path / "cut", resume=True, cache=cache)
    assert resumed_rates == full_rates[5 * stop:]
    assert all(torch.equal(a, b) for a, b in zip(full.state_dict().values(), resumed.state_dict().values()))
    strip = lambda h: [{k: v for k, v in r.items() if k != "seconds"} for r in h]  # noqa: E731
    assert strip(resumed_history) == strip(full_history)


class Endless(IterableDataset):
    def __iter__(self):
        yield from separable(16)


@pytest.mark.parametrize("options, exc, pattern", [
    ({"accumulate": 0}, ValueError, r"accumulate must be an int >= 1, got 0"),
    ({"accumulate": 2.0}, TypeError, r"accumulate must be an int"),
    ({"ema": 1.0}, ValueError, r"ema must be None \(off\) or a decay < 1.0 such as 0.999, got 1.0"),
    ({"ema": 0.0}, ValueError, r"ema must be a finite number > 0.0 and <= 1.0, got 0.0"),
    ({"ema": "0.9"}, TypeError, r"ema must be a real number, got '0.9'"),
])
def test_bad_options_are_refused(options, exc, pattern):
    with pytest.raises(exc, match=pattern):
        Recipe.from_fit(**options)


def test_accumulation_needs_a_loader_with_a_length():
    with pytest.raises(ValueError, match=r"accumulate=2 needs a train_loader with a length \(len\(train_loader\)\) "
                                         r"to count each epoch's steps; use accumulate=1 with this loader"):
        Trainer(model(), progress=False).fit(DataLoader(Endless(), batch_size=8), accumulate=2)
