"""Per-epoch training records: a read-only sequence with JSON / CSV round trips and a plot."""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Iterator, overload

from ..base import atomic_write, literal_text, read_regular_file

__all__ = ["History", "plot_history"]

_MAX_HISTORY_BYTES = 1 << 26  # 64 MiB: a record is ~300 bytes, so about 200,000 epochs

_LR = "lr:"


class History(Sequence):
    """One plain-dict record per epoch: ``epoch``, ``phase``, ``train_loss``,
    ``train_accuracy``, ``val_loss``, ``val_accuracy``, ``val_macro_f1`` (when validating), ``lr`` (a dict of
    group name -> learning rate) and ``seconds``. Every value is JSON-able.
    """

    def __init__(self, records: list[dict[str, Any]] | None = None) -> None:
        self._records: list[dict[str, Any]] = [dict(r) for r in records or []]

    def append(self, record: dict[str, Any]) -> None:
        """Add one epoch's record (the Trainer calls this)."""
        self._records.append(dict(record))

    @overload
    def __getitem__(self, index: int) -> dict[str, Any]: ...
    @overload
    def __getitem__(self, index: slice) -> list[dict[str, Any]]: ...

    def __getitem__(self, index):
        return self._records[index]

    def __len__(self) -> int:
        return len(self._records)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self._records)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, History) and other._records == self._records

    def __repr__(self) -> str:
        return f"History({len(self)} epochs)"

    def mark_best(self, epoch: int) -> None:
        """Set ``best`` on every validated record: True for ``epoch``, False for the others."""
        for record in self._records:
            if "val_loss" in record:
                record["best"] = record["epoch"] == epoch

    @property
    def best(self) -> dict[str, Any] | None:
        """The record of the best validation epoch, or None: the weights ``fit`` ended with,
        unless it was called with ``restore_best=False``."""
        return next((r for r in self._records if r.get("best") is True), None)

    def records(self) -> list[dict[str, Any]]:
        """A copy of the records as a list of dicts."""
        return [dict(r) for r in self._records]

    def to_json(self, path: str | os.PathLike | None = None) -> str:
        """The records as strict JSON (a non-finite number is written as ``null``); also
        written to ``path`` when given."""
        text = json.dumps(_finite(self._records), indent=1, allow_nan=False)
        if path is not None:
            _write(path, text)
        return text

    @classmethod
    def from_json(cls, source: str | os.PathLike) -> "History":
        """Read what ``to_json`` wrote: a JSON string or a path to a file, checked record by
        record (``epoch`` an int >= 1, ``phase`` a string, losses, accuracies and ``seconds``
        finite numbers or null, ``lr`` an object of numbers).

        Raises:
            ValueError: the text is not JSON, not a list of records, or a field is of the wrong
                type; the message names the file (or "history JSON text"), the record and field.
        """
        text, where = str(source), "history JSON text"
        if not text.lstrip().startswith("["):
            where = str(source)
            text = read_regular_file(source, limit=_MAX_HISTORY_BYTES, what="a history.json").decode("utf-8")
        try:
            data = json.loads(text)
        except (RecursionError, ValueError) as error:
            reason = "nested too deeply" if isinstance(error, RecursionError) else str(error)
            raise ValueError(f"{where} is not a history this library reads: not valid JSON ({reason})") from None
        return cls(_checked_records(data, where))

    def to_csv(self, path: str | os.PathLike | None = None) -> str:
        """The records as CSV, one row per epoch; learning rates as ``lr:<group>`` columns."""
        rows = [_flatten(r) for r in self._records]
        fields: list[str] = []
        for row in rows:
            fields += [k for k in row if k not in fields]
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=fields, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        if path is not None:
            _write(path, out.getvalue())
        return out.getvalue()

    @classmethod
    def from_csv(cls, source: str | os.PathLike) -> "History":
        """Read what ``to_csv`` wrote: CSV text or a path to a file."""
        text = str(source)
        if "\n" not in text:
            text = Path(source).read_text(encoding="utf-8")
        return cls([_unflatten(row) for row in csv.DictReader(io.StringIO(text))])


