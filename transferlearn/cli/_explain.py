"""``transferlearn explain RUN_DIR IMAGE... --out DIR``: one heat-map overlay PNG per image, in a folder
marked as explain's (``.transferlearn-overlays``), so that the folder scan never reads it as a class."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..base import atomic_write
from ..data.images import IMAGE_EXTENSIONS
from ..data.scan import OVERLAYS_MARKER
from ..ship.classifier import load_classifier
from ..ship.heatmap import save_overlay

__all__ = ["explain"]


def _overlay_names(images: list[str]) -> list[str]:
    """``<stem>.cam.png`` per image; a stem met again gets ``-2``, ``-3``, ... so none is overwritten."""
    names: list[str] = []
    for image in images:
        stem, k = Path(image).stem, 2
        name = f"{stem}.cam.png"
        while name in names:
            name, k = f"{stem}-{k}.cam.png", k + 1
        names.append(name)
    return names


_MARKER_TEXT = ("heat-map overlays written by `transferlearn explain`: load_image_folder and `transferlearn fit` "
                "never read this folder as a class\n")


def _overlay_files(out: Path, flag: str, images: list[str]) -> list[Path]:
    """The overlay file per image; refused: --out a file, one of them there already, or image files in
    --out that explain did not write (a class folder of the data: overlays there would be trained on)."""
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"--out {flag!r} is a file; give a folder for the overlays")
    files = [out / name for name in _overlay_names(images)]
    taken = [str(f) for f in files if f.exists()]
    if taken:
        raise ValueError(f"--out {flag!r} already holds {taken[0]}; give a new folder (nothing is overwritten)")
    ours = (out / OVERLAYS_MARKER).is_file()
    others = sorted(p.name for p in out.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS
                    and not (ours and p.name.endswith(".cam.png"))) if out.is_dir() else []
    if others:
        raise ValueError(f"--out {flag!r} holds image files explain did not write ({others[0]!r}, {len(others)} in "
                         "all): it may be a class folder of your data, where overlays would become training images; "
                         "give a new folder")
    return files


def explain(args: argparse.Namespace) -> None:
    """``transferlearn explain RUN_DIR IMAGE... --out DIR [--target CLASS]``: one overlay PNG per image."""
    clf = load_classifier(args.run_dir)
    if args.target is not None and args.target not in clf.classes:
        raise ValueError(f"--target {args.target!r} is not one of the classifier's classes {list(clf.classes)}")
    out = Path(args.out)
    files = _overlay_files(out, args.out, list(args.images))
    results = clf.predict(list(args.images), batch_size=args.batch_size)    # every file is read before any write
    out.mkdir(parents=True, exist_ok=True)
    if not (out / OVERLAYS_MARKER).is_file():               # the folder scan never reads it as a class
        atomic_write(out / OVERLAYS_MARKER, lambda f: f.write(_MARKER_TEXT.encode()))
    for image, file, row in zip(args.images, files, results):
        cam = clf.explain(image, target=args.target or row["class"], method=args.method)[0]
        save_overlay(image, cam, file)
        print(f"{image}\t{row['class']}\t{row['probability']:.4f}\t{file}")
