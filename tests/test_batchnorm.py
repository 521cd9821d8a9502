"""freeze_bn_running_stats: statistics pinned through train(), output equal to eval()."""

from __future__ import annotations

import copy
import io

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from transferlearn import freeze_bn_running_stats, is_bn_frozen, unfreeze_bn_running_stats

BN_TYPES = [(nn.BatchNorm1d, (4, 3)), (nn.BatchNorm1d, (4, 3, 5)), (nn.BatchNorm2d, (4, 3, 5, 5)),
            (nn.BatchNorm3d, (4, 3, 2, 3, 3)), (nn.SyncBatchNorm, (4, 3, 5, 5))]


def stats(module: nn.Module) -> list[torch.Tensor]:
    return [b.clone() for n, b in module.named_buffers()]


def warmed(cls, shape) -> nn.Module:
    torch.manual_seed(0)
    bn = cls(3)
    bn.train()
    for _ in range(3):
        bn(torch.randn(shape) * 3 + 1)  # non-trivial running statistics
    return bn


@pytest.mark.parametrize("cls, shape", BN_TYPES)
def test_frozen_bn_matches_eval_and_keeps_stats(cls, shape):
    bn = warmed(cls, shape)
    before = stats(bn)
    x = torch.randn(shape)
    expected = bn.eval()(x)
    assert freeze_bn_running_stats(bn) is bn      # a bare BatchNorm as the root works
    bn.train()
    assert not bn.training and is_bn_frozen(bn) and isinstance(bn, cls)
    torch.testing.assert_close(bn(x), expected, rtol=0, atol=0)
    for a, b in zip(before, stats(bn)):
        assert torch.equal(a, b)                   # num_batches_tracked included


def test_affine_weights_still_learn(tiny):
    freeze_bn_running_stats(tiny)
    tiny.train()
    tiny(torch.randn(4, 3, 8, 8)).sum().backward()
    assert tiny.stem[1].weight.requires_grad and tiny.stem[1].weight.grad is not None


def test_submodule_only(tiny):
    freeze_bn_running_stats(tiny.stem)
    before_stem, before_stage = stats(tiny.stem), stats(tiny.stage1)
    tiny.train()
    tiny(torch.randn(4, 3, 8, 8))
    assert all(torch.equal(a, b) for a, b in zip(before_stem, stats(tiny.stem)))
    assert not all(torch.equal(a, b) for a, b in zip(before_stage, stats(tiny.stage1)))


def test_unfreeze_restores_class_and_parent_mode(tiny):
    tiny.train()
    freeze_bn_running_stats(tiny)
    unfreeze_bn_running_stats(tiny)
    assert type(tiny.stem[1]) is nn.BatchNorm2d and tiny.stem[1].training
    before = stats(tiny.stem)
    tiny(torch.randn(4, 3, 8, 8))
    assert not all(torch.equal(a, b) for a, b in zip(before, stats(tiny.stem)))


def test_state_dict_deepcopy_and_pickle_round_trip(tiny):
    freeze_bn_running_stats(tiny)
    keys = list(tiny.state_dict())
    clone = copy.deepcopy(tiny)
    buf = io.BytesIO()
    torch.save(tiny, buf)
    buf.seek(0)
    loaded = torch.load(buf, weights_only=False)
    for other in (clone, loaded):
        other.train()
        assert is_bn_frozen(other.stem[1]) and not other.stem[1].training
        assert list(other.state_dict()) == keys
    assert "running_stats=frozen" in repr(tiny.stem[1])


def test_track_running_stats_false_is_left_alone_and_strict_raises():
    bn = nn.BatchNorm2d(3, track_running_stats=False)
    freeze_bn_running_stats(bn)
    assert not is_bn_frozen(bn)
    with pytest.raises(ValueError, match="holds no BatchNorm layer with running statistics"):
        freeze_bn_running_stats(nn.Sequential(nn.Linear(2, 2)), strict=True)


def test_rejects_non_modules():
    with pytest.raises(TypeError, match=r"module must be a torch.nn.Module, got 'x' \(str\)"):
        freeze_bn_running_stats("x")
    with pytest.raises(TypeError, match="module must be a torch.nn.Module"):
        unfreeze_bn_running_stats(None)


@given(ops=st.lists(st.sampled_from(["train", "eval", "forward", "train_forward"]), max_size=12),
       sub=st.booleans())
def test_stats_never_change_under_any_sequence(ops, sub):
    from tests.conftest import TinyNet
    torch.manual_seed(1)
    model = TinyNet()
    model.train()
    model(torch.randn(4, 3, 8, 8))                  # statistics away from their init
    target = model.stage1 if sub else model
    freeze_bn_running_stats(target)
    before = stats(target)
    x = torch.randn(4, 3, 8, 8)
    for op in ops:
        if op == "train":
            model.train()
        elif op == "eval":
            model.eval()
        else:
            if op == "train_forward":
                model.train()
            model(x)
    assert all(torch.equal(a, b) for a, b in zip(before, stats(target)))


class UserBatchNorm(nn.BatchNorm2d):
    """A user's own BatchNorm subclass: its frozen twin is made only when it is first frozen."""


def test_a_pinned_user_subclass_survives_torch_save_and_load_in_a_new_process(tmp_path):
    import subprocess
    import sys
    from pathlib import Path
    m = nn.Sequential(nn.Conv2d(3, 4, 3), UserBatchNorm(4))
    m[1].running_mean.fill_(0.5)
    freeze_bn_running_stats(m)
    torch.save(m, tmp_path / "model.pt")
    code = ("import torch, transferlearn as tl; m = torch.load(r'%s', weights_only=False); m.train(); "
            "m(torch.randn(2, 3, 8, 8)); assert tl.is_bn_frozen(m[1]) and not m[1].training; "
            "assert float(m[1].running_mean[0]) == 0.5; print(type(m[1]).__mro__[2].__name__)" % (tmp_path / "model.pt"))
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root,
                          env={**__import__("os").environ, "PYTHONPATH": str(root)})
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "UserBatchNorm"


def test_strict_takes_only_a_bool():
    with pytest.raises(TypeError, match=r"strict must be True or False, got 1 \(int\)"):
        freeze_bn_running_stats(nn.Linear(2, 2), strict=1)
