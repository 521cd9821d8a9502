"""The model and preprocessing every benchmark builds on the library's side, built once.

``mobilenet`` is MobileNetV2 through ``tl.load_model`` (the one ImageNet checkpoint these
machines have), with the global RNG seeded first so the new head's initialisation follows
from ``seed``; ``chapter_transform`` is the chapter's eval preprocessing written with
torchvision. The chapter's own model, built without transferlearn, is
``benchmarks.textbook.chapter_model``.

Example:
    >>> from benchmarks.models import mobilenet
    >>> model = mobilenet(10, weights=None, seed=0, pin_bn=True)
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision import transforms as T

import transferlearn as tl

__all__ = ["ARCH", "PRETRAINED", "mobilenet", "chapter_transform"]

ARCH, PRETRAINED = "mobilenet_v2", "IMAGENET1K_V1"


def mobilenet(num_classes: int = 10, *, weights: str | None = None, seed: int = 0, channels_last: bool = False,
              pin_bn: bool = False) -> nn.Module:
    """``tl.load_model("mobilenet_v2", weights=weights, num_classes=num_classes)`` after ``torch.manual_seed(seed)``.

    Args:
        num_classes: outputs of the new head.
        weights: ``"IMAGENET1K_V1"`` or ``None`` (random init: timing does not depend on the weights).
        seed: seeds the global RNG before the model is built (the new head's init).
        channels_last: convert the model to the channels_last memory format.
        pin_bn: ``tl.freeze_bn_running_stats`` on the whole model (the Trainer's default policy).

    Returns:
        The model, on the CPU.

    Example:
        >>> mobilenet(3, weights=None).classifier[-1].out_features
        3
    """
    torch.manual_seed(seed)
    model = tl.load_model(ARCH, weights=weights, num_classes=num_classes)
    if pin_bn:
        tl.freeze_bn_running_stats(model)
    return model.to(memory_format=torch.channels_last) if channels_last else model


def chapter_transform(size: int, photos: bool = False) -> T.Compose:
    """The chapter's eval preprocessing at ``size`` (photos: resize by 256/224, then crop).

    Args:
        size: the square side the model sees.
        photos: resize the shorter side to ``size * 256 / 224`` first (photos); else to ``size``.

    Returns:
        torchvision's Resize, CenterCrop, ToTensor and ImageNet Normalize.

    Example:
        >>> chapter_transform(64)  # doctest: +ELLIPSIS
        Compose(...)
    """
    resize = round(size * 256 / 224) if photos else size
    return T.Compose([T.Resize(resize), T.CenterCrop(size), T.ToTensor(),
                      T.Normalize(tl.IMAGENET_MEAN, tl.IMAGENET_STD)])
