"""The preprocessing a model's weights expect, read from the model itself (one place).

First match wins: timm's ``pretrained_cfg`` (through ``timm.data.resolve_data_config``, so
mean, std, interpolation and crop are exactly timm's); the torchvision weights that
``load_model`` recorded (``Weights.transforms()``); else ImageNet's defaults (224 crop of a
256 resize, bilinear, ImageNet mean and std), what ``imagenet_transform()`` gives without
arguments.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

from torch import nn

from ..base import as_weights, describe

__all__ = ["DataConfig", "data_config", "DEFAULT_DATA_CONFIG"]


@dataclass(frozen=True)
class DataConfig:
    """How images must be prepared for a model: resize the shorter side to ``resize``, centre
    crop ``input_size``, normalise with ``mean`` and ``std``.

    Attributes:
        input_size: ``(height, width)`` of the crop.
        resize: shorter side before the crop.
        mean, std: per-channel statistics.
        interpolation: resampling mode, a ``torchvision.transforms.InterpolationMode`` value
            (``"bilinear"``, ``"bicubic"``, ...).
        crop_pct: ``crop / resize`` as the weights were evaluated.
        crop_mode: ``"center"`` (timm also knows ``"squash"`` and ``"border"``).
        source: where it was read: ``"timm:<name>"``, ``"torchvision:<weights>"`` or ``"default"``.
    """

    input_size: tuple[int, int]
    resize: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    interpolation: str
    crop_pct: float
    crop_mode: str = "center"
    source: str = "default"

    @property
    def size(self) -> int:
        """The crop side of a square crop; ``ValueError`` for a rectangular one."""
        height, width = self.input_size
        if height != width:
            raise ValueError(f"the data config from {self.source} has a {height}x{width} crop; "
                             "imagenet_transform makes square crops only: pass size= explicitly")
        return height

    def resize_for(self, size: int) -> int:
        """The shorter side before a ``size`` centre crop: timm's own rule for a timm config
        (``floor(size / crop_pct)``, as ``timm.data.create_transform`` does), else the preset's
        ratio, rounded (torchvision's 256/224 at 64 px: 73)."""
        if self.source.startswith("timm:"):
            return max(1, math.floor(size / self.crop_pct))
        return max(1, math.floor(size * self.resize / self.size + 0.5))

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready values (lists for tuples)."""
        out = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}

    @classmethod
    def from_dict(cls, data: Any) -> "DataConfig":
        """The inverse of ``to_dict``; ``ValueError`` naming a missing or unknown field."""
        if not isinstance(data, dict):
            raise TypeError(f"data_config must be a dict, got {describe(data)}")
        known = {f.name for f in fields(cls)}
        if set(data) - known or {"input_size", "resize", "mean", "std", "interpolation", "crop_pct"} - set(data):
            raise ValueError(f"data_config fields must be {sorted(known)}, got {sorted(data)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


DEFAULT_DATA_CONFIG = DataConfig((224, 224), 256, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225),
                                 "bilinear", 224 / 256)


def _from_timm(cfg: dict[str, Any]) -> DataConfig:
    from timm.data import resolve_data_config

    resolved = resolve_data_config({}, pretrained_cfg=cfg)
    height, width = (int(v) for v in resolved["input_size"][1:])
    crop_pct = float(resolved["crop_pct"])
    # timm's eval transform: scale = floor(side / crop_pct), shorter side resized to it
    return DataConfig((height, width), math.floor(min(height, width) / crop_pct), tuple(resolved["mean"]),
                      tuple(resolved["std"]), str(resolved["interpolation"]), crop_pct,
                      str(resolved.get("crop_mode") or "center"),
                      f"timm:{cfg.get('architecture', '?')}{'.' + cfg['tag'] if cfg.get('tag') else ''}")


def weights_config(weights: Any) -> DataConfig:
    """The data config of a torchvision weights enum member (or its full name).

    Raises:
        TypeError, ValueError: not a weights enum or name; weights without
            image-classification preprocessing.
    """
    weights = as_weights(weights)
    preset = weights.transforms()
    for attr in ("crop_size", "resize_size", "mean", "std", "interpolation"):
        if not hasattr(preset, attr):
            raise ValueError(f"weights={weights} have no image-classification preprocessing "
                             f"(their transforms() has no {attr!r})")
    crop, resize = int(preset.crop_size[0]), int(preset.resize_size[0])
    return DataConfig((crop, crop), resize, tuple(preset.mean), tuple(preset.std),
                      preset.interpolation.value, crop / resize,
                      source=f"torchvision:{type(weights).__name__}.{weights.name}")


def data_config(model: nn.Module) -> DataConfig:
    """The preprocessing ``model`` expects: timm's ``pretrained_cfg``, else the torchvision
    weights ``load_model`` recorded (``transferlearn_weights``), else ImageNet's defaults.

    Args:
        model: the network.

    Returns:
        A ``DataConfig``.

    Example:
        >>> data_config(load_model("timm/vit_small_patch16_224.augreg_in21k", weights=None)).mean
        (0.5, 0.5, 0.5)
    """
    cfg = getattr(model, "pretrained_cfg", None)
    if isinstance(cfg, dict) and cfg:
        return _from_timm(cfg)
    recorded = getattr(model, "transferlearn_weights", None)
    if isinstance(recorded, str) and "." in recorded:
        return weights_config(recorded)
    return DEFAULT_DATA_CONFIG
