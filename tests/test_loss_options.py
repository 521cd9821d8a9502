"""The training loss's options: label smoothing, class weights (balance="loss"), MixUp/CutMix with soft
targets on uncached phases only, and macro-F1 (evaluate, monitor="val_macro_f1")."""

from __future__ import annotations

import copy

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn
from torch.utils.data import DataLoader, Dataset, IterableDataset, Subset, SubsetRandomSampler, TensorDataset

from transferlearn import Trainer
from transferlearn.train.balance import class_weights, loader_labels
from transferlearn.train.evaluation import evaluate
from transferlearn.train.recipe import Recipe

from .interrupts import Interrupt, StopAt
from .test_trainer import model, separable


class First:
    """At the first step of ``epoch``: the model (a copy, in its train-time modes), the torch RNG, the loss."""

    def __init__(self, epoch=1):
        self.epoch, self.model, self.rng, self.loss = epoch, None, None, None

    def on_step_start(self, trainer, step):
        if step.epoch == self.epoch and step.batch == 0:
            self.model, self.rng = copy.deepcopy(trainer.model).requires_grad_(False), torch.get_rng_state()

    def on_step_end(self, trainer, step):
        if step.epoch == self.epoch and step.batch == 0:
            self.loss = step.loss


def first_batch(n=16, bs=8, seed=0):
    x, y = separable(n, seed).tensors
    return x[:bs], y[:bs]


@pytest.mark.parametrize("cache", ["auto", False])
def test_label_smoothing_trains_on_the_smoothed_loss_and_validates_on_the_plain_one(cache):
    first = First()
    val = DataLoader(separable(16, seed=4), batch_size=8)
    trainer = Trainer(model(), progress=False, callbacks=[first])
    history = trainer.fit(DataLoader(separable(16), batch_size=8), val, warmup_epochs=1, finetune_epochs=0,
                          label_smoothing=0.1, cache_features=cache, restore_best=False)
    x, y = first_batch()
    expected = nn.CrossEntropyLoss(label_smoothing=0.1)(first.model(x), y)
    assert first.loss == pytest.approx(float(expected), rel=1e-6)
    assert first.loss != pytest.approx(float(nn.CrossEntropyLoss()(first.model(x), y)), rel=1e-3)
    assert history[-1]["val_loss"] == trainer.evaluate(val)["loss"]  # validation: the Trainer's own criterion


def test_balance_weights_the_training_loss_by_inverse_class_frequency():
    x, y = separable(24).tensors
    y = torch.tensor([0] * 16 + [1] * 6 + [2] * 2)
    data = TensorDataset(x, y)
    first = First()
    Trainer(model(), progress=False, callbacks=[first]).fit(DataLoader(data, batch_size=8), warmup_epochs=1,
                                                           finetune_epochs=0, balance="loss")
    weight = torch.tensor([24 / (3 * 16), 24 / (3 * 6), 24 / (3 * 2)])
    expected = nn.CrossEntropyLoss(weight=weight)(first.model(x[:8]), y[:8])
    assert first.loss == pytest.approx(float(expected), rel=1e-6)


def test_class_weights_are_scikit_learns_balanced_weights():
    utils = pytest.importorskip("sklearn.utils")
    labels = torch.tensor([0, 0, 0, 1, 2, 2, 3, 0, 1])
    expected = utils.class_weight.compute_class_weight("balanced", classes=labels.unique().numpy(), y=labels.numpy())
    torch.testing.assert_close(class_weights(labels, 4), torch.tensor(expected, dtype=torch.float32))
    with pytest.raises(ValueError, match=r"balance='loss': class 2 has no training sample \(1 classes have none\)"):
        class_weights(torch.tensor([0, 1, 1]), 3)
    with pytest.raises(ValueError, match=r"the training labels run from 0 to 5, but the head has 3 classes"):
        class_weights(torch.tensor([0, 5]), 3)


class Targets(Dataset):
    """Exposes ``targets`` and fails when an item is read: labels must come without decoding."""

    def __init__(self, targets):
        self.targets = targets

    def __len__(self):
        return len(self.targets)

    def __getitem__(self, i):
        raise AssertionError("an item was read")


