"""Data-parallel training under ``torchrun``: what the Trainer does when WORLD_SIZE > 1.

One process per device. The training data is split with a ``DistributedSampler`` when the
loader samples the whole dataset in order or shuffled, and otherwise by giving each rank every
world-th element of the user's own sampler or batch_sampler stream (equal shards, so every
rank runs the same number of steps; a custom sampler is never replaced); the model, or the head alone when it
trains on cached features, is wrapped in ``DistributedDataParallel`` and wrapped again
whenever the set of trainable parameters changes (DDP only synchronises the parameters that
required grad when it was built). Adapting BatchNorm statistics are averaged over ranks
after every epoch. Evaluation splits the data without padding and sums loss,
correct answers and counts over ranks, so every sample counts exactly once. Only rank 0
prints and writes checkpoints.
"""

from __future__ import annotations

import atexit
import os
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import (
    BatchSampler,
    DataLoader,
    DistributedSampler,
    IterableDataset,
    RandomSampler,
    Sampler,
    SequentialSampler,
    Subset,
)

from ..model.batchnorm import is_bn_frozen
from .loaders import effective_sampler, loader_samplers, rebuild_loader

__all__ = ["Distributed", "StrideSampler"]


def _is_default_order(sampler: Any, dataset: Any) -> bool:
    """A plain pass over the whole dataset: sequential, or shuffled without replacement."""
    if type(sampler) is SequentialSampler:
        return sampler.data_source is dataset
    return (type(sampler) is RandomSampler and sampler.data_source is dataset and not sampler.replacement
            and sampler._num_samples is None)



def _destroy_process_group() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


class StrideSampler(Sampler):
    """Every ``world``-th element of another sampler's stream (indices, or batches of a batch
    sampler), starting at ``rank``; the stream is cut to a multiple of ``world`` first so that
    every rank yields the same number of elements."""

    def __init__(self, inner: Any, rank: int, world: int) -> None:
        self.inner, self.rank, self.world = inner, rank, world

    @property
    def indices(self) -> Any:
        """The dataset indices the inner sampler declares, if it does (see ``sampler_support``)."""
        indices = getattr(self.inner, "indices", None)
        return indices if indices is not None else getattr(getattr(self.inner, "sampler", None), "indices", None)

    def set_epoch(self, epoch: int) -> None:
        if callable(getattr(self.inner, "set_epoch", None)):
            self.inner.set_epoch(epoch)

    def __iter__(self):
        items = list(self.inner)
        usable = len(items) - len(items) % self.world
        return iter(items[self.rank:usable:self.world])

    def __len__(self) -> int:
        return len(self.inner) // self.world


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
            # we started it, so we end it: a gloo group left to interpreter teardown can abort
            # the process ("terminate called without an active exception") after a good run
            atexit.register(_destroy_process_group)
        return device

    def shard_train(self, loader: Any, seed: int | None) -> Any:
        """This rank's share of the training data, with the loader's own sampling kept.

        The default samplers (shuffled or sequential over the whole dataset) become an
        equivalent ``DistributedSampler``; a ``DistributedSampler`` the user set is kept as is;
        any other sampler or batch_sampler is sharded faithfully: every rank draws the same
        stream (which needs ``seed``) and takes every ``world``-th element of it (an index, or
        a whole batch for a batch_sampler), cut to a multiple of ``world`` so that every rank
        runs the same number of steps. The rebuilt loader keeps every other option.
        """
        if not self.enabled or not isinstance(loader, DataLoader) or isinstance(loader.dataset, IterableDataset):
            return loader
        sampler = effective_sampler(loader)
        if isinstance(sampler, DistributedSampler):
            return loader
        if type(loader) is not DataLoader:
            raise ValueError(f"under torchrun the train_loader, a {type(loader).__name__}, would have to be rebuilt as "
                             "a plain DataLoader to shard it, losing what your subclass does; give it a "
                             "DistributedSampler yourself")
        plain = type(loader.batch_sampler) is BatchSampler
        if plain and _is_default_order(sampler, loader.dataset):
            shard = DistributedSampler(loader.dataset, num_replicas=self.world, rank=self.rank,
                                       shuffle=isinstance(sampler, RandomSampler), seed=seed or 0,
                                       drop_last=loader.drop_last)
            return rebuild_loader(loader, sampler=shard, drop_last=loader.drop_last)
        if seed is None:
            raise ValueError(
                f"under torchrun the train_loader's {type(sampler if plain else loader.batch_sampler).__name__} "
                "is sharded by giving each rank every world_size-th element of its stream, so every rank "
                "must draw the same stream: pass Trainer(seed=...)")
        if plain:
            return rebuild_loader(loader, sampler=StrideSampler(sampler, self.rank, self.world),
                                  drop_last=loader.drop_last)
        return rebuild_loader(loader, batch_sampler=StrideSampler(loader.batch_sampler, self.rank, self.world))

    def positions(self, n: int) -> list[int]:
        """Positions ``rank, rank + world, ...`` of a list of ``n``, padded (with the last) so
        that every rank has ``ceil(n / world)``; all of them when not distributed."""
        if not self.enabled:
            return list(range(n))
        per = -(-n // self.world)
        mine = list(range(self.rank, n, self.world))
        return mine + [mine[-1] if mine else 0] * (per - len(mine))

    def gather_positions(self, rows: torch.Tensor, n: int) -> torch.Tensor:
        """Inverse of ``positions``: every rank's rows, put back in list order (first ``n``)."""
        if not self.enabled:
            return rows
        device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else rows.device
        local = rows.to(device).contiguous()
        parts = [torch.empty_like(local) for _ in range(self.world)]
        dist.all_gather(parts, local)
        return torch.stack(parts, 1).flatten(0, 1)[:n].to(rows.device)

    def shard_eval(self, loader: Any) -> Any:
        """This rank's share for evaluation: every ``world``-th sample, no padding."""
        if not self.enabled or not isinstance(loader, DataLoader):
            return loader
        if isinstance(loader.dataset, IterableDataset) or type(loader) is not DataLoader:
            raise ValueError("under torchrun the val_loader is split between ranks by index, which an "
                             f"IterableDataset or a DataLoader subclass ({type(loader).__name__} over "
                             f"{type(loader.dataset).__name__}) does not allow; evaluate it on one process")
        indices = range(self.rank, len(loader.dataset), self.world)
        return rebuild_loader(loader, dataset=Subset(loader.dataset, indices))

    def all_true(self, flag: bool) -> bool:
        """True when ``flag`` is true on every rank (a collective: every rank must call it)."""
        if not self.enabled:
            return flag
        return self.sum([0.0 if flag else 1.0])[0] == 0.0

    @staticmethod
    def set_epoch(loader: Any, epoch: int) -> None:
        """Call ``set_epoch`` on every sampler of ``loader`` that has one (the user's
        DistributedSampler included, as Lightning does)."""
        for sampler in loader_samplers(loader):
            if callable(getattr(sampler, "set_epoch", None)):
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
