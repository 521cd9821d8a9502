"""The user's DataLoader, kept faithful whenever the library rebuilds or replays it.

Three things the Trainer needs from a loader, each without changing its meaning:

- ``rebuild_loader``: a DataLoader over other indices that keeps every option of the user's
  (workers, ``worker_init_fn``, ``generator``, ``collate_fn``, pinning, ``persistent_workers``,
  prefetching, timeout, multiprocessing context);
- ``index_batches``: the loader's own stream of index batches, drawn exactly as iterating the
  loader would draw it (its sampler or batch_sampler, their generators, ``drop_last``, and the
  one number a DataLoader iterator takes from its generator for worker seeds);
- ``sampler_support``: which dataset indices the sampler can yield, when it says so
  (``SubsetRandomSampler.indices``), so that a feature cache never touches held-out samples.
"""

from __future__ import annotations

import inspect
from typing import Any, Iterator

import torch
from torch.utils.data import BatchSampler, DataLoader, IterableDataset, SequentialSampler
from torch.utils.data._utils.collate import default_collate

__all__ = ["rebuild_loader", "index_batches", "sampler_support", "not_cacheable", "effective_sampler",
           "loader_generators", "loader_samplers", "is_sequential"]

_KEPT = [name for name in inspect.signature(DataLoader.__init__).parameters
         if name not in ("self", "dataset", "batch_size", "shuffle", "sampler", "batch_sampler", "drop_last")]


def rebuild_loader(loader: DataLoader, *, dataset: Any = None, sampler: Any = None, batch_sampler: Any = None,
                   batch_size: int | None = None, drop_last: bool = False) -> DataLoader:
    """A plain ``DataLoader`` like ``loader`` (every option kept) over another sampler.

    Args:
        loader: the user's loader; its dataset is used unless ``dataset`` is given.
        dataset: the dataset to read (default ``loader.dataset``).
        sampler: which indices to read, one at a time (batched with ``batch_size``).
        batch_sampler: or which batches of indices to read (excludes the two above).
        batch_size: batch size with ``sampler`` (default: the loader's, else 1).
        drop_last: drop a last partial batch with ``sampler``.

    Returns:
        A new ``DataLoader``.
    """
    options = {name: getattr(loader, name) for name in _KEPT if hasattr(loader, name)}
    if not options.get("num_workers"):
        options.pop("prefetch_factor", None)
        options["persistent_workers"] = False
    dataset = loader.dataset if dataset is None else dataset
    if batch_sampler is not None:
        return DataLoader(dataset, batch_sampler=batch_sampler, **options)
    return DataLoader(dataset, batch_size=batch_size or loader.batch_size or 1, sampler=sampler,
                      drop_last=drop_last, **options)


def effective_sampler(loader: DataLoader) -> Any:
    """The sampler that decides which indices a loader reads: the one inside a user's
    batch_sampler when it has one, else ``loader.sampler``."""
    inner = getattr(loader.batch_sampler, "sampler", None)
    return inner if inner is not None else loader.sampler


def sampler_support(loader: DataLoader) -> list[int] | None:
    """Sorted dataset indices the loader can yield, when its sampler declares them through an
    ``indices`` attribute (``SubsetRandomSampler``, ``SubsetSequentialSampler``-like); else None."""
    indices = getattr(loader.batch_sampler, "indices", None)
    if indices is None:
        indices = getattr(effective_sampler(loader), "indices", None)
    if indices is None:
        return None
    try:
        support = sorted({int(i) for i in indices})
    except (TypeError, ValueError):
        return None
    n = len(loader.dataset)
    if support and (support[0] < 0 or support[-1] >= n):
        raise ValueError(f"the train_loader's sampler holds indices outside the dataset of {n} samples "
                         f"(from {support[0]} to {support[-1]})")
    return support


def loader_samplers(loader: Any) -> list[Any]:
    """The distinct sampler objects behind a loader: its sampler, its batch_sampler and the
    batch_sampler's own sampler (those that exist)."""
    batch_sampler = getattr(loader, "batch_sampler", None)
    found = {id(s): s for s in (getattr(loader, "sampler", None), batch_sampler,
                                getattr(batch_sampler, "sampler", None)) if s is not None}
    return list(found.values())


def loader_generators(loader: Any) -> list[torch.Generator]:
    """Every distinct random generator a loader draws from: its own and its samplers'
    (``loader_samplers``); what a checkpoint must save."""
    found: dict[int, torch.Generator] = {}
    for owner in (loader, *loader_samplers(loader)):
        generator = getattr(owner, "generator", None)
        if isinstance(generator, torch.Generator):
            found.setdefault(id(generator), generator)
    return list(found.values())


def is_sequential(loader: Any) -> bool:
    """A DataLoader that reads its whole dataset once, in order, in plain batches (so a cache
    in dataset order replays it exactly, e.g. for validation)."""
    return (isinstance(loader, DataLoader) and type(loader.batch_sampler) is BatchSampler
            and type(loader.sampler) is SequentialSampler)


def not_cacheable(loader: Any) -> str | None:
    """Why a loader's batches cannot be replayed from cached features, or None when they can."""
    if not isinstance(loader, DataLoader):
        return f"train_loader is not a DataLoader (got {type(loader).__name__})"
    if type(loader).__iter__ is not DataLoader.__iter__ or type(loader)._get_iterator is not DataLoader._get_iterator:
        return (f"train_loader is a {type(loader).__name__}, a DataLoader subclass with its own iteration, "
                "whose batches the cache cannot reproduce")
    if isinstance(loader.dataset, IterableDataset):
        return "train_loader reads an IterableDataset, which has no indices to replay"
    if loader.batch_sampler is None:
        return "train_loader has batch_size=None and no batch_sampler (its items are not batches)"
    if loader.collate_fn is not default_collate:
        return ("train_loader has a custom collate_fn, whose batches the cache cannot reproduce "
                "(it stacks cached features itself)")
    return None


def index_batches(loader: DataLoader, *, draw_seed: bool = True) -> Iterator[list[int]]:
    """The batches of dataset indices one pass over ``loader`` would read, in its order.

    Draws from the same random streams as ``iter(loader)`` does, in the same order: first the
    index sampler's iterator is made, then one int64 is drawn from ``loader.generator`` (or the
    global torch RNG) as a DataLoader iterator does for its worker seeds, then the sampler runs.
    So a cached epoch leaves every random state as an uncached epoch would. ``draw_seed=False``
    skips that draw, as the reused iterator of a loader with persistent workers does after its
    first pass.
    """
    batches = iter(loader.batch_sampler)
    if draw_seed:
        torch.empty((), dtype=torch.int64).random_(generator=loader.generator)
    for batch in batches:
        yield [int(i) for i in batch]
