"""Preprocess images exactly as ImageNet-pretrained weights expect them.

One place builds every pipeline: resize the shorter side, centre crop, scale to [0, 1],
normalise with the weights' own statistics. Any PIL mode and 1- or 3-channel tensors come
out as 3-channel float tensors, so grayscale scans and transparent PNGs cannot reach an RGB
model in the wrong shape.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch
from torch import nn
from torchvision import transforms as T
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as F

from ..base import check_bool, check_int, describe
from ..model.anatomy import Anatomy
from ..model.data_config import DataConfig, data_config, weights_config
from .augment import augment_ops, check_augment
from .channels import to_rgb

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "ImagePreprocess", "imagenet_transform", "to_rgb"]

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)


class ImagePreprocess:
    """The callable returned by ``imagenet_transform``: image in, normalised (3, S, S) tensor out.

    ``augment`` names its preset (``data/augment.py``: ``"none"`` for the eval pipeline).
    ``deterministic`` is True for the eval pipeline only; the Trainer uses it to decide
    whether backbone features may be computed once and cached.
    """

    def __init__(self, *, train: bool, size: int, resize: int, mean: Sequence[float],
                 std: Sequence[float], interpolation: InterpolationMode, augment: str | None = None) -> None:
        self.augment = check_augment("light" if train else "none") if augment is None else check_augment(augment)
        if train == (self.augment == "none"):
            raise ValueError(f"augment={self.augment!r} does not fit train={train}: the eval pipeline "
                             "(train=False) is augment='none', a training one any other preset")
        self.train, self.size, self.resize = train, size, resize
        self.mean, self.std, self.interpolation = list(mean), list(std), interpolation
        if train:
            self._crop: Any = augment_ops(self.augment, size, interpolation)
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
        """The second half: crop (centre, or the preset's random crop, flip, policy), scale, normalise.

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
        return (f"ImagePreprocess(train={self.train}, augment={self.augment!r}, size={self.size}, "
                f"resize={self.resize}, interpolation={self.interpolation.value}, mean={self.mean}, std={self.std})")


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
                       model: Any = None, augment: str | None = None) -> ImagePreprocess:
    """The preprocessing a pretrained ImageNet model expects.

    Eval: resize the shorter side to ``resize``, centre crop ``size``, scale to [0, 1],
    normalise; numerically the same as ``ResNet18_Weights.IMAGENET1K_V1.transforms()``.
    Train: the ``augment`` preset's random operations (default ``"light"``: random resized
    crop to ``size`` and horizontal flip), then the same scaling and normalisation. Any PIL
    mode and 1- or 3-channel tensors are accepted; the output always has 3 channels (see
    ``to_rgb``).

    Args:
        train: random augmentation for training instead of the deterministic eval pipeline.
        augment: the training preset (``data/augment.py``): ``"light"`` (default for
            ``train=True``: crop + flip), ``"trivial"`` (+ TrivialAugmentWide),
            ``"randaugment"`` (+ RandAugment), or ``"none"`` (the eval pipeline, also with
            ``train=True``). With ``train=False`` only ``"none"`` (or None).
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
        ValueError: an unknown ``augment`` or one other than ``"none"`` with ``train=False``,
            non-positive sizes, statistics that are not 3 finite numbers (std > 0),
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
    preset = check_augment(augment) if augment is not None else "light" if train else "none"
    if not train and preset != "none":
        raise ValueError(f"augment={preset!r} needs train=True (the eval pipeline has no augmentation)")
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
    return ImagePreprocess(train=preset != "none", augment=preset, size=check_int("size", meta["size"], minimum=1),
                           resize=check_int("resize", meta["resize"], minimum=1),
                           mean=_check_stats("mean", meta["mean"]), std=_check_stats("std", meta["std"]),
                           interpolation=meta["interpolation"])
