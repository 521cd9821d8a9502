"""From a folder of images to train and validation datasets: ``load_image_folder``.

Two layouts: ``root/train/<class>/...`` with ``root/val/<class>/...``, or ``root/<class>/...``
split here, stratified per class and reproducible for a seed. Every file is checked before
training starts (a full decode by default, which also fills the decoded-image cache), so a
broken file is an error at once, not in epoch 3.
"""

from __future__ import annotations

import math
import os
import warnings
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from ..base import check_float, check_int, describe
from .imagefiles import ImageCache, ImageFiles, prepare_file
from .images import IMAGE_EXTENSIONS, ImageReadError, check_header
from .transforms import ImagePreprocess, imagenet_transform

__all__ = ["FolderData", "load_image_folder", "split_counts"]

Samples = list[tuple[str, int]]


def _is_image(name: str) -> bool:
    return not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS)


def _images_under(folder: Path) -> list[str]:
    """Image files anywhere under ``folder`` (hidden files and folders skipped), sorted."""
    found = []
    for top, dirs, files in os.walk(folder, followlinks=True):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        found += [os.path.join(top, f) for f in files if _is_image(f)]
    return sorted(found)


def _class_files(folder: Path) -> dict[str, list[str]]:
    """``{class name: sorted image paths}`` for the visible sub-folders of ``folder``."""
    names = sorted(e.name for e in os.scandir(folder) if e.is_dir() and not e.name.startswith("."))
    if not names:
        loose = sum(_is_image(e.name) for e in os.scandir(folder) if e.is_file())
        hint = f" (it holds {loose} images directly: put them in one folder per class)" if loose else ""
        raise ValueError(f"{str(folder)!r} has no class folders{hint}; expected root/<class>/<image>, "
                         "or root/train/<class>/<image> with root/val/<class>/<image>")
    files = {name: _images_under(folder / name) for name in names}
    for name, paths in files.items():
        if not paths:
            raise ValueError(f"class folder {str(folder / name)!r} has no image files "
                             f"({', '.join(IMAGE_EXTENSIONS)}); remove the folder or add images")
    return files


def split_counts(n: int, val_fraction: float) -> int:
    """How many of a class's ``n`` images go to validation.

    ``round(n * val_fraction)`` rounded half up, then at least 1 and at most ``n - 1`` when
    ``n >= 2`` and ``val_fraction > 0``: every class keeps a training image and, with two or
    more images, gets a validation image. A class of one image is training-only.

    Example:
        >>> [split_counts(n, 0.2) for n in (1, 2, 3, 7, 8, 10)]
        [0, 1, 1, 1, 2, 2]
    """
    if val_fraction == 0 or n < 2:
        return 0
    return min(max(1, math.floor(n * val_fraction + 0.5)), n - 1)


def _split(files: dict[str, list[str]], val_fraction: float, seed: int) -> tuple[Samples, Samples]:
    """Stratified split: per class, a permutation drawn from (seed, class name)."""
    train: Samples = []
    val: Samples = []
    for label, (name, paths) in enumerate(files.items()):
        rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
        order = rng.permutation(len(paths))
        n_val = split_counts(len(paths), val_fraction)
        chosen = set(order[:n_val].tolist())
        val += [(p, label) for i, p in enumerate(paths) if i in chosen]
        train += [(p, label) for i, p in enumerate(paths) if i not in chosen]
    return train, val


def _scan(root: Path) -> tuple[str, dict[str, dict[str, list[str]]]]:
    """The layout and its files: ``{"train": ..., "val": ...}`` or ``{"all": ...}`` by class."""
    has = {name: (root / name).is_dir() for name in ("train", "val")}
    if has["train"] and has["val"]:
        train, val = _class_files(root / "train"), _class_files(root / "val")
        if list(train) != list(val):
            raise ValueError(f"{str(root)!r}: train and val have different classes (only in train: "
                             f"{sorted(set(train) - set(val))}, only in val: {sorted(set(val) - set(train))})")
        return "train/val", {"train": train, "val": val}
    if has["train"] or has["val"]:
        there, missing = ("train", "val") if has["train"] else ("val", "train")
        raise ValueError(f"{str(root)!r} has a {there!r} folder but no {missing!r} folder: give both "
                         f"(root/train/<class>, root/val/<class>), or one folder per class under root")
    return "split", {"all": _class_files(root)}


