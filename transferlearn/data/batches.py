"""What a batch is: one rule for ``fit``, ``evaluate``, ``predict`` and ``extract_features``.

A batch is one of:

- a tensor (or numpy array) of inputs, with no targets;
- a tuple or list ``(inputs, targets, *extra)``: the first two elements are used, further
  elements (sample ids, paths) are passed over;
- a mapping with one input key (``image``, ``images``, ``input``, ``inputs``, ``pixel_values``,
  ``x``) and at most one target key (``label``, ``labels``, ``target``, ``targets``, ``y``).

Inputs become tensors (numpy arrays are converted, sharing memory); targets become tensors
too (a list of ints is accepted). Anything else (PIL images, file paths, strings) is refused
with a ``TypeError`` that says what was found and what to do instead.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from ..base import describe

__all__ = ["INPUT_KEYS", "TARGET_KEYS", "split_batch"]

INPUT_KEYS = ("image", "images", "input", "inputs", "pixel_values", "x")
TARGET_KEYS = ("label", "labels", "target", "targets", "y")
_ACCEPTED = ("a tensor of inputs, an (inputs, targets) tuple, or a dict with an input key "
             f"{list(INPUT_KEYS)} and optionally a target key {list(TARGET_KEYS)}")


def _as_tensor(value: Any, role: str, source: str) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, np.ndarray):
        if value.dtype == object:
            raise TypeError(f"{source} yielded {role} as a numpy array of Python objects; expected numbers")
        return torch.from_numpy(np.ascontiguousarray(value))
    if role == "targets" and isinstance(value, (list, tuple)) and \
            all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
        return torch.as_tensor(value)
    hint = ""
    if isinstance(value, (str, bytes)) or (isinstance(value, (list, tuple)) and value
                                           and isinstance(value[0], (str, bytes))):
        hint = ("; file paths are read by load_image / load_image_folder, or predicted with "
                "load_classifier(...).predict(paths)")
    elif type(value).__module__.startswith("PIL"):
        hint = "; turn images into tensors first, e.g. with imagenet_transform() in the dataset"
    raise TypeError(f"{source} yielded {role} of type {type(value).__name__}, expected a tensor or "
                    f"numpy array{hint}")


def _from_mapping(batch: Mapping, source: str) -> tuple[Any, Any]:
    inputs = [k for k in INPUT_KEYS if k in batch]
    targets = [k for k in TARGET_KEYS if k in batch]
    if len(inputs) != 1 or len(targets) > 1:
        raise ValueError(f"{source} yielded a dict with keys {sorted(map(str, batch))}; expected exactly one "
                         f"input key of {list(INPUT_KEYS)} and at most one target key of {list(TARGET_KEYS)}")
    return batch[inputs[0]], (batch[targets[0]] if targets else None)


def split_batch(batch: Any, *, source: str = "loader") -> tuple[torch.Tensor, torch.Tensor | None]:
    """Split one batch into ``(inputs, targets)`` tensors; ``targets`` is None when absent.

    Args:
        batch: what a loader yielded (see the module docstring for the accepted forms).
        source: the argument name used in error messages (``"train_loader"``, ...).

    Returns:
        ``(inputs, targets)``, both tensors (``targets`` may be None).

    Raises:
        TypeError: the batch, its inputs or its targets are of a type that is not accepted.
        ValueError: an empty tuple, or a dict without exactly one input key.

    Example:
        >>> split_batch({"image": torch.zeros(2, 3, 8, 8), "label": [0, 1]})[1]
        tensor([0, 1])
    """
    if isinstance(batch, (torch.Tensor, np.ndarray)):
        inputs, targets = batch, None
    elif isinstance(batch, Mapping):
        inputs, targets = _from_mapping(batch, source)
    elif isinstance(batch, (tuple, list)):
        if not batch:
            raise ValueError(f"{source} yielded an empty batch {describe(batch)}; expected {_ACCEPTED}")
        inputs, targets = batch[0], (batch[1] if len(batch) > 1 else None)
    else:
        raise TypeError(f"{source} yielded a batch of type {type(batch).__name__}; expected {_ACCEPTED}")
    inputs = _as_tensor(inputs, "inputs", source)
    return inputs, None if targets is None else _as_tensor(targets, "targets", source)
