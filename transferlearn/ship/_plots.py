"""Figures for ``ClassificationReport``: matplotlib's object API only, no pyplot, no backend switch."""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch

from ..base import literal_text

__all__: list[str] = []


def _figure(width: float, height: float) -> Any:
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise ImportError("plots need matplotlib: pip install 'transferlearn[plot]'") from None
    figure = Figure(figsize=(width, height))
    FigureCanvasAgg(figure)          # this figure renders with Agg; the global backend is untouched
    return figure


def confusion_figure(matrix: list[list[int]], classes: Sequence[str], normalize: bool) -> Any:
    """A heat map of ``matrix`` (rows true, columns predicted) with each cell's value written in."""
    counts = torch.tensor(matrix, dtype=torch.float64)
    values = counts / counts.sum(1, keepdim=True).clamp(min=1) if normalize else counts
    n = len(classes)
    side = min(max(4.0, 0.6 * n + 2.5), 30.0)
    figure = _figure(side, side)
    ax = figure.add_subplot()
    image = ax.imshow(values.numpy(), cmap="Blues", vmin=0)
    figure.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    ax.set_xticks(range(n), labels=list(classes), rotation=45, ha="right")
    ax.set_yticks(range(n), labels=list(classes))
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title("confusion matrix" + (" (share of each true class)" if normalize else ""))
    top = float(values.max()) if values.numel() else 0.0
    if n <= 30:
        for i in range(n):
            for j in range(n):
                text = f"{values[i, j]:.2f}" if normalize else str(int(values[i, j]))
                ax.text(j, i, text, ha="center", va="center", fontsize=8,
                        color="white" if values[i, j] > top / 2 else "black")
    literal_text(figure).tight_layout()              # class names are text, never mathtext
    return figure


def _picture(row: dict[str, Any], tensor: torch.Tensor | None, stats: tuple[list, list]) -> Any:
    """What to draw for one top-loss sample: the file when known, else the input un-normalised."""
    if row.get("path"):
        try:
            from ..data.images import load_image
            from ..data.transforms import to_rgb

            image = to_rgb(load_image(row["path"]))
            return image.permute(1, 2, 0).numpy() if isinstance(image, torch.Tensor) else image
        except (OSError, ValueError):
            pass
    if tensor is None or tensor.ndim != 3:
        return None
    mean = torch.tensor(stats[0]).view(-1, 1, 1)
    std = torch.tensor(stats[1]).view(-1, 1, 1)
    image = tensor.float() * std + mean if tensor.shape[0] == len(stats[0]) else tensor.float()
    return image.clamp(0, 1).permute(1, 2, 0).squeeze(-1).numpy()


def top_losses_figure(rows: list[dict[str, Any]], images: Sequence[torch.Tensor],
                      stats: tuple[list, list], columns: int) -> Any:
    """A grid of the top-loss samples, each titled ``true -> predicted``, loss and probability."""
    if not rows:
        figure = _figure(4, 1.5)
        figure.text(0.5, 0.5, "no misclassified samples", ha="center", va="center")
        return literal_text(figure)
    columns = min(columns, len(rows))
    lines = math.ceil(len(rows) / columns)
    figure = _figure(3 * columns, 3.2 * lines)
    for k, row in enumerate(rows):
        ax = figure.add_subplot(lines, columns, k + 1)
        picture = _picture(row, images[k] if k < len(images) else None, stats)
        if picture is not None:
            ax.imshow(picture, cmap="gray" if getattr(picture, "ndim", 3) == 2 else None)
        ax.set_axis_off()
        ax.set_title(f"{row['true']} -> {row['predicted']}\nloss {row['loss']:.2f}, p {row['probability']:.2f}",
                     fontsize=9)
    literal_text(figure).tight_layout()              # class names are text, never mathtext
    return figure
