"""Building blocks of ``report.html``: escaped text, tables, embedded PNGs, the page's CSS.

Everything here returns strings of HTML in which every piece of user text (class names,
paths, settings) has gone through ``html.escape``; pictures are ``data:image/png;base64``
URIs, so the page refers to nothing outside itself.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from collections.abc import Mapping
from typing import Any, Sequence

import torch
from PIL import Image

from ..base import literal_text

__all__: list[str] = []

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif;
       margin: 2em auto; max-width: 70em; padding: 0 1em; color: #1a1a1a; line-height: 1.4; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; } h2 { font-size: 1.25em; border-bottom: 1px solid #ccc;
     padding-bottom: 0.2em; margin-top: 1.8em; } h3 { font-size: 1.05em; margin: 1em 0 0.3em; }
.summary { font-size: 1.1em; } .note { color: #555; font-style: italic; }
table { border-collapse: collapse; margin: 0.4em 0 1em; font-size: 0.9em; }
th, td { border: 1px solid #bbb; padding: 0.2em 0.5em; text-align: left; vertical-align: top; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
thead th { background: #eef1f6; } tr.kept td { font-weight: bold; background: #fff6d5; }
.scroll { overflow-x: auto; } img.figure { max-width: 100%; height: auto; }
.cards { display: flex; flex-wrap: wrap; gap: 0.8em; }
.card { border: 1px solid #ccc; padding: 0.5em; width: 19em; break-inside: avoid; page-break-inside: avoid; }
.card img { width: 9em; height: auto; image-rendering: auto; } .card .path { font-size: 0.8em;
     word-break: break-all; color: #333; } footer { margin-top: 2em; font-size: 0.8em; color: #666; }
@media print { body { margin: 0; max-width: none; } h2 { break-after: avoid; page-break-after: avoid; }
     table, img.figure { break-inside: avoid; page-break-inside: avoid; } .scroll { overflow: visible; } }
"""


def esc(value: Any) -> str:
    """``value`` as text, with ``<``, ``>``, ``&`` and both quotes escaped."""
    return html.escape(value if isinstance(value, str) else text(value), quote=True)


def text(value: Any) -> str:
    """A short readable form: 4 significant digits for floats, a dash for None, JSON for containers."""
    if value is None:
        return "\u2014"
    if isinstance(value, float):
        return "\u2014" if not math.isfinite(value) else f"{value:.4g}"
    if isinstance(value, (bool, int, str)):
        return str(value)
    if isinstance(value, (Mapping, list, tuple)):
        return json.dumps(value, default=str, ensure_ascii=False)
    return str(value)


def cell(value: Any, *, header: bool = False, style: str | None = None) -> str:
    tag = "th" if header else "td"
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    attrs = (' class="num"' if number else "") + (f' style="{style}"' if style else "")
    return f"<{tag}{attrs}>{esc(value)}</{tag}>"


def table(header: Sequence[Any] | None, rows: Sequence[Sequence[Any]], *, row_class: Sequence[str] = ()) -> str:
    """An HTML table; the first column of each row is a header cell when ``header`` is given."""
    head = "<thead><tr>" + "".join(cell(h, header=True) for h in header) + "</tr></thead>" if header else ""
    body = []
    for i, row in enumerate(rows):
        cls = f' class="{row_class[i]}"' if i < len(row_class) and row_class[i] else ""
        body.append(f"<tr{cls}>" + "".join(cell(v) for v in row) + "</tr>")
    return f'<div class="scroll"><table>{head}<tbody>{"".join(body)}</tbody></table></div>'


def shaded(value: float, share: float, label: str) -> str:
    """A table cell shaded blue in proportion to ``share`` (0 white, 1 dark), its label inside."""
    share = min(max(share, 0.0), 1.0)
    r, g, b = (round(255 - share * (255 - c)) for c in (8, 69, 148))
    colour = "#fff" if share > 0.55 else "#000"
    return (f'<td class="num" style="background: rgb({r}, {g}, {b}); color: {colour}" '
            f'title="{esc(value)}">{esc(label)}</td>')


def png_uri(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def img(data: bytes, alt: str, css: str = "") -> str:
    cls = f' class="{css}"' if css else ""
    return f'<img{cls} src="{png_uri(data)}" alt="{esc(alt)}">'


def png_bytes(picture: Image.Image, side: int | None = None) -> bytes:
    """``picture`` as PNG bytes, shrunk so its longer side is at most ``side``."""
    if side is not None and max(picture.size) > side:
        scale = side / max(picture.size)
        picture = picture.resize((max(1, round(picture.width * scale)), max(1, round(picture.height * scale))),
                                 Image.Resampling.LANCZOS)
    out = io.BytesIO()
    picture.save(out, format="PNG", optimize=True)
    return out.getvalue()


def figure_png(figure: Any) -> bytes:
    out = io.BytesIO()
    figure.savefig(out, format="png", dpi=100, metadata={"Software": None})  # no URL inside the PNG either
    return out.getvalue()


def input_picture(tensor: torch.Tensor, stats: tuple[Sequence[float], Sequence[float]]) -> torch.Tensor | None:
    """A normalised ``(C, H, W)`` network input back to an image in [0, 1], or None if it is no image."""
    if not isinstance(tensor, torch.Tensor) or tensor.ndim != 3 or tensor.shape[0] not in (1, 3):
        return None
    mean, std = torch.tensor(stats[0]).view(-1, 1, 1), torch.tensor(stats[1]).view(-1, 1, 1)
    picture = tensor.float().cpu() * std + mean if tensor.shape[0] == len(stats[0]) else tensor.float().cpu()
    return picture.clamp(0, 1)


def curves_png(records: Sequence[Mapping[str, Any]]) -> bytes | None:
    """Loss and accuracy per epoch with the kept epoch marked; None without matplotlib."""
    try:
        from ._plots import _figure
        figure = _figure(10, 3.6)
    except ImportError:
        return None
    epochs = [r["epoch"] for r in records]
    kept = next((r for r in records if r.get("best") is True), None)
    switch = next((r["epoch"] for r in records if r.get("phase") == "finetune"), None)
    for ax, metric in zip(figure.subplots(1, 2), ("loss", "accuracy")):
        for split in ("train", "val"):
            values = [float("nan") if r.get(f"{split}_{metric}") is None else r[f"{split}_{metric}"] for r in records]
            if any(v == v for v in values):
                ax.plot(epochs, values, marker="o", label=split)
        if switch is not None and switch > epochs[0]:
            ax.axvline(switch - 0.5, linestyle=":", color="grey", label="fine-tune starts")
        if kept is not None:
            ax.axvline(kept["epoch"], linestyle="--", color="#c0392b", label=f"kept: epoch {kept['epoch']}")
            if kept.get(f"val_{metric}") is not None:
                ax.plot([kept["epoch"]], [kept[f"val_{metric}"]], marker="*", markersize=14, color="#c0392b")
        ax.set_xlabel("epoch"), ax.set_title(metric), ax.legend(fontsize="small")
        ax.set_xticks(epochs if len(epochs) <= 20 else epochs[::max(1, len(epochs) // 10)])
    literal_text(figure).tight_layout()
    return figure_png(figure)
