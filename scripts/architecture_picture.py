"""Draw docs/img/layers.png: the package's layers, bottom to top, with the modules of each (read
from the source tree, so the picture stays true), and the one direction imports may run.

    .venv/bin/python scripts/architecture_picture.py
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "transferlearn"
LAYERS = [  # bottom first: (folder or module, what it holds)
    ("base.py", "argument checks, atomic writes, eval mode, device"),
    ("model", "load, heads, anatomy (stages, no-decay, data config), freezing, groups"),
    ("data", "the one image reader, transforms, caches, folder datasets, batches"),
    ("train", "Trainer loop, recipe & phases, callbacks, feature cache, checkpoints"),
    ("ship", "saved classifier, report (+ HTML, CAM), ONNX"),
    ("cli", "the command line: a thin shell"),
]
COLOURS = ["#d9d9d9", "#c6dbef", "#c7e9c0", "#fdd0a2", "#dadaeb", "#fcbba1"]


def modules(entry: str) -> str:
    if entry.endswith(".py"):
        return ""
    names = sorted(p.stem for p in (PKG / entry).glob("*.py") if p.stem != "__init__")
    lines, line = [], ""
    for name in names:
        if len(line) + len(name) > 88:
            lines.append(line.rstrip(", "))
            line = ""
        line += name + ", "
    return "\n".join(lines + [line.rstrip(", ")])


def main() -> Path:
    fig, ax = plt.subplots(figsize=(11, 8.2))
    ax.set_xlim(0, 11)
    ax.set_ylim(0, len(LAYERS) * 1.35 + 0.2)
    ax.axis("off")
    for i, ((entry, what), colour) in enumerate(zip(LAYERS, COLOURS)):
        y = 0.2 + i * 1.35
        ax.add_patch(FancyBboxPatch((0.3, y), 9.6, 1.1, boxstyle="round,pad=0.02", fc=colour, ec="#555555"))
        ax.text(0.5, y + 0.82, f"transferlearn/{entry}", fontsize=11, fontweight="bold", va="center")
        ax.text(3.3, y + 0.82, what, fontsize=8.5, va="center", style="italic")
        ax.text(0.5, y + 0.38, modules(entry), fontsize=7.5, va="center", family="monospace")
    ax.add_patch(FancyArrowPatch((10.4, len(LAYERS) * 1.35 - 0.2), (10.4, 0.6), arrowstyle="-|>",
                                 mutation_scale=18, lw=1.5, color="#333333"))
    ax.text(10.55, len(LAYERS) * 0.68, "imports run\ndownwards only", rotation=90, va="center", fontsize=9)
    ax.set_title("transferlearn 0.2: one concern per layer", fontsize=13)
    out = ROOT / "docs" / "img" / "layers.png"
    fig.savefig(out, dpi=110, bbox_inches="tight")
    return out


if __name__ == "__main__":
    print(main())
