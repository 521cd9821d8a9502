"""From a folder of images to train and validation datasets: ``load_image_folder``.

Two layouts: ``root/train/<class>/...`` with ``root/val/<class>/...``, or ``root/<class>/...``
split here, stratified per class and reproducible for a seed. Every file is checked before
training starts (a full decode by default, which also fills the decoded-image cache), so a
broken file is an error at once, not in epoch 3.
"""

from __future__ import annotations

import math
import os
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from ..base import check_bool, check_int
from . import _checks as checks
from .augment import check_augment
from .balance import balanced_sampler, check_balance
from .imagefiles import ImageCache, ImageFiles, prepare_file
from .images import ImageReadError, check_header
from .scan import Scan, scan_layout
from .transforms import ImagePreprocess, imagenet_transform

__all__ = ["FolderData", "load_image_folder", "split_counts"]

Samples = list[tuple[str, int]]
_FOLDER: Any = object()          # loaders(balance=...) not given: the folder's own setting


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


def _read_all(root: Path, scan: Scan, skip_broken: bool, read: Any) -> tuple[dict, list[tuple[str, str]]]:
    """Read every file the scan found (``read(paths) -> {broken path: reason}``; broken links
    and unlistable folders are not read); raise for the first broken one unless ``skip_broken``.
    Returns the parts without broken files and ``.skipped``: broken entries, then the notes."""
    paths = [p for files in scan.parts.values() for ps in files.values() for p in ps]
    broken = {**scan.broken, **read([p for p in paths if p not in scan.broken])}
    ordered = paths + sorted(set(broken) - set(paths))
    if broken and not skip_broken:
        first = next(p for p in ordered if p in broken)
        more = f"; {len(broken) - 1} more unreadable" if len(broken) > 1 else ""
        raise ImageReadError(first, f"{broken[first]}{more} (skip_broken=True leaves them out, listed in .skipped)")
    parts = {k: checks.drop_broken(f, broken, root / k if scan.layout == "train/val" else root)
             for k, f in scan.parts.items()}
    return parts, [(p, broken[p]) for p in ordered if p in broken] + scan.notes


