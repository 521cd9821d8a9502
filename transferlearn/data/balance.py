"""Class-balanced batches: ``balanced_sampler`` draws each class equally often in expectation.

``load_image_folder(..., balance="sampler")`` and ``FolderData.loaders(balance="sampler")``
use it. A sample's weight is ``1 / (images of its class)``, so every class carries the same
total weight; draws are with replacement (a small class's images repeat within an epoch, a
large class's are not all seen every epoch), ``len(train)`` of them per epoch, from a
``torch.Generator`` seeded by the folder's seed: the same seed draws the same batches. The
Trainer's feature cache replays the sampler's own draws (``train/feature_cache.py``), so a
cached warm-up trains on exactly the batches an uncached one would.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Sequence

import torch
from torch.utils.data import WeightedRandomSampler

from ..base import check_int, describe

__all__ = ["BALANCES", "balanced_sampler", "check_balance"]

BALANCES: tuple[str | None, ...] = (None, "sampler")


def check_balance(balance: Any, *, name: str = "balance") -> str | None:
    """``balance`` checked: None (draw as the loader's ``shuffle`` says) or ``"sampler"``.

    Raises:
        TypeError: neither None nor a string.
        ValueError: another string (``"loss"`` is a ``Trainer.fit`` option, not a data one).

    Example:
        >>> check_balance("sampler")
        'sampler'
    """
    if balance is not None and not isinstance(balance, str):
        raise TypeError(f"{name} must be None or 'sampler', got {describe(balance)}")
    if balance not in BALANCES:
        hint = " ('loss' weights the loss: pass it to Trainer.fit)" if balance == "loss" else ""
        raise ValueError(f"{name} must be None or 'sampler', got {balance!r}{hint}")
    return balance


def balanced_sampler(targets: Sequence[int], *, seed: int = 0,
                     num_samples: int | None = None) -> WeightedRandomSampler:
    """A ``WeightedRandomSampler`` drawing every class of ``targets`` equally often in expectation.

    Args:
        targets: the class label of each sample (``dataset.targets``).
        seed: seeds the sampler's own ``torch.Generator`` (int >= 0).
        num_samples: draws per epoch (default ``len(targets)``).

    Returns:
        The sampler: weights ``1 / count(class of sample)``, ``replacement=True``.

    Raises:
        TypeError, ValueError: no targets, a label that is not an int, a bad ``seed`` or
            ``num_samples``.

    Example:
        >>> sampler = balanced_sampler([0, 0, 0, 0, 0, 1], seed=0)
        >>> loader = DataLoader(dataset, batch_size=32, sampler=sampler)
    """
    labels = list(targets)
    if not labels:
        raise ValueError("targets is empty: a balanced sampler needs at least one sample")
    bad = next((t for t in labels if isinstance(t, bool) or not isinstance(t, int)), None)
    if bad is not None:
        raise TypeError(f"targets must be int class labels, got {describe(bad)}")
    counts = Counter(labels)
    weights = torch.tensor([1.0 / counts[t] for t in labels], dtype=torch.double)
    draws = len(labels) if num_samples is None else check_int("num_samples", num_samples, minimum=1)
    generator = torch.Generator().manual_seed(check_int("seed", seed))
    return WeightedRandomSampler(weights, draws, replacement=True, generator=generator)
