"""Resuming with another recipe is refused field by field (the adversarial review of 0.3, finding 8):
the checkpoint records each phase's description (what trains, rates, BatchNorm policy, cache,
schedule); a checkpoint without it (FORMAT 2 as 0.2 wrote it) resumes as before."""

from __future__ import annotations

import shutil

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import transferlearn as tl
from transferlearn.train import checkpoint as ckpt


def _loader() -> DataLoader:
    torch.manual_seed(0)
    data = TensorDataset(torch.randn(8, 3, 32, 32), torch.arange(8) % 3)
    return DataLoader(data, batch_size=4, shuffle=True, generator=torch.Generator().manual_seed(0))


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return tl.load_model("resnet18", weights=None, num_classes=3)


class _Stop:
    def on_epoch_end(self, trainer, record):
        if record["epoch"] == 2:
            raise KeyboardInterrupt


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory):
    """A checkpoint_dir left by a fit (1 warm-up + 2 fine-tune epochs) interrupted after epoch 2."""
    directory = tmp_path_factory.mktemp("ckpt")
    with pytest.raises(KeyboardInterrupt):
        tl.Trainer(_model(), progress=False, seed=0, checkpoint_dir=directory, callbacks=[_Stop()]).fit(
            _loader(), _loader(), warmup_epochs=1, finetune_epochs=2)
    return directory


def _resume(interrupted, tmp_path, **kwargs):
    directory = shutil.copytree(interrupted, tmp_path / "ckpt")
    model = _model()
    history = tl.Trainer(model, progress=False, seed=0, checkpoint_dir=directory).fit(
        _loader(), _loader(), warmup_epochs=1, finetune_epochs=2, resume=True, **kwargs)
    return model, history


@pytest.mark.parametrize("kwargs, pattern", [
    ({"freeze_bn": False}, r"phase 'finetune' field 'freeze_bn': True in the checkpoint, False in this run"),
    ({"freeze_bn": "early"}, r"phase 'finetune' field 'freeze_bn': True in the checkpoint, 'early' in this run"),
    ({"unfreeze": 1}, r"phase 'finetune' field 'trains': 'all' in the checkpoint, 1 in this run"),
    ({"schedule": "cosine"}, r"phase 'warmup' field 'schedule': \['constant', 0\] in the checkpoint, "
                             r"\['cosine', 0\] in this run; phase 'finetune' field 'schedule': .* in this run"),
])
def test_resuming_with_another_recipe_is_refused_naming_the_field(interrupted, tmp_path, kwargs, pattern):
    with pytest.raises(ValueError, match=r"checkpoint '.*last.pt' was written by another recipe: " + pattern +
                                         r"\. Nothing was loaded"):
        _resume(interrupted, tmp_path, **kwargs)


def test_the_same_recipe_resumes_and_a_checkpoint_without_a_recipe_record_still_does(interrupted, tmp_path):
    _, history = _resume(interrupted, tmp_path / "same")
    assert [r["epoch"] for r in history] == [1, 2, 3]
    old = tmp_path / "old"
    shutil.copytree(interrupted, old)
    state = torch.load(old / ckpt.LAST, weights_only=True)
    assert state["recipe"][1]["freeze_bn"] is True
    del state["recipe"]                                   # as 0.2 wrote it
    ckpt.save_checkpoint(old / ckpt.LAST, state)
    model, history = _resume(old, tmp_path / "old2")
    same, _ = _resume(interrupted, tmp_path / "same2")
    assert [r["epoch"] for r in history] == [1, 2, 3]
    torch.testing.assert_close(model.state_dict(), same.state_dict(), rtol=0, atol=0)
