"""Callbacks: the hooks run in order, carry state through resume bitwise, and see gradual unfreezing."""

from __future__ import annotations

import copy

import pytest
import torch
from torch.utils.data import DataLoader

from transferlearn import Trainer, load_model, unfreeze
from transferlearn.train.checkpoint import LAST, load_checkpoint
from transferlearn.train.recipe import Phase

from .interrupts import Interrupt
from .test_trainer import model, separable


class Log:
    """Every hook call, by name."""

    def __init__(self):
        self.calls = []

    def on_fit_start(self, trainer):
        self.calls.append(("fit_start", len(trainer.history)))

    def on_phase_start(self, trainer, phase):
        self.calls.append(("phase_start", phase.name))

    def on_step_start(self, trainer, step):
        self.calls.append(("step_start", step.epoch, step.batch, step.loss))

    def on_step_end(self, trainer, step):
        assert isinstance(step.loss, float) and step.phase.name in ("warmup", "finetune")
        self.calls.append(("step_end", step.epoch, step.batch))

    def on_epoch_end(self, trainer, record):
        assert trainer.history[-1] is record  # the record is in the history already
        self.calls.append(("epoch_end", record["epoch"]))

    def on_fit_end(self, trainer, history):
        self.calls.append(("fit_end", history.best["epoch"] if history.best else None))


def test_hooks_run_in_loop_order():
    log = Log()
    train, val = DataLoader(separable(16), batch_size=8), DataLoader(separable(8, seed=3), batch_size=8)
    Trainer(model(), progress=False, callbacks=[log]).fit(train, val, warmup_epochs=1, finetune_epochs=1)
    steps = lambda e: [("step_start", e, 0, None), ("step_end", e, 0), ("step_start", e, 1, None),  # noqa: E731
                       ("step_end", e, 1)]
    best = 1 if log.calls[-1][1] == 1 else 2
    assert log.calls == [("fit_start", 0), ("phase_start", "warmup"), *steps(1), ("epoch_end", 1),
                         ("phase_start", "finetune"), *steps(2), ("epoch_end", 2), ("fit_end", best)]


class Decay:
    """A per-step schedule through the on_step_start seam, recording every step's rates."""

    def __init__(self, fail_at_epoch=None):
        self.steps, self.records, self.base, self.fail_at_epoch = 0, [], [], fail_at_epoch

    def on_phase_start(self, trainer, phase):
        self.base = [g["lr"] for g in trainer.optimizer.param_groups]  # the rates this phase set

    def on_step_start(self, trainer, step):
        for group, base in zip(trainer.optimizer.param_groups, self.base):
            group["lr"] = base * 0.9 ** self.steps
        self.steps += 1

    def on_step_end(self, trainer, step):
        self.records.append([step.epoch, step.batch, [g["lr"] for g in trainer.optimizer.param_groups]])

    def on_epoch_end(self, trainer, record):
        if record["epoch"] == self.fail_at_epoch:
            raise Interrupt  # before this epoch's checkpoint: the run resumes from the one before

    def state_dict(self):
        return {"steps": self.steps, "records": self.records, "base": self.base}

    def load_state_dict(self, state):
        self.steps, self.records, self.base = state["steps"], state["records"], state["base"]


def decayed_run(path, fail_at_epoch=None, resume=False, cache="auto"):
    m = model(seed=1)
    decay = Decay(fail_at_epoch)
    train = DataLoader(separable(48), batch_size=16, shuffle=True)
    val = DataLoader(separable(16, seed=9), batch_size=16)
    history = Trainer(m, seed=3, progress=False, checkpoint_dir=path, callbacks=[decay]).fit(
        train, val, phases=[Phase("warmup", 2, trains="head", head_lr=1e-2, cache=cache),
                            Phase("finetune:last1", 1, trains=1, head_lr=1e-2, backbone_lr=1e-3),
                            Phase("finetune:all", 2, head_lr=5e-3, backbone_lr=5e-4)], resume=resume)
    return m, decay, history


@pytest.mark.parametrize("fail_at", [2, 3, 4])
@pytest.mark.parametrize("cache", ["auto", False])
def test_a_stateful_callback_resumes_bitwise(tmp_path, fail_at, cache):
    full_model, full, full_history = decayed_run(tmp_path / "full", cache=cache)
    assert len(full.records) == 5 * 3 and full.records[1][2][0] == pytest.approx(full.records[0][2][0] * 0.9)
    assert full.records[9][2] == pytest.approx([5e-4 * 0.9 ** 9, 5e-3 * 0.9 ** 9])  # the last phase's rates, decayed
    with pytest.raises(Interrupt):  # a callback's exception stops the run and reaches the caller
        decayed_run(tmp_path / "cut", fail_at_epoch=fail_at, cache=cache)
    saved = load_checkpoint(tmp_path / "cut" / LAST)
    assert saved["epoch"] == fail_at - 1 and saved["callbacks"][0][0] == "Decay"
    assert saved["callbacks"][0][1]["steps"] == 3 * (fail_at - 1)
    resumed_model, resumed, resumed_history = decayed_run(tmp_path / "cut", resume=True, cache=cache)
    assert resumed.records == full.records and resumed.steps == full.steps
    assert all(torch.equal(a, b) for a, b in zip(full_model.state_dict().values(), resumed_model.state_dict().values()))
    strip = lambda h: [{k: v for k, v in r.items() if k != "seconds"} for r in h]  # noqa: E731
    assert strip(resumed_history) == strip(full_history)
    assert [r["phase"] for r in full_history] == ["warmup", "warmup", "finetune:last1", "finetune:all", "finetune:all"]