class FolderData:
    """What ``load_image_folder`` returns: the two datasets and what went into them.

    Attributes:
        root: the folder read.
        layout: ``"train/val"`` (root/train + root/val) or ``"split"`` (split here).
        classes: sorted class folder names; labels index this list.
        train: the training ``ImageFiles``.
        val: the validation ``ImageFiles``, or None when ``val_fraction=0``.
        counts: ``{"train": {class: n}, "val": {class: n}}``.
        skipped: ``(path, reason)`` of what was left out: each unreadable file (dangling
            links included; ``skip_broken=True``), each folder holding ``classifier.json`` (a
            run, not a class), each second path to a file already counted (a link), each link
            to a folder already read.
        cache: the shared ``ImageCache`` (None when ``cache_bytes=0``).
        balance: how ``loaders()`` draws training batches by default: None (shuffled) or
            ``"sampler"`` (class-balanced, ``balanced_sampler``).
        seed: the folder's seed (the split's, and the balanced sampler's generator's).
    """

    def __init__(self, root: Path, layout: str, classes: list[str], train: ImageFiles,
                 val: ImageFiles | None, skipped: list[tuple[str, str]], cache: ImageCache | None, *,
                 balance: str | None = None, seed: int = 0) -> None:
        self.root, self.layout, self.classes = root, layout, classes
        self.train, self.val, self.skipped, self.cache = train, val, skipped, cache
        self.balance, self.seed = check_balance(balance), check_int("seed", seed)
        self.counts = {name: {c: 0 for c in classes} for name in ("train", "val")}
        for name, ds in (("train", train), ("val", val)):
            for label in (ds.targets if ds is not None else []):
                self.counts[name][classes[label]] += 1

    def loaders(self, batch_size: int = 32, *, num_workers: int | None = None, pin_memory: bool | None = None,
                shuffle: bool | None = None, balance: Any = _FOLDER,
                **options: Any) -> tuple[DataLoader, DataLoader | None]:
        """DataLoaders for ``train`` (shuffled, or class-balanced) and ``val`` (in order) with sensible defaults.

        Args:
            batch_size: images per batch.
            num_workers: worker processes; default 0 when the cache holds every image of both
                splits (reading memory needs no helpers), else ``os.cpu_count()`` capped at 8.
            pin_memory: default True exactly when CUDA is available.
            shuffle: shuffle the training loader (default True; not with ``balance="sampler"``,
                whose sampler decides the order).
            balance: ``"sampler"``: the training loader draws through ``balanced_sampler``
                (each class equally often in expectation, with replacement, ``len(train)``
                draws per epoch, its generator seeded by the folder's ``seed``: a new,
                identically seeded sampler per call); None: plain shuffling. Default: the
                folder's ``balance`` (``load_image_folder(balance=...)``).
            **options: any other ``DataLoader`` option (``generator``, ``drop_last``, ...), for both.
                ``persistent_workers`` defaults to True when there are workers.

        Returns:
            ``(train_loader, val_loader)``; ``val_loader`` is None when there is no validation split.

        Raises:
            TypeError, ValueError: bad ``batch_size``, ``num_workers``, ``pin_memory``, ``shuffle``
                or ``balance``; ``balance="sampler"`` with ``shuffle=True`` or a ``sampler`` /
                ``batch_sampler`` of your own.

        Example:
            >>> train_loader, val_loader = tl.load_image_folder("photos").loaders(batch_size=64)
            >>> balanced, _ = tl.load_image_folder("photos").loaders(balance="sampler")
        """
        batch_size = check_int("batch_size", batch_size, minimum=1)
        workers = self._default_workers() if num_workers is None else check_int("num_workers", num_workers)
        for name, value in (("pin_memory", pin_memory), ("shuffle", shuffle)):
            if value is not None:
                check_bool(name, value)
        options = {"persistent_workers": workers > 0, **options, "batch_size": batch_size, "num_workers": workers,
                   "pin_memory": torch.cuda.is_available() if pin_memory is None else pin_memory}
        train = DataLoader(self.train, **self._order(self.balance if balance is _FOLDER else balance, shuffle,
                                                     options), **options)
        return train, (DataLoader(self.val, shuffle=False, **options) if self.val is not None else None)

    def _order(self, balance: Any, shuffle: bool | None, options: dict[str, Any]) -> dict[str, Any]:
        """The training loader's ``shuffle`` or ``sampler`` for ``balance``."""
        if check_balance(balance) is None:
            return {"shuffle": True if shuffle is None else shuffle}
        mine = [name for name in ("sampler", "batch_sampler") if options.get(name) is not None]
        if shuffle or mine:
            given = f"shuffle={shuffle}" if shuffle else f"{mine[0]}="
            raise ValueError(f"balance='sampler' draws the training batches itself; {given} would choose them "
                             "too: pass one of the two")
        return {"sampler": balanced_sampler(self.train.targets, seed=self.seed)}

    def _default_workers(self) -> int:
        everything = self.train.samples + (self.val.samples if self.val is not None else [])
        if self.cache is not None and all(path in self.cache for path, _ in everything):
            return 0
        return min(os.cpu_count() or 1, 8)

    def __repr__(self) -> str:
        n_val = len(self.val) if self.val is not None else 0
        return (f"FolderData(root={str(self.root)!r}, layout={self.layout!r}, classes={len(self.classes)}, "
                f"train={len(self.train)}, val={n_val}, skipped={len(self.skipped)}, cache={self.cache!r})")


