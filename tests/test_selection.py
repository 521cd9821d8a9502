"""fit ends with the best validation epoch; patience ends a phase that no longer improves."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch.utils.data import DataLoader

from transferlearn import Trainer
from transferlearn.train.selection import BestEpoch

from .test_trainer import model, separable

finite = st.floats(0.0, 5.0, allow_nan=False)
scores = st.lists(st.tuples(finite, st.sampled_from([0.0, 0.25, 0.5, 0.75, 1.0])), min_size=1, max_size=12)


def track(monitor, pairs, patience=None):
    best = BestEpoch(monitor, patience)
    m = torch.nn.Linear(1, 1)
    for epoch, (loss, acc) in enumerate(pairs, 1):
        best.update({"epoch": epoch, "val_loss": loss, "val_accuracy": acc}, m)
    return best


@given(scores)
def test_val_loss_picks_the_earliest_minimum(pairs):
    losses = [loss for loss, _ in pairs]
    assert track("val_loss", pairs).epoch == losses.index(min(losses)) + 1


@given(scores)
def test_val_accuracy_picks_the_highest_then_the_lowest_loss_then_the_earliest(pairs):
    keys = [(-acc, loss) for loss, acc in pairs]
    assert track("val_accuracy", pairs).epoch == keys.index(min(keys)) + 1


def test_non_finite_scores_never_win():
    assert track("val_loss", [(float("nan"), 1.0), (2.0, 0.0), (float("inf"), 1.0)]).epoch == 2
    assert track("val_loss", [(float("nan"), 1.0)]).epoch is None


def test_accuracy_monitor_without_class_targets_is_an_error():
    with pytest.raises(ValueError, match="monitor='val_accuracy' needs class-index targets"):
        track("val_accuracy", [(1.0, None)])


def loaders():
    return DataLoader(separable(96), batch_size=16, shuffle=True), DataLoader(separable(48, 100), batch_size=16)


@pytest.mark.parametrize("restore", [True, False])
def test_fit_ends_with_the_best_epochs_weights(restore):
    train, val = loaders()
    trainer = Trainer(model(), seed=0, progress=False)
    # a learning rate high enough that validation loss goes up and down
    history = trainer.fit(train, val, warmup_epochs=3, finetune_epochs=5, head_lr=0.3, restore_best=restore)
    losses = [r["val_loss"] for r in history]
    assert history.best["epoch"] == losses.index(min(losses)) + 1
    assert [r["best"] for r in history].count(True) == 1
    final = trainer.evaluate(val)["loss"]
    expected = history.best["val_loss"] if restore else history[-1]["val_loss"]
    assert final == pytest.approx(expected, rel=1e-6)
    assert history.best is not history[-1]               # the test needs the best epoch to be an earlier one


def test_patience_ends_the_warmup_then_fine_tuning_still_runs(monkeypatch):
    train, val = loaders()
    trainer = Trainer(model(), progress=False)
    scripted = iter([1.0, 1.1, 1.2, 0.9, 0.8, 0.85, 0.86])       # warm-up stalls after epoch 1
    monkeypatch.setattr(trainer, "evaluate", lambda _loader, **_: {"loss": next(scripted), "accuracy": 0.5})
    history = trainer.fit(train, val, warmup_epochs=4, finetune_epochs=4, patience=2, cache_features=False)
    assert [r["epoch"] for r in history] == [1, 2, 3, 5, 6, 7, 8]
    assert [r.get("stopped_early", False) for r in history] == [False, False, True, False, False, False, True]
    assert history.best["epoch"] == 6


def test_a_nan_validation_loss_stops_the_run():
    train, _ = loaders()
    x, y = separable(16, 100).tensors
    x = x.clone()
    x[3, 0, 0, 0] = float("nan")
    val = DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=8)
    with pytest.raises(FloatingPointError, match=r"non-finite validation loss nan in epoch 1/2 warmup: val_loader"):
        Trainer(model(), progress=False).fit(train, val, warmup_epochs=1, finetune_epochs=1, patience=1)


def test_a_resumed_run_keeps_the_patience_count_of_its_phase(tmp_path, monkeypatch):
    from .test_checkpoint import Interrupt, crash_after
    scripted = [1.0, 0.9, 0.95, 0.97, 0.5, 0.6, 0.7, 0.8]   # warm-up stalls after epoch 2

    def go(path, stop_after=None, resume=False):
        train, val = loaders()
        trainer = Trainer(model(), seed=0, progress=False, checkpoint_dir=path)
        losses = iter(scripted[len(trainer.history):])
        crash_after(trainer, stop_after)
        monkeypatch.setattr(trainer, "evaluate", lambda _l, **_: {"loss": next(losses), "accuracy": 0.5})
        if resume:
            done = torch.load(path / "last.pt", weights_only=True)["epoch"]
            losses = iter(scripted[done:])
        return trainer.fit(train, val, warmup_epochs=5, finetune_epochs=4, patience=2, cache_features=False,
                           resume=resume)
    full = go(tmp_path / "full")
    with pytest.raises(Interrupt):
        go(tmp_path / "cut", stop_after=3)                       # one stale epoch counted before the crash
    resumed = go(tmp_path / "cut", resume=True)
    assert [r["epoch"] for r in full] == [1, 2, 3, 4, 6, 7, 8]
    assert [r["epoch"] for r in resumed] == [r["epoch"] for r in full]


def test_a_new_best_copies_only_what_can_have_changed():
    from transferlearn import freeze_backbone
    m = model()
    freeze_backbone(m)
    best = BestEpoch()
    best.update({"epoch": 1, "val_loss": 2.0, "val_accuracy": 0.1}, m)
    first = best.state
    with torch.no_grad():
        m.fc.weight.add_(1.0)
    best.update({"epoch": 2, "val_loss": 1.0, "val_accuracy": 0.2}, m)
    assert best.state["stem.0.weight"] is first["stem.0.weight"]          # frozen: the same copy reused
    assert best.state["fc.weight"] is not first["fc.weight"]
    assert all(torch.equal(best.state[k], v) for k, v in m.state_dict().items())
