"""Judge a model: always in eval mode, under inference_mode, every sample counted once."""

from __future__ import annotations

import os
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch import nn

from ..base import check_int, check_module, describe, eval_mode, run_device
from ..data.batches import check_targets, split_batch, target_rule
from ..model.anatomy import Anatomy, model_anatomy
from .distributed import Distributed
from .runtime import Precision

__all__ = ["evaluate", "predict", "macro_f1_score"]


def _split_outputs(out: Any) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Main logits and auxiliary logits (inception/googlenet in train mode)."""
    if isinstance(out, tuple) and hasattr(out, "logits"):
        aux = [v for k, v in out._asdict().items() if k != "logits" and v is not None]
        return out.logits, aux
    return out, []


def _correct(logits: torch.Tensor, targets: torch.Tensor, kept: torch.Tensor | None) -> int | None:
    """Right answers among the ``kept`` targets of a batch, or None when targets are not class indices."""
    if targets.ndim != 1 or targets.is_floating_point() or logits.ndim != 2:
        return None
    right = logits.argmax(1) == targets
    return int((right & kept if kept is not None else right).sum())


class _Tally:
    """Running loss sum, correct answers (None once targets are not class indices), count.

    Targets equal to the criterion's ``ignore_index`` count neither in the loss (which the
    criterion averages over the others) nor in the accuracy; a batch of them only adds nothing.
    """

    def __init__(self, criterion: Callable | None = None) -> None:
        self.loss, self.correct, self.count, self.ignored = 0.0, 0, 0, 0
        self.ignore = target_rule(criterion)[1]

    def add(self, loss: float, logits: torch.Tensor, targets: torch.Tensor) -> None:
        kept = None
        if self.ignore is not None and targets.ndim == 1 and not targets.is_floating_point():
            kept = targets != self.ignore
        n = len(targets) if kept is None else int(kept.sum())
        self.ignored += len(targets) - n
        if n == 0:
            return
        hits = _correct(logits, targets, kept)
        self.correct = None if hits is None or self.correct is None else self.correct + hits
        self.loss += loss * n
        self.count += n

    def result(self, empty: str, distributed: Distributed | None = None) -> tuple[float, float | None]:
        """Mean loss and accuracy, summed over all ranks first when ``distributed``."""
        loss, correct, count = self.loss, -1.0 if self.correct is None else self.correct, self.count
        if distributed is not None:
            loss, correct, count = distributed.sum([loss, correct, count])
        if count == 0:
            raise ValueError(empty if not self.ignored else f"{empty}: every target was ignore_index "
                             f"({self.ignore}), nothing to score")
        return loss / count, None if correct < 0 else correct / count


def _confusion(counts: torch.Tensor | None, logits: torch.Tensor, targets: torch.Tensor,
               ignore: int | None = None) -> torch.Tensor | None:
    """``counts`` (true class x predicted class, on the CPU) plus this batch's, without the
    targets equal to ``ignore`` (the criterion's ignore_index); None for targets that are not
    class indices."""
    if targets.ndim != 1 or targets.is_floating_point() or logits.ndim != 2:
        return None
    if ignore is not None:
        kept = targets != ignore
        logits, targets = logits[kept], targets[kept]
    n = logits.shape[1]
    batch = torch.bincount((targets.long() * n + logits.argmax(1)).cpu(), minlength=n * n).view(n, n)
    return batch if counts is None else counts + batch


def macro_f1_score(confusion: torch.Tensor) -> float:
    """The mean F1 over the classes that occur in the targets or the predictions (scikit-learn's
    ``f1_score(average="macro")``) of a confusion matrix (rows: true class, columns: predicted)."""
    confusion = confusion.double()
    tp, true, predicted = confusion.diag(), confusion.sum(1), confusion.sum(0)
    seen = (true + predicted) > 0
    return float((2 * tp[seen] / (true[seen] + predicted[seen])).mean()) if bool(seen.any()) else 0.0


def _eval_batches(model: nn.Module, loader: Any, device: torch.device, precision: Precision | None,
                  source: str = "loader") -> Iterator[tuple[torch.Tensor, Any]]:
    """``(logits, targets)`` per batch in eval mode; every module's mode restored after."""
    cast = precision or Precision(False, device)
    with eval_mode(model), torch.inference_mode(), cast.autocast():
        for batch in loader:
            inputs, targets = split_batch(batch, source=source)
            logits, _ = _split_outputs(model(inputs.to(device)))
            yield logits.float(), targets


def evaluate(model: nn.Module, loader: Any, *, criterion: Callable | None = None,
             device: Any = None, precision: Precision | None = None,
             distributed: Distributed | None = None, source: str = "loader",
             macro_f1: bool = False) -> dict[str, float | None]:
    """Mean loss and accuracy of ``model`` over every sample of ``loader`` (and its macro-F1).

    Runs in eval mode (Dropout off, BatchNorm on running statistics) under
    ``torch.inference_mode()``, and puts every module back in the mode it had. The last,
    partial batch counts like any other; two calls give the same numbers. Every batch's
    targets are checked before the loss (``batches.check_targets``); targets equal to the
    criterion's ``ignore_index`` count in neither loss nor accuracy.

    Args:
        model: the network.
        loader: yields ``(inputs, targets)`` batches or dicts (see ``batches.split_batch``).
        criterion: the loss (default ``nn.CrossEntropyLoss()``), assumed to average a batch.
        device: where to run (default: the model's device).
        precision: autocast settings (the Trainer passes its own).
        distributed: under torchrun, each rank evaluates its share and the sums are
            reduced over ranks (the Trainer passes its own).
        source: what to call the loader in error messages (the Trainer adds phase and epoch).
        macro_f1: also return ``"macro_f1"`` (``macro_f1_score``; None when targets are not class indices).

    Returns:
        ``{"loss": float, "accuracy": float or None}`` (None when targets are not class indices).

    Raises:
        TypeError: ``model`` is not a module.
        ValueError: the loader is empty, yields no targets, or targets that are not classes.
        TypeError: targets of a dtype the criterion cannot take.
    """
    check_module("model", model)
    criterion = criterion if criterion is not None else nn.CrossEntropyLoss()
    device = run_device(model, device)
    tally, confusion = _Tally(criterion), None
    if distributed is not None:
        loader = distributed.shard_eval(loader)
    for step, (logits, targets) in enumerate(_eval_batches(model, loader, device, precision, source)):
        if targets is None:
            raise ValueError("evaluate needs a loader of (inputs, targets) batches")
        targets = targets.to(device)
        if check_targets(targets, logits, criterion=criterion, where=f"{source}, batch {step + 1}"):
            tally.add(float(criterion(logits, targets)), logits, targets)
        else:
            tally.add(0.0, logits, targets)   # every target is ignore_index: counts nothing
        confusion = _confusion(confusion, logits, targets, tally.ignore) if macro_f1 and tally.correct is not None \
            else None
    loss, accuracy = tally.result(f"{source} yielded no batches: nothing to evaluate", distributed)
    if not macro_f1:
        return {"loss": loss, "accuracy": accuracy}
    if confusion is not None and distributed is not None:
        confusion = torch.tensor(distributed.sum(confusion.flatten().tolist())).view(confusion.shape)
    return {"loss": loss, "accuracy": accuracy,
            "macro_f1": None if accuracy is None or confusion is None else macro_f1_score(confusion)}


def _num_outputs(model: nn.Module, anatomy: Anatomy | None = None, head: str | None = None) -> int:
    """Width of the model's output, read from its anatomy (for an empty prediction, and to check
    cached labels)."""
    classes = model_anatomy(model, head=head, anatomy=anatomy).num_classes
    if classes is None:
        raise ValueError(f"cannot tell the number of classes of {type(model).__name__} for an empty input")
    return classes


def predict(model: nn.Module, data: Any, *, batch_size: int = 256, device: Any = None,
            precision: Precision | None = None, anatomy: Anatomy | None = None) -> torch.Tensor:
    """Class probabilities (softmax over dim 1) in eval mode, returned on the CPU.

    Args:
        model: the network.
        data: images shaped (N, C, H, W) or one (C, H, W) as a tensor or numpy array, or a
            loader (labels ignored).
        batch_size: chunk size for a tensor input.
        device: where to run (default: the model's device).
        precision: autocast settings (the Trainer passes its own).
        anatomy: the model's ``anatomy``, read only for an empty input (for its width).

    Returns:
        A float tensor (N, num_classes); (0, num_classes) for an empty input.

    Raises:
        TypeError: ``data`` is neither a tensor nor iterable, or is a path or a string
            (use ``load_classifier(...).predict`` for files).
        ValueError: a tensor of the wrong rank, or ``batch_size < 1``.
    """
    check_module("model", model)
    device = run_device(model, device)
    if isinstance(data, np.ndarray):
        data = split_batch(data, source="data")[0]
    if isinstance(data, torch.Tensor):
        if data.ndim == 3:
            data = data.unsqueeze(0)
        if data.ndim != 4:
            raise ValueError(f"data must be images shaped (N, C, H, W) or (C, H, W), got {tuple(data.shape)}")
        check_int("batch_size", batch_size, minimum=1)
        data = [data[i:i + batch_size] for i in range(0, len(data), batch_size)]
    elif isinstance(data, (str, bytes, os.PathLike)) or not hasattr(data, "__iter__"):
        raise TypeError(f"data must be a tensor or an iterable of batches, got {describe(data)}; files are "
                        "predicted with load_classifier(...).predict(paths), which knows the preprocessing")
    probs = [logits.softmax(1).cpu() for logits, _ in _eval_batches(model, data, device, precision, "data")]
    return torch.cat(probs) if probs else torch.empty(0, _num_outputs(model, anatomy))
