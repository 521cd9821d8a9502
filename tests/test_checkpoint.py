"""Checkpoints: atomic, weights_only, and a resumed run equal to an uninterrupted one."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader

from transferlearn import History, Trainer
from transferlearn.train.checkpoint import LAST, load_checkpoint, save_checkpoint

from .interrupts import Interrupt
from .test_trainer import model, separable


def assert_resume_is_exact(go, tmp_path, stop_after):
    """``go(path, stop_after=, resume=)`` trains and returns the model: a run cut after
    ``stop_after`` epochs and resumed ends with exactly the uninterrupted run's weights."""
    full = go(tmp_path / "full")
    with pytest.raises(Interrupt):
        go(tmp_path / "cut", stop_after=stop_after)
    resumed = go(tmp_path / "cut", resume=True)
    assert all(torch.equal(a, b) for a, b in zip(full.state_dict().values(), resumed.state_dict().values()))


def crash_after(trainer: Trainer, stop_after: int | None) -> None:
    """Make ``trainer`` raise right after it has saved the checkpoint of epoch ``stop_after``."""
    if stop_after is None:
        return
    original = trainer._save

    def save_then_crash(epoch, *args):
        original(epoch, *args)
        if epoch == stop_after:
            raise Interrupt
    trainer._save = save_then_crash


def run(tmp_path, *, stop_after=None, resume=False, cache="auto", generator=False):
    """Train 3 warm-up + 3 fine-tune epochs; optionally crash after ``stop_after`` epochs."""
    m = model(seed=1)
    g = torch.Generator().manual_seed(5) if generator else None
    train = DataLoader(separable(64), batch_size=16, shuffle=True, generator=g)
    val = DataLoader(separable(32, seed=9), batch_size=16)
    trainer = Trainer(m, seed=3, progress=False, checkpoint_dir=tmp_path)
    crash_after(trainer, stop_after)
    history = trainer.fit(train, val, warmup_epochs=3, finetune_epochs=3, head_lr=1e-2,
                          cache_features=cache, resume=resume)
    return m, history


@pytest.mark.parametrize("stop_after", [2, 3, 4])
@pytest.mark.parametrize("cache", ["auto", False])
def test_resume_ends_with_the_uninterrupted_weights(tmp_path, stop_after, cache):
    full_model, full_history = run(tmp_path / "full", cache=cache)
    with pytest.raises(Interrupt):
        run(tmp_path / "cut", stop_after=stop_after, cache=cache)
    state = load_checkpoint(tmp_path / "cut" / LAST)
    assert state["epoch"] == stop_after and state["phase"] == ("warmup" if stop_after <= 3 else "finetune")
    resumed_model, resumed_history = run(tmp_path / "cut", resume=True, cache=cache)
    full, resumed = full_model.state_dict(), resumed_model.state_dict()
    assert all(torch.equal(full[k], resumed[k]) for k in full)
    assert [r["epoch"] for r in resumed_history] == [1, 2, 3, 4, 5, 6]
    strip = lambda h: [{k: v for k, v in r.items() if k != "seconds"} for r in h]  # noqa: E731
    assert strip(resumed_history) == strip(full_history)


def test_resume_with_a_loader_generator(tmp_path):
    full_model, _ = run(tmp_path / "full", generator=True)
    with pytest.raises(Interrupt):
        run(tmp_path / "cut", stop_after=4, generator=True)
    resumed_model, _ = run(tmp_path / "cut", resume=True, generator=True)
    assert all(torch.equal(a, b) for a, b in zip(full_model.state_dict().values(),
                                                 resumed_model.state_dict().values()))


def test_resume_true_without_checkpoint_starts_fresh(tmp_path):
    _, history = run(tmp_path, resume=True)
    assert len(history) == 6 and (tmp_path / LAST).is_file()


def test_finished_run_resumes_to_nothing_to_do(tmp_path):
    _, first = run(tmp_path)
    _, again = run(tmp_path, resume=True)
    assert len(again) == 6 and [r["train_loss"] for r in again] == [r["train_loss"] for r in first]


def test_existing_checkpoint_is_never_overwritten_silently(tmp_path):
    run(tmp_path)
    before = (tmp_path / LAST).read_bytes()
    with pytest.raises(ValueError, match=r"checkpoint_dir already holds '.*last.pt' from an earlier run"):
        run(tmp_path)
    assert (tmp_path / LAST).read_bytes() == before


def test_checkpoint_contents_load_weights_only(tmp_path):
    run(tmp_path)
    state = torch.load(tmp_path / LAST, weights_only=True)
    assert {"model", "optimizer", "scaler", "epoch", "phase", "history", "rng"} <= set(state)
    assert len(History(state["history"])) == 6 and state["rng"]["loaders"] == []


def test_plan_mismatch_is_reported(tmp_path):
    run(tmp_path)
    m = model()
    train = DataLoader(separable(64), batch_size=16)
    with pytest.raises(ValueError, match=r"ended epoch 6 in phase 'finetune', which does not fit this run's plan "
                                         r"of 6 warm-up and 0 fine-tune epochs"):
        Trainer(m, progress=False, checkpoint_dir=tmp_path).fit(train, warmup_epochs=6, finetune_epochs=0,
                                                                head_lr=1e-2, resume=True)


