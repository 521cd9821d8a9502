"""What ``Classifier.predict`` accepts, checked; images read, bounded in size, preprocessed and run."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from ..base import describe, model_dtype, run_device
from ..data.images import ImageReadError, load_image
from ..data.transforms import ImagePreprocess
from ..train.evaluation import predict
from ..train.runtime import memory_layout, use_channels_last
from . import _tta

__all__: list[str] = []


def one_item(item: Any, where: str) -> Any:
    """Check one image: a path, a PIL image, or an unnormalised tensor / array."""
    if isinstance(item, (str, os.PathLike)):
        return Path(item)
    if isinstance(item, Image.Image):
        return item
    if isinstance(item, np.ndarray):
        item = torch.from_numpy(np.array(item))  # a copy: arrays may be read-only
        if item.ndim == 3 and item.shape[-1] in (1, 3) and item.shape[0] not in (1, 3):
            item = item.permute(2, 0, 1)
    if not isinstance(item, torch.Tensor):
        raise TypeError(f"{where} must be a file path, a PIL image or an image tensor, got {describe(item)}")
    if item.ndim not in (2, 3) or (item.ndim == 3 and item.shape[0] not in (1, 3)):
        raise ValueError(f"{where} must be an image tensor shaped (C, H, W) with C in (1, 3), got shape "
                         f"{tuple(item.shape)}")
    if item.dtype != torch.uint8 and not item.is_floating_point():
        raise TypeError(f"{where} must be a uint8 or float tensor, got dtype {item.dtype}")
    if item.is_floating_point() and item.numel() and not bool(((item >= 0) & (item <= 1)).all()):
        raise ValueError(f"{where} must hold unnormalised pixels (float in [0, 1] or uint8), got values in "
                         f"[{float(item.min()):.3g}, {float(item.max()):.3g}]; the classifier normalises "
                         "images itself, so pass them before Normalize")
    return item


def items(given: Any) -> list[tuple[Any, str]]:
    """``(item, where)`` pairs: one item, a list of them, or an (N, C, H, W) batch."""
    if (isinstance(given, torch.Tensor) and given.ndim == 4) or isinstance(given, (list, tuple)):
        return [(one_item(x, f"items[{i}]"), f"items[{i}]") for i, x in enumerate(given)]
    return [(one_item(given, "items"), "items")]


def _check_resized_pixels(width: int, height: int, resize: int, what: str, is_file: bool) -> None:
    """Refuse an image whose resize (shorter side to ``resize``) would exceed the decoding bound.

    The bound is PIL's ``Image.MAX_IMAGE_PIXELS``, the one ``load_image`` already applies to
    decoded images (a decompression bomb): a 1-pixel-high strip 100000 wide decodes small, but
    resized to a shorter side of 256 it would be 25.6 million pixels wide.
    """
    limit = Image.MAX_IMAGE_PIXELS
    short, long = min(width, height), max(width, height)
    if limit is None or short == 0:
        return
    new_long = int(resize * long / short)
    if resize * new_long > limit:
        reason = (f"resizing its {width} x {height} pixels to a shorter side of {resize} would make "
                  f"{resize * new_long} pixels, over the limit of {limit} (PIL.Image.MAX_IMAGE_PIXELS, "
                  "the bound load_image applies to decoded images); an aspect ratio this extreme is not "
                  "a photo")
        raise ImageReadError(what, reason) if is_file else ValueError(f"{what}: {reason}")


def prepared(item: Any, where: str, transform: ImagePreprocess, draft: bool, tta: bool = False) -> torch.Tensor:
    """Read (a path), bound the resized size, and apply ``transform``: one (3, S, S) tensor, or
    with ``tta`` the (V, 3, S, S) views of ``_tta.views``."""
    preprocess = (lambda image: _tta.views(transform.prepare(image), transform)) if tta else transform
    if isinstance(item, Path):
        side = transform.resize
        image = load_image(item, draft=(side, side) if draft else None)
        _check_resized_pixels(image.width, image.height, transform.resize, str(item), True)
        return preprocess(image)
    width, height = item.size if isinstance(item, Image.Image) else (item.shape[-1], item.shape[-2])
    _check_resized_pixels(width, height, transform.resize, where, False)
    return preprocess(item)


def _check_finite_rows(probs: torch.Tensor, names: list[str]) -> None:
    """Refuse NaN or inf probabilities (finite weights can still compute them), naming the items."""
    bad = (~torch.isfinite(probs)).any(1).nonzero().flatten().tolist()
    if bad:
        shown = ", ".join(names[i] for i in bad[:4]) + (f" and {len(bad) - 4} more" if len(bad) > 4 else "")
        raise ValueError(f"the model computed non-finite (NaN or inf) probabilities for {shown}; its weights "
                         "produce no meaningful prediction for them (check the model, e.g. its BatchNorm "
                         "statistics, or the images)")


def probabilities(model: nn.Module, images: list[tuple[Any, str]], transform: ImagePreprocess, num_classes: int,
                  *, batch_size: int, draft: bool, tta: bool) -> torch.Tensor:
    """``Classifier.predict_proba``'s loop: ``batch_size`` images at a time (with ``tta``, their
    views run in forward passes of ``batch_size``), in the model's dtype and memory layout, as
    float32 probabilities (with ``tta``: the mean of the softmax over each image's views)."""
    rows = [torch.empty(0, num_classes)]
    dtype = model_dtype(model)
    fast = use_channels_last("auto", run_device(model), model)  # as the Trainer runs it
    with memory_layout(model, fast):
        for start in range(0, len(images), batch_size):
            chunk = [prepared(x, where, transform, draft, tta) for x, where in images[start:start + batch_size]]
            batch = torch.cat(chunk) if tta else torch.stack(chunk)
            probs = predict(model, batch.to(dtype), batch_size=batch_size).float()
            probs = probs.view(len(chunk), -1, probs.shape[1]).mean(1) if tta else probs
            _check_finite_rows(probs, [where for _, where in images[start:start + batch_size]])
            rows.append(probs)
    return torch.cat(rows)
