"""Find and replace the classification head of a pretrained model.

The rule for finding the head (first match wins; docs/heads.md): an explicit
``head="dotted.name"``; timm's ``get_classifier()``; the torchvision architecture table;
else the last ``nn.Linear`` (or ``IdentityHead`` left by ``replace_head(model, 0)``) in
registration order.
"""

from __future__ import annotations

from typing import Callable

from torch import nn
from torchvision import models as tvm

from ..base import check_float, check_head_name, check_int, check_module, describe

__all__ = ["DropoutHead", "IdentityHead", "find_head", "replace_head", "head_names"]


class DropoutHead(nn.Sequential):
    """``Dropout`` followed by a new classifier layer, as built by ``replace_head(dropout=p)``.

    A distinct class so that ``find_head`` returns the whole pair, not its inner layer.
    """


class IdentityHead(nn.Identity):
    """The ``nn.Identity`` that ``replace_head(model, 0)`` leaves, so ``find_head`` still finds it."""


# Architecture table: torchvision class -> rule giving the head's dotted name.
_LAST_IN_CLASSIFIER = "<last layer in classifier>"
_TABLE: tuple[tuple[type, str], ...] = (
    (tvm.ResNet, "fc"), (tvm.RegNet, "fc"), (tvm.ShuffleNetV2, "fc"),
    (tvm.GoogLeNet, "fc"), (tvm.Inception3, "fc"),
    (tvm.DenseNet, "classifier"), (tvm.SqueezeNet, "classifier.1"),
    (tvm.VisionTransformer, "heads.head"), (tvm.SwinTransformer, "head"),
    (tvm.VGG, _LAST_IN_CLASSIFIER), (tvm.AlexNet, _LAST_IN_CLASSIFIER),
    (tvm.MobileNetV2, _LAST_IN_CLASSIFIER), (tvm.MobileNetV3, _LAST_IN_CLASSIFIER),
    (tvm.EfficientNet, _LAST_IN_CLASSIFIER), (tvm.ConvNeXt, _LAST_IN_CLASSIFIER),
    (tvm.MNASNet, _LAST_IN_CLASSIFIER), (tvm.MaxVit, _LAST_IN_CLASSIFIER),
)
_HEAD_LIKE = (nn.Linear, nn.Identity, DropoutHead)


def _last_in_classifier(model: nn.Module) -> str | None:
    classifier = getattr(model, "classifier", None)
    if not isinstance(classifier, nn.Module):
        return None
    names = [n for n, m in classifier.named_children() if isinstance(m, _HEAD_LIKE)]
    return f"classifier.{names[-1]}" if names else None


def _timm_heads(model: nn.Module) -> list[str]:
    """Names of what timm's ``get_classifier()`` returns: one module, or several (DeiT's
    ``head`` and ``head_dist``)."""
    getter = getattr(model, "get_classifier", None)
    if not callable(getter):
        return []
    found = getter()
    found = list(found) if isinstance(found, (tuple, list)) else [found]
    names = {id(m): n for n, m in model.named_modules() if n}
    return [names[id(m)] for m in found if isinstance(m, nn.Module) and id(m) in names]


def _from_timm(model: nn.Module) -> str | None:
    heads = _timm_heads(model)
    return heads[0] if heads else None


def _from_table(model: nn.Module) -> str | None:
    for cls, rule in _TABLE:
        if isinstance(model, cls):
            return _last_in_classifier(model) if rule == _LAST_IN_CLASSIFIER else rule
    return None


def _last_linear(model: nn.Module) -> str | None:
    found = None
    for name, module in model.named_modules():
        if isinstance(module, (nn.Linear, IdentityHead)) and name:
            found = name
    if found is None:
        return None
    parent = found.rpartition(".")[0]
    if parent and isinstance(model.get_submodule(parent), DropoutHead):
        return parent
    return found


def _candidates(model: nn.Module, limit: int = 6) -> list[str]:
    leaves = [n for n, m in model.named_modules()
              if n and not list(m.children()) and any(True for _ in m.parameters(recurse=False))]
    return leaves[-limit:]


def find_head(model: nn.Module, *, head: str | None = None) -> tuple[str, nn.Module]:
    """Return the dotted name and module of the model's final classifier.

    Args:
        model: any classification network (torchvision, timm or your own).
        head: explicit dotted name of the head; overrides every other rule.

    Returns:
        ``(name, module)``, e.g. ``("fc", Linear(512, 1000))`` for a ResNet.

    Raises:
        TypeError: ``model`` is not a module or ``head`` is not a string.
        ValueError: ``head`` names no submodule, or no head can be found.

    Example:
        >>> name, layer = find_head(torchvision.models.resnet18())
        >>> name
        'fc'
    """
    check_module("model", model)
    check_head_name(head)
    if head is not None:
        try:
            return head, model.get_submodule(head)
        except AttributeError:
            raise ValueError(
                f"head={head!r} is not a submodule of {type(model).__name__}; "
                f"candidates include {_candidates(model)}") from None
    rules: tuple[Callable[[nn.Module], str | None], ...] = (_from_timm, _from_table, _last_linear)
    for rule in rules:
        name = rule(model)
        if name:
            return name, model.get_submodule(name)
    raise ValueError(
        f"could not find a classification head in {type(model).__name__}: it is not in the "
        f"architecture table and has no nn.Linear; pass head= with one of {_candidates(model)}")


