"""The checks of ``load_image_folder``'s arguments and of what it found (private to ``data``)."""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path
from typing import Any

from ..base import check_bool, check_float, check_int, check_path, describe
from .scan import RUN_MARKERS, Scan

__all__: list[str] = []


def check_classes(scan: Scan, min_classes: int) -> None:
    """At least ``min_classes`` classes, before any file is decoded; runs found are warned."""
    if scan.runs:
        markers = " or ".join(RUN_MARKERS)
        warnings.warn(f"left out {len(scan.runs)} folder(s) holding {markers} (a transferlearn run, saved "
                      f"classifier or explain overlays, not a class): {', '.join(map(repr, scan.runs))}; they are "
                      "listed in .skipped. Keep run folders outside the data folder", UserWarning, stacklevel=3)
    files = next(iter(scan.parts.values()))
    if len(files) < min_classes:
        counts = ", ".join(f"{name!r}: {len(paths)} images" for name, paths in files.items())
        raise ValueError(f"found {len(files)} class folder(s) ({counts}); a classifier needs at least "
                         f"{min_classes} classes: add a folder of images per class (min_classes={min_classes})")


def check_options(val_fraction: Any, seed: Any, flags: dict[str, Any], check: Any, max_imbalance: Any) -> None:
    check_float("val_fraction", val_fraction, minimum=-math.inf)     # the type; the range below, one message
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction must be >= 0 and < 1 (some images must train), got {val_fraction!r}")
    check_int("seed", seed)
    for name, value in flags.items():
        check_bool(name, value)
    if check not in ("decode", "header"):
        raise ValueError(f"check must be 'decode' (full decode) or 'header' (Image.verify), got {describe(check)}")
    if max_imbalance is not None:
        check_float("max_imbalance", max_imbalance, minimum=1.0)


def check_root(root: Any) -> Path:
    root = check_path("root", root)
    if not root.exists():
        raise FileNotFoundError(f"image folder {str(root)!r} does not exist")
    if not root.is_dir():
        raise NotADirectoryError(f"image folder {str(root)!r} is a file, not a folder of class folders")
    return root


def warn_imbalance(counts: dict[str, dict[str, int]], max_imbalance: float | None) -> None:
    total = {c: counts["train"][c] + counts["val"][c] for c in counts["train"]}
    big, small = max(total, key=total.get), min(total, key=total.get)   # type: ignore[arg-type]
    if max_imbalance is not None and total[big] > max_imbalance * total[small]:
        warnings.warn(f"class imbalance: {big!r} has {total[big]} images, {small!r} has {total[small]} "
                      f"(ratio {total[big] / total[small]:.1f} > max_imbalance={max_imbalance:g}); consider "
                      "balance='sampler' (class-balanced batches) or class weights in the loss", UserWarning,
                      stacklevel=3)


def drop_broken(files: dict[str, list[str]], broken: dict[str, str], folder: Path) -> dict[str, list[str]]:
    kept = {name: [p for p in paths if p not in broken] for name, paths in files.items()}
    for name, paths in kept.items():
        if not paths:
            where = str(folder / name)
            reasons = [r for p, r in broken.items() if p == where or p.startswith(where + os.sep)]
            raise ValueError(f"class folder {where!r} has no readable images "
                             f"({len(reasons)} skipped as broken, e.g. {reasons[0]!r})")
    return kept
