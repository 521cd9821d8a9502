"""A dataset of image files, and the in-memory cache of decoded images it can read from.

``ImageFiles`` reads each file with ``load_image`` (optionally in JPEG draft mode), runs the
deterministic half of an ``ImagePreprocess`` (``prepare``: 3 channels, shorter side to
``resize``) and then its cropping half (``finish``). An ``ImageCache`` keeps the prepared
tensors (uint8 for 8-bit photos) so that later epochs skip decoding and resizing; when
augmenting, the preset's random operations run on the cached tensors, drawing anew on every read.
"""

from __future__ import annotations

import os
import threading
from typing import Any, Sequence

import torch
from torch.utils.data import Dataset, get_worker_info

from ..base import check_bool, check_int, describe
from .images import load_image
from .transforms import ImagePreprocess

__all__ = ["ImageCache", "ImageFiles", "prepare_file"]


class ImageCache:
    """Prepared (decoded and resized) images in memory, keyed by path, up to ``max_bytes``.

    The first images stored are kept; once the next one would pass the cap, nothing more is
    added (no eviction: a dataset read in a new order each epoch would evict what the next
    epoch needs). ``count`` and ``bytes`` say what it holds. Only the main process adds to
    it: DataLoader worker processes read the copy they started with (see ``docs/data.md``).

    Args:
        max_bytes: the cap in bytes (0: store nothing).

    Raises:
        TypeError, ValueError: ``max_bytes`` is not an int >= 0.

    Example:
        >>> cache = ImageCache(512 * 2**20)
        >>> data = load_image_folder("photos", cache=cache)
        >>> cache.count, cache.bytes
        (556, 138412032)
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = check_int("cache_bytes", max_bytes, minimum=0)
        self._items: dict[str, torch.Tensor] = {}
        self._bytes = 0
        self._lock = threading.Lock()

    @property
    def count(self) -> int:
        """How many images the cache holds."""
        return len(self._items)

    @property
    def bytes(self) -> int:
        """How many bytes of tensor storage the cache holds."""
        return self._bytes

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, path: object) -> bool:
        return str(path) in self._items

    def get(self, path: str | os.PathLike) -> torch.Tensor | None:
        """The stored tensor for ``path``, or None."""
        return self._items.get(str(path))

    def put(self, path: str | os.PathLike, tensor: torch.Tensor) -> bool:
        """Store ``tensor`` for ``path`` unless that would pass the cap; True when it is held."""
        size = tensor.untyped_storage().nbytes()
        with self._lock:
            if str(path) in self._items:
                return True
            if self._bytes + size > self.max_bytes:
                return False
            self._items[str(path)] = tensor
            self._bytes += size
        return True

    def clear(self) -> None:
        """Drop everything."""
        with self._lock:
            self._items, self._bytes = {}, 0

    def __getstate__(self) -> dict[str, Any]:   # a lock does not pickle (spawned workers)
        return {k: v for k, v in self.__dict__.items() if k != "_lock"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"ImageCache(count={self.count}, bytes={self.bytes}, max_bytes={self.max_bytes})"


def prepare_file(path: str | os.PathLike, transform: ImagePreprocess, *, draft: bool = True) -> torch.Tensor:
    """Read ``path`` with ``load_image`` and return ``transform.prepare`` of it.

    With ``draft=True`` a JPEG is decoded at the smallest power-of-two reduction whose sides
    are still at least ``transform.resize`` (the resize that follows needs no more).
    """
    side = transform.resize
    return transform.prepare(load_image(path, draft=(side, side) if draft else None))


class ImageFiles(Dataset):
    """A map-style dataset over image files, yielding ``(normalised (3, S, S) tensor, label)``.

    Exposes what torchvision's ``ImageFolder`` does (``samples``, ``targets``, ``classes``,
    ``class_to_idx``, ``transform``) and ``deterministic``: True when ``transform`` is the
    eval pipeline, so the Trainer may cache backbone features.

    Args:
        samples: ``(path, label)`` pairs.
        classes: class names; ``label`` indexes them.
        transform: an ``ImagePreprocess`` (from ``imagenet_transform``).
        cache: an ``ImageCache`` to read prepared images from (and fill, in the main process).
        draft: decode JPEGs in draft mode at the transform's resize size.

    Raises:
        TypeError: wrong argument types.
        ValueError: a label outside ``range(len(classes))``.

    Example:
        >>> ds = ImageFiles([("a.jpg", 0), ("b.png", 1)], ["cat", "dog"], imagenet_transform(size=96))
        >>> ds[0][0].shape
        torch.Size([3, 96, 96])
    """

    def __init__(self, samples: Sequence[tuple[str, int]], classes: Sequence[str], transform: ImagePreprocess,
                 *, cache: ImageCache | None = None, draft: bool = True) -> None:
        if not isinstance(transform, ImagePreprocess):
            raise TypeError("transform must be an ImagePreprocess from imagenet_transform(), "
                            f"got {describe(transform)}")
        if cache is not None and not isinstance(cache, ImageCache):
            raise TypeError(f"cache must be None or an ImageCache, got {describe(cache)}")
        check_bool("draft", draft)
        self.classes = [str(c) for c in classes]
        self.samples = [(str(path), int(label)) for path, label in samples]
        bad = [label for _, label in self.samples if not 0 <= label < len(self.classes)]
        if bad:
            raise ValueError(f"samples have label {bad[0]}, outside 0..{len(self.classes) - 1} "
                             f"(one per class in {self.classes})")
        self.targets = [label for _, label in self.samples]
        self.class_to_idx = {name: i for i, name in enumerate(self.classes)}
        self.transform, self.cache, self.draft = transform, cache, draft

    @property
    def deterministic(self) -> bool:
        """True when every read of an item gives the same tensor (eval transform)."""
        return self.transform.deterministic

    def __len__(self) -> int:
        return len(self.samples)

    def prepared(self, index: int) -> torch.Tensor:
        """Item ``index`` decoded and resized (``transform.prepare``), from the cache when held."""
        path = self.samples[index][0]
        if self.cache is not None:
            hit = self.cache.get(path)
            if hit is not None:
                return hit
        tensor = prepare_file(path, self.transform, draft=self.draft)
        if self.cache is not None and get_worker_info() is None:
            self.cache.put(path, tensor)
        return tensor

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.transform.finish(self.prepared(index)), self.samples[index][1]

    def __repr__(self) -> str:
        return (f"ImageFiles({len(self)} images, {len(self.classes)} classes, transform={self.transform!r}, "
                f"cache={self.cache!r}, draft={self.draft})")
