"""Data-parallel training under ``torchrun``: what the Trainer does when WORLD_SIZE > 1.

One process per device. The training data is split with a ``DistributedSampler`` (equal
shards, so every rank runs the same number of steps); the model, or the head alone when it
trains on cached features, is wrapped in ``DistributedDataParallel`` and wrapped again
whenever the set of trainable parameters changes (DDP only synchronises the parameters that
required grad when it was built). Adapting BatchNorm statistics are averaged over ranks
after every epoch. Evaluation splits the data without padding and sums loss,
correct answers and counts over ranks, so every sample counts exactly once. Only rank 0
prints and writes checkpoints.
"""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler, Subset

from .batchnorm import is_bn_frozen

__all__ = ["Distributed"]


class Distributed:
    """The process group as seen from one rank; inert (every method a no-op) when WORLD_SIZE <= 1."""

    def __init__(self) -> None:
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.enabled = self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def setup(self, device: torch.device) -> torch.device:
        """Join the process group (nccl on CUDA, gloo otherwise); one CUDA device per rank."""
        if not self.enabled:
            return device
        if device.type == "cuda":
            device = torch.device("cuda", self.local_rank)
            torch.cuda.set_device(device)
        if not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        return device

    def _loader(self, loader: DataLoader, dataset: Any, sampler: Any, drop_last: bool,
                batch_size: int | None = None) -> DataLoader:
        """A loader like ``loader`` (batch size, workers, collate, pinning) over other indices."""
        return DataLoader(dataset, batch_size=batch_size or loader.batch_size, sampler=sampler,
                          drop_last=drop_last, num_workers=loader.num_workers,
                          collate_fn=loader.collate_fn, pin_memory=loader.pin_memory)

    def _sampler(self, dataset: Any, *, shuffle: bool, drop_last: bool, seed: int = 0) -> DistributedSampler:
        return DistributedSampler(dataset, num_replicas=self.world, rank=self.rank, shuffle=shuffle,
                                  seed=seed, drop_last=drop_last)

    def shard_train(self, loader: Any, seed: int) -> Any:
        """This rank's share of the training data: equal-sized shards, reshuffled per epoch."""
        if not self.enabled or not isinstance(loader, DataLoader):
            return loader
        sampler = self._sampler(loader.dataset, shuffle=isinstance(loader.sampler, RandomSampler),
                                drop_last=loader.drop_last, seed=seed)
        return self._loader(loader, loader.dataset, sampler, loader.drop_last)

    def ordered(self, loader: DataLoader) -> DataLoader:
        """The training data in a fixed order, for the feature cache: the whole dataset, or
        under torchrun this rank's equal-sized (padded) shard."""
        sampler = self._sampler(loader.dataset, shuffle=False, drop_last=False) if self.enabled else None
        return self._loader(loader, loader.dataset, sampler, False, batch_size=loader.batch_size or 1)

    def shard_eval(self, loader: Any) -> Any:
        """This rank's share for evaluation: every ``world``-th sample, no padding."""
        if not self.enabled or not isinstance(loader, DataLoader):
            return loader
        indices = range(self.rank, len(loader.dataset), self.world)
        return self._loader(loader, Subset(loader.dataset, indices), None, False)

    def set_epoch(self, loader: Any, epoch: int) -> None:
        sampler = getattr(loader, "sampler", None)
        if isinstance(sampler, DistributedSampler):
            sampler.set_epoch(epoch)

    def wrap(self, module: nn.Module, device: torch.device) -> nn.Module:
        """``DistributedDataParallel`` over the parameters that are trainable now."""
        if not self.enabled:
            return module
        ids = [device.index] if device.type == "cuda" else None
        return DistributedDataParallel(module, device_ids=ids)

    def sum(self, values: list[float]) -> list[float]:
        """Element-wise sum over ranks."""
        if not self.enabled:
            return values
        tensor = torch.tensor(values, dtype=torch.float64,
                              device="cuda" if dist.get_backend() == "nccl" else "cpu")
        dist.all_reduce(tensor)
        return tensor.tolist()

    def sync_buffers(self, model: nn.Module) -> None:
        """Make adapting BatchNorm statistics equal on every rank after an epoch: running
        mean and variance averaged over ranks, ``num_batches_tracked`` taken from rank 0.
        DDP only broadcasts buffers before each forward, so without this each rank would keep
        the statistics of its own last batch. Pinned layers never change and are skipped."""
        if not self.enabled:
            return
        for module in model.modules():
            if isinstance(module, _BatchNorm) and module.track_running_stats and not is_bn_frozen(module):
                for stats in (module.running_mean, module.running_var):
                    dist.all_reduce(stats)
                    stats.div_(self.world)
                dist.broadcast(module.num_batches_tracked, src=0)

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()
