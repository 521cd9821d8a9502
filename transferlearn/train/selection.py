"""Keep the best validation epoch and stop a phase that no longer improves.

``fit`` ends with the weights of the epoch that validated best, not merely the last one.
The metric is ``monitor``: ``"val_loss"`` (lower is better, the default) or
``"val_accuracy"`` (higher is better; equal accuracies are decided by the lower
``val_loss``; ``"val_macro_f1"``, the mean F1 over classes, likewise: for imbalanced data).
An epoch counts as better only when it is strictly better, so among equal
epochs the earliest is kept. A non-finite validation score never counts as best.
With ``patience=N`` a phase ends after N epochs in a row of that phase without a new best;
the next phase (fine-tuning after warm-up) still runs.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from ..base import check_choice, check_int

__all__ = ["BestEpoch", "MONITORS"]

MONITORS = ("val_loss", "val_accuracy", "val_macro_f1")


def _key(record: dict[str, Any], monitor: str) -> tuple[float, float] | None:
    """A sort key (smaller is better) for ``record``, or None when it cannot be ranked."""
    loss, acc = record.get("val_loss"), record.get("val_accuracy")
    if loss is None or not math.isfinite(loss):
        return None
    if monitor == "val_loss":
        return (loss, 0.0)
    score = acc if monitor == "val_accuracy" else record.get("val_macro_f1")
    if score is None:
        raise ValueError(f"monitor={monitor!r} needs class-index targets in val_loader "
                         f"(its {monitor[4:].replace('_', '-')} is None); use monitor='val_loss'")
    return (-score, loss)


class BestEpoch:
    """Tracks the best epoch so far, a CPU copy of its weights, and each phase's patience.

    Args:
        monitor: ``"val_loss"`` or ``"val_accuracy"``.
        patience: end a phase after this many epochs without a new best (None: never).
        validating: whether the run validates at all (patience needs it).
    """

    def __init__(self, monitor: str = "val_loss", patience: int | None = None, *, validating: bool = True) -> None:
        self.monitor = check_choice("monitor", monitor, MONITORS)
        self.patience = None if patience is None else check_int("patience", patience, minimum=1)
        if patience is not None and not validating:
            raise ValueError(f"patience={patience} needs a val_loader to measure improvement")
        self.epoch: int | None = None
        self.key: tuple[float, float] | None = None
        self.state: dict[str, torch.Tensor] | None = None
        self.stale = 0

    def update(self, record: dict[str, Any], model: nn.Module) -> bool:
        """Rank the epoch of ``record``; keep ``model``'s weights when it is the new best."""
        key = _key(record, self.monitor)
        if key is not None and (self.key is None or key < self.key):
            self.epoch, self.key, self.stale = record["epoch"], key, 0
            self.state = self._snapshot(model)
            return True
        self.stale += 1
        return False

    def _snapshot(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """A CPU copy of the weights. Within a fit only the optimizer moves weights, and the
        trainable set only grows (warm-up head, then more), so a frozen parameter equals its
        copy from the previous best and is reused: a cached warm-up copies the head alone."""
        previous = self.state or {}
        return {k: previous[k] if isinstance(v, nn.Parameter) and not v.requires_grad and k in previous
                else v.detach().to("cpu", copy=True) for k, v in model.state_dict(keep_vars=True).items()}

    def new_phase(self) -> None:
        """Patience counts within a phase: a new phase starts with a clean count."""
        self.stale = 0

    def should_stop(self) -> bool:
        return self.patience is not None and self.stale >= self.patience

    def summary(self) -> dict[str, Any]:
        """What a checkpoint keeps of this tracker (the weights go to their own file)."""
        return {"monitor": self.monitor, "epoch": self.epoch, "key": None if self.key is None else list(self.key),
                "stale": self.stale}

    def restore(self, summary: dict[str, Any], state: dict[str, torch.Tensor] | None) -> None:
        """Continue from ``summary`` (and the best weights) saved by an interrupted run."""
        if summary.get("monitor") != self.monitor:
            raise ValueError(f"the checkpoint tracked monitor={summary.get('monitor')!r}, this run "
                             f"monitor={self.monitor!r}; resume with the same monitor")
        self.epoch, self.stale = summary["epoch"], summary["stale"]
        self.key = None if summary["key"] is None else tuple(summary["key"])
        self.state = state
