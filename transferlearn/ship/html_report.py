"""One self-contained HTML page for a run: settings, curves, confusion, per-class scores, top losses.

``write_html`` (and ``ClassificationReport.to_html``) write a single file that opens offline
in any browser and prints well: every picture is an embedded PNG (``data:`` URI), the CSS is
inline, there is no script, font or any other reference outside the file, and every piece of
user text (class names, paths, settings) is escaped. Sections, top to bottom: the summary,
the settings the caller passes (as tables), learning curves with the kept epoch marked and the
epoch table, per-class precision/recall/F1/support sorted worst first, the confusion matrix
(counts and row-normalised), the most confused pairs, and the top losses as thumbnails with
their path, true and predicted class, probability and a class-activation overlay
(``transferlearn.ship.explain``). See docs/look.md.
"""

from __future__ import annotations

import datetime
import os
import platform
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Sequence

import torch
import torchvision
from torch import nn

from ..base import __version__, atomic_write, check_bool, check_path, describe
from . import _html as h
from .classifier import Classifier
from .explain import class_activation_map
from .heatmap import overlay
from .report import ClassificationReport

__all__ = ["write_html"]

THUMBNAIL = 144  # longest side of a top-loss picture, in pixels


def _records(history: Any) -> list[dict[str, Any]]:
    if history is None:
        return []
    if isinstance(history, (str, bytes)) or not isinstance(history, Sequence) or not all(
            isinstance(r, Mapping) and "epoch" in r for r in history):
        raise TypeError(f"history must be a History or a list of its records (dicts with 'epoch'), got "
                        f"{describe(history)}")
    return [dict(r) for r in history]


def _settings_section(settings: Mapping[str, Any] | None) -> str:
    """One table per entry: a mapping of mappings is a grid, a mapping a key/value table, a list
    of rows a table, scalars together in a first table."""
    if not settings:
        return ""
    scalars = [(k, v) for k, v in settings.items() if not isinstance(v, (Mapping, list, tuple))]
    parts = ["<h2>Settings and data</h2>"]
    if scalars:
        parts.append(h.table(None, scalars))
    for name, value in settings.items():
        if not isinstance(value, (Mapping, list, tuple)):
            continue
        parts.append(f"<h3>{h.esc(name)}</h3>")
        if isinstance(value, Mapping) and value and all(isinstance(v, Mapping) for v in value.values()):
            inner = list(dict.fromkeys(k for v in value.values() for k in v))
            parts.append(h.table(["", *value], [[k, *(v.get(k) for v in value.values())] for k in inner]))
        elif isinstance(value, Mapping):
            parts.append(h.table(None, list(value.items())))
        elif not value:
            parts.append('<p class="note">none</p>')
        else:
            parts.append(h.table(None, [list(v) if isinstance(v, (list, tuple)) else [v] for v in value]))
    return "".join(parts)


def _curves_section(records: list[dict[str, Any]]) -> str:
    if not records:
        return ""
    parts = ["<h2>Learning curves</h2>"]
    png = h.curves_png(records)
    parts.append(h.img(png, "loss and accuracy per epoch", "figure") if png else
                 '<p class="note">matplotlib is not installed: the curves are shown as a table only</p>')
    kept = next((r["epoch"] for r in records if r.get("best") is True), None)
    if kept is not None:
        parts.append(f"<p>The kept (best validation) epoch is <b>{h.esc(kept)}</b>: its weights are saved.</p>")
    keys = ["epoch", "phase", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "seconds"]
    keys = [k for k in keys if any(k in r for r in records)]
    rows = [[r.get(k) for k in keys] for r in records]
    parts.append(h.table([k.replace("_", " ") for k in keys], rows,
                         row_class=["kept" if r.get("best") is True else "" for r in records]))
    return "".join(parts)


