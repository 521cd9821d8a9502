"""Freeze the pretrained backbone, or unfreeze all or only its last stages."""

from __future__ import annotations

from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from ..base import check_bool, check_choice, check_head_name, check_int, check_module
from .anatomy import Anatomy, model_anatomy
from .batchnorm import freeze_bn_running_stats, pin_early_bn, unfreeze_bn_running_stats
from .groups import head_parameters

__all__ = ["freeze_backbone", "unfreeze", "head_parameters", "set_phase"]


def _set_trainable(model: nn.Module, trainable: set[int]) -> None:
    for p in model.parameters():
        keep = id(p) in trainable
        p.requires_grad_(keep)
        if not keep:
            p.grad = None  # a stale gradient would let momentum / weight decay move it


def freeze_backbone(model: nn.Module, *, head: str | None = None, train_bn: bool = False,
                    anatomy: Anatomy | None = None) -> nn.Module:
    """Stop gradients everywhere but in the head: the pretrained backbone becomes a fixed
    feature extractor.

    Every parameter outside the head is frozen, including bare ``nn.Parameter``s such as
    ViT's ``class_token`` and ``encoder.pos_embedding``, and its ``.grad`` is cleared so
    that an optimizer built earlier (momentum, weight decay) cannot keep moving it. The head
    is made trainable. BatchNorm running statistics are not touched: use
    ``freeze_bn_running_stats`` for those.

    Args:
        model: the network, changed in place.
        head: explicit dotted name of the head (see ``find_head``).
        train_bn: keep BatchNorm affine weights (gamma, beta) trainable.
        anatomy: the model's ``anatomy``, when already read (the Trainer passes its own).

    Returns:
        ``model`` itself.

    Raises:
        TypeError: ``model`` is not a module, ``train_bn`` is not a bool, or ``anatomy`` is
            not an ``Anatomy``.
        ValueError: no head can be found, or ``anatomy`` does not match the model.

    Example:
        >>> freeze_backbone(model)
        >>> [n for n, p in model.named_parameters() if p.requires_grad]
        ['fc.weight', 'fc.bias']
    """
    check_module("model", model)
    check_head_name(head)
    check_bool("train_bn", train_bn)
    trainable = {id(p) for p in head_parameters(model, head=head, anatomy=anatomy)}
    if train_bn:
        trainable |= {id(p) for m in model.modules() if isinstance(m, _BatchNorm)
                      for p in m.parameters(recurse=False)}
    _set_trainable(model, trainable)
    return model


def unfreeze(model: nn.Module, *, last: int | None = None, head: str | None = None,
             anatomy: Anatomy | None = None) -> nn.Module:
    """Make the whole model trainable, or only the head plus the last ``last`` stages.

    Stages are those of ``anatomy(model)`` (docs/anatomy.md): on every ResNet ``last=2``
    trains ``layer3`` and ``layer4`` entirely. With ``last=N`` every earlier stage is frozen
    (and its ``.grad`` cleared), so the call fully defines what trains.

    Args:
        model: the network, changed in place.
        last: number of backbone stages, counted from the head, to make trainable;
            ``None`` for all, ``0`` for the head only.
        head: explicit dotted name of the head (see ``find_head``).
        anatomy: the model's ``anatomy``, when already read (the Trainer passes its own).

    Returns:
        ``model`` itself.

    Raises:
        TypeError: ``model`` is not a module, ``last`` is not an int, or ``anatomy`` is not
            an ``Anatomy``.
        ValueError: ``last < 0``, no head can be found, or ``anatomy`` does not match.

    Example:
        >>> unfreeze(model, last=2)   # resnet18/50/101: layer3, layer4 and fc train
    """
    check_module("model", model)
    if last is None:
        for p in model.parameters():
            p.requires_grad_(True)
        return model
    check_int("last", last, minimum=0)
    stages, head_params = model_anatomy(model, head=head, anatomy=anatomy).bind(model)
    trainable = {id(p) for p in head_params}
    for _, params in stages[len(stages) - last:] if last else []:
        trainable |= {id(p) for p in params}
    _set_trainable(model, trainable)
    return model


def set_phase(model: nn.Module, phase: str, *, last: int | None = None, freeze_bn: bool | str = True,
              head: str | None = None, anatomy: Anatomy | None = None) -> nn.Module:
    """Put ``model`` in the state of a training phase, as the Trainer does at each phase switch.

    ``"warmup"``: ``freeze_backbone`` and every BatchNorm pinned. ``"finetune"``:
    ``unfreeze(last=last)``, then BatchNorm statistics pinned (``freeze_bn=True``), adapting
    (``False``) or pinned in the first half of the backbone only (``"early"``).

    Args:
        model: the network (changed in place).
        phase: ``"warmup"`` or ``"finetune"``.
        last: with ``"finetune"``, train only the head and the last N stages.
        freeze_bn: the fine-tune BatchNorm policy (``"early"``: the first half of the stages).
        head: explicit dotted name of the head.
        anatomy: the model's ``anatomy``, when already read (read once here otherwise).

    Returns:
        ``model``.

    Example:
        >>> set_phase(model, "finetune", last=2, freeze_bn="early")
    """
    check_choice("phase", phase, ("warmup", "finetune"))
    check_choice("freeze_bn", freeze_bn, (True, False, "early"))
    check_module("model", model)
    anatomy = model_anatomy(model, head=head, anatomy=anatomy)
    if phase == "warmup":
        freeze_backbone(model, anatomy=anatomy)
        return freeze_bn_running_stats(model)
    unfreeze(model, last=last, anatomy=anatomy)
    if freeze_bn is True:
        return freeze_bn_running_stats(model)
    unfreeze_bn_running_stats(model)
    if freeze_bn == "early":
        pin_early_bn(model, anatomy=anatomy)
    return model
