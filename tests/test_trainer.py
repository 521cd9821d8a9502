"""Trainer: the two phases, the feature cache, evaluation, progress, options and errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from transferlearn import Trainer, freeze_bn_running_stats, is_bn_frozen, replace_head

from .conftest import TinyNet


def separable(n: int = 96, seed: int = 0, classes: int = 3) -> TensorDataset:
    """Images whose class is the brightest channel: learnable by a tiny CNN."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, classes, (n,), generator=g)
    x = torch.randn(n, 3, 8, 8, generator=g) * 0.5
    x[torch.arange(n), y] += 1.5
    return TensorDataset(x, y)


def loaders(n=96, bs=16, shuffle=True, seed=0):
    return (DataLoader(separable(n, seed), batch_size=bs, shuffle=shuffle),
            DataLoader(separable(48, seed + 100), batch_size=bs))


def model(seed: int = 0) -> TinyNet:
    torch.manual_seed(seed)
    m = TinyNet(num_classes=3)
    m.train()
    m(torch.randn(8, 3, 8, 8) * 2)          # move BN statistics off their init values
    return m


def count_backbone_runs(m: nn.Module) -> list[int]:
    calls = [0]
    m.stem.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls


def non_head_state(m: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in m.state_dict().items() if not k.startswith("fc.")}


def test_tiny_problem_is_learned():
    train, val = loaders(n=192)
    trainer = Trainer(model(), seed=0, progress=False)
    history = trainer.fit(train, val, warmup_epochs=2, finetune_epochs=6, head_lr=3e-2)
    assert history[-1]["val_accuracy"] > 0.85          # chance is 1/3
    assert trainer.evaluate(val)["accuracy"] == history[-1]["val_accuracy"]


@pytest.mark.parametrize("cache, expected", [("auto", 6), (True, 6), (False, 30)])
def test_backbone_runs_once_for_all_cached_warmup_epochs(cache, expected):
    train, _ = loaders(n=96, bs=16)              # 6 batches per epoch
    m = model()
    calls = count_backbone_runs(m)
    Trainer(m, progress=False).fit(train, warmup_epochs=5, finetune_epochs=0, cache_features=cache)
    assert calls[0] == expected


class Augmented(Dataset):
    """A dataset whose items change each time they are read (random augmentation)."""

    def __init__(self, base: TensorDataset) -> None:
        self.base, self.transform = base, lambda x: x + 0.01 * torch.randn_like(x)

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i):
        x, y = self.base[i]
        return self.transform(x), y


def test_random_augmentation_disables_the_auto_cache():
    m = model()
    calls = count_backbone_runs(m)
    loader = DataLoader(Augmented(separable(32)), batch_size=16)
    Trainer(m, progress=False).fit(loader, warmup_epochs=3, finetune_epochs=0)
    assert calls[0] == 6


@pytest.mark.parametrize("cache", [True, False])
def test_warmup_leaves_everything_outside_the_head_bitwise_equal(cache):
    m = model()
    before = non_head_state(m)
    head_before = m.fc.weight.clone()
    train, val = loaders()
    Trainer(m, progress=False).fit(train, val, warmup_epochs=3, finetune_epochs=0, cache_features=cache)
    after = non_head_state(m)
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)     # BN statistics included
    assert not torch.equal(head_before, m.fc.weight)


def bn_stats(m: nn.Module) -> list[torch.Tensor]:
    return [b.clone() for n, b in m.named_buffers() if "running" in n]


@pytest.mark.parametrize("freeze_bn", [True, False, "early"])
def test_bn_statistics_through_both_phases(freeze_bn):
    m = model()
    before = bn_stats(m)
    train, _ = loaders()
    Trainer(m, progress=False).fit(train, warmup_epochs=1, finetune_epochs=2, freeze_bn=freeze_bn)
    changed = [not torch.equal(a, b) for a, b in zip(before, bn_stats(m))]   # stem, stage1, stage2 (mean, var)
    if freeze_bn is True:
        assert not any(changed)
    elif freeze_bn is False:
        assert all(changed)
    else:
        assert changed == [False, False, True, True, True, True]   # groups stem|stage1|stage2: first half pinned
    assert all(p.requires_grad for p in m.parameters())


