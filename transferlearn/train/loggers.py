"""Loggers: the run's numbers in TensorBoard and in a CSV file, written from the Trainer's hooks.

Both are callbacks (``callbacks.py``): per training batch (an optimizer step, or with
``accumulate=N`` one of its N batches) the batch's loss and the learning
rate of each group that trains, under a global step counter; per epoch the history record
(train/val loss and accuracy, rates); a marker where each phase begins; the kept (best) epoch
when ``fit`` ends. Their state (the step counter, and for the CSV what it wrote) goes into
every checkpoint, so a resumed run continues its logs without a step twice. docs/look.md
("Loggers").
"""

from __future__ import annotations

import csv
import io
import os
import time
from pathlib import Path
from typing import Any

from ..base import atomic_write, describe

__all__ = ["TensorBoardLogger", "CSVLogger"]

_EPOCH_KEYS = ("train_loss", "train_accuracy", "val_loss", "val_accuracy")


def _path(name: str, value: Any) -> Path:
    if not isinstance(value, (str, os.PathLike)):
        raise TypeError(f"{name} must be a path (str or os.PathLike), got {describe(value)}")
    return Path(value)


def _training_rates(optimizer: Any) -> dict[str, float]:
    """The learning rate of each parameter group that trains now, by the group's name (the
    history's ``lr``)."""
    return {group.get("name", f"group{i}"): group["lr"] for i, group in enumerate(optimizer.param_groups)
            if any(p.requires_grad for p in group["params"])}


def _group_names(optimizer: Any) -> list[str]:
    return [group.get("name", f"group{i}") for i, group in enumerate(optimizer.param_groups)]