def _check_files(paths: list[str], check: str, transform: ImagePreprocess, cache: ImageCache | None,
                 draft: bool, workers: int) -> dict[str, str]:
    """Read every file (threads); fill the cache on the way. Returns ``{broken path: reason}``."""
    def one(path: str) -> str | None:
        try:
            if check == "header":
                check_header(path)
            else:
                tensor = prepare_file(path, transform, draft=draft)
                if cache is not None:
                    cache.put(path, tensor)
        except ImageReadError as exc:
            return exc.reason
        return None

    with ThreadPoolExecutor(max_workers=workers) as pool:
        reasons = list(pool.map(one, paths))
    return {path: reason for path, reason in zip(paths, reasons) if reason is not None}


def _drop_broken(files: dict[str, list[str]], broken: dict[str, str], folder: Path) -> dict[str, list[str]]:
    kept = {name: [p for p in paths if p not in broken] for name, paths in files.items()}
    for name, paths in kept.items():
        if not paths:
            raise ValueError(f"class folder {str(folder / name)!r} has no readable images "
                             f"({len(files[name])} skipped as broken, e.g. {broken[files[name][0]]!r})")
    return kept


class FolderData:
    """What ``load_image_folder`` returns: the two datasets and what went into them.

    Attributes:
        root: the folder read.
        layout: ``"train/val"`` (root/train + root/val) or ``"split"`` (split here).
        classes: sorted class folder names; labels index this list.
        train: the training ``ImageFiles``.
        val: the validation ``ImageFiles``, or None when ``val_fraction=0``.
        counts: ``{"train": {class: n}, "val": {class: n}}``.
        skipped: ``(path, reason)`` of each unreadable file left out (``skip_broken=True``).
        cache: the shared ``ImageCache`` (None when ``cache_bytes=0``).
    """

    def __init__(self, root: Path, layout: str, classes: list[str], train: ImageFiles,
                 val: ImageFiles | None, skipped: list[tuple[str, str]], cache: ImageCache | None) -> None:
        self.root, self.layout, self.classes = root, layout, classes
        self.train, self.val, self.skipped, self.cache = train, val, skipped, cache
        self.counts = {name: {c: 0 for c in classes} for name in ("train", "val")}
        for name, ds in (("train", train), ("val", val)):
            for label in (ds.targets if ds is not None else []):
                self.counts[name][classes[label]] += 1

    def loaders(self, batch_size: int = 32, *, num_workers: int | None = None, pin_memory: bool | None = None,
                shuffle: bool = True, **options: Any) -> tuple[DataLoader, DataLoader | None]:
        """DataLoaders for ``train`` (shuffled) and ``val`` (in order) with sensible defaults.

        Args:
            batch_size: images per batch.
            num_workers: worker processes; default 0 when the cache holds every image of both
                splits (reading memory needs no helpers), else ``os.cpu_count()`` capped at 8.
            pin_memory: default True exactly when CUDA is available.
            shuffle: shuffle the training loader.
            **options: any other ``DataLoader`` option (``generator``, ``drop_last``, ...), for both.
                ``persistent_workers`` defaults to True when there are workers.

        Returns:
            ``(train_loader, val_loader)``; ``val_loader`` is None when there is no validation split.

        Raises:
            TypeError, ValueError: bad ``batch_size``, ``num_workers``, ``pin_memory`` or ``shuffle``.

        Example:
            >>> train_loader, val_loader = tl.load_image_folder("photos").loaders(batch_size=64)
        """
        batch_size = check_int("batch_size", batch_size, minimum=1)
        workers = self._default_workers() if num_workers is None else check_int("num_workers", num_workers)
        for name, value in (("pin_memory", pin_memory), ("shuffle", shuffle)):
            if value is not None and not isinstance(value, bool):
                raise TypeError(f"{name} must be True or False, got {describe(value)}")
        options = {"persistent_workers": workers > 0, **options, "batch_size": batch_size, "num_workers": workers,
                   "pin_memory": torch.cuda.is_available() if pin_memory is None else pin_memory}
        train = DataLoader(self.train, shuffle=shuffle, **options)
        return train, (DataLoader(self.val, shuffle=False, **options) if self.val is not None else None)

    def _default_workers(self) -> int:
        everything = self.train.samples + (self.val.samples if self.val is not None else [])
        if self.cache is not None and all(path in self.cache for path, _ in everything):
            return 0
        return min(os.cpu_count() or 1, 8)

    def __repr__(self) -> str:
        n_val = len(self.val) if self.val is not None else 0
        return (f"FolderData(root={str(self.root)!r}, layout={self.layout!r}, classes={len(self.classes)}, "
                f"train={len(self.train)}, val={n_val}, skipped={len(self.skipped)}, cache={self.cache!r})")