def test_finetune_unfreeze_last_groups_only():
    m = model()
    stem = [p.clone() for p in m.stem.parameters()]
    train, _ = loaders()
    Trainer(m, progress=False).fit(train, warmup_epochs=1, finetune_epochs=1, unfreeze=1)
    assert all(torch.equal(a, b) for a, b in zip(stem, m.stem.parameters()))
    assert [n for n, p in m.named_parameters() if p.requires_grad][0].startswith("stage2")


def test_zero_warmup_is_plain_fine_tuning_and_zero_finetune_is_feature_extraction():
    train, _ = loaders()
    h = Trainer(model(), progress=False).fit(train, warmup_epochs=0, finetune_epochs=2)
    assert [r["phase"] for r in h] == ["finetune", "finetune"] and set(h[0]["lr"]) == {"backbone", "fc"}
    h = Trainer(model(), progress=False).fit(train, warmup_epochs=2, finetune_epochs=0)
    assert [r["phase"] for r in h] == ["warmup", "warmup"] and set(h[0]["lr"]) == {"fc"}


def test_differential_learning_rates_in_history():
    train, _ = loaders()
    h = Trainer(model(), progress=False).fit(train, warmup_epochs=1, finetune_epochs=1, head_lr=1e-2,
                                             backbone_lr=(1e-4, 1e-3))
    lrs = h[-1]["lr"]                               # groups: stem, stage1.0+stage1.1, stage2.0+stage2.1, fc
    assert list(lrs) == ["stem", "stage1.0+stage1.1", "stage2.0+stage2.1", "fc"]
    assert lrs["fc"] == 1e-2 and lrs["stem"] == pytest.approx(1e-4)
    assert lrs["stage2.0+stage2.1"] == pytest.approx(1e-3) and lrs["stage1.0+stage1.1"] == pytest.approx(10 ** -3.5)


class WithDropout(TinyNet):
    def __init__(self) -> None:
        super().__init__()
        self.drop = nn.Dropout(0.5)

    def forward(self, x):
        x = self.stage2(self.stage1(self.stem(x)))
        return self.fc(self.drop(torch.flatten(self.pool(x), 1)))


def test_evaluation_is_deterministic_counts_every_sample_and_restores_modes():
    torch.manual_seed(0)
    m = WithDropout()
    m.train()
    m.stage1.eval()                                 # a mixed state must come back as it was
    freeze_bn_running_stats(m.stem)
    trainer = Trainer(m, progress=False)
    data = DataLoader(separable(50), batch_size=16)  # 16 + 16 + 16 + 2
    first, second = trainer.evaluate(data), trainer.evaluate(data)
    assert first == second
    probs = trainer.predict(torch.stack([x for x, _ in separable(50)]))
    expected = (probs.argmax(1) == separable(50).tensors[1]).float().mean().item()
    assert first["accuracy"] == pytest.approx(expected) and probs.shape == (50, 3)
    assert torch.allclose(probs.sum(1), torch.ones(50))
    assert torch.equal(trainer.predict(data), probs)
    assert m.training and not m.stage1.training and m.drop.training and is_bn_frozen(m.stem[1])


def test_progress_line_mode_prints_one_line_per_epoch(capsys):
    train, val = loaders()
    Trainer(model(), progress="line").fit(train, val, warmup_epochs=1, finetune_epochs=1)
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("epoch")]  # + caching lines
    assert len(lines) == 2 and lines[0].startswith("epoch 1/2 warmup") and "val_acc" in lines[1]


def test_progress_false_is_silent(capsys):
    train, _ = loaders()
    Trainer(model(), progress=False).fit(train, warmup_epochs=1, finetune_epochs=1)
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


def test_progress_bar_mode_draws_tqdm(capsys):
    train, _ = loaders()
    Trainer(model(), progress="bar").fit(train, warmup_epochs=1, finetune_epochs=0, cache_features=False)
    assert "epoch 1/1 warmup" in capsys.readouterr().err


