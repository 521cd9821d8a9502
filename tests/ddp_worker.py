"""Run by tests/test_distributed.py under torchrun: train on 2 CPU ranks, save what each rank saw."""

from __future__ import annotations

import os
import sys

import torch
from torch.utils.data import DataLoader

from tests.conftest import TinyNet
from tests.test_trainer import model, separable
from transferlearn import Trainer


def subset(out: str, cache: bool) -> None:
    """A SubsetRandomSampler over the even indices; the criterion records what each rank trains."""
    from torch.utils.data import SubsetRandomSampler

    from tests.test_trainer_sampling import Recorder, indexed
    rank = int(os.environ["RANK"])
    torch.manual_seed(0)
    m = TinyNet(num_classes=24)
    recorder = Recorder()
    loader = DataLoader(indexed(), batch_size=4, sampler=SubsetRandomSampler(list(range(0, 24, 2))))
    Trainer(m, seed=0, progress=False, criterion=recorder).fit(loader, warmup_epochs=2, finetune_epochs=1,
                                                               cache_features=cache)
    torch.save({"batches": recorder.batches, "state": m.state_dict()}, os.path.join(out, f"rank{rank}.pt"))


def main(out: str, cache: str) -> None:
    if cache.startswith("subset"):
        return subset(out, cache == "subset-cache")
    rank = int(os.environ["RANK"])
    train = DataLoader(separable(64), batch_size=8, shuffle=True)
    val = DataLoader(separable(45, seed=7), batch_size=8)          # 45: shards of 23 and 22
    m = model(seed=1)
    trainer = Trainer(m, seed=0, progress="line", checkpoint_dir=os.path.join(out, "ckpt"))
    history = trainer.fit(train, val, warmup_epochs=2, finetune_epochs=2, head_lr=1e-2,
                          cache_features=cache == "cache", freeze_bn=cache == "cache")
    torch.save({"state": m.state_dict(), "history": history.records(), "world": trainer.dist.world},
               os.path.join(out, f"rank{rank}.pt"))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
