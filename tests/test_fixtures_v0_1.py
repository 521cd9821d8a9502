"""Files saved by transferlearn 0.1.0 (fe7e29a) keep working: see tests/fixtures/make_v0_1_fixtures.py."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import transferlearn as tl
from transferlearn.train.checkpoint import load_checkpoint

FIXTURES = Path(__file__).parent / "fixtures"


def tiny_net() -> nn.Module:  # as make_v0_1_fixtures.tiny_net
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 6, 3),
                         nn.BatchNorm2d(6), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 3))


def tiny_data(seed: int = 0) -> TensorDataset:  # as make_v0_1_fixtures.tiny_data
    g = torch.Generator().manual_seed(seed)
    return TensorDataset(torch.randn(24, 3, 12, 12, generator=g), torch.randint(0, 3, (24,), generator=g))


@pytest.fixture
def one_thread():
    """The fixtures were made with one intra-op thread (OMP_NUM_THREADS=1); bitwise equality of
    convolution results holds for the same thread count only."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_old_checkpoint_resumes_to_the_same_weights(tmp_path, one_thread):
    """A FORMAT 2 ``last.pt`` written by 0.1.0 after epoch 2 of a 1 + 2 epoch fit resumes to
    exactly the weights the uninterrupted 0.1.0 run ended with."""
    folder = tmp_path / "checkpoint"
    shutil.copytree(FIXTURES / "checkpoint_v0_1", folder)
    assert load_checkpoint(folder / "last.pt")["format"] == 2
    torch.manual_seed(0)
    model = tiny_net()
    trainer = tl.Trainer(model, seed=0, progress=False, checkpoint_dir=folder)
    history = trainer.fit(DataLoader(tiny_data(), batch_size=8, shuffle=True), warmup_epochs=1, finetune_epochs=2,
                          head_lr=1e-2, backbone_lr=1e-3, cache_features=False, resume=True)
    assert [r["epoch"] for r in history] == [1, 2, 3] and [r["phase"] for r in history] == ["warmup", "finetune",
                                                                                            "finetune"]
    expected = load_file(str(folder / "final.safetensors"))
    got = model.state_dict()
    assert set(got) == set(expected)
    for name, tensor in expected.items():
        assert torch.equal(got[name], tensor), name
    # and a fresh run of today's code lands on the same weights as 0.1.0 did
    torch.manual_seed(0)
    fresh = tiny_net()
    tl.Trainer(fresh, seed=0, progress=False).fit(DataLoader(tiny_data(), batch_size=8, shuffle=True),
                                                  warmup_epochs=1, finetune_epochs=2, head_lr=1e-2,
                                                  backbone_lr=1e-3, cache_features=False)
    assert all(torch.equal(fresh.state_dict()[k], v) for k, v in expected.items())