def test_amp_bf16_and_grad_clip_on_cpu():
    train, val = loaders()
    trainer = Trainer(model(), amp=True, grad_clip=0.5, progress=False)
    assert trainer.precision.dtype == torch.bfloat16 and trainer.device.type == "cpu"
    history = trainer.fit(train, val, warmup_epochs=1, finetune_epochs=1)
    assert all(torch.isfinite(torch.tensor(r["train_loss"])) for r in history)


def test_seeded_cpu_runs_are_bitwise_reproducible():
    states = []
    for _ in range(2):
        train, _ = loaders()
        m = model()
        Trainer(m, seed=7, progress=False).fit(train, warmup_epochs=1, finetune_epochs=2, cache_features=False)
        states.append(m.state_dict())
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])


def test_aux_heads_are_trained_with_the_main_head():
    import torchvision
    torch.manual_seed(0)
    m = replace_head(torchvision.models.googlenet(weights=None, init_weights=False), 3)
    aux_before = m.aux1.fc2.weight.clone()
    data = DataLoader(TensorDataset(torch.randn(4, 3, 64, 64), torch.tensor([0, 1, 2, 0])), batch_size=2)
    Trainer(m, progress=False).fit(data, warmup_epochs=1, finetune_epochs=0, cache_features=False)
    assert not torch.equal(aux_before, m.aux1.fc2.weight)


class Broken(Dataset):
    def __len__(self) -> int:
        return 8

    def __getitem__(self, i):
        raise KeyError(f"sample {i} is missing")


def test_exceptions_from_user_data_propagate_unchanged():
    with pytest.raises(KeyError, match="sample 0 is missing"):
        Trainer(model(), progress=False).fit(DataLoader(Broken(), batch_size=4), warmup_epochs=1,
                                             finetune_epochs=0)


@pytest.mark.parametrize("kwargs, exc, pattern", [
    ({"warmup_epochs": 0, "finetune_epochs": 0}, ValueError, "both 0: nothing to train"),
    ({"warmup_epochs": -1}, ValueError, r"warmup_epochs must be an int >= 0, got -1"),
    ({"finetune_epochs": 1.5}, TypeError, r"finetune_epochs must be an int >= 0, got 1.5"),
    ({"freeze_bn": "late"}, ValueError, r"freeze_bn must be True, False or 'early', got 'late'"),
    ({"unfreeze": -2}, ValueError, r"unfreeze must be an int >= 0, got -2"),
    ({"cache_features": "yes"}, ValueError, r"cache_features must be 'auto', True or False, got 'yes'"),
    ({"cache_features": 1}, TypeError, r"cache_features must be 'auto', True or False, got 1 \(int\)"),
    ({"freeze_bn": 1}, TypeError, r"freeze_bn must be True, False or 'early', got 1 \(int\)"),
    ({"restore_best": 1}, TypeError, r"restore_best must be True or False, got 1 \(int\)"),
    ({"monitor": "accuracy"}, ValueError, r"monitor must be 'val_loss', 'val_accuracy' or 'val_macro_f1', got 'accuracy'"),
    ({"patience": 0}, ValueError, r"patience must be an int >= 1, got 0"),
    ({"patience": 2}, ValueError, r"patience=2 needs a val_loader"),
    ({"strategy": "fine_tune_all"}, TypeError, r"strategy must be None or a Strategy"),
    ({"head_lr": -1.0}, ValueError, r"head_lr must be a finite number > 0.0, got -1.0"),
    ({"resume": True}, ValueError, r"resume=True needs checkpoint_dir"),
    ({"resume": "nowhere.pt"}, FileNotFoundError, r"resume='nowhere.pt' is not a checkpoint file"),
    ({"resume": 3}, TypeError, r"resume must be a bool or a checkpoint path, got 3"),
])
def test_fit_errors(kwargs, exc, pattern):
    train, _ = loaders()
    with pytest.raises(exc, match=pattern):
        Trainer(model(), progress=False).fit(train, **kwargs)


