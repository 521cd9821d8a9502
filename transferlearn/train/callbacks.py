"""Callbacks: the few duck-typed hooks the Trainer's loop calls, and the built-in callbacks.

A callback is any object with one or more of these methods (it defines only those it needs):

- ``on_fit_start(trainer)``: once per ``fit`` call, after the optimizer is built and a
  checkpoint (``resume=``) restored, before the first epoch;
- ``on_phase_start(trainer, phase)``: before the first epoch of each ``Phase`` (not again
  when a run resumes inside a phase);
- ``on_step_start(trainer, step)``: before each training batch's forward pass; the place to
  set ``trainer.optimizer.param_groups[i]["lr"]`` (learning-rate schedules);
- ``on_step_end(trainer, step)``: after each batch's backward pass and, when it took one,
  the optimizer step (``step.loss`` and ``step.stepped`` set);
- ``on_epoch_end(trainer, record)``: after each epoch, with its history record (already in
  ``trainer.history``); setting ``record["stopped_early"] = True`` ends the phase;
- ``on_fit_end(trainer, history)``: once, after the best weights are restored.

A callback with ``state_dict()`` and ``load_state_dict(state)`` is saved in every checkpoint
and restored on ``resume``; its state must load with ``torch.load(weights_only=True)``
(tensors, numbers, strings, lists, dicts). The loop's guards (non-finite loss, gradient
norm, validation loss and weights) run before any callback sees the step or epoch.
See docs/trainer.md ("Callbacks").
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

from torch import nn

from ..base import describe
from . import checkpoint as ckpt
from .runtime import Progress
from .selection import BestEpoch

if TYPE_CHECKING:  # the recipe imports the step, which makes Steps: no import cycle at run time
    from .recipe import Phase, Recipe

__all__ = ["HOOKS", "Step", "Hooks", "check_callbacks", "callback_states", "KeepBest", "EpochLine", "Checkpoints"]

HOOKS = ("on_fit_start", "on_phase_start", "on_step_start", "on_step_end", "on_epoch_end", "on_fit_end")


@dataclass(frozen=True)
class Step:
    """One training batch, as the step hooks see it.

    Attributes:
        phase: the ``Phase`` it belongs to.
        epoch: the epoch, counted from 1 over the whole fit.
        batch: the batch within the epoch, counted from 0.
        loss: the batch's loss (``on_step_end`` only; ``None`` before the step).
        stepped: ``on_step_end`` only: whether the optimizer stepped after this batch (with
            ``fit(accumulate=N)`` it steps every N batches); ``None`` before the step.
    """

    phase: Phase
    epoch: int
    batch: int
    loss: float | None = None
    stepped: bool | None = None


def check_callbacks(callbacks: Any) -> list[Any]:
    """The ``callbacks=`` option as a list: each object defines a hook, and ``state_dict``
    and ``load_state_dict`` both or neither."""
    if isinstance(callbacks, (str, bytes)) or not isinstance(callbacks, Sequence):
        raise TypeError(f"callbacks must be a list of callback objects, got {describe(callbacks)}")
    for i, cb in enumerate(callbacks):
        if not any(callable(getattr(cb, hook, None)) for hook in HOOKS):
            raise TypeError(f"callbacks[{i}] defines none of the hooks {', '.join(HOOKS)}: got {describe(cb)}")
        if callable(getattr(cb, "state_dict", None)) != callable(getattr(cb, "load_state_dict", None)):
            raise TypeError(f"callbacks[{i}] ({type(cb).__name__}) must define both state_dict() and "
                            "load_state_dict(state), or neither")
    return list(callbacks)


def _stateful(callbacks: Sequence[Any]) -> list[Any]:
    return [cb for cb in callbacks if callable(getattr(cb, "state_dict", None))]


def callback_states(callbacks: Sequence[Any]) -> list[list[Any]]:
    """``[[class name, state], ...]`` of the callbacks that have state, for a checkpoint."""
    return [[type(cb).__qualname__, cb.state_dict()] for cb in _stateful(callbacks)]


def check_callback_states(saved: Any, callbacks: Sequence[Any], where: str) -> None:
    """Refuse a resume whose checkpoint holds other callback states than this run's callbacks
    can take (loads nothing)."""
    names = [type(cb).__qualname__ for cb in _stateful(callbacks)]
    got = [entry[0] for entry in saved] if isinstance(saved, list) and all(
        isinstance(e, list) and len(e) == 2 for e in saved) else saved
    if got != names:
        raise ValueError(f"{where} holds the state of the callbacks {got}, this run's callbacks with state are "
                         f"{names}; resume with the same callbacks, or start afresh in another checkpoint_dir")


def load_callback_states(saved: list[list[Any]], callbacks: Sequence[Any]) -> None:
    for cb, (_, state) in zip(_stateful(callbacks), saved):
        cb.load_state_dict(state)


class Hooks:
    """The callbacks' hooks by name, in the callbacks' order (minGPT's ``defaultdict(list)``):
    ``hooks("on_epoch_end", record)`` calls each with ``(trainer, record)``. An exception in a
    callback propagates: the run stops there."""

    def __init__(self, trainer: Any, callbacks: Sequence[Any]) -> None:
        self.trainer = trainer
        self._hooks: dict[str, list[Callable]] = {
            name: [getattr(cb, name) for cb in callbacks if callable(getattr(cb, name, None))] for name in HOOKS}

    def __call__(self, hook: str, *args: Any) -> None:
        for fn in self._hooks[hook]:
            fn(self.trainer, *args)

    def has(self, hook: str) -> bool:
        return bool(self._hooks[hook])


class KeepBest:
    """Built in (with a ``val_loader``): ranks each epoch (``BestEpoch``), keeps the best
    weights, and ends a phase after ``patience`` epochs without a new best. Its state goes
    into the checkpoint's ``best`` field (and the weights into ``best.pt``)."""

    def __init__(self, best: BestEpoch, model: nn.Module) -> None:
        self.best, self.model = best, model

    def on_phase_start(self, trainer: Any, phase: Phase) -> None:
        self.best.new_phase()

    def on_epoch_end(self, trainer: Any, record: dict[str, Any]) -> None:
        self.best.update(record, self.model)  # the record's ``best`` flag is set once, at the end
        if self.best.should_stop():
            record["stopped_early"] = True


class EpochLine:
    """Built in: the progress line of each epoch (the batch bar wraps the loop's batches), with
    the time left to the end of the fit: each epoch still to run at the mean time of the
    epochs its phase ran so far, or of all epochs so far for a phase not begun yet."""

    def __init__(self, progress: Progress, recipe: Recipe) -> None:
        self.progress, self.recipe = progress, recipe

    def on_epoch_end(self, trainer: Any, record: dict[str, Any]) -> None:
        self.progress.epoch(record, self.recipe.epochs, self.time_left(trainer.history, record))

    def time_left(self, history: Sequence[dict[str, Any]], record: dict[str, Any]) -> float | None:
        """Seconds the epochs after ``record`` should take (None when none is left)."""
        recipe, done = self.recipe, record["epoch"]  # epochs counted from 1: the next one's index
        if record.get("stopped_early"):  # the phase ends here: its next phase's first epoch is next
            done = recipe.first_epoch(recipe.plan[done - 1] + 1)
        if done >= recipe.epochs:
            return None
        seconds: dict[str, list[float]] = {}
        for r in history:
            seconds.setdefault(r["phase"], []).append(r["seconds"])
        overall = [t for ts in seconds.values() for t in ts]
        mean = {name: sum(ts) / len(ts) for name, ts in seconds.items()}
        return sum(mean.get(recipe.phase_at(e).name, sum(overall) / len(overall)) for e in range(done, recipe.epochs))


class Checkpoints:
    """Built in (with ``checkpoint_dir``): writes ``last.pt`` (and ``best.pt``) after each
    epoch, after every other callback's ``on_epoch_end``, so their state is the epoch's."""

    def __init__(self, directory: Path, callbacks: Sequence[Any]) -> None:
        self.directory, self.callbacks = directory, callbacks

    def write(self, run: Any, next_epoch: int) -> None:
        best, history = run.best, run.history
        ckpt.write_epoch(self.directory, model=run.model, optimizer=run.optimizer, scaler=run.scaler,
                         history=history.records(), phase=history[-1]["phase"], next_epoch=next_epoch,
                         generators=run.generators, best=best.summary(), groups=run.layout_at(len(history)),
                         best_state=best.state if best.epoch == history[-1]["epoch"] else None,
                         callbacks=callback_states(self.callbacks),
                         recipe=ckpt.describe_phases(run.recipe.phases))
