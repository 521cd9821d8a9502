"""Run by tests/test_distributed.py under torchrun: train on 2 CPU ranks, save what each rank saw."""

from __future__ import annotations

import os
import sys

import torch
from torch.utils.data import DataLoader

from tests.test_trainer import model, separable
from transferlearn import Trainer


def main(out: str, cache: str) -> None:
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
