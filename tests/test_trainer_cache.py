"""The cache during a frozen-backbone phase: validation too runs the backbone once, and the
scores and the random draws are exactly those of the uncached run."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader

from transferlearn import Trainer
from transferlearn.train.feature_cache import cached_step_module

from .test_trainer import Augmented, count_backbone_runs, model, separable


def run(cache, val=None, epochs=(4, 0)):
    m = model()
    calls = count_backbone_runs(m)
    val = DataLoader(separable(48, 5), batch_size=16) if val is None else val
    history = Trainer(m, progress=False, seed=0).fit(
        DataLoader(separable(64), batch_size=16, shuffle=True), val, warmup_epochs=epochs[0],
        finetune_epochs=epochs[1], cache_features=cache)
    return history, calls[0], m


def test_warmup_validation_runs_the_backbone_once_with_the_uncached_scores():
    cached, cached_calls, cached_model = run("auto")
    plain, plain_calls, plain_model = run(False)
    assert cached_calls == 4 + 3                                 # one pass over train (4) and val (3) batches
    assert plain_calls == 4 * (4 + 3)
    strip = lambda h: [{k: v for k, v in r.items() if k != "seconds"} for r in h]  # noqa: E731
    assert strip(cached) == strip(plain)                         # bitwise the same numbers
    assert all(torch.equal(a, b) for a, b in zip(cached_model.state_dict().values(),
                                                 plain_model.state_dict().values()))


def test_fine_tuning_validates_the_whole_model_again():
    _, calls, _ = run("auto", epochs=(2, 2))
    assert calls == (4 + 3) + 2 * (4 + 3)                        # fine-tune epochs train and validate fully


def test_a_randomly_augmented_validation_set_is_not_cached():
    val = DataLoader(Augmented(separable(32)), batch_size=16)    # 2 batches
    _, calls, _ = run("auto", val=val)
    assert calls == 4 + 4 * 2


# ------------------------------------------------------------------------------ memory layout
def layouts_seen(m):
    seen = []
    m.stage1.register_forward_pre_hook(
        lambda _m, args: seen.append(args[0].is_contiguous(memory_format=torch.channels_last)
                                     and not args[0].is_contiguous()))
    return seen


def fit_tiny(channels_last, m=None):
    m = model() if m is None else m
    seen = layouts_seen(m)
    Trainer(m, progress=False, seed=0, channels_last=channels_last).fit(
        DataLoader(separable(32), batch_size=16, shuffle=True), warmup_epochs=0, finetune_epochs=2)
    return m, seen


def test_channels_last_runs_inside_fit_and_the_model_leaves_in_its_own_layout():
    fast, seen_fast = fit_tiny("auto")
    plain, seen_plain = fit_tiny(False)
    assert seen_fast and all(seen_fast) and not any(seen_plain)
    assert all(p.is_contiguous() for p in fast.parameters())
    for a, b in zip(fast.state_dict().values(), plain.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)       # the same training, another layout


def test_a_model_the_user_put_in_channels_last_stays_so():
    m = model().to(memory_format=torch.channels_last)
    fit_tiny("auto", m)
    assert m.stem[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert not m.stem[0].weight.is_contiguous()


# ------------------------------------------------- what the cache must not silently change
class LogSoftmaxNet(torch.nn.Module):
    """A model whose output is not its head's output (a layer runs after the head)."""

    def __init__(self, scale: float | None = None) -> None:
        super().__init__()
        self.net, self.scale = model(), scale

    def forward(self, x):
        logits = self.net(x)
        return logits * self.scale if self.scale else torch.log_softmax(logits, 1)


def histories(make, loader_kwargs=None, val=None, epochs=3, criterion=None):
    out = []
    for cache in ("auto", False):
        torch.manual_seed(0)
        m = make()
        calls = count_backbone_runs(m.net if hasattr(m, "net") else m)
        train = loader_kwargs() if callable(loader_kwargs) else DataLoader(separable(48), batch_size=12, shuffle=True)
        h = Trainer(m, progress=False, seed=0, criterion=criterion).fit(
            train, val() if val else None, warmup_epochs=epochs, finetune_epochs=0, cache_features=cache,
            head_lr=0.05)
        out.append(([{k: v for k, v in r.items() if k != "seconds"} for r in h], calls[0], m.state_dict()))
    return out


@pytest.mark.parametrize("make, criterion", [(lambda: LogSoftmaxNet(), torch.nn.NLLLoss()),
                                             (lambda: LogSoftmaxNet(scale=10.0), None)])
