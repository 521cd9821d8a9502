"""Schedules: the rates of every step against torch.optim.lr_scheduler, per group and phase; resumed bitwise."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch.optim.lr_scheduler import CosineAnnealingLR, LambdaLR, OneCycleLR
from torch.utils.data import DataLoader, IterableDataset

from transferlearn import Trainer
from transferlearn.train.checkpoint import LAST, load_checkpoint
from transferlearn.train.recipe import Phase, Recipe
from transferlearn.train.schedules import Schedule

from .interrupts import Interrupt, StopAt
from .test_trainer import model, separable


def torch_rates(make, peaks, total):
    """The rates a torch scheduler sets at each of ``total`` steps, per group."""
    params = [torch.nn.Parameter(torch.zeros(1)) for _ in peaks]
    opt = torch.optim.SGD([{"params": [p], "lr": lr} for p, lr in zip(params, peaks)], lr=1.0)
    sched = make(opt)
    rates = []
    for _ in range(total):
        rates.append([g["lr"] for g in opt.param_groups])
        opt.step()
        sched.step()
    return rates


def hf_cosine(warmup, total):  # transformers' get_cosine_schedule_with_warmup, as a LambdaLR
    def f(step):
        if step < warmup:
            return step / max(1, warmup)
        progress = (step - warmup) / max(1, total - warmup)
        return max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))
    return lambda opt: LambdaLR(opt, f)


@pytest.mark.parametrize("total", [1, 2, 7, 40])
def test_cosine_is_cosine_annealing(total):
    expected = torch_rates(lambda opt: CosineAnnealingLR(opt, T_max=total), [1.0], total)
    ours = [[Schedule("cosine").factor(k, total)] for k in range(total)]
    torch.testing.assert_close(ours, expected, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("warmup, total", [(3, 20), (1, 5), (10, 10)])
def test_cosine_with_warmup_is_the_transformers_formula(warmup, total):
    expected = torch_rates(hf_cosine(warmup, total), [1.0], total)
    ours = [[Schedule("cosine", warmup).factor(k, total)] for k in range(total)]
    torch.testing.assert_close(ours, expected, rtol=0, atol=0)
    assert ours[0] == [0.0] and max(r[0] for r in ours) == pytest.approx(1.0, abs=0.2)


@pytest.mark.parametrize("warmup, total", [(0, 4), (0, 10), (0, 37), (5, 20), (2, 3)])
def test_one_cycle_is_one_cycle_lr(warmup, total):
    pct = warmup / total if warmup else 0.3
    expected = torch_rates(lambda opt: OneCycleLR(opt, max_lr=1.0, total_steps=total, pct_start=pct,
                                                  cycle_momentum=False), [1.0], total)
    ours = [[Schedule("one_cycle", warmup).factor(k, total)] for k in range(total)]
    torch.testing.assert_close(ours, expected, rtol=1e-9, atol=1e-15)


def test_constant_warmup_then_constant():
    assert [Schedule("constant", 4).factor(k, 10) for k in range(6)] == [0.0, 0.25, 0.5, 0.75, 1.0, 1.0]
    assert not Schedule().moves and Schedule("constant", 1).moves and Schedule("cosine").moves


@given(kind=st.sampled_from(["constant", "cosine", "one_cycle"]), total=st.integers(1, 500),
       warmup=st.integers(0, 50), data=st.data())
def test_factors_stay_within_zero_and_one(kind, total, warmup, data):
    step = data.draw(st.integers(0, total - 1))
    assert 0.0 <= Schedule(kind, min(warmup, total)).factor(step, total) <= 1.0 + 1e-12


class Rates:
    """The rate of every group at every optimizer step, as the optimizer used it."""

    def __init__(self):
        self.rates = []

    def on_step_end(self, trainer, step):
        self.rates.append((step.phase.name, [g["lr"] for g in trainer.optimizer.param_groups]))


def test_each_phase_runs_its_own_one_cycle_per_group_as_one_cycle_lr():
    rates = Rates()
    train = DataLoader(separable(40), batch_size=8)  # 5 steps per epoch
    history = Trainer(model(), seed=0, progress=False, callbacks=[rates]).fit(
        train, warmup_epochs=2, finetune_epochs=3, head_lr=1e-2, backbone_lr=1e-3, schedule="one_cycle")
    warm = [r for name, r in rates.rates if name == "warmup"]
    tune = [r for name, r in rates.rates if name == "finetune"]
    assert len(warm) == 10 and len(tune) == 15
    # the optimizer's groups in order: backbone, fc (param_groups); each peaks at its own phase rate
    expected_warm = torch_rates(lambda o: OneCycleLR(o, max_lr=[1e-3, 1e-2], total_steps=10, cycle_momentum=False),
                                [1e-3, 1e-2], 10)
    expected_tune = torch_rates(lambda o: OneCycleLR(o, max_lr=[1e-3, 1e-2], total_steps=15, cycle_momentum=False),
                                [1e-3, 1e-2], 15)
    torch.testing.assert_close(warm, expected_warm, rtol=1e-9, atol=0)
    torch.testing.assert_close(tune, expected_tune, rtol=1e-9, atol=0)
    # the history's lr: the last step's rate of each group that trained
    assert history[1]["lr"] == {"fc": warm[9][1]} and history[4]["lr"] == {"backbone": tune[14][0], "fc": tune[14][1]}
    assert history[0]["lr"] == {"fc": warm[4][1]}


def test_explicit_phases_each_with_their_schedule():
    rates = Rates()
    phases = [Phase("head", 1, trains="head", head_lr=1e-2, schedule=Schedule("cosine", warmup_steps=2)),
              Phase("all", 1, head_lr=1e-3, backbone_lr=1e-4)]  # constant: the phase's rates throughout
    Trainer(model(), progress=False, callbacks=[rates]).fit(DataLoader(separable(32), batch_size=8), phases=phases)
    head = [r[1] for name, r in rates.rates if name == "head"]
    expected = torch_rates(hf_cosine(2, 4), [1e-2], 4)
    torch.testing.assert_close([[r] for r in head], expected, rtol=1e-12, atol=0)
    assert [r for name, r in rates.rates if name == "all"] == [[1e-4, 1e-3]] * 4


def test_a_callable_schedule_gets_the_step_and_the_phase_total():
    seen = []

    def halve(step, total):
        seen.append((step, total))
        return 0.5
    rates = Rates()
    Trainer(model(), progress=False, callbacks=[rates]).fit(
        DataLoader(separable(16), batch_size=8), warmup_epochs=2, finetune_epochs=1, head_lr=1e-2, schedule=halve)
    assert seen == [(0, 4), (1, 4), (2, 4), (3, 4), (0, 2), (1, 2)]
    assert all(r[1] == 0.5e-2 for _, r in rates.rates)




def scheduled_run(path, stop=None, resume=False, cache="auto", schedule="cosine", warmup_steps=2):
    m, rates = model(seed=1), Rates()
    callbacks = [rates] + ([StopAt(stop)] if stop else [])
    history = Trainer(m, seed=3, progress=False, checkpoint_dir=path, callbacks=callbacks).fit(
        DataLoader(separable(48), batch_size=16, shuffle=True), DataLoader(separable(16, seed=9), batch_size=16),
        warmup_epochs=2, finetune_epochs=3, head_lr=1e-2, schedule=schedule, warmup_steps=warmup_steps,
        cache_features=cache, resume=resume)
    return m, rates.rates, history


@pytest.mark.parametrize("stop", [1, 2, 4])
@pytest.mark.parametrize("cache, schedule", [("auto", "cosine"), (False, "one_cycle")])
def test_an_interrupted_scheduled_run_resumes_bitwise(tmp_path, stop, cache, schedule):
    full, full_rates, full_history = scheduled_run(tmp_path / "full", cache=cache, schedule=schedule)
    with pytest.raises(Interrupt):
        scheduled_run(tmp_path / "cut", stop=stop + 1, cache=cache, schedule=schedule)
    saved = load_checkpoint(tmp_path / "cut" / LAST)
    assert saved["epoch"] == stop and saved["callbacks"][0][0] == "LRSchedule"
    assert saved["callbacks"][0][1] == {"step": 3 * (stop if stop <= 2 else stop - 2), "total": 6 if stop <= 2 else 9}
    resumed, resumed_rates, resumed_history = scheduled_run(tmp_path / "cut", resume=True, cache=cache,
                                                            schedule=schedule)
    assert resumed_rates == full_rates[3 * stop:]  # the resumed run's steps, at the same rates
    assert all(torch.equal(a, b) for a, b in zip(full.state_dict().values(), resumed.state_dict().values()))
    strip = lambda h: [{k: v for k, v in r.items() if k != "seconds"} for r in h]  # noqa: E731
    assert strip(resumed_history) == strip(full_history)


def test_resuming_without_the_schedule_is_refused(tmp_path):
    with pytest.raises(Interrupt):
        scheduled_run(tmp_path, stop=2)
    with pytest.raises(ValueError, match=r"was written by another recipe: phase '\w+' field 'schedule': \['\w+', \d+\] "
                                         r"in the checkpoint, \['constant', 0\] in this run"):
        scheduled_run(tmp_path, resume=True, schedule="constant", warmup_steps=0)   # the recipe's record says so


class Endless(IterableDataset):
    def __iter__(self):
        yield from separable(16)


@pytest.mark.parametrize("call, exc, pattern", [
    (lambda: Recipe.from_fit(schedule="linear"), ValueError,
     r"schedule must be one of 'constant', 'cosine', 'one_cycle', a Schedule or a callable factor\(step, total\), "
     r"got 'linear'"),
    (lambda: Recipe.from_fit(schedule=3), TypeError, r"schedule must be one of .* got 3 \(int\)"),
    (lambda: Recipe.from_fit(schedule="cosine", warmup_steps=-1), ValueError, r"warmup_steps must be an int >= 0"),
    (lambda: Recipe.from_fit(schedule=Schedule("cosine", 3), warmup_steps=2), ValueError,
     r"warmup_steps=2 with schedule=Schedule\(kind='cosine', warmup_steps=3\): set warmup_steps on the Schedule"),
    (lambda: Recipe.from_fit(phases=[Phase("p", 1)], schedule="cosine"), ValueError,
     r"phases= describes every phase; do not also pass schedule \(set them on the Phase objects\)"),
    (lambda: Phase("p", 1, schedule=None), TypeError, r"schedule must be one of"),
])
def test_bad_schedules_are_refused(call, exc, pattern):
    with pytest.raises(exc, match=pattern):
        call()


def test_a_schedule_needs_a_loader_with_a_length_and_a_callable_a_factor():
    with pytest.raises(ValueError, match=r"a learning-rate schedule needs a train_loader with a length"):
        Trainer(model(), progress=False).fit(DataLoader(Endless(), batch_size=8), schedule="cosine")
    with pytest.raises(ValueError, match=r"the schedule callable returned -1.0 \(float\) at step 0 of 2; it must "
                                         r"return a finite number >= 0"):
        Trainer(model(), progress=False).fit(DataLoader(separable(16), batch_size=8), warmup_epochs=1,
                                             finetune_epochs=0, schedule=lambda step, total: -1.0)
