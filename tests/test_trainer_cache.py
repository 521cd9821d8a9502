"""The cache during a frozen-backbone phase: validation too runs the backbone once, and the
scores and the random draws are exactly those of the uncached run."""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader

from transferlearn import Trainer

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
