"""Bring any supported image to 3 channels: ``to_rgb`` (a PIL ``RGB`` image or a (3, H, W) tensor).

Grayscale scans, transparent PNGs, 16-bit and float images and 1-channel tensors all come out
with 3 channels, scaled by their format's full range (never by their content), so none can
reach an RGB model in the wrong shape or brightness. ``imagenet_transform`` runs it first.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from PIL import Image

from ..base import describe
from .images import integer_top

__all__ = ["to_rgb"]

_HIGH_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")


def _float_intensities(arr: np.ndarray, img: Image.Image, kind: str = "float") -> np.ndarray:
    """An image's intensities as they are, in [0, 1], never rescaled by content: a float (mode F)
    image's values, or an integer image's over its format's range."""
    name = f"the mode {img.mode!r} ({kind}) image {img.filename!r}" if getattr(img, "filename", "") else \
        f"a mode {img.mode!r} ({kind}) PIL image"
    finite = np.isfinite(arr)
    if not finite.all():
        raise ValueError(f"{name} holds {int((~finite).sum())} NaN or infinite value(s) of {arr.size}; "
                         f"transferlearn takes {kind} images as intensities in [0, 1]")
    low, high = (float(arr.min()), float(arr.max())) if arr.size else (0.0, 0.0)
    if low < 0.0 or high > 1.0:
        raise ValueError(f"{name} holds values in [{low:g}, {high:g}]; transferlearn takes {kind} images as "
                         "intensities in [0, 1] (never a scale guessed from the pixels): rescale it first, "
                         "e.g. Image.fromarray(np.asarray(img) / 65535)")
    return arr


_NO_RANGE = "has no standard value range (it is never guessed from the pixel values)"


def _tensor_top(dtype: torch.dtype) -> float:
    """The full range of an integer image tensor's dtype: uint8 255, uint16 65535, bool 1."""
    tops = {torch.uint8: 255.0, torch.bool: 1.0, getattr(torch, "uint16", torch.uint8): 65535.0}
    if dtype not in tops:
        raise TypeError(f"an image tensor of dtype {dtype} {_NO_RANGE}: pass uint8 (0-255), uint16 "
                        "(0-65535) or floats in [0, 1]; for 16-bit values in a wider type, divide by 65535")
    return tops[dtype]


def _tensor_rgb(img: torch.Tensor) -> torch.Tensor:
    if img.ndim == 2:
        img = img.unsqueeze(0)
    if img.ndim != 3 or img.shape[0] not in (1, 3):
        raise ValueError(f"image tensor must have shape (H, W), (1, H, W) or (3, H, W), got "
                         f"{tuple(img.shape)}")
    if not img.is_floating_point():
        img = img.float() / _tensor_top(img.dtype)     # by the dtype's range, never the content
    return img.expand(3, -1, -1).contiguous() if img.shape[0] == 1 else img


def to_rgb(img: Any) -> Image.Image | torch.Tensor:
    """Bring any supported image to 3 channels: a PIL ``RGB`` image or a (3, H, W) tensor.

    8-bit PIL modes (1, L, LA, P, RGBA, CMYK, ...) go through ``Image.convert("RGB")`` as
    torchvision's ``ImageFolder`` loader does (alpha is dropped). 16-bit modes (I;16) are
    divided by 65535 and 32-bit integer images (I) by their file format's full range
    (``integer_top``: 16-bit PGM/PNG 65535, TIFF by its bit depth), never by their content,
    so a dark 16-bit scan stays dark in every format; float images (F) are intensities taken
    as they are, and must lie in [0, 1] (never rescaled by their content); all become float
    tensors. Tensors and numpy arrays may be
    (H, W), (1|3, H, W) or (H, W, 1|3); uint8 is divided by 255, uint16 by 65535, bool is
    0/1, floats are taken as they are; other integer types have no standard range and are
    refused.

    Raises:
        TypeError: not an image, or an integer tensor/array other than uint8, uint16, bool.
        ValueError: a tensor of another shape, a mode ``I`` image of unknown range
            (``integer_top``), or a mode ``F`` image with values outside [0, 1], NaN or inf.
    """
    if isinstance(img, Image.Image):
        if img.mode == "RGB":
            return img
        if img.mode in _HIGH_BIT_MODES:
            arr = np.asarray(img).astype(np.float32)     # float32, divided in place: 4 bytes a pixel, not 16
            if img.mode == "F":
                unit = _float_intensities(arr, img)
            else:
                arr /= np.float32(integer_top(img))
                unit = _float_intensities(arr, img, "integer")  # a signed file's negative values: refused too
            return _tensor_rgb(torch.from_numpy(unit).float())
        if img.mode == "P" and "transparency" in img.info:
            img = img.convert("RGBA")
        return img.convert("RGB")
    if isinstance(img, np.ndarray):
        if img.ndim == 3 and img.shape[-1] in (1, 3) and img.shape[0] not in (1, 3):
            img = img.transpose(2, 0, 1)
        return _tensor_rgb(torch.from_numpy(np.array(img)))  # a copy: the input may be read-only
    if isinstance(img, torch.Tensor):
        return _tensor_rgb(img)
    raise TypeError(f"image must be a PIL image, a torch.Tensor or a numpy array, got {describe(img)}")
