"""lr_find: the curve and its suggestion, the head on cached features, and nothing left changed (bitwise)."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from transferlearn import Trainer
from transferlearn.train.lr_find import suggest_lr

from .test_trainer import count_backbone_runs, model, separable


def snapshot(trainer, loader):
    m = trainer.model
    return {
        "state": {k: v.clone() for k, v in m.state_dict().items()},
        "grads": {n: None if p.grad is None else p.grad.clone() for n, p in m.named_parameters()},
        "flags": {n: p.requires_grad for n, p in m.named_parameters()},
        "modules": {n: (type(x), x.training) for n, x in m.named_modules()},
        "strides": {n: p.stride() for n, p in m.named_parameters()},
        "torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate(),
        "loader": loader.generator.get_state(),
        "optimizer": None if trainer.optimizer is None else trainer.optimizer.state_dict(),
    }


def same(a, b):
    """Bitwise equality of nested snapshots."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, np.ndarray):
        return np.array_equal(a, b)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return a == b


def shuffled(n=48, seed=0):
    return DataLoader(separable(n), batch_size=8, shuffle=True, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("phase", ["head", "finetune"])
@pytest.mark.parametrize("after_fit", [False, True])
def test_lr_find_leaves_everything_bitwise_as_it_was(phase, after_fit):
    trainer, loader = Trainer(model(), progress=False), shuffled()
    if after_fit:  # the model then has pinned BatchNorm, an optimizer with state, gradients, eval mode
        trainer.fit(loader, warmup_epochs=1, finetune_epochs=1)
    else:
        trainer.model.train()
    torch.manual_seed(5)
    before = snapshot(trainer, loader)
    result = trainer.lr_find(loader, phase=phase, num_steps=12, end_lr=10.0)
    assert len(result.lrs) >= 5 and result.phase == phase
    assert same(snapshot(trainer, loader), before)
    if after_fit:
        assert any(g is not None for g in before["grads"].values()) and before["optimizer"]["state"]


def fit_after(with_lr_find, phase="finetune"):
    torch.manual_seed(11)  # no Trainer seed: the fit draws from the global RNG as it finds it
    trainer, loader = Trainer(model(seed=2), progress=False), shuffled(seed=4)
    if with_lr_find:
        trainer.lr_find(loader, phase=phase, num_steps=10)
    history = trainer.fit(loader, DataLoader(separable(16, seed=7), batch_size=8), warmup_epochs=1, finetune_epochs=2)
    return trainer.model.state_dict(), [{k: v for k, v in r.items() if k != "seconds"} for r in history]


@pytest.mark.parametrize("phase", ["head", "finetune"])
def test_a_fit_after_lr_find_is_bitwise_the_fit_without_it(phase):
    weights, history = fit_after(False)
    weights_after, history_after = fit_after(True, phase)
    assert history_after == history
    assert all(torch.equal(weights[k], weights_after[k]) for k in weights)


def test_the_head_runs_on_cached_features_and_the_curve_is_exponential():
    m = model()
    calls = count_backbone_runs(m)
    loader = DataLoader(separable(32), batch_size=8)  # 4 batches: 30 steps cycle through them
    result = Trainer(m, progress=False).lr_find(loader, num_steps=30, start_lr=1e-5, end_lr=1e-1)
    assert result.cached and calls[0] == 4  # one backbone pass over the data, none for the steps
    assert len(result.lrs) == len(result.losses) == len(result.raw_losses)
    torch.testing.assert_close(result.lrs, list(np.geomspace(1e-5, 1e-1, 30)[:len(result.lrs)]), rtol=1e-9, atol=0)
    uncached = Trainer(model(), progress=False).lr_find(loader, num_steps=6, cache_features=False)
    assert not uncached.cached
    tuned = Trainer(model(), progress=False).lr_find(loader, phase="finetune", num_steps=6)
    assert not tuned.cached


def test_the_smoothed_loss_is_the_debiased_average_and_divergence_stops_early():
    result = Trainer(model(), progress=False).lr_find(shuffled(), start_lr=1e-3, end_lr=1e4, num_steps=100,
                                                      smoothing=0.5)
    assert result.diverged and len(result.lrs) < 100
    avg, expected = 0.0, []
    for k, loss in enumerate(result.raw_losses):
        avg = 0.5 * avg + 0.5 * loss
        expected.append(avg / (1 - 0.5 ** (k + 1)))
    assert result.losses == pytest.approx(expected, rel=1e-12)
    assert result.losses[-1] > 4 * min(result.losses) or not math.isfinite(result.raw_losses[-1] if
                                                                             result.raw_losses else 0)


def test_suggestion_is_the_steepest_descent_before_the_minimum():
    lrs = list(np.geomspace(1e-6, 1.0, 61))
    x = np.log10(lrs)
    losses = list(2.0 - 1.5 / (1 + np.exp(-(x + 3) * 3)) + np.where(x > -1, (x + 1) * 20, 0))  # steepest at 1e-3
    assert suggest_lr(lrs, losses) == pytest.approx(1e-3, rel=0.3)
    assert suggest_lr(lrs[:4], losses[:4]) is None
    assert suggest_lr([1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0], [1.0, 0.5, 0.8, 0.9, 1.0, 2.0]) == pytest.approx(1e-3)
    losses_up = list(np.linspace(1, 2, 20))  # the minimum is the first point: minimum / 10
    assert suggest_lr(list(np.geomspace(1e-4, 1, 20)), losses_up) == pytest.approx(1e-5)


def test_plot_writes_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    result = Trainer(model(), progress=False).lr_find(shuffled(), num_steps=10)
    path = result.plot(tmp_path / "lr.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("options, exc, pattern", [
    ({"phase": "backbone"}, ValueError, r"phase must be 'head' or 'finetune', got 'backbone'"),
    ({"start_lr": 0.0}, ValueError, r"start_lr must be a finite number > 0.0, got 0.0"),
    ({"start_lr": 1e-2, "end_lr": 1e-3}, ValueError, r"end_lr must be above start_lr, got start_lr=0.01, end_lr=0.001"),
    ({"num_steps": 1}, ValueError, r"num_steps must be an int >= 2, got 1"),
    ({"diverge": 0.5}, ValueError, r"diverge must be a finite number > 1.0, got 0.5"),
    ({"smoothing": 1.0}, ValueError, r"smoothing must be a finite number >= 0.0 and <= 0.999, got 1.0"),
    ({"freeze_bn": "late"}, ValueError, r"freeze_bn must be True, False or 'early', got 'late'"),
])
def test_bad_options_are_refused(options, exc, pattern):
    trainer = Trainer(model(), progress=False)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    with pytest.raises(exc, match=pattern):
        trainer.lr_find(shuffled(), **options)
    assert same(trainer.model.state_dict(), before)


def test_a_loader_without_targets_is_refused_and_the_model_restored():
    trainer = Trainer(model(), progress=False)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    with pytest.raises(ValueError, match=r"train_loader must yield \(inputs, targets\) batches"):
        trainer.lr_find(DataLoader(separable(16).tensors[0], batch_size=8), cache_features=False)
    assert same(trainer.model.state_dict(), before)
