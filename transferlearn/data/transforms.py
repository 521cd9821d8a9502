"""Preprocess images exactly as ImageNet-pretrained weights expect them.

One place builds every pipeline: resize the shorter side, centre crop, scale to [0, 1],
normalise with the weights' own statistics. Any PIL mode and 1- or 3-channel tensors come
out as 3-channel float tensors, so grayscale scans and transparent PNGs cannot reach an RGB
model in the wrong shape.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image
from torch import nn
from torchvision import transforms as T
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as F

from ..base import check_bool, check_int, describe
from ..model.anatomy import Anatomy
from ..model.data_config import DataConfig, data_config, weights_config
from .images import integer_top

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "ImagePreprocess", "imagenet_transform", "to_rgb"]

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
_HIGH_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")


def _unit_range(arr: np.ndarray) -> np.ndarray:
    """Scale a float image to [0, 1] by the smallest of [0, 1], [0, 255], [0, 65535] holding it."""
    arr = np.nan_to_num(arr.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    low, high = (float(arr.min()), float(arr.max())) if arr.size else (0.0, 0.0)
    for top in (1.0, 255.0, 65535.0):
        if low >= 0.0 and high <= top:
            return arr / top
    return (arr - low) / (high - low) if high > low else np.zeros_like(arr)


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
    so a dark 16-bit scan stays dark in every format; float images (F) are scaled to [0, 1]
    by the smallest of the ranges [0, 1], [0, 255], [0, 65535] that holds their values
    (else by their min and max); all become float tensors. Tensors and numpy arrays may be
    (H, W), (1|3, H, W) or (H, W, 1|3); uint8 is divided by 255, uint16 by 65535, bool is
    0/1, floats are taken as they are; other integer types have no standard range and are
    refused.

    Raises:
        TypeError: not an image, or an integer tensor/array other than uint8, uint16, bool.
        ValueError: a tensor of another shape, or a mode ``I`` image of unknown range
            (``integer_top``).
    """
    if isinstance(img, Image.Image):
        if img.mode == "RGB":
            return img
        if img.mode in _HIGH_BIT_MODES:
            arr = np.asarray(img).astype(np.float64)
            unit = _unit_range(arr) if img.mode == "F" else arr / integer_top(img)
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


