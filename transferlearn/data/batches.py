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

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from ..base import describe

__all__ = ["INPUT_KEYS", "TARGET_KEYS", "check_targets", "split_batch", "target_rule"]

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


def target_rule(criterion: Any) -> tuple[str, int | None]:
    """How ``criterion`` reads targets: ``("index", ignore_index)`` for ``nn.NLLLoss``,
    ``("index or soft", ignore_index)`` for ``nn.CrossEntropyLoss`` (and for ``None``, the
    Trainer's default), ``("any", None)`` for any other loss (only one target row per input
    is required).

    Example:
        >>> target_rule(nn.CrossEntropyLoss(ignore_index=255))
        ('index or soft', 255)
    """
    if criterion is None or isinstance(criterion, nn.CrossEntropyLoss):
        return "index or soft", -100 if criterion is None else criterion.ignore_index
    if isinstance(criterion, nn.NLLLoss):
        return "index", criterion.ignore_index
    return "any", None


def _bad_values(targets: torch.Tensor, classes: int, ignore: int | None, index: Any) -> str | None:
    """A description of the targets outside ``[0, classes)`` and ``ignore``, or None."""
    flat = targets.reshape(len(targets), -1).long()
    bad = (flat < 0) | (flat >= classes)
    if ignore is not None:
        bad &= flat != ignore
    rows = bad.any(1).nonzero().flatten()
    if not len(rows):
        return None
    values = ", ".join(str(int(v)) for v in flat[bad].unique()[:6])
    names = ", ".join(str(int(index[r]) if index is not None else int(r)) for r in rows[:5])
    more = f" and {len(rows) - 5} more" if len(rows) > 5 else ""
    one = len(rows) == 1 and bad.sum() == 1
    label = ("dataset index", "dataset indices") if index is not None else ("row", "rows")
    return (f"{'target' if one else 'targets'} {values} ({label[len(rows) > 1]} {names}{more}) "
            f"{'is not a class index' if one else 'are not class indices'}")


def check_targets(targets: torch.Tensor, outputs: torch.Tensor | Sequence[int], *, criterion: Any = None,
                  where: str = "loader", index: Sequence[int] | torch.Tensor | None = None) -> int:
    """Check one batch's targets against the model's outputs before the loss sees them.

    Class indices (``nn.CrossEntropyLoss``, the default, and ``nn.NLLLoss``): an int64 (or
    uint8) tensor of shape ``(N,)`` (``(N, d1, ...)`` for outputs ``(N, C, d1, ...)``), each
    value in ``[0, C)`` or the criterion's ``ignore_index``. ``nn.CrossEntropyLoss`` also
    takes class probabilities: a float tensor of the outputs' shape. Any other criterion:
    one target row per input (``targets.shape[0] == N``); what a row holds is its own affair.

    Args:
        targets: the batch's targets (as ``split_batch`` returns them).
        outputs: the model's outputs for the batch, or their shape ``(N, C, ...)``.
        criterion: the loss the targets are for (None: ``nn.CrossEntropyLoss()``).
        where: what to name in errors (loader, phase, epoch, batch).
        index: dataset indices of the rows, to name them in errors instead of positions.

    Returns:
        How many targets count: those that are not ``ignore_index`` (N for soft targets or
        another criterion); 0 means the batch has nothing to learn from or to score.

    Raises:
        TypeError: a target dtype the criterion cannot take (float, bool, int32, ...).
        ValueError: targets of the wrong shape, or values outside ``[0, C)`` and ignore_index.

    Example:
        >>> check_targets(torch.tensor([0, 2, -100]), torch.zeros(3, 3))
        2
    """
    shape = tuple(outputs.shape) if isinstance(outputs, torch.Tensor) else tuple(outputs)
    kind, ignore = target_rule(criterion)
    n = shape[0]
    if targets.ndim == 0 or targets.shape[0] != n:
        raise ValueError(f"{where}: targets of shape {tuple(targets.shape)} for {n} inputs; expected one target "
                         f"per input ({_accepted(kind, shape, ignore)})")
    if kind == "any":
        return n
    if targets.is_floating_point() and kind == "index or soft" and tuple(targets.shape) == shape:
        return n
    if targets.dtype not in (torch.int64, torch.uint8):
        raise TypeError(f"{where}: targets of dtype {targets.dtype} and shape {tuple(targets.shape)}; expected "
                        f"{_accepted(kind, shape, ignore)}")
    if tuple(targets.shape) != shape[:1] + shape[2:]:
        raise ValueError(f"{where}: targets of shape {tuple(targets.shape)} for outputs of shape {shape}; expected "
                         f"{_accepted(kind, shape, ignore)}")
    bad = _bad_values(targets, shape[1], ignore, index)
    if bad is not None:
        raise ValueError(f"{where}: {bad}; expected {_accepted(kind, shape, ignore)}")
    return int((targets.long() != ignore).sum()) if ignore is not None else targets.numel()


def _accepted(kind: str, shape: tuple[int, ...], ignore: int | None) -> str:
    if kind == "any":
        return "targets.shape[0] == inputs.shape[0]"
    index_shape = "(N,)" if len(shape) <= 2 else f"(N, {', '.join(map(str, shape[2:]))})"
    classes = shape[1] if len(shape) > 1 else "?"
    text = (f"class indices as an int64 tensor of shape {index_shape}, each in [0, {classes}) (the model has "
            f"{classes} outputs) or {ignore} (the criterion's ignore_index)")
    if kind == "index or soft":
        text += f", or class probabilities as a float tensor of the outputs' shape {tuple(shape)}"
    return text
