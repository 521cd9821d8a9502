"""The training loss's options: label smoothing, class weights (``balance="loss"``), and MixUp /
CutMix with soft targets on the phases that read images (not the cached warm-up).

MixUp and CutMix are torchvision's (``transforms.v2.MixUp`` / ``CutMix``, one of the two per
batch when both are on): they draw from the global torch RNG, which every checkpoint saves,
so a resumed run mixes exactly as the uninterrupted one. See docs/recipe.md.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn

from ..base import describe
from ..model.anatomy import Anatomy, model_anatomy

__all__ = ["Mixer", "training_criterion", "num_classes"]


def num_classes(model: nn.Module, head: str | None = None, anatomy: Anatomy | None = None) -> int:
    """The number of outputs of ``model``'s head, read from its anatomy.

    Raises:
        ValueError: the head's width cannot be read.
    """
    found = model_anatomy(model, head=head, anatomy=anatomy)
    if found.num_classes is None:
        raise ValueError(f"cannot read the number of classes from the head {found.head!r} "
                         f"({type(model.get_submodule(found.head)).__name__}); mixup, cutmix and "
                         "balance='loss' need a head with out_features")
    return found.num_classes


class Mixer:
    """MixUp and/or CutMix of a batch of images, with soft (probability) targets.

    Args:
        mixup: Beta(alpha, alpha) of MixUp (0: off).
        cutmix: Beta(alpha, alpha) of CutMix (0: off).
        classes: the number of classes (for the one-hot targets).

    Example:
        >>> mixed, soft = Mixer(0.2, 1.0, classes=10)(images, labels)   # soft: (N, 10), rows sum to 1
    """

    def __init__(self, mixup: float, cutmix: float, classes: int) -> None:
        from torchvision.transforms import v2
        ops = ([v2.MixUp(alpha=mixup, num_classes=classes)] if mixup else []) + \
            ([v2.CutMix(alpha=cutmix, num_classes=classes)] if cutmix else [])
        self.op: Callable = ops[0] if len(ops) == 1 else v2.RandomChoice(ops)
        self.label = "+".join(name for name, a in (("mixup", mixup), ("cutmix", cutmix)) if a)
        self.cutmix = bool(cutmix)

    def __call__(self, inputs: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if targets.ndim != 1 or targets.is_floating_point():
            raise ValueError(f"mixup/cutmix need class-index targets (a 1-D integer tensor), got "
                             f"{targets.dtype} of shape {tuple(targets.shape)}")
        if inputs.ndim != 4 and self.cutmix:
            raise ValueError(f"cutmix needs image batches (N, C, H, W), got shape {tuple(inputs.shape)}")
        return self.op(inputs, targets.long())


def training_criterion(criterion: Any, *, label_smoothing: float = 0.0, weight: torch.Tensor | None = None,
                       user: bool = False) -> Any:
    """The loss the training step uses: ``criterion``, or a ``nn.CrossEntropyLoss`` like it with
    ``label_smoothing`` and class ``weight`` (validation keeps ``criterion`` itself).

    Raises:
        ValueError: smoothing or weights asked of a criterion that is not an ``nn.CrossEntropyLoss``,
            or of one that has its own already.
    """
    if not label_smoothing and weight is None:
        return criterion
    asked = " and ".join(([f"label_smoothing={label_smoothing}"] if label_smoothing else []) +
                         (["balance='loss'"] if weight is not None else []))
    if not isinstance(criterion, nn.CrossEntropyLoss):
        raise ValueError(f"{asked} needs the default criterion or an nn.CrossEntropyLoss, got criterion="
                         f"{describe(criterion) if user else type(criterion).__name__}; build the smoothing or "
                         "class weights into your own criterion instead")
    if (label_smoothing and criterion.label_smoothing) or (weight is not None and criterion.weight is not None):
        raise ValueError(f"{asked}: the Trainer's criterion already has label_smoothing="
                         f"{criterion.label_smoothing} / class weights; set them in one place")
    return nn.CrossEntropyLoss(weight=criterion.weight if weight is None else weight, reduction=criterion.reduction,
                               ignore_index=criterion.ignore_index,
                               label_smoothing=label_smoothing or criterion.label_smoothing)