class _Logger:
    """What both loggers write and when. The x axis is ``step``, the number of training batches
    logged before: step rows run 0..N-1; an epoch's numbers sit at its last step, a phase's
    marker at its first step, the kept epoch at N (one past the last step), so a resume from a
    checkpoint taken after N steps drops exactly what came after it. Subclasses write the
    rows (``_open``, ``_row``, ``_flush``, ``close``). Under torchrun rank 0 alone writes."""

    def __init__(self) -> None:
        self.step = 0       # training batches logged so far (optimizer steps unless accumulating)
        self.phases = 0     # phases begun so far
        self._restored = False  # load_state_dict was called (a resume)
        self._opened = False    # this object has written before (an earlier fit)
        self._writing = False

    def on_fit_start(self, trainer: Any) -> None:
        dist = getattr(trainer, "dist", None)
        self._writing = dist is None or dist.is_main
        if self._writing:
            self._open(trainer)
            self._opened = True

    def on_phase_start(self, trainer: Any, phase: Any) -> None:
        self.phases += 1
        self._row("phase", epoch=len(trainer.history) + 1, phase=phase.name, values={"phase": self.phases})

    def on_step_end(self, trainer: Any, step: Any) -> None:
        values = {"train_loss": step.loss, **{f"lr/{k}": v for k, v in _training_rates(trainer.optimizer).items()}}
        self._row("step", epoch=step.epoch, phase=step.phase.name, values=values, batch=step.batch)
        self.step += 1

    def on_epoch_end(self, trainer: Any, record: dict[str, Any]) -> None:
        self._row("epoch", epoch=record["epoch"], phase=record["phase"], values=self._epoch_values(record),
                  at=max(self.step - 1, 0))
        self._flush()  # before the checkpoint of this epoch is written (Checkpoints runs last)

    def on_fit_end(self, trainer: Any, history: Any) -> None:
        best = history.best
        if best is not None:
            self._row("best", epoch=best["epoch"], phase=best["phase"], values=self._epoch_values(best))
        self.close()

    @staticmethod
    def _epoch_values(record: dict[str, Any]) -> dict[str, Any]:
        values = {k: record.get(k) for k in _EPOCH_KEYS if record.get(k) is not None}
        values.update({f"lr/{k}": v for k, v in (record.get("lr") or {}).items()})
        values["seconds"] = record.get("seconds")
        return values

    def state_dict(self) -> dict[str, Any]:
        """The step counter and the number of phases begun (loads with ``weights_only=True``)."""
        return {"step": self.step, "phases": self.phases}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a checkpoint's ``state_dict()``: the next ``fit`` drops what was logged after it."""
        if not isinstance(state, dict) or not isinstance(state.get("step"), int) or \
                not isinstance(state.get("phases"), int):
            raise ValueError(f"{type(self).__name__} state must be a dict with integer 'step' and 'phases', "
                             f"got {describe(state)}")
        self.step, self.phases, self._restored = state["step"], state["phases"], True

    def _open(self, trainer: Any) -> None:
        raise NotImplementedError

    def _row(self, kind: str, *, epoch: int, phase: str, values: dict[str, Any], batch: int | None = None,
             at: int | None = None) -> None:
        raise NotImplementedError

    def _flush(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Flush and close the file (done at the end of ``fit``; call it after a ``fit`` that raised)."""
        raise NotImplementedError


def _events(directory: Path) -> list[Path]:
    return sorted(directory.glob("events.out.tfevents.*")) if directory.is_dir() else []


def _after_every_event_file(directory: Path) -> None:
    """Wait (under a second) until a new event file's name sorts after every file in
    ``directory``: TensorBoard reads a folder's files in name order, and a name begins with
    the whole second it was made in, so a resume within the same second could sort first."""
    stamps = [int(p.name.split(".")[3]) for p in _events(directory) if p.name.split(".")[3].isdigit()]
    while stamps and int(time.time()) <= max(stamps):
        time.sleep(0.05)


class TensorBoardLogger(_Logger):
    """A callback that writes the run to TensorBoard event files in ``log_dir``
    (``torch.utils.tensorboard``; needs ``pip install tensorboard``).

    Scalars, all under the global step (training batches): ``step/train_loss`` and ``step/lr/<group>``
    every step; ``epoch/train_loss``, ``epoch/train_accuracy``, ``epoch/val_loss``,
    ``epoch/val_accuracy``, ``epoch/lr/<group>`` and ``epoch/epoch`` at each epoch's last step;
    ``phase`` (1, 2, ... in the order the phases begin; with the phase's name as text) at each
    phase's first step; ``best/epoch`` (and the kept epoch's ``best/val_loss``, ...) at the
    end. On ``resume`` the writer opens with ``purge_step`` at the checkpoint's step, so
    TensorBoard drops the steps logged after the checkpoint and each step appears once.

    Args:
        log_dir: the run's folder (``tensorboard --logdir`` its parent to compare runs). A
            fresh fit refuses a folder that already holds event files; a resumed one continues it.

    Raises:
        TypeError: ``log_dir`` is not a path.
        ImportError: the ``tensorboard`` package is not installed.

    Example:
        >>> trainer = Trainer(model, checkpoint_dir="run/ckpt", callbacks=[TensorBoardLogger("runs/first")])
        >>> trainer.fit(train_loader, val_loader)  # then: tensorboard --logdir runs
    """

    def __init__(self, log_dir: str | os.PathLike) -> None:
        super().__init__()
        self.log_dir = _path("log_dir", log_dir)
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as why:
            raise ImportError("TensorBoardLogger needs the tensorboard package: pip install tensorboard "
                              f"(or transferlearn[tensorboard]); {why}") from None
        self._make_writer = SummaryWriter
        self._writer: Any = None

    def _open(self, trainer: Any) -> None:
        self.close()  # a writer left open by a fit that raised
        if not (self._restored or self._opened) and _events(self.log_dir):
            raise ValueError(f"log_dir {str(self.log_dir)!r} already holds TensorBoard event files of another run; "
                             "give each run its own folder, or resume that run (fit(resume=True))")
        if self._restored:
            _after_every_event_file(self.log_dir)
        self._writer = self._make_writer(str(self.log_dir), purge_step=self.step if self._restored else None)
        self._restored = False  # a later fit of this object continues without purging

    def _row(self, kind: str, *, epoch: int, phase: str, values: dict[str, Any], batch: int | None = None,
             at: int | None = None) -> None:
        if not self._writing:
            return
        where = self.step if at is None else at
        if kind == "phase":
            self._writer.add_scalar("phase", values["phase"], where)
            self._writer.add_text("phase", f"{values['phase']}: {phase} (from epoch {epoch})", where)
            return
        for key, value in values.items():
            if value is not None and key != "seconds":
                self._writer.add_scalar(f"{kind}/{key}", value, where)
        if kind == "epoch":
            self._writer.add_scalar("epoch/epoch", epoch, where)
        elif kind == "best":
            self._writer.add_scalar("best/epoch", epoch, where)
            self._writer.add_text("best", f"kept epoch {epoch} ({phase})", where)

    def _flush(self) -> None:
        if self._writer is not None:
            self._writer.flush()

    def close(self) -> None:
        """Flush and close the event file (done at the end of ``fit``; call it after a ``fit`` that raised)."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None


class CSVLogger(_Logger):
    """A callback that writes the run to one CSV file, a row per step, per epoch, per phase
    begun and one for the kept epoch.

    Columns: ``kind`` (``step``, ``epoch``, ``phase``, ``best``), ``step`` (the global optimizer
    step, as in ``TensorBoardLogger``), ``epoch``, ``batch``, ``phase`` (the phase's name),
    ``train_loss`` (the batch's on step rows, the epoch's mean otherwise), ``train_accuracy``,
    ``val_loss``, ``val_accuracy``, ``seconds`` (the epoch's) and ``lr/<group>`` for every
    parameter group (empty while the group is frozen). Numbers are written exactly (``repr``).
    Everything written up to a checkpoint is part of the logger's state there, so on
    ``resume`` the file is rewritten (atomically) to exactly the checkpoint's rows and
    continues, whatever the interrupted run added after it.

    Args:
        path: the CSV file. A fresh fit refuses a file that already holds rows; a resumed one
            continues it, and refuses one whose rows are not the checkpoint's (move it away: the
            checkpoint's rows are then written anew).

    Raises:
        TypeError: ``path`` is not a path.

    Example:
        >>> trainer = Trainer(model, checkpoint_dir="run/ckpt", callbacks=[CSVLogger("run/log.csv")])
        >>> trainer.fit(train_loader, val_loader)
        >>> import pandas; pandas.read_csv("run/log.csv").query("kind == 'epoch'")
    """

    def __init__(self, path: str | os.PathLike) -> None:
        super().__init__()
        self.path = _path("path", path)
        self._text = ""            # everything written to the file so far, the header first
        self._columns: list[str] = []
        self._file: Any = None

    def state_dict(self) -> dict[str, Any]:
        """The step counter, the phases begun and the file's text so far."""
        return {**super().state_dict(), "text": self._text}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a checkpoint's ``state_dict()``: the file is cut back to its text."""
        super().load_state_dict(state)
        if not isinstance(state.get("text"), str):
            raise ValueError(f"CSVLogger state must hold the file's 'text' (a str), got {describe(state.get('text'))}")
        self._text = state["text"]

    def _open(self, trainer: Any) -> None:
        columns = ["kind", "step", "epoch", "batch", "phase", *_EPOCH_KEYS, "seconds",
                   *(f"lr/{name}" for name in _group_names(trainer.optimizer))]
        if self._text and next(csv.reader(io.StringIO(self._text))) != columns:
            raise ValueError(f"{self.path} has the columns {next(csv.reader(io.StringIO(self._text)))}, this run "
                             f"writes {columns} (other parameter groups); log this run to another file")
        existing = self.path.read_text() if self.path.is_file() else ""
        if not self._text and existing:
            raise ValueError(f"{self.path} already holds the rows of another run; give each run its own file, "
                             "or resume that run (fit(resume=True))")
        if self._text and existing and not existing.startswith(self._text):
            raise ValueError(f"{self.path} does not begin with the {self._text.count(chr(10)) - 1} rows the "
                             "checkpoint's logger state holds (was it changed or replaced?); move it away and "
                             "resume again: the checkpoint's rows are then written anew")
        self.close()  # a file left open by a fit that raised
        self._columns = columns
        if not self._text:
            self._text = self._format(columns)
        if existing != self._text:  # cut back to the checkpoint's rows (or a new file), atomically
            atomic_write(self.path, lambda f: f.write(self._text.encode()))
        self._file = open(self.path, "a", newline="", encoding="utf-8")  # noqa: SIM115 (closed in close())

    @staticmethod
    def _format(row: list[Any]) -> str:
        out = io.StringIO()
        csv.writer(out, lineterminator="\n").writerow(["" if v is None else repr(v) if isinstance(v, float)
                                                       else v for v in row])
        return out.getvalue()

    def _row(self, kind: str, *, epoch: int, phase: str, values: dict[str, Any], batch: int | None = None,
             at: int | None = None) -> None:
        if not self._writing:
            return
        fields = {"kind": kind, "step": self.step if at is None else at, "epoch": epoch, "batch": batch,
                  "phase": phase, **{k: v for k, v in values.items() if k != "phase"}}
        line = self._format([fields.get(column) for column in self._columns])
        self._file.write(line)
        self._text += line

    def _flush(self) -> None:
        if self._file is not None:
            self._file.flush()

    def close(self) -> None:
        """Flush and close the file (done at the end of ``fit``; call it after a ``fit`` that raised)."""
        if self._file is not None:
            self._file.close()
            self._file = None