def load_image_folder(root: str | os.PathLike, *, val_fraction: float = 0.2, seed: int = 0, weights: Any = None,
                      size: int | None = None, resize: int | None = None, augment: bool | str = False,
                      skip_broken: bool = False, check: str = "decode", draft: bool = True,
                      cache_bytes: int = 2**30, max_imbalance: float | None = 10.0,
                      workers: int | None = None, model: Any = None, min_classes: int = 2,
                      balance: str | None = None) -> FolderData:
    """Train and validation datasets from a folder of images, checked before training starts.

    Layouts: ``root/train/<class>/...`` and ``root/val/<class>/...`` when both exist (same
    class folders required; ``val_fraction`` and ``seed`` are then unused), else
    ``root/<class>/...`` split here, per class: a permutation seeded by ``(seed, class name)``
    over the sorted paths picks ``split_counts(n, val_fraction)`` validation images, so the
    split does not depend on listing order or on the other classes, and no file is in both.
    Image files are those with extensions in ``IMAGE_EXTENSIONS`` (any case), in any depth
    below a class folder; hidden files and folders (``.ipynb_checkpoints``) are ignored, and
    so are folders holding ``classifier.json`` (a run or saved classifier, listed in
    ``.skipped`` with a warning). Symbolic links are followed by real path (``scan``): a file
    counts once, a folder is read once (loops are not followed), a file reachable under two
    classes or in both train and val is an error, a dangling link is an unreadable file.
    Each file is read with ``load_image`` (EXIF, 16-bit, any mode -> 3 channels).

    Args:
        root: the folder.
        val_fraction: share of each class for validation, in [0, 1); 0 gives ``val=None``.
        seed: int >= 0 for the split.
        weights: torchvision weights (enum or name) whose preprocessing to use.
        size: output side; the resize keeps the weights' ratio (256/224) unless ``resize`` is given.
        resize: shorter side before cropping.
        augment: the training split's augmentation preset (``data/augment.py``): ``"none"``
            (or False, the default: the eval pipeline), ``"light"`` (or True: random resized
            crop and flip), ``"trivial"`` (+ TrivialAugmentWide) or ``"randaugment"`` (+
            RandAugment). Any preset but ``"none"`` makes ``train`` random (not
            deterministic), so the Trainer's feature cache does not apply to it; the random
            operations run on the decoded-image cache's tensors, drawing anew on every read.
            ``val`` is always the eval pipeline.
        skip_broken: leave unreadable files out (listed in ``.skipped``) instead of raising.
        check: ``"decode"`` decodes every file now (finds truncated files; fills the cache);
            ``"header"`` only opens and verifies each file (much faster, misses a JPEG cut
            short, which then fails when read).
        draft: decode JPEGs at the smallest power-of-two reduction still >= ``resize``.
        cache_bytes: cap of the decoded-image cache shared by both splits (0: no cache).
        max_imbalance: warn when the largest class has more than this many times the images
            of the smallest (None: never; nor with ``balance``).
        workers: threads for the check (default ``os.cpu_count()``, at most 8).
        model: a model (or its ``Anatomy``) whose own preprocessing to use instead of
            ``weights`` (see ``imagenet_transform(model=...)``: a timm model's
            ``pretrained_cfg``, or the torchvision weights ``load_model`` recorded).
        min_classes: refuse a folder with fewer class folders, before any file is decoded
            (default 2: a classifier needs two classes; 1 to read a one-class folder, e.g. to
            evaluate on it).
        balance: ``"sampler"``: ``.loaders()`` draws class-balanced training batches
            (``balanced_sampler``: weights 1 / class count, with replacement, seeded by
            ``seed``); None (default): shuffled.

    Returns:
        A ``FolderData`` with ``.train``, ``.val``, ``.classes``, ``.counts``, ``.skipped``,
        ``.cache`` and ``.loaders()``.

    Raises:
        TypeError: wrong argument types.
        ValueError: bad option values, no class folders, fewer than ``min_classes`` of them,
            a class without (readable) images, train/val with different classes, only one of
            train/val, one file under two classes or in both train and val (through links).
        FileNotFoundError, NotADirectoryError: ``root`` is missing or a file.
        ImageReadError: an unreadable file (a ``ValueError`` naming it) unless ``skip_broken``.

    Example:
        >>> data = tl.load_image_folder("chess", weights="MobileNet_V2_Weights.IMAGENET1K_V1", size=160)
        >>> data.classes, data.counts["val"]["King"]
        (['Bishop', 'King', 'Knight', 'Pawn', 'Queen', 'Rook'], 15)
        >>> train_loader, val_loader = data.loaders(batch_size=32)
        >>> balanced = tl.load_image_folder("scans", balance="sampler").loaders()[0]
    """
    root = checks.check_root(root)
    checks.check_options(val_fraction, seed, {"skip_broken": skip_broken, "draft": draft}, check, max_imbalance)
    preset, balance = check_augment(augment, bools=True), check_balance(balance)
    workers = min(os.cpu_count() or 1, 8) if workers is None else check_int("workers", workers, minimum=1)
    eval_tf = imagenet_transform(weights=weights, size=size, resize=resize, model=model)
    cache = ImageCache(cache_bytes) if check_int("cache_bytes", cache_bytes) else None
    scan = scan_layout(root)
    checks.check_classes(scan, check_int("min_classes", min_classes, minimum=1))
    parts, skipped = _read_all(root, scan, skip_broken, lambda paths: _check_files(paths, check, eval_tf, cache,
                                                                                 draft, workers))
    layout, classes = scan.layout, list(next(iter(parts.values())))
    if layout == "split":
        train, val = _split(parts["all"], val_fraction, seed)
    else:
        train, val = ([(p, i) for i, ps in enumerate(parts[k].values()) for p in ps] for k in ("train", "val"))
    train_tf = eval_tf if preset == "none" else imagenet_transform(True, weights=weights, size=size, resize=resize,
                                                                   model=model, augment=preset)
    data = FolderData(root, layout, classes, ImageFiles(train, classes, train_tf, cache=cache, draft=draft),
                      ImageFiles(val, classes, eval_tf, cache=cache, draft=draft) if val else None,
                      skipped, cache, balance=balance, seed=seed)
    checks.warn_imbalance(data.counts, None if balance else max_imbalance)
    return data
