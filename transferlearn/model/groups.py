"""A model's parameters as layer groups: the backbone's stages, input side first, the head last.

The stages are those of ``anatomy(model)`` (docs/anatomy.md): the model's own declaration
(timm's ``group_matcher``), the family table (for a ResNet ``conv1+bn1, layer1 ... layer4``;
for MobileNetV2 its five output-stride stages), or the generic rule for anything else.
"""

from __future__ import annotations

from torch import nn

from ..base import check_module
from .anatomy import Anatomy, model_anatomy

__all__ = ["layer_groups", "split_layer_groups", "head_parameters"]


def layer_groups(model: nn.Module, *, head: str | None = None,
                 anatomy: Anatomy | None = None) -> list[tuple[str, list[nn.Parameter]]]:
    """Split the model's parameters into groups by depth: the stages, input side first, the head last.

    Every parameter appears in exactly one group (shared parameters once). The head group
    holds the head and any auxiliary classifiers; it is left out when the head has no
    parameters (``nn.Identity`` after ``replace_head(model, 0)``).

    Args:
        model: the network.
        head: explicit dotted name of the head (see ``find_head``).
        anatomy: the model's ``anatomy``, when already read (the Trainer passes its own).

    Returns:
        A list of ``(name, [parameters])``; a stage's name joins its modules' dotted names
        with ``+``, numbered siblings as a range (``features.7-13``).

    Raises:
        TypeError: ``model`` is not a module, or ``anatomy`` is not an ``Anatomy``.
        ValueError: no head can be found, or ``anatomy`` does not match the model.

    Example:
        >>> [n for n, _ in layer_groups(torchvision.models.resnet18())]
        ['conv1+bn1', 'layer1', 'layer2', 'layer3', 'layer4', 'fc']
    """
    backbone, head_group = split_layer_groups(model, head=head, anatomy=anatomy)
    return backbone + head_group


def head_parameters(model: nn.Module, *, head: str | None = None,
                    anatomy: Anatomy | None = None) -> list[nn.Parameter]:
    """The parameters of the head and of any auxiliary classifiers, each once."""
    check_module("model", model)
    return model_anatomy(model, head=head, anatomy=anatomy).bind(model)[1]


def split_layer_groups(model: nn.Module, *, head: str | None = None,
                       anatomy: Anatomy | None = None) -> tuple[list, list]:
    """``layer_groups`` as ``(backbone stages, [head group])``; the second list is empty when
    the head has no parameters of its own."""
    check_module("model", model)
    found = model_anatomy(model, head=head, anatomy=anatomy)
    stages, head_params = found.bind(model)
    head_group = [("+".join((found.head,) + found.aux_heads), head_params)] if head_params else []
    return stages, head_group