def _per_class_section(report: Any) -> str:
    order = sorted(report.per_class.items(), key=lambda kv: (kv[1]["f1"], kv[1]["recall"], kv[0]))
    rows = [[name, s["precision"], s["recall"], s["f1"], s["support"]] for name, s in order]
    rows += [[label, avg["precision"], avg["recall"], avg["f1"], report.count]
             for label, avg in (("macro avg", report.macro_avg), ("weighted avg", report.weighted_avg))]
    return ("<h2>Per class (worst first)</h2>"
            + h.table(["class", "precision", "recall", "F1", "support"], rows))


def _matrix(report: Any, normalize: bool) -> str:
    classes, cm = report.classes, report.confusion_matrix
    head = "".join(h.cell(c, header=True) for c in classes)
    rows, top = [], max(max(map(max, cm)), 1)
    for name, row in zip(classes, cm):
        total = max(sum(row), 1)
        cells = "".join(h.shaded(v, v / total if normalize else v / top, f"{v / total:.2f}" if normalize else str(v))
                        for v in row)
        rows.append(f"<tr>{h.cell(name, header=True)}{cells}</tr>")
    title = "share of each true class (rows sum to 1)" if normalize else "counts"
    return (f"<h3>{title}</h3><div class=\"scroll\"><table><thead><tr><th>true \\ predicted</th>{head}</tr>"
            f"</thead><tbody>{''.join(rows)}</tbody></table></div>")


def _confusion_section(report: Any, pairs: int = 10) -> str:
    cm, classes = report.confusion_matrix, report.classes
    off = sorted(((v, i, j) for i, row in enumerate(cm) for j, v in enumerate(row) if i != j and v > 0),
                 key=lambda t: (-t[0], t[1], t[2]))[:pairs]
    rows = [[classes[i], classes[j], v, v / max(sum(cm[i]), 1)] for v, i, j in off]
    confused = (h.table(["true", "predicted as", "images", "share of the true class"], rows) if rows
                else '<p class="note">no image was confused</p>')
    return ("<h2>Confusion matrix</h2><p>Rows: true class; columns: predicted class.</p>"
            + _matrix(report, False) + _matrix(report, True) + "<h2>Most confused pairs</h2>" + confused)


def _maps(report: Any, model: nn.Module | None) -> tuple[list[Any], str]:
    """One class-activation map per top loss (of the predicted class), or none and why."""
    if model is None:
        return [], "no model was given to the report: no class-activation maps"
    if not report.images or any(h.input_picture(x, report.stats) is None for x in report.images):
        return [], "the inputs are not images: no class-activation maps"
    targets = [report.classes.index(row["predicted"]) for row in report.top_losses]
    try:
        return list(class_activation_map(model, torch.stack(report.images), target=targets)), ""
    except ValueError as error:
        return [], f"no class-activation maps: {error}"


def _card(row: dict[str, Any], picture: torch.Tensor | None, cam: Any) -> str:
    from torchvision.transforms.functional import to_pil_image

    where = row["path"] if row.get("path") is not None else f"sample #{row['index']}"
    pictures = ""
    if picture is not None:
        pictures = h.img(h.png_bytes(to_pil_image(picture), THUMBNAIL), f"input: {where}")
        if cam is not None:
            pictures += h.img(h.png_bytes(overlay(picture, cam), THUMBNAIL), f"class-activation map: {where}")
            if float(cam.max()) == 0.0:
                pictures += (f'<div class="note">no position raised the score of {h.esc(row["predicted"])}: '
                             "the map is 0 everywhere</div>")
    return (f'<div class="card">{pictures}<div><b>{h.esc(row["true"])}</b> \u2192 <b>{h.esc(row["predicted"])}</b>'
            f' (p {row["probability"]:.3f}, loss {row["loss"]:.3f})</div><div class="path">{h.esc(where)}</div></div>')


