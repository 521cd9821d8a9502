"""Class weights for ``fit(balance="loss")``: ``N / (C * count_c)`` from the training labels.

The labels are those the training loader can draw (its sampler's declared ``indices``, else
the whole dataset), read from the feature cache when the phase has one, else from the
dataset's ``targets`` (``ImageFolder``, ``load_image_folder``'s splits, ``Subset`` of them,
``TensorDataset``) without decoding an image; only a dataset that exposes none of these is
read item by item. See docs/recipe.md ("Class balance").
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch.utils.data import IterableDataset, Subset, TensorDataset

from ..data.batches import split_batch
from .loaders import sampler_support

__all__ = ["class_weights", "loader_labels", "dataset_labels"]


def dataset_labels(dataset: Any, indices: Sequence[int]) -> torch.Tensor:
    """The labels of ``dataset[i]`` for ``i`` in ``indices``, without reading images where it can."""
    targets = getattr(dataset, "targets", None)
    if targets is not None:
        return torch.as_tensor(targets)[torch.as_tensor(list(indices), dtype=torch.long)]
    if isinstance(dataset, Subset):
        return dataset_labels(dataset.dataset, [dataset.indices[i] for i in indices])
    if isinstance(dataset, TensorDataset) and len(dataset.tensors) >= 2:
        return dataset.tensors[1][torch.as_tensor(list(indices), dtype=torch.long)]
    labels = []
    for i in indices:  # nothing exposes the labels: read the items (images decoded)
        item = dataset[i]
        labels.append(item[1] if isinstance(item, (tuple, list)) and len(item) >= 2 else split_batch(item)[1])
    return torch.as_tensor([int(y) for y in labels])


def loader_labels(loader: Any, cache: Any = None) -> torch.Tensor:
    """The labels of every sample ``loader`` can draw (from ``cache``, a ``FeatureCache``, when given).

    Raises:
        ValueError: the loader reads an ``IterableDataset`` (no indices to count).
    """
    if cache is not None:
        return cache.targets
    dataset = getattr(loader, "dataset", None)
    if dataset is None or isinstance(dataset, IterableDataset):
        raise ValueError("balance='loss' counts the training labels by index: it needs a DataLoader over a "
                         f"map-style dataset, got {type(dataset).__name__}")
    support = sampler_support(loader)
    return dataset_labels(dataset, range(len(dataset)) if support is None else support)


def class_weights(labels: torch.Tensor, classes: int) -> torch.Tensor:
    """``N / (C * count_c)`` for each class ``c`` (float32): 1 for every class when balanced.

    Raises:
        ValueError: a label outside ``0..classes-1``, or a class without a training sample.

    Example:
        >>> class_weights(torch.tensor([0, 0, 0, 1]), 2)
        tensor([0.6667, 2.0000])
    """
    labels = torch.as_tensor(labels).long().flatten()
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= classes):
        raise ValueError(f"balance='loss': the training labels run from {int(labels.min())} to {int(labels.max())}, "
                         f"but the head has {classes} classes")
    counts = torch.bincount(labels, minlength=classes).double()
    missing = [c for c in range(classes) if counts[c] == 0]
    if missing:
        raise ValueError(f"balance='loss': class {missing[0]} has no training sample ({len(missing)} classes have "
                         "none); every class needs one for its weight N / (C * count)")
    return (labels.numel() / (classes * counts)).float()