class ImagePreprocess:
    """The callable returned by ``imagenet_transform``: image in, normalised (3, S, S) tensor out.

    ``deterministic`` is True for the eval pipeline; the Trainer uses it to decide whether
    backbone features may be computed once and cached.
    """

    def __init__(self, *, train: bool, size: int, resize: int, mean: Sequence[float],
                 std: Sequence[float], interpolation: InterpolationMode) -> None:
        self.train, self.size, self.resize = train, size, resize
        self.mean, self.std, self.interpolation = list(mean), list(std), interpolation
        if train:
            self._crop: Any = T.Compose([
                T.RandomResizedCrop(size, interpolation=interpolation, antialias=True),
                T.RandomHorizontalFlip()])
            self._geometry: Any = self._crop
        else:
            self._crop = T.CenterCrop(size)
            self._geometry = T.Compose([T.Resize(resize, interpolation=interpolation, antialias=True),
                                        self._crop])

    @property
    def deterministic(self) -> bool:
        return not self.train

    def __call__(self, img: Any) -> torch.Tensor:
        img = self._geometry(to_rgb(img))
        if not isinstance(img, torch.Tensor):
            img = F.convert_image_dtype(F.pil_to_tensor(img), torch.float)
        return F.normalize(img, mean=self.mean, std=self.std)

    def prepare(self, img: Any) -> torch.Tensor:
        """The deterministic first half of the pipeline: 3 channels, shorter side to ``resize``.

        ``finish(prepare(img))`` is bitwise ``self(img)`` for the eval pipeline; for training
        it crops and flips the resized image rather than the original. A decoded-image cache
        stores what this returns, so later epochs skip decoding and resizing.

        Args:
            img: anything ``to_rgb`` accepts.

        Returns:
            A (3, H, W) tensor with min(H, W) == ``resize``: uint8 for 8-bit images, float in
            [0, 1] for 16-bit, float and tensor inputs.

        Raises:
            TypeError, ValueError: as ``to_rgb``.

        Example:
            >>> tf = imagenet_transform(size=64)            # resize 73
            >>> tf.prepare(Image.new("RGB", (200, 100))).shape
            torch.Size([3, 73, 146])
        """
        img = F.resize(to_rgb(img), self.resize, interpolation=self.interpolation, antialias=True)
        return img if isinstance(img, torch.Tensor) else F.pil_to_tensor(img)

    def finish(self, img: torch.Tensor) -> torch.Tensor:
        """The second half: crop (centre, or random resized crop and flip), scale, normalise.

        Args:
            img: a (3, H, W) tensor as ``prepare`` returns it (uint8, or float in [0, 1]).

        Returns:
            The normalised float (3, size, size) tensor.

        Raises:
            TypeError: ``img`` is not a tensor.

        Example:
            >>> tf = imagenet_transform(size=64)
            >>> tf.finish(tf.prepare(Image.new("RGB", (200, 100)))).shape
            torch.Size([3, 64, 64])
        """
        if not isinstance(img, torch.Tensor):
            raise TypeError(f"img must be a tensor from prepare(), got {describe(img)}")
        img = self._crop(img)
        if not img.is_floating_point():
            img = F.convert_image_dtype(img, torch.float)
        return F.normalize(img, mean=self.mean, std=self.std)

    def __repr__(self) -> str:
        return (f"ImagePreprocess(train={self.train}, size={self.size}, resize={self.resize}, "
                f"interpolation={self.interpolation.value}, mean={self.mean}, std={self.std})")


def _config_meta(config: DataConfig, explicit_size: bool, explicit_crop: bool = False) -> dict[str, Any]:
    """A data config as ``imagenet_transform``'s settings (a square centre crop only, unless
    the caller gives both sizes)."""
    if config.crop_mode != "center" and not explicit_crop:
        raise ValueError(f"the data config from {config.source} uses crop_mode={config.crop_mode!r}; "
                         "imagenet_transform makes centre crops only: pass size= and resize= explicitly")
    try:
        interpolation = InterpolationMode(config.interpolation)
    except ValueError:
        raise ValueError(f"the data config from {config.source} has interpolation={config.interpolation!r}, "
                         f"not one of {[m.value for m in InterpolationMode]}") from None
    size = config.input_size[0] if explicit_size else config.size
    return {"size": size, "resize": config.resize, "mean": config.mean, "std": config.std,
            "interpolation": interpolation}


def _model_config(model: Any) -> DataConfig:
    if isinstance(model, DataConfig):
        return model
    if isinstance(model, Anatomy):
        return model.data_config
    if isinstance(model, nn.Module):
        return data_config(model)
    raise TypeError(f"model must be an nn.Module, an Anatomy or a DataConfig, got {describe(model)}")


def _check_stats(name: str, value: Any) -> list[float]:
    ok = isinstance(value, (tuple, list, torch.Tensor)) and len(value) == 3
    try:
        values = [float(v) for v in value if not isinstance(v, bool)] if ok else []
    except (TypeError, ValueError):
        ok, values = False, []
    ok = ok and len(values) == 3 and all(math.isfinite(v) for v in values) and (name != "std" or min(values) > 0)
    if not ok:
        raise ValueError(f"{name} must be 3 finite per-channel numbers{' > 0' if name == 'std' else ''}, "
                         f"got {describe(value)}")
    return values