def test_labels_come_from_targets_the_sampler_support_or_the_cache():
    labels = [0, 1, 2, 2, 1, 0, 0, 2]
    assert loader_labels(DataLoader(Targets(labels))).tolist() == labels
    sampler = SubsetRandomSampler([1, 3, 4])
    assert loader_labels(DataLoader(Targets(labels), sampler=sampler)).tolist() == [1, 2, 1]
    assert loader_labels(DataLoader(Subset(Targets(labels), [7, 0]))).tolist() == [2, 0]
    plain = [(torch.zeros(1), y) for y in labels]  # a list: read item by item
    assert loader_labels(DataLoader(plain)).tolist() == labels
    with pytest.raises(ValueError, match=r"balance='loss' counts the training labels by index: it needs a "
                                         r"DataLoader over a map-style dataset, got Stream"):
        loader_labels(DataLoader(type("Stream", (IterableDataset,), {"__iter__": lambda s: iter([])})()))


@pytest.mark.parametrize("sampler", [False, True])
def test_cached_and_uncached_runs_weigh_the_classes_alike(sampler):
    def go(cache):
        data = separable(32)
        loader = DataLoader(data, batch_size=8, sampler=SubsetRandomSampler(range(4, 28), generator=torch.Generator(
            ).manual_seed(0))) if sampler else DataLoader(data, batch_size=8)
        m = model()
        Trainer(m, seed=0, progress=False).fit(loader, warmup_epochs=2, finetune_epochs=1, balance="loss",
                                               cache_features=cache)
        return m.state_dict()
    cached, uncached = go("auto"), go(False)
    assert all(torch.equal(cached[k], uncached[k]) for k in cached)


def test_mixup_matches_torchvision_and_counts_accuracy_on_the_hard_labels():
    from torchvision.transforms import v2
    first = First()
    history = Trainer(model(), seed=0, progress=False, callbacks=[first]).fit(
        DataLoader(separable(8), batch_size=8), warmup_epochs=0, finetune_epochs=1, mixup=0.4)
    x, y = first_batch(8)
    torch.set_rng_state(first.rng)
    mixed, soft = v2.MixUp(alpha=0.4, num_classes=3)(x, y)
    assert not torch.equal(mixed, x) and soft.shape == (8, 3)
    logits = first.model(mixed)
    assert first.loss == pytest.approx(float(nn.CrossEntropyLoss()(logits, soft)), rel=1e-6)
    assert history[0]["train_accuracy"] == float((logits.argmax(1) == y).float().mean())
    assert history[0]["mix"] == "mixup"


def test_mixing_skips_the_cached_warmup_and_says_so():
    def go(**mix):
        m = model()
        h = Trainer(m, seed=0, progress=False).fit(DataLoader(separable(32), batch_size=8, shuffle=True),
                                                   warmup_epochs=2, finetune_epochs=2, **mix)
        return m, h
    _, plain = go()
    m, mixed = go(mixup=0.2, cutmix=1.0)
    assert [r["mix"] for r in mixed] == ["off (cached features)"] * 2 + ["mixup+cutmix"] * 2
    strip = lambda r: {k: v for k, v in r.items() if k not in ("seconds", "mix")}  # noqa: E731
    assert [strip(r) for r in mixed[:2]] == [strip(r) for r in plain[:2]]  # the warm-up: clean cached features
    assert mixed[2]["train_loss"] != plain[2]["train_loss"]
    _, uncached = Trainer(model(), progress=False), Trainer(model(), progress=False).fit(
        DataLoader(separable(16), batch_size=8), warmup_epochs=1, finetune_epochs=0, mixup=0.2, cache_features=False)
    assert uncached[0]["mix"] == "mixup"  # an uncached warm-up reads images: it mixes


def mixed_run(path, stop=None, resume=False):
    m = model(seed=1)
    stops = [StopAt(stop)] if stop else []
    history = Trainer(m, seed=3, progress=False, checkpoint_dir=path, callbacks=stops).fit(
        DataLoader(separable(32), batch_size=8, shuffle=True), warmup_epochs=1, finetune_epochs=3, head_lr=1e-2,
        mixup=0.3, cutmix=1.0, label_smoothing=0.1, balance="loss", resume=resume)
    return m, history


def test_a_mixed_run_resumes_bitwise(tmp_path):
    full, full_history = mixed_run(tmp_path / "full")
    with pytest.raises(Interrupt):
        mixed_run(tmp_path / "cut", stop=3)
    resumed, resumed_history = mixed_run(tmp_path / "cut", resume=True)
    assert all(torch.equal(a, b) for a, b in zip(full.state_dict().values(), resumed.state_dict().values()))
    strip = lambda h: [{k: v for k, v in r.items() if k != "seconds"} for r in h]  # noqa: E731
    assert strip(resumed_history) == strip(full_history)


class Halves(nn.Module):
    def forward(self, x, y):
        return nn.functional.cross_entropy(x, y)