def _top_losses_section(report: Any, model: nn.Module | None) -> str:
    if not report.top_losses:
        return "<h2>Top losses</h2><p class=\"note\">no misclassified image</p>"
    maps, why = _maps(report, model)
    cards = []
    for k, row in enumerate(report.top_losses):
        picture = h.input_picture(report.images[k], report.stats) if k < len(report.images) else None
        cards.append(_card(row, picture, maps[k] if k < len(maps) else None))
    intro = ("<p>The most confidently wrong images, highest loss first: the input as the network saw it and, "
             "beside it, where the network looked for the predicted class (HiResCAM; red is high).</p>")
    note = f'<p class="note">{h.esc(why)}</p>' if why else ""
    return f"<h2>Top losses</h2>{intro}{note}<div class=\"cards\">{''.join(cards)}</div>"


def _footer() -> str:
    versions = (f"transferlearn {__version__}, torch {torch.__version__}, torchvision {torchvision.__version__}, "
                f"Python {platform.python_version()}")
    when = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    return f"<footer>Written {h.esc(when)} by {h.esc(versions)}.</footer>"


def _summary(report: Any, records: list[dict[str, Any]]) -> str:
    if report is None:
        return '<p class="summary note">No evaluation data (no validation images): nothing to score.</p>'
    kept = next((r["epoch"] for r in records if r.get("best") is True), None)
    where = f", kept epoch {h.esc(kept)} of {len(records)}" if kept is not None else ""
    return (f'<p class="summary">Accuracy <b>{report.accuracy:.4f}</b>, loss {report.loss:.4f} on '
            f"{report.count} images of {len(report.classes)} classes{where}.</p>")


def write_html(report: Any, path: str | os.PathLike, *, history: Any = None,
               settings: Mapping[str, Any] | None = None, model: Any = None,
               title: str = "transferlearn report", overwrite: bool = True) -> Path:
    """Write one self-contained HTML page about a run (atomically).

    Args:
        report: a ``ClassificationReport``, or None (a run without evaluation data: settings
            and curves only).
        path: the ``.html`` file to write.
        history: the ``History`` of ``fit`` (or its records): curves with the kept epoch marked.
        settings: what produced the run, shown as tables: ``{name: value}``; a scalar value joins
            the first table, a mapping is a table of its own (a mapping of mappings, such as
            ``{"train": {class: n}, "val": {...}}``, a grid), a list of rows (e.g. skipped
            files and why) a table.
        model: the network (or ``Classifier``) the report was made with: each top loss gets a
            class-activation overlay of its predicted class. None: thumbnails only.
        title: the page's title.
        overwrite: replace an existing file at ``path`` (False: ``FileExistsError``, checked
            atomically when the page is moved into place).

    Returns:
        The path written.

    Raises:
        TypeError: a report, history, settings, model or title of another type, ``path`` not a path.
        FileExistsError: ``path`` exists and ``overwrite`` is False.

    Example:
        >>> write_html(report, "runs/pets/report.html", history=history, model=model,
        ...            settings={"strategy": "fine_tune_all", "image size": 160})
    """
    if report is not None and not isinstance(report, ClassificationReport):
        raise TypeError(f"report must be a ClassificationReport or None, got {describe(report)}")
    check_path("path", path)
    if settings is not None and not isinstance(settings, Mapping):
        raise TypeError(f"settings must be a mapping of names to values, got {describe(settings)}")
    if not isinstance(title, str):
        raise TypeError(f"title must be a str, got {describe(title)}")
    check_bool("overwrite", overwrite)
    model = model.model if isinstance(model, Classifier) else model
    if model is not None and not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, a Classifier or None, got {describe(model)}")
    records = _records(history)
    body = [f"<h1>{h.esc(title)}</h1>", _summary(report, records), _settings_section(settings),
            _curves_section(records)]
    if report is not None:
        body += [_per_class_section(report), _confusion_section(report), _top_losses_section(report, model)]
    page = (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{h.esc(title)}</title>'
            f'<meta name="viewport" content="width=device-width, initial-scale=1"><style>{h.CSS}</style></head>'
            f"<body>{''.join(body)}{_footer()}</body></html>\n")
    return atomic_write(path, lambda f: f.write(page.encode("utf-8")), overwrite=overwrite)