def test_resume_with_other_callbacks_is_refused_before_anything_is_loaded(tmp_path):
    with pytest.raises(Interrupt):
        decayed_run(tmp_path, fail_at_epoch=3)
    m = model(seed=2)
    before = {k: v.clone() for k, v in m.state_dict().items()}
    with pytest.raises(ValueError, match=r"holds the state of the callbacks \['Decay'\], this run's callbacks with "
                                         r"state are \[\]"):
        Trainer(m, progress=False, checkpoint_dir=tmp_path).fit(    # the same recipe; only the callbacks differ
            DataLoader(separable(48), batch_size=16), resume=True,
            phases=[Phase("warmup", 2, trains="head", head_lr=1e-2),
                    Phase("finetune:last1", 1, trains=1, head_lr=1e-2, backbone_lr=1e-3),
                    Phase("finetune:all", 2, head_lr=5e-3, backbone_lr=5e-4)])
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())


class Stop:
    def on_epoch_end(self, trainer, record):
        if record["phase"] == "warmup":
            record["stopped_early"] = True


def test_a_callback_can_end_a_phase():
    history = Trainer(model(), progress=False, callbacks=[Stop()]).fit(
        DataLoader(separable(16), batch_size=8), warmup_epochs=4, finetune_epochs=2)
    assert [(r["epoch"], r["phase"], r.get("stopped_early")) for r in history] == [
        (1, "warmup", True), (5, "finetune", None), (6, "finetune", None)]


@pytest.mark.parametrize("callbacks, pattern", [
    (Log(), r"callbacks must be a list of callback objects"),
    ("on_fit_start", r"callbacks must be a list of callback objects"),
    ([object()], r"callbacks\[0\] defines none of the hooks on_fit_start, on_phase_start"),
    ([Log(), type("Half", (), {"on_fit_start": lambda s, t: None, "state_dict": lambda s: {}})()],
     r"callbacks\[1\] \(Half\) must define both state_dict\(\) and load_state_dict\(state\), or neither"),
])
def test_bad_callbacks_are_refused(callbacks, pattern):
    with pytest.raises(TypeError, match=pattern):
        Trainer(model(), callbacks=callbacks)


class Moves:
    """Which parameters each phase moved, from snapshots at on_phase_start and on_epoch_end."""

    def __init__(self, model):
        self.model, self.start, self.moved = model, None, {}

    def on_phase_start(self, trainer, phase):
        self.start = {n: p.detach().clone() for n, p in self.model.named_parameters()}

    def on_epoch_end(self, trainer, record):
        self.moved[record["phase"]] = {n for n, p in self.model.named_parameters()
                                       if not torch.equal(p, self.start[n])}


def test_gradual_unfreezing_moves_the_head_then_the_last_stages_then_all():
    torch.manual_seed(0)
    net = load_model("resnet18", weights=None, num_classes=3)
    expected = {}
    for last in (1, 2):
        probe = unfreeze(copy.deepcopy(net), last=last)
        expected[f"finetune:last{last}"] = {n for n, p in probe.named_parameters() if p.requires_grad}
    moves = Moves(net)
    g = torch.Generator().manual_seed(0)
    data = torch.utils.data.TensorDataset(torch.randn(8, 3, 32, 32, generator=g), torch.randint(0, 3, (8,), generator=g))
    Trainer(net, seed=0, progress=False, callbacks=[moves]).fit(
        DataLoader(data, batch_size=8), warmup_epochs=1, finetune_epochs=1, unfreeze=(1, 2, None), head_lr=1e-2)
    every = {n for n, _ in net.named_parameters()}
    assert moves.moved["warmup"] == {"fc.weight", "fc.bias"}
    assert moves.moved["finetune:last1"] == expected["finetune:last1"]
    assert moves.moved["finetune:last2"] == expected["finetune:last2"]
    assert moves.moved["finetune:all"] == every
    assert {"fc.weight"} < expected["finetune:last1"] < expected["finetune:last2"] < every
    assert all(n.startswith(("layer4.", "fc.")) for n in expected["finetune:last1"])


def test_each_phase_trains_at_its_own_rates_and_resumes_across_them(tmp_path):
    phases = [Phase("warmup", 2, trains="head", head_lr=1e-2), Phase("finetune", 2, head_lr=1e-3, backbone_lr=1e-4)]

    def go(path, stop=None, resume=False):
        m = model(seed=1)
        stops = [type("S", (), {"on_epoch_end": lambda s, t, r: (_ for _ in ()).throw(Interrupt)
                                if r["epoch"] == stop else None})()] if stop else []
        history = Trainer(m, seed=3, progress=False, checkpoint_dir=path, callbacks=stops).fit(
            DataLoader(separable(32), batch_size=16, shuffle=True), phases=phases, resume=resume)
        return m, history
    full, history = go(tmp_path / "full")
    assert [r["lr"] for r in history] == [{"fc": 1e-2}] * 2 + [{"backbone": 1e-4, "fc": 1e-3}] * 2
    with pytest.raises(Interrupt):
        go(tmp_path / "cut", stop=4)  # the last checkpoint is epoch 3, in the fine-tune phase
    resumed, _ = go(tmp_path / "cut", resume=True)
    assert all(torch.equal(a, b) for a, b in zip(full.state_dict().values(), resumed.state_dict().values()))
