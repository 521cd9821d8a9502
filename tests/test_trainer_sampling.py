"""The loader the user hands to fit keeps its meaning: its sampler, batch_sampler, generator
and worker options decide what trains, with the feature cache on or off.

The criterion below records the targets of every training batch, and each sample's target
is its own index (the head has one output per sample), so a test sees exactly which samples
trained, in which batches and in which order.
"""

from __future__ import annotations

import os

import pytest
import torch
from torch import nn
from torch.utils.data import (
    DataLoader,
    SubsetRandomSampler,
    TensorDataset,
    WeightedRandomSampler,
)

from transferlearn import Trainer
from transferlearn.train.distributed import Distributed, StrideSampler
from transferlearn.train.loaders import index_batches, not_cacheable, rebuild_loader, sampler_support

from .conftest import TinyNet

N = 24


class Recorder(nn.Module):
    """Cross-entropy that remembers the targets of every call (one call per batch)."""

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[list[int]] = []

    def forward(self, logits, targets):
        self.batches.append(targets.tolist())
        return nn.functional.cross_entropy(logits, targets)


def indexed(n: int = N) -> TensorDataset:
    g = torch.Generator().manual_seed(0)
    return TensorDataset(torch.randn(n, 3, 8, 8, generator=g), torch.arange(n))


def train(loader, *, cache, epochs=2, seed=0):
    torch.manual_seed(0)
    model = TinyNet(num_classes=N)
    stem_batches: list[int] = []
    model.stem.register_forward_hook(lambda _m, args, _o: stem_batches.append(len(args[0])))
    recorder = Recorder()
    Trainer(model, seed=seed, progress=False, criterion=recorder).fit(
        loader, warmup_epochs=epochs, finetune_epochs=0, cache_features=cache)
    return recorder.batches, sum(stem_batches)


def per_epoch(batches, epochs):
    size = len(batches) // epochs
    return [sum(batches[i * size:(i + 1) * size], []) for i in range(epochs)]


@pytest.mark.parametrize("cache", [True, False])
def test_subset_sampler_trains_on_exactly_its_subset(cache):
    half = list(range(0, N, 2))
    loader = DataLoader(indexed(), batch_size=5, sampler=SubsetRandomSampler(half))
    batches, backbone_samples = train(loader, cache=cache)
    for seen in per_epoch(batches, 2):
        assert sorted(seen) == half                          # each subset sample once, nothing else
    assert backbone_samples == (len(half) if cache else 2 * len(half))  # cache extracts the subset only


@pytest.mark.parametrize("cache", [True, False])
def test_weighted_sampler_trains_on_its_draws(cache):
    weights = torch.tensor([5.0 if i < 4 else (0.0 if i >= 20 else 1.0) for i in range(N)])

    def loader():
        g = torch.Generator().manual_seed(11)
        return DataLoader(indexed(), batch_size=8, sampler=WeightedRandomSampler(weights, 40, generator=g))
    batches, _ = train(loader(), cache=cache, epochs=3)
    reference = loader()
    expected = [t for _ in range(3) for _, t in reference]   # what the loader itself draws, epoch after epoch
    assert batches == [t.tolist() for t in expected]
    assert not any(i >= 20 for b in batches for i in b)      # zero-weight samples never train


def test_cached_and_uncached_runs_draw_the_same_stream_from_the_global_rng():
    def loader():
        return DataLoader(indexed(), batch_size=6, shuffle=True)
    cached, _ = train(loader(), cache=True, epochs=3, seed=4)
    uncached, _ = train(loader(), cache=False, epochs=3, seed=4)
    assert cached == uncached


class Pairs:
    """A batch sampler of fixed, uneven batches (e.g. grouped by patient)."""

    def __init__(self) -> None:
        self.batches = [[3, 1, 4], [15, 9], [2, 6, 5, 13], [7]]

    def __iter__(self):
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


@pytest.mark.parametrize("cache", [True, False])
def test_batch_sampler_trains_in_its_own_batches(cache):
    loader = DataLoader(indexed(), batch_sampler=Pairs())
    batches, backbone_samples = train(loader, cache=cache)
    assert batches == Pairs().batches * 2
    assert backbone_samples == (N if cache else 2 * 10)      # no declared support: the whole dataset once


def test_worker_options_survive_the_rebuilt_extraction_loader(tmp_path):
    def mark(worker_id: int) -> None:
        (tmp_path / f"worker{worker_id}-{os.getpid()}").touch()
    loader = DataLoader(indexed(), batch_size=6, shuffle=True, num_workers=2, worker_init_fn=mark,
                        persistent_workers=True, generator=torch.Generator().manual_seed(1))
    rebuilt = rebuild_loader(loader, sampler=[0, 1, 2])
    for name in ("num_workers", "worker_init_fn", "persistent_workers", "generator", "collate_fn",
                 "prefetch_factor", "timeout", "pin_memory", "multiprocessing_context"):
        assert getattr(rebuilt, name) is getattr(loader, name) or getattr(rebuilt, name) == getattr(loader, name)
    batches, _ = train(loader, cache=True, epochs=1)
    assert sorted(sum(batches, [])) == list(range(N))
    assert {p.name.split("-")[0] for p in tmp_path.iterdir()} == {"worker0", "worker1"}


