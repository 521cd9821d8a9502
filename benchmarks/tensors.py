"""The benchmarks' datasets decoded once to uint8 tensors at a fixed square size.

``decoded(name, size=S)`` reads a source folder of ``benchmarks.sources`` (chess, elpv,
digits), resizes each image so its shorter side is ``S`` and centre crops it, and caches the
result as ``<root>/tensors/<name>-<S>.pt``: experiments never pay JPEG decoding twice.

Example:
    >>> from benchmarks.tensors import decoded
    >>> data = decoded("chess", size=128)   # images: uint8 (556, 3, 128, 128)
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from .sources import SOURCES, data_root
from .util import atomic_write, check_int, describe

__all__ = ["Decoded", "decoded"]

_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")


@dataclass(frozen=True)
class Decoded:
    """A folder of images decoded once: ``images`` uint8 ``(N, C, S, S)``, ``labels`` int64 ``(N,)``,
    ``classes`` (the sub-folder names, sorted) and ``files`` (relative paths, in order)."""

    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]
    files: list[str]


def _decode(path: Path, size: int, mode: str) -> torch.Tensor:
    """One file as a uint8 ``(C, size, size)`` tensor: shorter side to ``size``, centre crop."""
    with Image.open(path) as img:
        img.draft(mode, (size, size))  # JPEG: decode at a reduced scale when much larger
        img = ImageOps.exif_transpose(img).convert(mode)
        img = ImageOps.fit(img, (size, size), Image.Resampling.BILINEAR)
    return torch.from_numpy(np.asarray(img).copy()).reshape(size, size, -1).permute(2, 0, 1)


def decoded(name: str, *, size: int, root: str | os.PathLike | None = None) -> Decoded:
    """A dataset decoded once at ``size`` x ``size`` and cached as ``<root>/tensors/<name>-<size>.pt``.

    Photos are resized (bilinear, antialiased) so the shorter side is ``size`` and centre
    cropped; ``chess`` keeps RGB, ``elpv`` and ``digits`` stay 1-channel greyscale.

    Args:
        name: ``"chess"``, ``"elpv"`` or ``"digits"``.
        size: the square side in pixels.
        root: the cache folder (default ``$TRANSFERLEARN_DATA``, else ``<repo>/.cache/data``).

    Returns:
        A ``Decoded`` with uint8 images in class-folder order.

    Raises:
        TypeError: wrong argument types.
        ValueError: unknown ``name`` or ``size < 8``.

    Example:
        >>> decoded("digits", size=32).images.shape
        torch.Size([1797, 1, 32, 32])
    """
    if name not in SOURCES:
        raise ValueError(f"name must be one of {sorted(SOURCES)}, got {describe(name)}")
    check_int("size", size, minimum=8)
    root = data_root(root)
    cache = root / "tensors" / f"{name}-{size}.pt"
    if cache.is_file():
        state = torch.load(cache, weights_only=True)
        return Decoded(state["images"], state["labels"], state["classes"], state["files"])
    fetch, mode = SOURCES[name]
    folder = fetch(root)
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir())
    files = [f for c in classes for f in sorted((folder / c).iterdir()) if f.suffix.lower() in _IMAGE_SUFFIXES]
    images = torch.stack([_decode(f, size, mode) for f in files])
    labels = torch.tensor([classes.index(f.parent.name) for f in files])
    rel = [f"{f.parent.name}/{f.name}" for f in files]
    atomic_write(cache, lambda f: torch.save({"images": images, "labels": labels, "classes": classes,
                                              "files": rel}, f))
    return Decoded(images, labels, classes, rel)