def test_a_layer_after_the_head_turns_the_auto_cache_off(make, criterion):
    (cached, cached_calls, w1), (plain, plain_calls, w2) = histories(
        make, criterion=criterion, val=lambda: DataLoader(separable(24, 5), batch_size=12))
    assert cached == plain and cached_calls == plain_calls + 1        # one probing batch, then uncached
    assert all(torch.equal(a, b) for a, b in zip(w1.values(), w2.values()))
    with pytest.raises(ValueError, match=r"cache_features=True cannot be honoured: the model's output is not its "
                                         r"head's output"):
        Trainer(make(), progress=False, criterion=criterion).fit(
            DataLoader(separable(24), batch_size=12), warmup_epochs=1, finetune_epochs=0, cache_features=True)


class TwiceHead(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = model()

    def forward(self, x):
        f = torch.flatten(self.net.pool(self.net.stage2(self.net.stage1(self.net.stem(x)))), 1)
        return (self.net.fc(f) + self.net.fc(f)) / 2


def test_a_head_that_runs_twice_per_forward_is_not_cached():
    from transferlearn import extract_features
    from transferlearn.train.features import NotCacheable
    (cached, _, _), (plain, _, _) = histories(TwiceHead)
    assert cached == plain
    with pytest.raises(NotCacheable, match="the head ran 2 times in one forward pass"):
        extract_features(TwiceHead(), DataLoader(separable(8), batch_size=4))


class Scaled(DataLoader):
    """A DataLoader subclass that changes every batch."""

    def __iter__(self):
        for x, y in super().__iter__():
            yield x * 10 + 3, y


def test_a_dataloader_subclass_with_its_own_iteration_is_not_cached():
    (cached, calls, _), (plain, _, _) = histories(
        model, loader_kwargs=lambda: Scaled(separable(48), batch_size=12, shuffle=True))
    assert cached == plain and calls == 3 * 4


@pytest.mark.parametrize("val", [
    lambda: DataLoader(separable(24, 5), batch_size=6, sampler=torch.utils.data.RandomSampler(
        separable(24, 5), replacement=True, num_samples=8)),
    lambda: DataLoader(separable(24, 5), batch_size=6, shuffle=True),
    lambda: DataLoader(separable(24, 5), batch_size=6, generator=torch.Generator().manual_seed(3)),
])
def test_validation_loaders_keep_their_draws(val):
    (cached, _, w1), (plain, _, w2) = histories(model, val=val)
    assert cached == plain
    assert all(torch.equal(a, b) for a, b in zip(w1.values(), w2.values()))


def test_persistent_workers_draw_like_the_reused_iterator():
    def loader():
        return DataLoader(separable(48), batch_size=12, shuffle=True, num_workers=1, persistent_workers=True)
    (cached, _, _), (plain, _, _) = histories(model, loader_kwargs=loader)
    assert cached == plain


def test_bf16_autocast_features_are_what_the_uncached_pass_computes():
    runs = []
    for cache in ("auto", False):
        m = model()
        h = Trainer(m, progress=False, seed=0, amp="bf16").fit(
            DataLoader(separable(48), batch_size=12, shuffle=True), DataLoader(separable(24, 5), batch_size=12),
            warmup_epochs=2, finetune_epochs=0, cache_features=cache)
        runs.append([(r["train_loss"], r["val_loss"]) for r in h])
    assert runs[0] == runs[1]


def test_compile_is_opt_in_and_wraps_only_the_uncached_forward(monkeypatch):
    compiled = []

    def fake_compile(module):
        compiled.append(module)
        return module
    monkeypatch.setattr(torch, "compile", fake_compile)
    Trainer(model(), progress=False).fit(DataLoader(separable(16), batch_size=8), warmup_epochs=1, finetune_epochs=1)
    assert compiled == []
    m = model()
    Trainer(m, progress=False, compile=True).fit(DataLoader(separable(16), batch_size=8), warmup_epochs=1,
                                                 finetune_epochs=1)
    assert compiled == [m]                     # the fine-tune phase; the cached warm-up trains the head alone


class DropoutBeforeHead(torch.nn.Module):
    """MobileNet's / EfficientNet's layout: ``classifier = Sequential(Dropout, Linear)``, or
    the tail of VGG's classifier (``Linear, ReLU, Dropout, Linear``) with ``vgg=True``; the
    head is the last Linear."""

    def __init__(self, vgg: bool = False) -> None:
        super().__init__()
        torch.manual_seed(0)
        nn = torch.nn
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                      nn.AdaptiveAvgPool2d(1), nn.Flatten())
        middle = [nn.Linear(8, 8), nn.ReLU(), nn.Dropout(0.5)] if vgg else [nn.Dropout(0.5)]
        self.classifier = nn.Sequential(*middle, nn.Linear(8, 3))

    def forward(self, x):
        return self.classifier(self.features(x))