def test_loaders_the_cache_cannot_replay_are_refused_when_forced():
    custom = DataLoader(indexed(), batch_size=4, collate_fn=lambda items: items)
    assert "custom collate_fn" in not_cacheable(custom)
    assert "batch_size=None" in not_cacheable(DataLoader(indexed(), batch_size=None))
    with pytest.raises(ValueError, match="cache_features=True cannot replay this train_loader: train_loader has a "
                                         "custom collate_fn"):
        Trainer(TinyNet(), progress=False).fit(custom, warmup_epochs=1, finetune_epochs=0, cache_features=True)


def test_sampler_support_and_index_stream():
    data = indexed()
    assert sampler_support(DataLoader(data, sampler=SubsetRandomSampler([5, 2, 2]))) == [2, 5]
    assert sampler_support(DataLoader(data, shuffle=True)) is None
    with pytest.raises(ValueError, match="indices outside the dataset of 24 samples"):
        sampler_support(DataLoader(data, sampler=SubsetRandomSampler([3, 99])))
    loader = DataLoader(data, batch_size=7, drop_last=True)
    assert list(index_batches(loader)) == [list(range(0, 7)), list(range(7, 14)), list(range(14, 21))]


# ------------------------------------------------------------------------ torchrun sharding
def fake_ranks(world=2):
    ranks = []
    for rank in range(world):
        d = Distributed()
        d.world, d.rank, d.enabled = world, rank, True
        ranks.append(d)
    return ranks


def test_a_custom_sampler_is_sharded_by_stride_never_replaced():
    weights = torch.ones(N)
    streams = []
    for d in fake_ranks():
        sampler = WeightedRandomSampler(weights, 21, generator=torch.Generator().manual_seed(2))
        loader = DataLoader(indexed(), batch_size=4, sampler=sampler, worker_init_fn=print)
        shard = d.shard_train(loader, seed=0)
        assert isinstance(shard.sampler, StrideSampler) and shard.worker_init_fn is print
        streams.append(list(shard.sampler))
    full = list(WeightedRandomSampler(weights, 21, generator=torch.Generator().manual_seed(2)))
    assert streams[0] == full[0:20:2] and streams[1] == full[1:20:2]   # equal shares, same stream


def test_a_custom_batch_sampler_is_sharded_by_whole_batches():
    got = [list(d.shard_train(DataLoader(indexed(), batch_sampler=Pairs()), seed=0).batch_sampler)
           for d in fake_ranks()]
    assert got == [[[3, 1, 4], [2, 6, 5, 13]], [[15, 9], [7]]]


def test_a_custom_sampler_under_torchrun_needs_a_seed():
    loader = DataLoader(indexed(), batch_size=4, sampler=SubsetRandomSampler([1, 2, 3]))
    with pytest.raises(ValueError, match=r"SubsetRandomSampler is sharded .* pass Trainer\(seed=...\)"):
        fake_ranks()[0].shard_train(loader, seed=None)


def test_a_users_distributed_sampler_is_kept():
    from torch.utils.data import DistributedSampler
    loader = DataLoader(indexed(), batch_size=4, sampler=DistributedSampler(indexed(), num_replicas=2, rank=1))
    assert fake_ranks()[1].shard_train(loader, seed=0) is loader


def test_positions_round_trip_through_gather():
    ranks = fake_ranks(3)
    shares = [d.positions(8) for d in ranks]
    assert shares == [[0, 3, 6], [1, 4, 7], [2, 5, 5]]
    interleaved = torch.stack([torch.tensor(s) for s in shares], 1).flatten()[:8]
    assert interleaved.tolist() == list(range(8))                    # what gather_positions reassembles


def test_an_iterable_dataset_trains_uncached():
    from torch.utils.data import IterableDataset

    class Stream(IterableDataset):
        def __iter__(self):
            return iter(zip(*indexed().tensors))
    batches, _ = train(DataLoader(Stream(), batch_size=5), cache="auto", epochs=2)
    assert [len(b) for b in batches] == [5, 5, 5, 5, 4] * 2


def test_stride_sampler_takes_tensor_and_numpy_indices():
    import numpy as np
    for indices in (torch.arange(0, N, 2), np.arange(0, N, 2)):
        loader = DataLoader(indexed(), batch_size=4, sampler=SubsetRandomSampler(indices))
        shard = fake_ranks()[0].shard_train(loader, seed=0)
        assert sampler_support(shard) == list(range(0, N, 2))


def test_fp16_is_refused_off_cuda():
    with pytest.raises(ValueError, match=r"amp='fp16' needs CUDA"):
        Trainer(TinyNet(), amp="fp16")
