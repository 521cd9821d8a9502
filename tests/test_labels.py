"""Targets are checked where the Trainer takes a batch (issue 13.8): a bad label is an error naming the
loader, phase, epoch, batch and value, before the loss (and, cached, before any training); ignore_index
targets count in neither loss nor accuracy; a batch of only ignored targets is no step, not a NaN."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

from transferlearn import Trainer
from transferlearn.data.batches import check_targets, target_rule

from .test_trainer import model, separable


def with_labels(ds: TensorDataset, labels: torch.Tensor) -> TensorDataset:
    return TensorDataset(ds.tensors[0], labels)


def fit(train, val=None, cache=False, criterion=None, warmup=1, finetune=0, net=None):
    trainer = Trainer(net or model(), progress=False, seed=0, criterion=criterion)
    history = trainer.fit(train, val, warmup_epochs=warmup, finetune_epochs=finetune, cache_features=cache)
    return trainer, history


def params(m: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in m.state_dict().items()}


@pytest.mark.parametrize("warmup, finetune, phase", [(1, 1, "epoch 1/2 warmup"), (0, 1, "epoch 1/1 finetune")])
def test_a_label_out_of_range_names_loader_phase_epoch_batch_and_value_uncached(warmup, finetune, phase):
    ds = separable(48)
    labels = ds.tensors[1].clone()
    labels[21] = 5                                              # batch 2 (16 a batch), row 5
    train = DataLoader(with_labels(ds, labels), batch_size=16)
    with pytest.raises(ValueError, match=rf"^train_loader, {phase}, batch 2: target 5 \(row 5\) is not a class index; "
                                         r"expected class indices as an int64 tensor of shape \(N,\), each in \[0, 3\) "
                                         r"\(the model has 3 outputs\) or -100 \(the criterion's ignore_index\)"):
        fit(train, warmup=warmup, finetune=finetune)


def test_cached_labels_are_checked_once_before_any_training_naming_dataset_indices():
    ds = separable(48)
    labels = ds.tensors[1].clone()
    labels[[7, 30]] = torch.tensor([-1, 3])
    net = model()
    before = params(net)
    with pytest.raises(ValueError, match=r"^train_loader \(its labels, checked once when its warm-up features were "
                                         r"cached, before training\): targets -1, 3 \(dataset indices 7, 30\) are not "
                                         r"class indices"):
        fit(DataLoader(with_labels(ds, labels), batch_size=16, shuffle=True), cache=True, net=net)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())   # not one step was taken


@pytest.mark.parametrize("cache, pattern", [
    (False, r"^val_loader, epoch 1/1 warmup, batch 2: target 7 \(row 0\) is not a class index"),
    (True, r"^val_loader \(its labels, checked once when its warm-up features were cached, before training\): "
           r"target 7 \(dataset index 16\) is not a class index")])
def test_a_bad_validation_label_is_named_cached_or_not(cache, pattern):
    val = separable(32, seed=5)
    labels = val.tensors[1].clone()
    labels[16] = 7
    with pytest.raises(ValueError, match=pattern):
        fit(DataLoader(separable(32), batch_size=16), DataLoader(with_labels(val, labels), batch_size=16), cache=cache)


@pytest.mark.parametrize("targets, exc, pattern", [
    (lambda y: y.float(), TypeError, r"targets of dtype torch.float32 and shape \((16|32),\); expected class indices .* or "
                                     r"class probabilities as a float tensor of the outputs' shape \((16|32), 3\)"),
    (lambda y: y.int(), TypeError, r"targets of dtype torch.int32 and shape \((16|32),\); expected class indices as an "
                                   r"int64 tensor"),
    (lambda y: y[:, None], ValueError, r"targets of shape \(16, 1\) for outputs of shape \(16, 3\); expected"),
    (lambda y: y.bool(), TypeError, r"targets of dtype torch.bool"),
])
def test_float_int32_and_misshapen_targets_get_a_named_error_not_torchs(targets, exc, pattern):
    ds = separable(32)
    train = DataLoader(TensorDataset(ds.tensors[0], targets(ds.tensors[1])), batch_size=16)
    for cache in (False, True):
        with pytest.raises(exc, match=rf"train_loader.*: {pattern}"):
            fit(train, cache=cache)


def test_ignored_targets_count_in_neither_loss_nor_accuracy():
    """issue 13.8: -100 was ignored by the loss but counted (as wrong) in the accuracy."""
    ds = separable(40, seed=3)
    labels = ds.tensors[1].clone()
    labels[::3] = -100
    trainer = Trainer(model(), progress=False)
    scores = trainer.evaluate(DataLoader(with_labels(ds, labels), batch_size=16))
    with torch.inference_mode():
        logits = trainer.model.eval()(ds.tensors[0])
    kept = labels != -100
    assert scores["accuracy"] == pytest.approx(float((logits.argmax(1)[kept] == labels[kept]).float().mean()), abs=1e-7)
    assert scores["loss"] == pytest.approx(float(F.cross_entropy(logits, labels)), rel=1e-6)   # mean over the kept


@pytest.mark.parametrize("cache", [False, True])
def test_a_batch_of_only_ignored_targets_is_no_step_not_a_nan(cache):
    """issue 13.8: an all -100 batch made the loss NaN and blamed "NaN inputs or the learning rate"."""
    ds = separable(48)
    labels = ds.tensors[1].clone()
    labels[16:32] = -100                                         # batch 2 of 3: nothing to learn
    trainer, history = fit(DataLoader(with_labels(ds, labels), batch_size=16), cache=cache)
    rest = TensorDataset(torch.cat([ds.tensors[0][:16], ds.tensors[0][32:]]), torch.cat([labels[:16], labels[32:]]))
    oracle, expected = fit(DataLoader(rest, batch_size=16), cache=cache)
    for k, v in oracle.model.state_dict().items():
        torch.testing.assert_close(trainer.model.state_dict()[k], v, rtol=0, atol=0)
    assert history[0]["train_loss"] == pytest.approx(expected[0]["train_loss"], rel=1e-6)
    assert history[0]["train_accuracy"] == expected[0]["train_accuracy"]


def test_all_targets_ignored_is_a_clear_error():
    ds = separable(32)
    everything_ignored = DataLoader(with_labels(ds, torch.full((32,), -100)), batch_size=16)
    with pytest.raises(ValueError, match=r"train_loader yielded no batches: every target was ignore_index \(-100\)"):
        fit(everything_ignored)
    with pytest.raises(ValueError, match=r"loader yielded no batches: nothing to evaluate: every target was "
                                         r"ignore_index \(-100\), nothing to score"):
        Trainer(model(), progress=False).evaluate(everything_ignored)


def test_the_criterions_own_ignore_index_is_accepted_and_others_are_not():
    ds = separable(32)
    labels = ds.tensors[1].clone()
    labels[0] = 3
    train = DataLoader(with_labels(ds, labels), batch_size=16)
    fit(train, criterion=nn.CrossEntropyLoss(ignore_index=3))                 # 3 is ignored: fine
    with pytest.raises(ValueError, match=r"target 3 \(row 0\) is not a class index.* or 255 \(the criterion's "
                                         r"ignore_index\)"):
        fit(train, criterion=nn.CrossEntropyLoss(ignore_index=255))


def test_soft_targets_and_custom_criteria_still_train():
    ds = separable(32)
    soft = F.one_hot(ds.tensors[1], 3).float() * 0.9 + 0.1 / 3           # label smoothing by hand
    _, history = fit(DataLoader(TensorDataset(ds.tensors[0], soft), batch_size=16))
    assert history[0]["train_accuracy"] is None and history[0]["train_loss"] > 0
    multi_hot = F.one_hot(ds.tensors[1], 3).float()
    fit(DataLoader(TensorDataset(ds.tensors[0], multi_hot), batch_size=16), criterion=nn.BCEWithLogitsLoss())
    with pytest.raises(ValueError, match=r"targets of shape \(8, 3\) for 16 inputs; expected one target per input "
                                         r"\(targets.shape\[0\] == inputs.shape\[0\]\)"):
        fit([(ds.tensors[0][:16], multi_hot[:8])], criterion=nn.BCEWithLogitsLoss())


def test_check_targets_rules():
    assert check_targets(torch.tensor([0, 2, -100]), torch.zeros(3, 3)) == 2
    assert check_targets(torch.tensor([0, 2], dtype=torch.uint8), (2, 3)) == 2
    assert check_targets(torch.tensor([[0, 1], [2, -100]]), (2, 3, 2)) == 3       # (N, d) for (N, C, d)
    assert check_targets(torch.rand(2, 3), (2, 3)) == 2
    assert check_targets(torch.rand(2, 7), (2, 3), criterion=nn.MSELoss()) == 2
    assert target_rule(nn.NLLLoss(ignore_index=9)) == ("index", 9) and target_rule(None) == ("index or soft", -100)
    with pytest.raises(TypeError, match=r"targets of dtype torch.float32 and shape \(2, 3\); expected class indices"):
        check_targets(torch.rand(2, 3), (2, 3), criterion=nn.NLLLoss())           # NLLLoss takes no probabilities
    with pytest.raises(ValueError, match=r"targets 3, 4, 5, 6, 7, 8 \(rows 3, 4, 5, 6, 7 and 1 more\) are not class "
                                         r"indices"):
        check_targets(torch.arange(9), (9, 3), where="w")