def imagenet_transform(train: bool = False, *, size: int | None = None, resize: int | None = None,
                       mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                       weights: Any = None, interpolation: InterpolationMode | None = None,
                       model: Any = None) -> ImagePreprocess:
    """The preprocessing a pretrained ImageNet model expects.

    Eval: resize the shorter side to ``resize``, centre crop ``size``, scale to [0, 1],
    normalise; numerically the same as ``ResNet18_Weights.IMAGENET1K_V1.transforms()``.
    Train: random resized crop to ``size`` and horizontal flip, then the same scaling and
    normalisation. Any PIL mode and 1- or 3-channel tensors are accepted; the output always
    has 3 channels (see ``to_rgb``).

    Args:
        train: random augmentation for training instead of the deterministic eval pipeline.
        size: output side (default 224, or the weights' crop size).
        resize: shorter side before the centre crop. Default: the weights' value (256
            without weights) when ``size`` is not given; when ``size`` is given, the
            preset's ratio is kept: ``round(size * preset_resize / preset_size)``, rounded
            half up (``size=64`` -> 73 with the 256/224 preset).
        mean: per-channel mean (default ``IMAGENET_MEAN``, or the weights' value).
        std: per-channel std (default ``IMAGENET_STD``, or the weights' value).
        weights: a torchvision weights enum member (or its full name); its own sizes,
            interpolation and statistics are used. Explicit arguments win over it.
        interpolation: resampling mode (default bilinear, or the weights' mode).
        model: a model (or its ``Anatomy``, or a ``DataConfig``) whose own preprocessing to
            use: timm's ``pretrained_cfg`` exactly as ``timm.data.create_transform`` applies
            it (mean, std, interpolation, ``resize = floor(size / crop_pct)``), or the
            torchvision weights ``load_model`` recorded. Explicit arguments win over it.

    Returns:
        An ``ImagePreprocess`` callable.

    Raises:
        TypeError: wrong argument types.
        ValueError: non-positive sizes, statistics that are not 3 finite numbers (std > 0),
            unknown weights, both ``weights`` and ``model``, or a model whose config is not
            a square centre crop (timm's ``squash``/``border`` modes) and no ``size``.

    Example:
        >>> tf = imagenet_transform(weights=ResNet50_Weights.IMAGENET1K_V2)   # 232 -> 224
        >>> imagenet_transform(model=load_model("timm/vit_small_patch16_224.augreg_in21k",
        ...                                     weights=None)).mean            # 248 -> 224, bicubic
        [0.5, 0.5, 0.5]
        >>> tf(Image.open("cat.png")).shape
        torch.Size([3, 224, 224])
    """
    check_bool("train", train)
    meta: dict[str, Any] = {"size": 224, "resize": 256, "mean": IMAGENET_MEAN, "std": IMAGENET_STD,
                            "interpolation": InterpolationMode.BILINEAR}
    if weights is not None and model is not None:
        raise ValueError("pass weights= or model=, not both: each gives the whole preprocessing")
    config = weights_config(weights) if weights is not None else _model_config(model) if model is not None else None
    if config is not None:
        meta.update(_config_meta(config, model is not None and size is not None, None not in (size, resize)))
    if size is not None and resize is None:   # the config's rule for another crop (256/224 by default)
        check_int("size", size, minimum=1)
        resize = config.resize_for(size) if config is not None else max(1, math.floor(size * 256 / 224 + 0.5))
    given = {"size": size, "resize": resize, "mean": mean, "std": std, "interpolation": interpolation}
    meta.update({k: v for k, v in given.items() if v is not None})
    if not isinstance(meta["interpolation"], InterpolationMode):
        raise TypeError(f"interpolation must be a torchvision InterpolationMode, got "
                        f"{describe(meta['interpolation'])}")
    return ImagePreprocess(train=train, size=check_int("size", meta["size"], minimum=1),
                           resize=check_int("resize", meta["resize"], minimum=1),
                           mean=_check_stats("mean", meta["mean"]), std=_check_stats("std", meta["std"]),
                           interpolation=meta["interpolation"])