@pytest.mark.parametrize("kwargs, exc, pattern", [
    ({"amp": "fp8"}, ValueError, r"amp must be False, True, 'bf16' or 'fp16', got 'fp8'"),
    ({"progress": "loud"}, ValueError, r"progress must be True, False, 'bar' or 'line', got 'loud'"),
    ({"grad_clip": 0}, ValueError, r"grad_clip must be a finite number > 0.0, got 0"),
    ({"seed": "1"}, TypeError, r"seed must be an int in \[0, 4294967295\], got '1'"),
    ({"seed": 2**32}, ValueError, r"seed must be an int in \[0, 4294967295\], got 4294967296"),
    ({"amp": 0}, TypeError, r"amp must be False, True, 'bf16' or 'fp16', got 0 \(int\)"),
    ({"progress": 0}, TypeError, r"progress must be True, False, 'bar' or 'line', got 0 \(int\)"),
    ({"checkpoint_dir": 3}, TypeError, r"checkpoint_dir must be None or a folder path, got 3"),
    ({"device": "toaster"}, ValueError, r"device must be None, a torch.device or a name"),
    ({"head": "nope"}, ValueError, r"head='nope' is not a submodule of TinyNet"),
])
def test_trainer_errors(kwargs, exc, pattern):
    with pytest.raises(exc, match=pattern):
        Trainer(model(), **kwargs)


def test_evaluate_and_predict_errors():
    trainer = Trainer(model(), progress=False)
    with pytest.raises(ValueError, match="evaluate needs a loader of \\(inputs, targets\\) batches"):
        trainer.evaluate([torch.randn(2, 3, 8, 8)])
    with pytest.raises(ValueError, match="nothing to evaluate"):
        trainer.evaluate([])
    with pytest.raises(ValueError, match=r"data must be images shaped \(N, C, H, W\) or \(C, H, W\), got \(8, 8\)"):
        trainer.predict(torch.randn(8, 8))
    with pytest.raises(TypeError, match=r"data must be a tensor or an iterable of batches, got 3"):
        trainer.predict(3)
    assert trainer.predict(torch.randn(3, 8, 8)).shape == (1, 3)


def test_fit_leaves_the_model_in_eval_mode():
    train, _ = loaders()
    m = model()
    Trainer(m, progress=False).fit(train, warmup_epochs=1, finetune_epochs=1)
    assert not any(module.training for module in m.modules())


def test_loader_errors():
    images_only = DataLoader(torch.randn(8, 3, 8, 8), batch_size=4)
    with pytest.raises(ValueError, match=r"train_loader must yield \(inputs, targets\) batches"):
        Trainer(model(), progress=False).fit(images_only, warmup_epochs=1, finetune_epochs=0, cache_features=True)
    with pytest.raises(ValueError, match=r"train_loader must yield \(inputs, targets\) batches"):
        Trainer(model(), progress=False).fit(images_only, warmup_epochs=0, finetune_epochs=1)
    with pytest.raises(ValueError, match="train_loader yielded no batches"):
        Trainer(model(), progress=False).fit([], warmup_epochs=0, finetune_epochs=1)
    batches = [(torch.randn(4, 3, 8, 8), torch.tensor([0, 1, 2, 0]))]
    with pytest.raises(ValueError, match=r"cache_features=True cannot replay this train_loader: train_loader is "
                                         r"not a DataLoader \(got list\)"):
        Trainer(model(), progress=False).fit(batches, warmup_epochs=1, cache_features=True)
    history = Trainer(model(), progress=False).fit(batches, warmup_epochs=1, finetune_epochs=1)
    assert len(history) == 2                       # any iterable of batches trains (uncached)


def test_device_preference_is_cuda_then_mps_then_cpu(monkeypatch):
    from transferlearn.train.runtime import pick_device
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert pick_device(None).type == "cuda"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert pick_device(None).type == "mps"
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert pick_device(None).type == "cpu"
    assert pick_device("cpu") == torch.device("cpu")
