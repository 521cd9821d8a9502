"""How a classifier does on labelled data: accuracy, per-class scores, confusion, worst mistakes.

``classification_report`` runs the model once over the data (eval mode, under
``torch.inference_mode``) and returns a ``ClassificationReport``: JSON-able numbers plus
PNG plots of the confusion matrix and of the most confidently wrong samples. Plots use
matplotlib's object API (``Figure`` + ``FigureCanvasAgg``) and never switch the process-wide
backend, so calling them from a notebook changes nothing else.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from ..base import atomic_write, check_bool, check_int, check_path, run_device
from ..data.transforms import IMAGENET_MEAN, IMAGENET_STD
from ._scoring import Worst, dataset_of, known_order, run_model, sample_path, scores, setup
from .classifier import Classifier

__all__ = ["ClassificationReport", "classification_report"]


@dataclass(frozen=True)
class ClassificationReport:
    """The result of ``classification_report``.

    Attributes:
        classes: class names; row/column ``i`` of the confusion matrix is class ``i``.
        count: samples evaluated.
        accuracy: share of samples whose most probable class is the true one.
        loss: mean cross-entropy.
        per_class: ``{class: {"precision", "recall", "f1", "support"}}`` (0 where undefined,
            as scikit-learn's ``zero_division=0``).
        macro_avg: unweighted mean of precision, recall and F1 over the classes.
        weighted_avg: the same, weighted by support.
        confusion_matrix: ``[true][predicted]`` counts.
        top_losses: the most confidently wrong samples, highest loss first: ``index`` (position
            in the data), ``path`` (when the dataset has ``.samples`` and the order is known, else
            None), ``true``, ``predicted``, ``loss``, ``probability`` (of the predicted class).
        images: the input tensors of ``top_losses``, for ``plot_top_losses`` (not in ``to_dict``).
        stats: ``(mean, std)`` that ``plot_top_losses`` uses to undo the normalisation.
    """

    classes: tuple[str, ...]
    count: int
    accuracy: float
    loss: float
    per_class: dict[str, dict[str, float]]
    macro_avg: dict[str, float]
    weighted_avg: dict[str, float]
    confusion_matrix: list[list[int]]
    top_losses: list[dict[str, Any]]
    images: tuple[torch.Tensor, ...] = field(default=(), repr=False, compare=False)
    stats: tuple[list[float], list[float]] = field(default=(list(IMAGENET_MEAN), list(IMAGENET_STD)),
                                                   repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """Every number as plain JSON values (no tensors, no images).

        Returns:
            ``{"accuracy", "loss", "count", "classes", "per_class", "macro_avg",
            "weighted_avg", "confusion_matrix", "top_losses"}``.

        Example:
            >>> json.dumps(report.to_dict())
        """
        return {"accuracy": self.accuracy, "loss": self.loss, "count": self.count,
                "classes": list(self.classes), "per_class": {k: dict(v) for k, v in self.per_class.items()},
                "macro_avg": dict(self.macro_avg), "weighted_avg": dict(self.weighted_avg),
                "confusion_matrix": [list(r) for r in self.confusion_matrix],
                "top_losses": [dict(t) for t in self.top_losses]}

    def __str__(self) -> str:
        width = max(12, *(len(c) for c in self.classes))
        lines = [f"{'':{width}}  precision  recall     f1  support"]
        for name, row in [*self.per_class.items(), ("macro avg", self.macro_avg),
                          ("weighted avg", self.weighted_avg)]:
            support = row.get("support", self.count)
            lines.append(f"{name:{width}}  {row['precision']:9.3f}  {row['recall']:6.3f}  {row['f1']:5.3f}"
                         f"  {support:7d}")
        lines.append(f"accuracy {self.accuracy:.4f}  loss {self.loss:.4f}  ({self.count} samples)")
        return "\n".join(lines)

    def plot_confusion_matrix(self, path: str | os.PathLike, *, normalize: bool = False) -> Path:
        """Write the confusion matrix as a PNG (rows: true class, columns: predicted).

        Args:
            path: the PNG file.
            normalize: show each row as shares of its true class instead of counts.

        Returns:
            The path written.

        Raises:
            TypeError: ``normalize`` is not a bool.
            ImportError: matplotlib is not installed.

        Example:
            >>> report.plot_confusion_matrix("runs/pets/confusion_matrix.png")
        """
        from ._plots import confusion_figure

        check_bool("normalize", normalize)
        return _save_png(confusion_figure(self.confusion_matrix, self.classes, normalize), path)

    def plot_top_losses(self, path: str | os.PathLike, *, columns: int = 3) -> Path:
        """Write the most confidently wrong samples as a PNG grid.

        Each tile shows the image (read from its file when the path is known, else the
        input tensor with the normalisation undone) titled ``true -> predicted``, the loss
        and the predicted class's probability.

        Args:
            path: the PNG file.
            columns: tiles per row.

        Returns:
            The path written.

        Raises:
            TypeError, ValueError: ``columns`` is not an int >= 1.
            ImportError: matplotlib is not installed.

        Example:
            >>> report.plot_top_losses("runs/pets/top_losses.png")
        """
        from ._plots import top_losses_figure

        check_int("columns", columns, minimum=1)
        return _save_png(top_losses_figure(self.top_losses, self.images, self.stats, columns), path)

    def to_html(self, path: str | os.PathLike, *, history: Any = None, settings: Any = None,
                model: Any = None, title: str = "transferlearn report") -> Path:
        """Write the report as one self-contained HTML page (``html_report.write_html``).

        Args:
            path: the ``.html`` file.
            history: the ``History`` of ``fit``: learning curves with the kept epoch marked.
            settings: ``{name: value}`` shown as tables (strategy, image size, counts, ...).
            model: the network or ``Classifier``: a class-activation overlay per top loss.
            title: the page's title.

        Returns:
            The path written.

        Example:
            >>> report.to_html("runs/pets/report.html", history=history, model=model)
        """
        from .html_report import write_html

        return write_html(self, path, history=history, settings=settings, model=model, title=title)


def _save_png(figure: Any, path: str | os.PathLike) -> Path:
    check_path("path", path)
    return atomic_write(path, lambda f: figure.savefig(f, format="png", dpi=100))


def classification_report(model_or_classifier: nn.Module | Classifier, data: Dataset | DataLoader,
                          classes: Sequence[str] | None = None, *, top_losses: int = 9,
                          batch_size: int = 64, device: Any = None) -> ClassificationReport:
    """Accuracy, per-class precision/recall/F1/support, confusion matrix and top losses.

    The model runs once over ``data`` in eval mode under ``torch.inference_mode`` (every
    module's mode is restored afterwards). The numbers follow scikit-learn's
    ``classification_report`` and ``confusion_matrix`` with ``zero_division=0``; every class
    is reported, including those with no samples.

    Args:
        model_or_classifier: a model returning logits, or a ``Classifier`` (its classes and
            normalisation are used).
        data: a Dataset or a DataLoader yielding ``(image tensor, label)``; a loader is read
            as it is (its sampler, batch size and workers are kept).
        classes: class names; default: the classifier's, else the dataset's ``.classes``,
            else ``"0"``, ``"1"``, ... . Must equal the dataset's ``.classes`` when it has one.
        top_losses: how many of the most confidently wrong samples to keep.
        batch_size: batch size when ``data`` is a Dataset.
        device: where to run (default: the model's device).

    Returns:
        A ``ClassificationReport`` (``.to_dict()``, ``.plot_confusion_matrix(path)``,
        ``.plot_top_losses(path)``, ``str()`` for a table).

    Raises:
        TypeError: wrong argument types.
        ValueError: empty data, labels outside the classes, no labels, classes that differ
            from the dataset's or the model's output width.

    Example:
        >>> report = classification_report(load_classifier("runs/pets"), data.val)
        >>> report.accuracy, report.per_class["cat"]["recall"]
        (0.93, 0.95)
    """
    check_int("top_losses", top_losses, minimum=0)
    check_int("batch_size", batch_size, minimum=1)
    model, names, stats = setup(model_or_classifier, data, classes)
    loader = data if isinstance(data, DataLoader) else DataLoader(data, batch_size=batch_size, shuffle=False)
    worst = Worst(top_losses)
    targets, probs, losses = run_model(model, loader, run_device(model, device), worst)
    n = probs.shape[1]
    names = names if names is not None else tuple(str(i) for i in range(n))
    if len(names) != n:
        raise ValueError(f"the model gives {n} outputs but classes has {len(names)} names")
    predicted = probs.argmax(1)
    cm = torch.bincount(targets * n + predicted, minlength=n * n).reshape(n, n)
    precision, recall, f1 = scores(cm)
    support = cm.sum(1)
    rows = {c: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
                "support": int(support[i])} for i, c in enumerate(names)}
    weights = support.double() / support.sum()
    known = known_order(data)
    top = [{"index": i, "path": sample_path(dataset_of(data), i) if known else None,
            "true": names[int(targets[i])], "predicted": names[int(predicted[i])], "loss": loss,
            "probability": float(probs[i, predicted[i]])} for loss, i, _ in worst.rows]
    return ClassificationReport(
        classes=names, count=len(targets), accuracy=float((predicted == targets).double().mean()),
        loss=float(losses.double().mean()), per_class=rows,
        macro_avg={k: float(v.mean()) for k, v in (("precision", precision), ("recall", recall), ("f1", f1))},
        weighted_avg={k: float((v * weights).sum()) for k, v in
                      (("precision", precision), ("recall", recall), ("f1", f1))},
        confusion_matrix=cm.tolist(), top_losses=top, images=tuple(x for _, _, x in worst.rows),
        stats=(list(stats[0]), list(stats[1])))
