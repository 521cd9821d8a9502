"""The picture of docs/look.md: a demo-like run's report.html, drawn with matplotlib from its own content.

    python scripts/report_picture.py [--out runs/look] [--picture docs/img/report.png]

Writes the digits (as the demo does: examples/data.py, 60 training images per class) to
OUT/digits, runs ``transferlearn fit`` on them (MobileNetV2 IMAGENET1K_V1 from the torch
cache, fine_tune_all, 5 epochs, 128 px: a 4x4 last
feature map, where the demo's 64 px give 2x2) into OUT/run, and ``transferlearn evaluate --html``
on the held-out test folder. No browser exists here, so the picture is not a screenshot: it
is composed from what OUT/run/report.html holds: its title and summary, its embedded PNGs
(the learning curves, the top losses' inputs and overlays) and the numbers of its tables
(per-class scores, confusion counts), laid out roughly as the page lays them out.
"""

from __future__ import annotations

import argparse
import base64
import io
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


class _Page(HTMLParser):
    """The page's headings, paragraphs, tables (rows of cell text) and images (bytes, alt), in order."""

    def __init__(self, source: str) -> None:
        super().__init__(convert_charrefs=True)
        self.title, self.summary, self.tables, self.images, self.captions = "", "", [], [], []
        self._stack: list[str] = []
        self._cell: list[str] | None = None
        self._card: list[str] | None = None
        self._summary = False
        self.feed(source)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self._stack.append(tag)
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "img":
            self._stack.pop()
            self.images.append((base64.b64decode(attrs["src"].split(",", 1)[1]), attrs.get("alt", "")))
        elif tag == "div" and attrs.get("class") == "card":
            self._card = []
        elif tag == "p" and attrs.get("class") == "summary":
            self._summary = True

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1][-1].append("".join(self._cell))
            self._cell = None
        if tag == "div" and self._card is not None and self._stack.count("div") == 2:
            self.captions.append(self._card)
            self._card = None
        if tag == "p":
            self._summary = False
        if self._stack:
            self._stack.pop()

    def handle_data(self, data):
        where = self._stack[-1] if self._stack else ""
        if where == "h1":
            self.title += data
        if self._summary:
            self.summary += data
        if self._cell is not None:
            self._cell.append(data)
        if self._card is not None:
            self._card.append(data)


def _run(out: Path) -> Path:
    sys.path.insert(0, str(ROOT / "examples"))
    from transferlearn.cli import main

    from data import write_digits

    train, test = write_digits(out / "digits", train_per_class=60)
    run = out / "run"
    if main(["fit", str(train), "--out", str(run), "--weights", "IMAGENET1K_V1", "--strategy", "fine_tune_all",
             "--epochs", "5", "--image-size", "128", "--val-fraction", "0.25", "--workers", "0"]) != 0:
        raise SystemExit("transferlearn fit failed")
    if main(["evaluate", str(run), str(test), "--html", str(run / "test_report.html")]) != 0:
        raise SystemExit("transferlearn evaluate failed")
    return run / "report.html"


def _picture(page: _Page, path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(12, 15.5), facecolor="white")
    FigureCanvasAgg(figure)
    grid = figure.add_gridspec(4, 6, height_ratios=[0.25, 1.25, 1.9, 1.45], hspace=0.35)
    top = figure.add_subplot(grid[0, :])
    top.set_axis_off()
    top.text(0, 0.75, page.title, fontsize=17, weight="bold", va="center")
    top.text(0, 0.15, " ".join(page.summary.split()), fontsize=11, va="center")
    curves = figure.add_subplot(grid[1, :])
    curves.imshow(np.asarray(Image.open(io.BytesIO(page.images[0][0])).convert("RGB")))
    curves.set_axis_off()
    curves.set_title("Learning curves (the kept epoch marked)", loc="left", fontsize=12)
    per_class = next(t for t in page.tables if t[0][:2] == ["class", "precision"])
    ax = figure.add_subplot(grid[2, :3])
    ax.set_axis_off()
    ax.set_title("Per class (worst first)", loc="left", fontsize=12)
    rows = [[r[0]] + [f"{float(v):.3f}" for v in r[1:4]] + [r[4]] for r in per_class[1:]]
    ax.table(cellText=rows, colLabels=per_class[0], loc="upper left", cellLoc="right").scale(1, 1.25)
    counts = next(t for t in page.tables if t[0][0] == "true \\ predicted")
    matrix = np.array([[int(v) for v in r[1:]] for r in counts[1:]])
    ax = figure.add_subplot(grid[2, 3:])
    ax.imshow(matrix, cmap="Blues")
    for (i, j), v in np.ndenumerate(matrix):
        ax.text(j, i, str(v), ha="center", va="center", fontsize=8, color="white" if v > matrix.max() / 2 else "black")
    ax.set_xticks(range(len(matrix)), labels=counts[0][1:])
    ax.set_yticks(range(len(matrix)), labels=[r[0] for r in counts[1:]])
    ax.set_xlabel("predicted"), ax.set_ylabel("true")
    ax.set_title("Confusion matrix (counts)", loc="left", fontsize=12)
    cards = page.images[1:]
    for k in range(min(3, len(cards) // 2)):
        for side in range(2):
            ax = figure.add_subplot(grid[3, 2 * k + side])
            ax.imshow(np.asarray(Image.open(io.BytesIO(cards[2 * k + side][0])).convert("RGB")))
            ax.set_axis_off()
        classes, where = " ".join("".join(page.captions[k][:-1]).split()), page.captions[k][-1]
        ax.text(-0.05, -0.08, f"{classes}\n.../{'/'.join(Path(where).parts[-2:])}", transform=ax.transAxes,
                ha="center", va="top", fontsize=10)
    figure.text(0.125, 0.255, "Top losses: the input and where the network looked (HiResCAM)", fontsize=12)
    from transferlearn.base import literal_text
    literal_text(figure)                   # the page's class names and title are text, never mathtext
    figure.savefig(path, dpi=80, bbox_inches="tight", metadata={"Software": None})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "runs" / "look"))
    parser.add_argument("--picture", default=str(ROOT / "docs" / "img" / "report.png"))
    parser.add_argument("--report", default=None, help="draw this report.html instead of running fit")
    args = parser.parse_args()
    report = Path(args.report) if args.report else _run(Path(args.out))
    _picture(_Page(report.read_text(encoding="utf-8")), Path(args.picture))
    print(f"drew {report} as {args.picture}")


if __name__ == "__main__":
    main()
