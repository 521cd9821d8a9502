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
