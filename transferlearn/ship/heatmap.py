"""Heat maps for class-activation maps: a colour map, an overlay on the image, a PNG writer.

Pure NumPy and Pillow (no matplotlib): ``overlay`` blends the "jet" colours of a map in
[0, 1] onto the picture, resizing the map to the image when their sizes differ, and
``save_overlay`` writes that as a PNG file. The maps come from
``transferlearn.ship.explain.class_activation_map`` or ``Classifier.explain``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.nn import functional as F

from ..base import atomic_write, check_float, check_path, describe
from ..data.images import load_image

__all__ = ["heat_colors", "overlay", "save_overlay"]

# matplotlib's "jet" colour map, channel by channel: (positions, values).
_JET = (((0.0, 0.35, 0.66, 0.89, 1.0), (0.0, 0.0, 1.0, 1.0, 0.5)),
        ((0.0, 0.125, 0.375, 0.64, 0.91, 1.0), (0.0, 0.0, 1.0, 1.0, 0.0, 0.0)),
        ((0.0, 0.11, 0.34, 0.65, 1.0), (0.5, 1.0, 1.0, 0.0, 0.0)))


def heat_colors(values: np.ndarray | torch.Tensor) -> np.ndarray:
    """RGB colours for values in [0, 1]: dark blue (0) through cyan, yellow, to dark red (1).

    The "jet" colour map, built in (no matplotlib needed).

    Args:
        values: an array of any shape, clipped to [0, 1].

    Returns:
        A float array of shape ``values.shape + (3,)`` in [0, 1].

    Example:
        >>> heat_colors(np.array([0.0, 1.0])).round(2)
        array([[0. , 0. , 0.5], [0.5, 0. , 0. ]])
    """
    v = np.clip(np.asarray(values, dtype=np.float64), 0.0, 1.0)
    return np.stack([np.interp(v, where, value) for where, value in _JET], axis=-1)


def _rgb_array(image: Any) -> np.ndarray:
    """An (H, W, 3) float array in [0, 1] from a PIL image, a (C, H, W) tensor or an (H, W, C) array."""
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"), dtype=np.float64) / 255.0
    if isinstance(image, torch.Tensor):
        if image.ndim != 3 or image.shape[0] not in (1, 3):
            raise ValueError(f"image must be shaped (C, H, W) with C in (1, 3), got {tuple(image.shape)}")
        scale = 255.0 if image.dtype == torch.uint8 else 1.0
        image = image.detach().cpu().double().div(scale).expand(3, -1, -1).permute(1, 2, 0).numpy()
    if not isinstance(image, np.ndarray):
        raise TypeError(f"image must be a PIL image, an image tensor or an array, got {describe(image)}")
    array = image.astype(np.float64) / (255.0 if image.dtype == np.uint8 else 1.0)
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3 or array.shape[-1] not in (1, 3):
        raise ValueError(f"image must be shaped (H, W), (H, W, 1) or (H, W, 3), got {array.shape}")
    return np.clip(np.broadcast_to(array, array.shape[:2] + (3,)), 0.0, 1.0)


def overlay(image: Any, cam: np.ndarray | torch.Tensor, *, alpha: float = 0.5) -> Image.Image:
    """The heat map of ``cam`` blended onto ``image``: ``(1 - alpha) * image + alpha * heat``.

    Args:
        image: a PIL image, an unnormalised ``(C, H, W)`` tensor (uint8, or float in [0, 1]) or
            an ``(H, W[, C])`` array.
        cam: an ``(h, w)`` map in [0, 1]; resized (bilinear) to the image when sizes differ.
        alpha: weight of the heat map, in [0, 1].

    Returns:
        An RGB PIL image of the image's size.

    Raises:
        TypeError, ValueError: an image or map of another type or shape, ``alpha`` outside [0, 1].

    Example:
        >>> overlay(load_image("cat.jpg"), clf.explain(["cat.jpg"])[0]).size
        (451, 300)
    """
    check_float("alpha", alpha, maximum=1.0)
    picture = _rgb_array(image)
    heat = torch.as_tensor(np.asarray(cam, dtype=np.float64)) if not isinstance(cam, torch.Tensor) else cam
    if heat.ndim != 2:
        raise ValueError(f"cam must be one (H, W) map, got shape {tuple(heat.shape)}")
    if tuple(heat.shape) != picture.shape[:2]:
        heat = F.interpolate(heat.detach().double().cpu()[None, None], size=picture.shape[:2], mode="bilinear",
                             align_corners=False)[0, 0]
    blend = (1 - alpha) * picture + alpha * heat_colors(heat.detach().cpu().numpy())
    return Image.fromarray(np.round(blend * 255).astype(np.uint8), mode="RGB")


def save_overlay(image: Any, cam: np.ndarray | torch.Tensor, path: str | os.PathLike, *,
                 alpha: float = 0.5) -> Path:
    """Write ``overlay(image, cam)`` as a PNG file (atomically).

    Args:
        image: see ``overlay``; also a path to an image file (read with ``load_image``).
        cam: an ``(h, w)`` map in [0, 1], e.g. one of ``Classifier.explain``'s.
        path: the PNG file to write.
        alpha: weight of the heat map, in [0, 1].

    Returns:
        The path written.

    Raises:
        TypeError, ValueError: as ``overlay``; ``path`` not a path.

    Example:
        >>> save_overlay("cat.jpg", clf.explain(["cat.jpg"])[0], "cat.cam.png")
    """
    check_path("path", path)
    if isinstance(image, (str, os.PathLike)):
        image = load_image(image)
    picture = overlay(image, cam, alpha=alpha)
    return atomic_write(path, lambda f: picture.save(f, format="PNG"))
