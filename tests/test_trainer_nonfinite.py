"""A non-finite value stops the run: never trained on, never saved over a good checkpoint."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from transferlearn import Trainer
from transferlearn.train.checkpoint import LAST

from .test_trainer import model, separable


def poisoned(n=32, bad=20) -> TensorDataset:
    data = separable(n)
    x = data.tensors[0].clone()
    x[bad, 0, 0, 0] = float("nan")
    return TensorDataset(x, data.tensors[1])


@pytest.mark.parametrize("cache", [True, False])
def test_a_nan_input_stops_before_the_step_naming_phase_epoch_and_batch(tmp_path, cache):
    m = model()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    loader = DataLoader(poisoned(), batch_size=8)                    # sample 20 is in batch 3
    with pytest.raises(FloatingPointError, match=r"non-finite loss nan in epoch 1/2 warmup, batch 3: the run "
                                                 r"stops before the optimizer step"):
        Trainer(m, progress=False, checkpoint_dir=tmp_path).fit(loader, warmup_epochs=2, finetune_epochs=0,
                                                                cache_features=cache)
    assert not (tmp_path / LAST).exists()                            # nothing NaN was saved
    assert all(bool(torch.isfinite(v.float()).all()) for v in m.state_dict().values())
    assert not torch.equal(before["fc.weight"], m.fc.weight)        # batches 1-2 trained, batch 3 did not


def test_the_last_good_checkpoint_stays_the_last_good_one(tmp_path):
    clean = DataLoader(separable(32), batch_size=8)
    m = model()
    Trainer(m, progress=False, checkpoint_dir=tmp_path, seed=0).fit(clean, warmup_epochs=1, finetune_epochs=0)
    good = (tmp_path / LAST).read_bytes()
    with pytest.raises(FloatingPointError, match=rf"epoch 2/2 finetune, batch 3.*{LAST} still holds the last good"):
        Trainer(m, progress=False, checkpoint_dir=tmp_path, seed=0).fit(
            DataLoader(poisoned(), batch_size=8), warmup_epochs=1, finetune_epochs=1, resume=True)
    assert (tmp_path / LAST).read_bytes() == good


def test_an_exploding_learning_rate_is_stopped():
    with pytest.raises(FloatingPointError, match="non-finite (loss|weights)"):
        Trainer(model(), progress=False).fit(DataLoader(separable(64), batch_size=8), warmup_epochs=0,
                                             finetune_epochs=5, head_lr=1e30, backbone_lr=1e30)


def nan_gradient(logits, targets):
    """Loss 0 (finite) whose gradient is 0 * inf = NaN."""
    return torch.sqrt((logits - logits.detach()).pow(2).sum())


def test_a_non_finite_gradient_norm_stops_the_run_when_clipping():
    loader = DataLoader(separable(16), batch_size=8)
    with pytest.raises(FloatingPointError, match=r"non-finite gradient norm nan in epoch 1/1 warmup, batch 1"):
        Trainer(model(), progress=False, grad_clip=1.0, criterion=nan_gradient).fit(
            loader, warmup_epochs=1, finetune_epochs=0, cache_features=False)


class Corrupting(torch.optim.SGD):
    """An optimizer whose step leaves an infinite weight (as an overflow would)."""

    def step(self, closure=None):
        super().step(closure)
        for group in self.param_groups:
            for p in group["params"]:
                if p.requires_grad:
                    p.data.fill_(float("inf"))


def test_non_finite_weights_are_never_checkpointed(tmp_path):
    with pytest.raises(FloatingPointError, match=r"non-finite weights after epoch 1 \(fc.weight, fc.bias\)"):
        Trainer(model(), progress=False, optimizer=Corrupting, checkpoint_dir=tmp_path).fit(
            DataLoader(separable(16), batch_size=16), warmup_epochs=1, finetune_epochs=0)
    assert list(tmp_path.iterdir()) == []
