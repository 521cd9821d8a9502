"""Real images for the examples, written to disk at run time in the folder-per-class layout.

scikit-learn ships 1,797 real handwritten digits (8x8 grayscale, 10 classes). They are
written as PNG files to ``root/train/<digit>/`` and ``root/test/<digit>/`` so that the
examples read them with torchvision's ``ImageFolder``, the way user data usually arrives.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def write_digits(root: str | Path, *, train_per_class: int | None = None, test_fraction: float = 0.3,
                 seed: int = 0) -> tuple[Path, Path]:
    """Write the digits as ``root/train`` and ``root/test`` ImageFolders; return both paths.

    Args:
        root: folder to write into (created).
        train_per_class: keep only this many training images per class (None: all).
        test_fraction: share of each class held out for testing.
        seed: shuffling seed; the split is the same for the same seed.
    """
    from sklearn.datasets import load_digits

    digits = load_digits()
    rng = np.random.default_rng(seed)
    root = Path(root)
    for label in range(10):
        idx = rng.permutation(np.flatnonzero(digits.target == label))
        n_test = int(round(len(idx) * test_fraction))
        test, train = idx[:n_test], idx[n_test:]
        if train_per_class is not None:
            train = train[:train_per_class]
        for split, members in (("train", train), ("test", test)):
            folder = root / split / str(label)
            folder.mkdir(parents=True, exist_ok=True)
            for i in members:
                pixels = (digits.images[i] * (255 / 16)).astype(np.uint8)
                Image.fromarray(pixels, mode="L").save(folder / f"{i:04d}.png")
    return root / "train", root / "test"