@pytest.mark.parametrize("criterion, options, pattern", [
    (Halves(), {"label_smoothing": 0.1}, r"label_smoothing=0.1 needs the default criterion or an "
                                         r"nn.CrossEntropyLoss, got criterion=.*Halves"),
    (Halves(), {"balance": "loss"}, r"balance='loss' needs the default criterion or an nn.CrossEntropyLoss"),
    (nn.CrossEntropyLoss(label_smoothing=0.2), {"label_smoothing": 0.1},
     r"label_smoothing=0.1: the Trainer's criterion already has label_smoothing=0.2 / class weights; set them in "
     r"one place"),
    (nn.CrossEntropyLoss(weight=torch.ones(3)), {"balance": "loss"}, r"balance='loss': the Trainer's criterion"),
])
def test_loss_options_a_criterion_cannot_take_are_refused_before_training(criterion, options, pattern):
    m = model()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    with pytest.raises(ValueError, match=pattern):
        Trainer(m, progress=False, criterion=criterion).fit(DataLoader(separable(16), batch_size=8), **options)
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())


def test_a_user_cross_entropy_takes_the_smoothing():
    first = First()
    Trainer(model(), progress=False, callbacks=[first], criterion=nn.CrossEntropyLoss(reduction="sum")).fit(
        DataLoader(separable(16), batch_size=8), warmup_epochs=1, finetune_epochs=0, label_smoothing=0.2)
    x, y = first_batch()
    expected = nn.CrossEntropyLoss(reduction="sum", label_smoothing=0.2)(first.model(x), y)
    assert first.loss == pytest.approx(float(expected), rel=1e-6)


@pytest.mark.parametrize("options, exc, pattern", [
    ({"label_smoothing": 1.5}, ValueError, r"label_smoothing must be a finite number >= 0.0 and <= 1.0, got 1.5"),
    ({"mixup": -0.1}, ValueError, r"mixup must be a finite number >= 0.0, got -0.1"),
    ({"cutmix": "1"}, TypeError, r"cutmix must be a real number, got '1'"),
    ({"balance": "sampler"}, ValueError, r"balance must be 'loss', got 'sampler'"),
    ({"balance": True}, TypeError, r"balance must be 'loss', got True"),
])
def test_bad_loss_options_are_refused(options, exc, pattern):
    with pytest.raises(exc, match=pattern):
        Recipe.from_fit(**options)


def test_cutmix_needs_images_and_mixing_class_indices():
    flat = TensorDataset(torch.randn(16, 3, 8, 8), torch.rand(16, 3))  # soft targets already
    with pytest.raises(ValueError, match=r"mixup/cutmix need class-index targets \(a 1-D integer tensor\)"):
        Trainer(model(), progress=False).fit(DataLoader(flat, batch_size=8), warmup_epochs=0, finetune_epochs=1,
                                             mixup=0.2)


@given(true=st.lists(st.integers(0, 3), min_size=1, max_size=40), data=st.data())
def test_macro_f1_is_scikit_learns(true, data):
    metrics = pytest.importorskip("sklearn.metrics")
    predicted = data.draw(st.lists(st.integers(0, 3), min_size=len(true), max_size=len(true)))
    logits = nn.functional.one_hot(torch.tensor(predicted), 4).float()
    scores = evaluate(nn.Identity(), [(logits, torch.tensor(true))], macro_f1=True)
    assert scores["macro_f1"] == pytest.approx(metrics.f1_score(true, predicted, average="macro"), abs=1e-12)
    assert set(evaluate(nn.Identity(), [(logits, torch.tensor(true))])) == {"loss", "accuracy"}


def test_monitor_val_macro_f1_keeps_the_epoch_with_the_best_f1(monkeypatch):
    trainer = Trainer(model(), progress=False)
    scripted = iter([(0.5, 0.8, 0.4), (0.6, 0.7, 0.7), (0.4, 0.9, 0.5)])  # loss, accuracy, macro-F1
    monkeypatch.setattr(trainer, "evaluate", lambda _loader, **_: dict(zip(("loss", "accuracy", "macro_f1"),
                                                                      next(scripted))))
    history = trainer.fit(DataLoader(separable(16), batch_size=8), DataLoader(separable(8), batch_size=8),
                          warmup_epochs=1, finetune_epochs=2, monitor="val_macro_f1", cache_features=False)
    assert history.best["epoch"] == 2 and [r["val_macro_f1"] for r in history] == [0.4, 0.7, 0.5]