def _check_options(val_fraction: Any, seed: Any, flags: dict[str, Any], check: Any, max_imbalance: Any) -> None:
    check_float("val_fraction", val_fraction, minimum=0.0, maximum=1.0)
    if val_fraction >= 1:
        raise ValueError(f"val_fraction must be >= 0 and < 1 (some images must train), got {val_fraction!r}")
    check_int("seed", seed)
    for name, value in flags.items():
        if not isinstance(value, bool):
            raise TypeError(f"{name} must be True or False, got {describe(value)}")
    if check not in ("decode", "header"):
        raise ValueError(f"check must be 'decode' (full decode) or 'header' (Image.verify), got {describe(check)}")
    if max_imbalance is not None:
        check_float("max_imbalance", max_imbalance, minimum=1.0)


def _check_root(root: Any) -> Path:
    if not isinstance(root, (str, os.PathLike)) or isinstance(root, bytes):
        raise TypeError(f"root must be a str or os.PathLike, got {describe(root)}")
    root = Path(root)
    if not root.exists():
        raise FileNotFoundError(f"image folder {str(root)!r} does not exist")
    if not root.is_dir():
        raise NotADirectoryError(f"image folder {str(root)!r} is a file, not a folder of class folders")
    return root


def _warn_imbalance(counts: dict[str, dict[str, int]], max_imbalance: float | None) -> None:
    total = {c: counts["train"][c] + counts["val"][c] for c in counts["train"]}
    big, small = max(total, key=total.get), min(total, key=total.get)   # type: ignore[arg-type]
    if max_imbalance is not None and total[big] > max_imbalance * total[small]:
        warnings.warn(f"class imbalance: {big!r} has {total[big]} images, {small!r} has {total[small]} "
                      f"(ratio {total[big] / total[small]:.1f} > max_imbalance={max_imbalance:g}); consider a "
                      "WeightedRandomSampler or class weights in the loss", UserWarning, stacklevel=3)