def test_save_is_atomic(tmp_path, monkeypatch):
    target = save_checkpoint(tmp_path / "c.pt", {"a": torch.ones(2)})
    def boom(*_a, **_k):
        raise OSError("disk full")
    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(target, {"a": torch.zeros(2)})
    assert torch.equal(load_checkpoint(target)["a"], torch.ones(2))     # the old one intact
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]              # no temporary left


def test_load_missing_checkpoint():
    with pytest.raises(FileNotFoundError, match="checkpoint 'missing.pt' does not exist"):
        load_checkpoint("missing.pt")


def test_resume_with_a_sampler_generator(tmp_path):
    from torch.utils.data import RandomSampler

    def go(path, **kwargs):
        m = model(seed=1)
        data = separable(64)
        train = DataLoader(data, batch_size=16, sampler=RandomSampler(data, generator=torch.Generator().manual_seed(2)))
        trainer = Trainer(m, seed=3, progress=False, checkpoint_dir=path)
        crash_after(trainer, kwargs.pop("stop_after", None))
        trainer.fit(train, warmup_epochs=1, finetune_epochs=3, cache_features=False, **kwargs)
        return m
    assert_resume_is_exact(go, tmp_path, stop_after=2)


# ------------------------------------------------------------- resume checks before it changes anything
def state_of(m):
    return {k: v.clone() for k, v in m.state_dict().items()}


def assert_untouched(m, before):
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())


def assert_refused_untouched(tmp_path, pattern, m=None, **kwargs):
    """Resuming from tmp_path raises a ValueError matching ``pattern`` and loads nothing."""
    m = model(seed=2) if m is None else m
    before = state_of(m)
    with pytest.raises(ValueError, match=pattern):
        resume_with(tmp_path, m, **kwargs)
    assert_untouched(m, before)


def resume_with(tmp_path, m, **kwargs):
    train = DataLoader(separable(64), batch_size=16)
    Trainer(m, progress=False, checkpoint_dir=tmp_path, **kwargs.pop("trainer", {})).fit(
        train, warmup_epochs=3, finetune_epochs=3, head_lr=1e-2, resume=True, **kwargs)


def test_a_checkpoint_of_another_head_width_is_refused_and_the_model_untouched(tmp_path):
    with pytest.raises(Interrupt):
        run(tmp_path, stop_after=4)
    from transferlearn import replace_head
    assert_refused_untouched(tmp_path, r"checkpoint '.*last.pt' does not fit this model and optimizer: shape "
                             r"fc.weight \(3, 8\) vs \(4, 8\), fc.bias \(3,\) vs \(4,\).*Nothing was loaded",
                             m=replace_head(model(seed=2), 4))


@pytest.mark.parametrize("change, pattern", [
    ({"trainer": {"optimizer": torch.optim.SGD}}, r"optimizer AdamW vs SGD"),
    ({"weight_decay": 0.1}, r"parameter groups \[\['backbone', 12, 0.001, 0.0\], \['fc', 2, 0.01, 0.0\]\] vs "
                              r"\[\['backbone', 3, 0.001, 0.1\], \['backbone/no_decay', 9, 0.001, 0.0\]"),
])
def test_another_optimizer_or_group_layout_is_refused(tmp_path, change, pattern):
    with pytest.raises(Interrupt):
        run(tmp_path, stop_after=2)
    assert_refused_untouched(tmp_path, pattern, **change)


