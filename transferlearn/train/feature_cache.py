"""The Trainer's feature cache: backbone features of what the training loader can draw,
replayed through the loader's own sampler, and what a training step runs on them."""

from __future__ import annotations

from typing import Any, Iterator

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from ..data.batches import check_targets
from ..model.anatomy import Anatomy, model_anatomy
from .distributed import Distributed
from .evaluation import _num_outputs
from .features import NotCacheable, _item_count, extract_features
from .loaders import index_batches, loader_generators, rebuild_loader, sampler_support
from .runtime import Meter, Progress

__all__ = ["FeatureCache", "build_cache", "build_val_cache", "cached_step_module", "extract_quietly",
           "warmup_caches"]

_EXTRACT_BATCH = 64  # batch size of the extraction pass for a loader that has none (a batch_sampler)


class FeatureCache:
    """Backbone features of the samples a loader can draw, replayed in the loader's own order.

    ``features[rows[i]]`` and ``targets[rows[i]]`` belong to dataset index ``i``; ``rows`` is
    -1 for indices that were not extracted (outside the sampler's declared support).
    """

    def __init__(self, features: torch.Tensor, targets: torch.Tensor, rows: torch.Tensor) -> None:
        self.features, self.targets, self.rows = features, targets, rows
        self._passes = 0
        # every dataset index has its own row, in order (the usual case): batches skip the lookup
        self._identity = len(rows) == len(features) and bool((rows == torch.arange(len(rows))).all())

    def __len__(self) -> int:
        return len(self.features)

    def batches(self, loader: DataLoader) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The batches ``loader`` would give, drawn from its own sampler / batch_sampler (a
        loader with persistent workers draws its worker seed on the first pass only, as its
        reused iterator does)."""
        persistent = loader.persistent_workers and loader.num_workers > 0
        stream = index_batches(loader, draw_seed=not (persistent and self._passes > 0))
        self._passes += 1
        for indices in stream:
            rows = self._rows(torch.as_tensor(indices, dtype=torch.long))
            yield self.features.index_select(0, rows), self.targets.index_select(0, rows)

    def _rows(self, index: torch.Tensor) -> torch.Tensor:
        """Cache rows of dataset indices; negative indices count from the end, as
        ``dataset[i]`` does for the uncached loader."""
        n = len(self.rows)
        if index.numel():
            low, high = (int(v) for v in torch.aminmax(index))
            if low < -n or high >= n:
                bad = low if low < -n else high
                raise IndexError(f"the loader's sampler yielded index {bad}, but its dataset has {n} items "
                                 f"(valid indices: {-n} to {n - 1})")
            if low < 0:
                index = index.remainder(n)
        if self._identity:
            return index
        rows = self.rows.index_select(0, index)
        if bool((rows < 0).any()):
            raise ValueError("the train_loader's sampler yielded an index whose features were not "
                             "cached (its `indices` changed after fit started?)")
        return rows


def cached_step_module(model: nn.Module, head: str | None = None, *,
                       anatomy: Anatomy | None = None) -> nn.Module:
    """What a training step on cached features runs: the head, preceded by the ``Dropout``
    layers that run just before it (``anatomy(model).pre_head``: MobileNet's and
    EfficientNet's ``classifier.0``, VGG's last dropout, ``nn.Sequential(..., nn.Dropout(p),
    nn.Linear(...))``), found through nested ``nn.Sequential`` containers and past
    ``Flatten``/``Identity``.

    Those layers run after the point where features are captured (the head's input) and have
    no parameters, so in train mode they drop features as they would without the cache; in
    eval mode they pass them through, as in the extraction. A dropout applied in a model's
    ``forward`` code, or held as an attribute outside a Sequential (timm's ``head_drop``),
    cannot be found: such a model trains its cached epochs without it. ``anatomy`` is the
    model's ``anatomy`` when already read (the Trainer passes its own)."""
    found = model_anatomy(model, head=head, anatomy=anatomy)
    before = [model.get_submodule(name) for name in found.pre_head]
    module = model.get_submodule(found.head)
    drops = any(isinstance(m, nn.modules.dropout._DropoutNd) for m in before)
    return nn.Sequential(*before, module) if drops else module


def extract_quietly(model: nn.Module, loader: Any, **kwargs: Any) -> TensorDataset:
    """``extract_features(model, loader, **kwargs)`` without disturbing any random state (the
    global torch RNG and the loader's generators are as before), so caching changes no later
    random draw."""
    generators = loader_generators(loader)
    saved = [g.get_state() for g in generators]
    with torch.random.fork_rng(devices=[]):
        extracted = extract_features(model, loader, **kwargs)
    for generator, state in zip(generators, saved):
        generator.set_state(state)
    return extracted


def _check_labels(model: nn.Module, targets: torch.Tensor, criterion: Any, structure: dict[str, Any], name: str,
                  index: Any = None) -> None:
    """Every cached label, checked once against the head's width before training (the cached
    epochs replay them); skipped when the head does not say its width (each batch is checked)."""
    try:
        width = _num_outputs(model, anatomy=structure.get("anatomy"), head=structure.get("head"))
    except ValueError:
        return
    check_targets(targets, (len(targets), width), criterion=criterion, index=index,
                  where=f"{name} (its labels, checked once when its warm-up features were cached, before training)")


def _meter(progress: Progress | None, desc: str, total: int | None) -> Meter | bool:
    return False if progress is None else progress.meter(desc, total)


def build_cache(model: nn.Module, loader: DataLoader, *, dist: Distributed, criterion: Any = None,
                progress: Progress | None = None, **kwargs: Any) -> FeatureCache:
    """Extract features once for every sample ``loader`` can draw (all of the dataset, or the
    sampler's ``indices``), in dataset order and with every option of the loader kept, without
    disturbing any random state; under torchrun each rank extracts a share and all gather.
    The labels are checked once (``check_targets`` for ``criterion``), naming dataset indices;
    ``progress`` shows the pass ("caching features: 1200/3000 images, 40 s, ~60 s left").
    ``kwargs`` go to ``extract_features`` (head, device, precision, check_output, anatomy)."""
    support = sampler_support(loader)
    indices = list(range(len(loader.dataset))) if support is None else support
    if not indices:
        raise ValueError("train_loader's sampler declares no indices: nothing to train on")
    mine = [indices[p] for p in dist.positions(len(indices))]
    ordered = rebuild_loader(loader, sampler=mine, batch_size=loader.batch_size or _EXTRACT_BATCH)
    extracted = extract_quietly(model, ordered, progress=_meter(progress, "caching features", len(mine)), **kwargs)
    if len(extracted.tensors) < 2:
        raise ValueError("train_loader must yield (inputs, targets) batches")
    features, targets = (dist.gather_positions(t, len(indices)) for t in extracted.tensors)
    if targets.ndim == 1:      # (N,) labels: one per dataset index
        _check_labels(model, targets, criterion, kwargs, "train_loader", index=indices)
    rows = torch.full((len(loader.dataset),), -1, dtype=torch.long)
    rows[torch.as_tensor(indices)] = torch.arange(len(indices))
    return FeatureCache(features, targets, rows)


def build_val_cache(model: nn.Module, loader: DataLoader, *, criterion: Any = None,
                    progress: Progress | None = None, **kwargs: Any) -> FeatureCache | None:
    """Features of a sequential validation loader (``is_sequential``), extracted through the
    loader itself, labels checked once; None when it yields no targets."""
    meter = _meter(progress, "caching validation features", _item_count(loader))
    extracted = extract_quietly(model, loader, progress=meter, **kwargs)
    if len(extracted.tensors) < 2:
        return None
    if extracted.tensors[1].ndim == 1:
        _check_labels(model, extracted.tensors[1], criterion, kwargs, "val_loader",
                      index=range(len(extracted.tensors[1])))
    return FeatureCache(*extracted.tensors, torch.arange(len(extracted.tensors[0])))


def warmup_caches(model: nn.Module, train_loader: DataLoader | None, val_loader: DataLoader | None, *,
                  forced: bool, dist: Distributed, **kwargs: Any) -> tuple[FeatureCache | None, FeatureCache | None]:
    """Features for a frozen-backbone phase: the training loader's (replayed through its own
    sampler) and a sequential validation loader's, each when given. A model whose output is
    not its head's output cannot train on them: ``(None, None)`` then, or, when the cache was
    ``forced`` (``cache_features=True``), a ``ValueError`` saying why. ``kwargs`` go to
    ``extract_features`` (head, device, precision, anatomy), ``criterion`` (whose targets the
    labels must be) to the label check and ``progress`` (the Trainer's) shows each pass."""
    try:
        train = build_cache(model, train_loader, dist=dist, check_output=True, **kwargs) \
            if train_loader is not None else None
        val = build_val_cache(model, val_loader, check_output=True, **kwargs) if val_loader is not None else None
    except NotCacheable as why:
        if forced:
            raise ValueError(f"cache_features=True cannot be honoured: {why}") from None
        return None, None
    return train, val
