"""The augmentation presets of the training pipeline: ``"none" | "light" | "trivial" | "randaugment"``.

Each preset is the random geometry (and colour) that ``imagenet_transform(train=True)`` applies
before scaling and normalising, as torchvision's classification reference recipe orders it
(random resized crop, horizontal flip, then the automatic policy):

- ``"none"``: no randomness at all; the evaluation pipeline (resize, centre crop).
- ``"light"``: ``RandomResizedCrop`` + ``RandomHorizontalFlip``, bitwise the pipeline of
  transferlearn 0.1 (so a seeded run draws the same crops as before).
- ``"trivial"``: light, then ``torchvision.transforms.v2.TrivialAugmentWide`` (one operation
  of random strength per image; no tuning knob: Müller & Hutter 2021).
- ``"randaugment"``: light, then ``torchvision.transforms.v2.RandAugment`` with torchvision's
  defaults (2 operations at magnitude 9 of 31; timm's ``rand-m9``).

The policies run on the decoded, resized tensor (uint8, or float in [0, 1] for 16-bit
images), so ``load_image_folder``'s decoded-image cache keeps working under augmentation:
every read of a cached image draws new random numbers.
"""

from __future__ import annotations

from typing import Any, Callable

from torchvision import transforms as T
from torchvision.transforms import InterpolationMode, v2

from ..base import describe

__all__ = ["AUGMENTS", "augment_ops", "check_augment"]

AUGMENTS: tuple[str, ...] = ("none", "light", "trivial", "randaugment")


def check_augment(augment: Any, *, name: str = "augment", bools: bool = False) -> str:
    """The preset name ``augment`` stands for, checked.

    Args:
        augment: one of ``AUGMENTS``; with ``bools=True`` also ``True`` (``"light"``) or
            ``False`` (``"none"``), the meaning ``load_image_folder(augment=...)`` had in 0.1.
        name: the argument's name, for the error message.
        bools: accept ``True`` / ``False``.

    Returns:
        One of ``AUGMENTS``.

    Raises:
        TypeError: not a string (nor a bool, when accepted).
        ValueError: an unknown preset name.

    Example:
        >>> check_augment(True, bools=True)
        'light'
    """
    accepted = ", ".join(map(repr, AUGMENTS)) + (" or True / False" if bools else "")
    if isinstance(augment, bool) and bools:
        return "light" if augment else "none"
    if not isinstance(augment, str):
        raise TypeError(f"{name} must be one of {accepted}, got {describe(augment)}")
    if augment not in AUGMENTS:
        raise ValueError(f"{name} must be one of {accepted}, got {augment!r}")
    return augment


def augment_ops(preset: str, size: int, interpolation: InterpolationMode) -> Callable[[Any], Any]:
    """The random part of a training pipeline: crop to ``size`` (and flip, and the policy).

    Args:
        preset: ``"light"``, ``"trivial"`` or ``"randaugment"`` (``"none"`` has no random part).
        size: the output side of the random resized crop.
        interpolation: resampling of the crop and of the policy's geometric operations.

    Returns:
        A callable taking a PIL image or an image tensor and returning the same kind.

    Raises:
        ValueError: ``"none"`` or an unknown preset.

    Example:
        >>> augment_ops("trivial", 64, InterpolationMode.BILINEAR)(torch.zeros(3, 80, 80, dtype=torch.uint8)).shape
        torch.Size([3, 64, 64])
    """
    if check_augment(preset, name="preset") == "none":
        raise ValueError("preset 'none' has no random operations: it is the evaluation pipeline")
    ops: list[Any] = [T.RandomResizedCrop(size, interpolation=interpolation, antialias=True),
                      T.RandomHorizontalFlip()]
    if preset == "trivial":
        ops.append(v2.TrivialAugmentWide(interpolation=interpolation))
    elif preset == "randaugment":
        ops.append(v2.RandAugment(interpolation=interpolation))
    return T.Compose(ops)