def _trunk() -> torch.nn.Sequential:
    nn = torch.nn
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1))


def _sequential_layouts():
    nn = torch.nn
    drop = nn.Dropout(0.5)
    return {
        "mobilenet": lambda: DropoutBeforeHead(),
        "vgg tail": lambda: DropoutBeforeHead(vgg=True),
        "the model is a Sequential": lambda: nn.Sequential(_trunk(), nn.Flatten(), nn.Dropout(0.5), nn.Linear(8, 3)),
        "dropout before a Flatten": lambda: nn.Sequential(_trunk(), nn.Dropout(0.5), nn.Flatten(), nn.Linear(8, 3)),
        "nested Sequentials": lambda: nn.Sequential(_trunk(), nn.Flatten(), nn.Sequential(nn.Dropout(0.5)),
                                                    nn.Sequential(nn.Linear(8, 3))),
        "one Dropout registered twice": lambda: nn.Sequential(_trunk(), nn.Flatten(), drop, drop, nn.Linear(8, 3)),
        "a Dropout at the end of a nested block": lambda: nn.Sequential(
            _trunk(), nn.Sequential(nn.Flatten(), nn.Linear(8, 8), nn.Dropout(0.5)), nn.Linear(8, 3)),
    }


def _fit(m, cache, loader=None):
    loader = loader or DataLoader(separable(64), batch_size=16, shuffle=True)
    history = Trainer(m, progress=False, seed=0).fit(loader, DataLoader(separable(48, 5), batch_size=16),
                                                     warmup_epochs=3, finetune_epochs=0, cache_features=cache)
    return [{k: v for k, v in r.items() if k != "seconds"} for r in history], m.state_dict()


@pytest.mark.parametrize("layout", list(_sequential_layouts()))
def test_a_dropout_before_the_head_drops_cached_features_as_it_would_uncached(layout):
    torch.manual_seed(0)
    cached, cached_state = _fit(_sequential_layouts()[layout](), True)
    torch.manual_seed(0)
    plain, plain_state = _fit(_sequential_layouts()[layout](), False)
    assert cached == plain                                      # same losses, so the same dropout masks
    assert all(torch.equal(cached_state[k], plain_state[k]) for k in plain_state)


def test_the_cached_step_module_runs_only_what_lies_between_features_and_head(tiny):
    nn = torch.nn
    assert cached_step_module(tiny) is tiny.fc                  # nothing drops before the head
    m = DropoutBeforeHead()
    assert [type(x) for x in cached_step_module(m)] == [nn.Dropout, nn.Linear]
    m.classifier[0] = nn.Identity()
    assert cached_step_module(m) is m.classifier[1]             # no Dropout: the head alone
    channelwise = nn.Sequential(_trunk(), nn.Dropout2d(0.5), nn.Flatten(), nn.Linear(8, 3))
    assert cached_step_module(channelwise) is channelwise[3]    # its mask would differ on flat features
    vgg = DropoutBeforeHead(vgg=True)
    assert [type(x) for x in cached_step_module(vgg)] == [nn.Dropout, nn.Linear]  # not the Linear before it


class _Indices(torch.utils.data.Sampler):
    """Yields the indices given (no ``indices`` attribute: it declares no support)."""

    def __init__(self, order):
        self.order = order

    def __iter__(self):
        return iter(self.order)

    def __len__(self):
        return len(self.order)


def test_cached_epochs_read_negative_indices_as_the_dataset_does():
    def loader(indices):
        return DataLoader(separable(64), batch_size=16, sampler=_Indices(indices))
    indices = list(range(-1, -61, -1))
    cached, cached_state = _fit(model(), True, loader(indices))
    plain, plain_state = _fit(model(), False, loader(indices))
    assert cached == plain
    assert all(torch.equal(cached_state[k], plain_state[k]) for k in plain_state)
    with pytest.raises(IndexError, match="sampler yielded index 64, but its dataset has 64 items"):
        _fit(model(), True, loader([0, 64]))