_NUMBERS = ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "val_macro_f1", "seconds")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _checked_records(data: Any, where: str) -> list[dict[str, Any]]:
    """``data`` as History records, or a ValueError naming ``where``, the record and the field."""
    if not isinstance(data, list):
        raise ValueError(f"{where} is not a history this library reads: it must hold a JSON list of per-epoch "
                         f"records, got {type(data).__name__}")
    for i, record in enumerate(data, 1):
        if not isinstance(record, dict):
            raise ValueError(f"{where}: record {i} must be an object, got {type(record).__name__}")
        problem = _record_problem(record)
        if problem:
            field, accepted = problem
            shown = json.dumps(record.get(field), allow_nan=True)[:40]
            raise ValueError(f"{where}: record {i} field {field!r} must be {accepted}, got {shown}")
    return data


def _record_problem(record: dict[str, Any]) -> tuple[str, str] | None:
    epoch = record.get("epoch")
    if not isinstance(epoch, int) or isinstance(epoch, bool) or epoch < 1:
        return "epoch", "an int >= 1"
    if "phase" in record and not isinstance(record["phase"], str):
        return "phase", "a string"
    for field in _NUMBERS:
        if record.get(field) is not None and not _is_number(record[field]):
            return field, "a finite number or null"
    lr = record.get("lr", {})
    if not isinstance(lr, dict) or not all(_is_number(v) for v in lr.values()):
        return "lr", "an object of learning rates (finite numbers)"
    return None


def _write(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) atomically: a crash mid-write leaves the old file whole."""
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def _finite(value: Any) -> Any:
    """``value`` with every NaN or infinity replaced by None (strict JSON has no NaN)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def _flatten(record: dict[str, Any]) -> dict[str, Any]:
    flat = {k: v for k, v in record.items() if k != "lr"}
    flat.update({_LR + name: lr for name, lr in record.get("lr", {}).items()})
    return flat


def _parse(text: str) -> Any:
    if text == "":
        return None
    if text in ("True", "False"):
        return text == "True"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _unflatten(row: dict[str, str]) -> dict[str, Any]:
    record: dict[str, Any] = {}
    lrs = {}
    for key, text in row.items():
        if key.startswith(_LR):
            if text != "":
                lrs[key[len(_LR):]] = float(text)
        else:
            record[key] = _parse(text)
    record["lr"] = lrs
    return record


def _series(history: Sequence[dict[str, Any]], key: str) -> list[float]:
    return [float("nan") if r.get(key) is None else r[key] for r in history]


def plot_history(history: Sequence[dict[str, Any]] | Mapping[str, Sequence[dict[str, Any]]],
                 path: str | os.PathLike) -> Path:
    """Save a PNG with loss and accuracy curves per epoch.

    Given one history, train and validation curves are drawn and a dotted line marks the
    switch from warm-up to fine-tuning. Given a mapping ``{label: history}``, the
    validation curves (train curves where there is no validation) of every run are drawn
    side by side, to compare strategies. Needs matplotlib (``pip install 'transferlearn[plot]'``).

    Args:
        history: a ``History`` (or a sequence of its records), or a mapping of labels to them.
        path: the PNG file to write.

    Returns:
        The path written.

    Raises:
        ImportError: matplotlib is not installed.
        ValueError: a history is empty.
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.ticker import MaxNLocator
    except ImportError:
        raise ImportError("plot_history needs matplotlib: pip install 'transferlearn[plot]'") from None
    runs = dict(history) if isinstance(history, Mapping) else {"": history}
    if not runs or any(len(h) == 0 for h in runs.values()):
        raise ValueError("history is empty: nothing to plot")
    fig = Figure(figsize=(10, 4))  # no pyplot: the user's matplotlib backend is left alone
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 2)
    for ax, metric in zip(axes, ("loss", "accuracy")):
        for label, run in runs.items():
            epochs = [r["epoch"] for r in run]
            splits = ("train", "val") if label == "" else (
                ("val",) if any(r.get("val_" + metric) is not None for r in run) else ("train",))
            for split in splits:
                name = split if label == "" else f"{label} ({split})"
                ax.plot(epochs, _series(run, f"{split}_{metric}"), marker="o", label=name)
            switch = [r["epoch"] for r in run if r["phase"] != run[0]["phase"]]  # the first phase change
            if label == "" and switch and switch[0] > epochs[0]:
                ax.axvline(switch[0] - 0.5, linestyle=":", color="grey", label="fine-tune starts")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(metric)
        ax.legend(fontsize="small")
    literal_text(fig).tight_layout()                     # a run's label is text, never mathtext
    fig.savefig(path, dpi=100)
    return Path(path)