@pytest.mark.parametrize("content, pattern", [
    (b"", r"checkpoint '.*last.pt' is empty"),
    ("truncated", r"checkpoint '.*last.pt' cannot be read \(.*\): it is truncated, damaged or not a torch checkpoint"),
    ("state_dict", r"checkpoint '.*last.pt' is not a transferlearn training checkpoint \(it looks like a plain "
                   r"state_dict\)"),
])
def test_empty_truncated_and_foreign_files_get_a_clear_error(tmp_path, content, pattern):
    if content == "truncated":
        with pytest.raises(Interrupt):
            run(tmp_path, stop_after=2)
        data = (tmp_path / LAST).read_bytes()
        (tmp_path / LAST).write_bytes(data[: len(data) // 2])
    elif content == "state_dict":
        torch.save(model().state_dict(), tmp_path / LAST)
    else:
        (tmp_path / LAST).write_bytes(content)
    assert_refused_untouched(tmp_path, pattern)


def test_resuming_a_finished_run_restores_its_last_phase(tmp_path):
    train = DataLoader(separable(64), batch_size=16)
    Trainer(model(), progress=False, checkpoint_dir=tmp_path).fit(train, warmup_epochs=1, finetune_epochs=1,
                                                                  unfreeze=1, freeze_bn=True)
    m = model(seed=2)                                      # fresh: everything trainable, BN adapting
    Trainer(m, progress=False, checkpoint_dir=tmp_path).fit(train, warmup_epochs=1, finetune_epochs=1,
                                                            unfreeze=1, freeze_bn=True, resume=True)
    from transferlearn import is_bn_frozen
    assert not any(p.requires_grad for p in m.stem.parameters())
    assert all(p.requires_grad for p in m.stage2.parameters()) and m.fc.weight.requires_grad
    assert all(is_bn_frozen(b) for b in m.modules() if isinstance(b, torch.nn.BatchNorm2d))


def test_stale_temporary_files_are_removed_and_files_respect_the_umask(tmp_path):
    import os
    import stat
    import subprocess
    import sys

    from transferlearn.base import _host_id
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True).stdout.strip()       # a writer killed mid-write
    stale = tmp_path / f".{LAST}.{_host_id()}-{dead}.0123456789ab.tmp"
    stale.write_bytes(b"half a checkpoint")
    other = tmp_path / ".notes.txt.tmp"
    other.write_text("not ours")
    old = os.umask(0o022)
    try:
        save_checkpoint(tmp_path / LAST, {"a": torch.ones(1)})
    finally:
        os.umask(old)
    assert not stale.exists() and other.exists()
    assert stat.S_IMODE((tmp_path / LAST).stat().st_mode) == 0o644


@pytest.mark.parametrize("make", [
    lambda d: DataLoader(d, batch_sampler=torch.utils.data.BatchSampler(
        torch.utils.data.RandomSampler(d, generator=torch.Generator().manual_seed(5)), 16, False)),
    lambda d: DataLoader(d, batch_size=16, sampler=torch.utils.data.RandomSampler(
        d, generator=torch.Generator().manual_seed(5)), generator=torch.Generator().manual_seed(9)),
])
@pytest.mark.parametrize("cache", ["auto", False])
def test_every_generator_of_the_loader_is_saved_for_resume(tmp_path, make, cache):
    def go(path, stop_after=None, resume=False):
        m = model(seed=1)
        trainer = Trainer(m, seed=3, progress=False, checkpoint_dir=path)
        crash_after(trainer, stop_after)
        trainer.fit(make(separable(64)), warmup_epochs=2, finetune_epochs=2, cache_features=cache, resume=resume)
        return m
    assert_resume_is_exact(go, tmp_path, stop_after=2)


def test_a_crash_between_last_pt_and_the_best_swap_stays_resumable(tmp_path, monkeypatch):
    import os as _os
    full_model, _ = run(tmp_path / "full")
    real_replace = _os.replace
    calls = []

    def crash_on_swap(src, dst):
        calls.append(str(dst))
        if str(dst).endswith("best.pt") and len([c for c in calls if c.endswith("best.pt")]) == 3:
            raise Interrupt                                   # last.pt already names the new best
        return real_replace(src, dst)
    monkeypatch.setattr(_os, "replace", crash_on_swap)
    with pytest.raises(Interrupt):
        run(tmp_path / "cut")
    monkeypatch.setattr(_os, "replace", real_replace)
    resumed_model, _ = run(tmp_path / "cut", resume=True)
    assert all(torch.equal(a, b) for a, b in zip(full_model.state_dict().values(),
                                                 resumed_model.state_dict().values()))


@pytest.mark.parametrize("edit, pattern", [
    (lambda s: s.update(epoch=0), r"inconsistent epoch bookkeeping \(epoch 0"),
    (lambda s: s.update(next=1), r"inconsistent epoch bookkeeping"),
    (lambda s: s.update(history=None), r"inconsistent epoch bookkeeping"),
    (lambda s: s.update(rng={}), r"has no valid random state"),
    (lambda s: s.update(best=None), r"has no valid 'best' record"),
    (lambda s: s["optimizer"]["state"][0].update(exp_avg=torch.zeros(7)), r"optimizer state shapes #0 \(7,\)"),
])
def test_hand_edited_checkpoints_are_refused_before_anything_is_loaded(tmp_path, edit, pattern):
    with pytest.raises(Interrupt):
        run(tmp_path, stop_after=4)
    state = torch.load(tmp_path / LAST, weights_only=True)
    edit(state)
    torch.save(state, tmp_path / LAST)
    assert_refused_untouched(tmp_path, pattern)


def test_other_learning_rates_at_resume_are_refused_not_silently_replaced(tmp_path):
    with pytest.raises(Interrupt):
        run(tmp_path, stop_after=2)
    m = model(seed=2)
    train = DataLoader(separable(64), batch_size=16)
    with pytest.raises(ValueError, match=r"parameter groups \[\['backbone', 12, 0.001, 0.0\], \['fc', 2, 0.01, 0.0\]\] "
                                         r"vs \[\['backbone', 12, 0.001, 0.0\], \['fc', 2, 0.1, 0.0\]\]"):
        Trainer(m, progress=False, checkpoint_dir=tmp_path).fit(train, warmup_epochs=3, finetune_epochs=3,
                                                                head_lr=0.1, backbone_lr=1e-3, resume=True)