def _aux_names(model: nn.Module) -> list[str]:
    """Names of auxiliary classifiers that must follow the main head (inception, googlenet,
    timm's distillation head)."""
    if isinstance(model, tvm.Inception3) and model.AuxLogits is not None:
        return ["AuxLogits.fc"]
    if isinstance(model, tvm.GoogLeNet):
        return [f"{aux}.fc2" for aux in ("aux1", "aux2") if getattr(model, aux) is not None]
    return _timm_heads(model)[1:]


def head_names(model: nn.Module, *, head: str | None = None) -> list[str]:
    """The main head's dotted name followed by those of auxiliary classifiers, if any."""
    name, _ = find_head(model, head=head)
    return [name] + (_aux_names(model) if head is None else [])


def _input_layer(module: nn.Module) -> nn.Module:
    for sub in module.modules():
        if isinstance(sub, (nn.Linear, nn.Conv2d)):
            return sub
    raise ValueError(
        f"cannot tell the input width of head {describe(module)}: it holds no nn.Linear or "
        "nn.Conv2d; pass head= naming a layer that does")


def _new_layer(old: nn.Module, num_classes: int) -> nn.Module:
    if num_classes == 0:
        return IdentityHead()
    first = _input_layer(old)
    like = {"device": first.weight.device, "dtype": first.weight.dtype}
    if isinstance(first, nn.Linear):
        return nn.Linear(first.in_features, num_classes, bias=first.bias is not None, **like)
    return nn.Conv2d(first.in_channels, num_classes, kernel_size=first.kernel_size,
                     stride=first.stride, padding=first.padding, bias=first.bias is not None,
                     **like)


def _reset_timm(model: nn.Module, num_classes: int) -> bool:
    """timm models replace their own head (``reset_classifier``), kept on the old dtype/device."""
    name = _from_timm(model)
    if name is None or not callable(getattr(model, "reset_classifier", None)):
        return False
    like = next(model.get_submodule(name).parameters(), None)
    model.reset_classifier(num_classes)
    if like is not None:
        for new in _timm_heads(model):
            model.get_submodule(new).to(device=like.device, dtype=like.dtype)
    return True


def _set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, attr = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, attr, module)


def replace_head(model: nn.Module, num_classes: int, *, head: str | None = None,
                 dropout: float | None = None) -> nn.Module:
    """Put a new, trainable classifier with ``num_classes`` outputs in place of the old head.

    The new layer keeps the old one's input width, dtype and device. Auxiliary classifiers
    (inception_v3 ``AuxLogits.fc``, googlenet ``aux1/aux2``) are replaced too, so no part of
    the old 1000-class head is left behind. ``num_classes=0`` puts ``nn.Identity()`` there
    and the model returns pooled features.

    Args:
        model: the network, changed in place.
        num_classes: outputs of the new head; 0 for a feature extractor.
        head: explicit dotted name of the head (see ``find_head``).
        dropout: probability of a ``Dropout`` put before the new layer.

    Returns:
        ``model`` itself.

    Raises:
        TypeError: wrong argument types.
        ValueError: ``num_classes < 0``, ``dropout`` outside [0, 1), ``dropout`` with
            ``num_classes=0``, or no head found.

    Example:
        >>> model = replace_head(torchvision.models.resnet18(), 5, dropout=0.2)
        >>> model.fc
        DropoutHead((0): Dropout(p=0.2, inplace=False) (1): Linear(512, 5))
    """
    check_module("model", model)
    check_int("num_classes", num_classes, minimum=0)
    if dropout is not None:
        check_float("dropout", dropout, minimum=0.0, maximum=1.0)
        if dropout >= 1.0 or num_classes == 0:
            raise ValueError(f"dropout must be in [0, 1) and needs num_classes > 0, got "
                             f"dropout={dropout!r} with num_classes={num_classes}")
    if head is None and _reset_timm(model, num_classes):
        if dropout is not None:
            name, new = find_head(model)
            _set_submodule(model, name, DropoutHead(nn.Dropout(dropout), new))
        return model
    names = head_names(model, head=head)
    for i, name in enumerate(names):
        layer = _new_layer(model.get_submodule(name), num_classes)
        if i == 0 and dropout is not None:
            layer = DropoutHead(nn.Dropout(dropout), layer)
        _set_submodule(model, name, layer)
    if isinstance(getattr(model, "num_classes", None), int):
        model.num_classes = num_classes
    return model