def load_image_folder(root: str | os.PathLike, *, val_fraction: float = 0.2, seed: int = 0, weights: Any = None,
                      size: int | None = None, resize: int | None = None, augment: bool = False,
                      skip_broken: bool = False, check: str = "decode", draft: bool = True,
                      cache_bytes: int = 2**30, max_imbalance: float | None = 10.0,
                      workers: int | None = None, model: Any = None) -> FolderData:
    """Train and validation datasets from a folder of images, checked before training starts.

    Layouts: ``root/train/<class>/...`` and ``root/val/<class>/...`` when both exist (same
    class folders required; ``val_fraction`` and ``seed`` are then unused), else
    ``root/<class>/...`` split here, per class: a permutation seeded by ``(seed, class name)``
    over the sorted paths picks ``split_counts(n, val_fraction)`` validation images, so the
    split does not depend on listing order or on the other classes, and no file is in both.
    Image files are those with extensions in ``IMAGE_EXTENSIONS`` (any case), in any depth
    below a class folder; hidden files and folders (``.ipynb_checkpoints``) are ignored.
    Each file is read with ``load_image`` (EXIF, 16-bit, any mode -> 3 channels).

    Args:
        root: the folder.
        val_fraction: share of each class for validation, in [0, 1); 0 gives ``val=None``.
        seed: int >= 0 for the split.
        weights: torchvision weights (enum or name) whose preprocessing to use.
        size: output side; the resize keeps the weights' ratio (256/224) unless ``resize`` is given.
        resize: shorter side before cropping.
        augment: random resized crop and flip for ``train`` (then not deterministic, so the
            Trainer's feature cache does not apply); ``val`` is always the eval pipeline.
        skip_broken: leave unreadable files out (listed in ``.skipped``) instead of raising.
        check: ``"decode"`` decodes every file now (finds truncated files; fills the cache);
            ``"header"`` only opens and verifies each file (much faster, misses a JPEG cut
            short, which then fails when read).
        draft: decode JPEGs at the smallest power-of-two reduction still >= ``resize``.
        cache_bytes: cap of the decoded-image cache shared by both splits (0: no cache).
        max_imbalance: warn when the largest class has more than this many times the images
            of the smallest (None: never).
        workers: threads for the check (default ``os.cpu_count()``, at most 8).
        model: a model (or its ``Anatomy``) whose own preprocessing to use instead of
            ``weights`` (see ``imagenet_transform(model=...)``: a timm model's
            ``pretrained_cfg``, or the torchvision weights ``load_model`` recorded).

    Returns:
        A ``FolderData`` with ``.train``, ``.val``, ``.classes``, ``.counts``, ``.skipped``,
        ``.cache`` and ``.loaders()``.

    Raises:
        TypeError: wrong argument types.
        ValueError: bad option values, no class folders, a class without (readable) images,
            train/val with different classes, only one of train/val.
        FileNotFoundError, NotADirectoryError: ``root`` is missing or a file.
        ImageReadError: an unreadable file (a ``ValueError`` naming it) unless ``skip_broken``.

    Example:
        >>> data = tl.load_image_folder("chess", weights="MobileNet_V2_Weights.IMAGENET1K_V1", size=160)
        >>> data.classes, data.counts["val"]["King"]
        (['Bishop', 'King', 'Knight', 'Pawn', 'Queen', 'Rook'], 15)
        >>> train_loader, val_loader = data.loaders(batch_size=32)
    """
    root = _check_root(root)
    _check_options(val_fraction, seed, {"augment": augment, "skip_broken": skip_broken, "draft": draft},
                   check, max_imbalance)
    workers = min(os.cpu_count() or 1, 8) if workers is None else check_int("workers", workers, minimum=1)
    eval_tf = imagenet_transform(weights=weights, size=size, resize=resize, model=model)
    cache = ImageCache(cache_bytes) if check_int("cache_bytes", cache_bytes) else None
    layout, parts = _scan(root)
    paths = [p for files in parts.values() for ps in files.values() for p in ps]
    broken = _check_files(paths, check, eval_tf, cache, draft, workers)
    if broken and not skip_broken:
        first = next(p for p in paths if p in broken)
        more = f"; {len(broken) - 1} more unreadable" if len(broken) > 1 else ""
        raise ImageReadError(first, f"{broken[first]}{more} (skip_broken=True leaves them out, listed in .skipped)")
    parts = {k: _drop_broken(f, broken, root / k if layout == "train/val" else root) for k, f in parts.items()}
    classes = list(next(iter(parts.values())))
    if layout == "split":
        train, val = _split(parts["all"], val_fraction, seed)
    else:
        train, val = ([(p, i) for i, ps in enumerate(parts[k].values()) for p in ps] for k in ("train", "val"))
    train_tf = imagenet_transform(True, weights=weights, size=size, resize=resize, model=model) if augment else eval_tf
    data = FolderData(root, layout, classes, ImageFiles(train, classes, train_tf, cache=cache, draft=draft),
                      ImageFiles(val, classes, eval_tf, cache=cache, draft=draft) if val else None,
                      [(p, broken[p]) for p in paths if p in broken], cache)
    _warn_imbalance(data.counts, max_imbalance)
    return data
