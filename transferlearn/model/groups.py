"""Split a model's parameters into layer groups by depth, input side first, head last.

The groups are found from the module tree, by name, with one rule for every architecture:
start from the root's children (the head and its auxiliary classifiers set aside), then
repeatedly open up a container while the backbone has fewer than ``_MIN_GROUPS`` units or a
single container holds more than half of the backbone's parameters. Bare ``nn.Parameter``s
(ViT's ``class_token``) join the unit after them, normalisation layers join the unit before
them. For a ResNet this gives ``conv1+bn1, layer1, ..., layer3, layer4.0, layer4.1, fc``;
for MobileNetV2 ``features.0 ... features.18, classifier.1``.
"""

from __future__ import annotations

from torch import nn

from ..base import check_module
from .heads import head_names

__all__ = ["layer_groups", "split_layer_groups", "head_parameters"]

_MIN_GROUPS = 5
_NORMS = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm, nn.LocalResponseNorm)

# A unit is (dotted name, module or None for a bare parameter, [parameters]).
_Unit = tuple[str, "nn.Module | None", list]


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _units_of(module: nn.Module, prefix: str, heads: list[str]) -> list[_Unit]:
    """The parameter-owning pieces directly below ``module``, heads excluded."""
    units: list[_Unit] = [(_join(prefix, n), None, [p]) for n, p in module.named_parameters(recurse=False)]
    for name, child in module.named_children():
        full = _join(prefix, name)
        if full in heads:
            continue
        if any(h.startswith(full + ".") for h in heads):
            units.extend(_units_of(child, full, heads))
            continue
        params = list(child.parameters())
        if params:
            units.append((full, child, params))
    return units


def _expandable(unit: _Unit) -> bool:
    _, module, _ = unit
    if module is None:
        return False
    owners = sum(1 for c in module.children() if any(True for _ in c.parameters()))
    own = sum(1 for _ in module.parameters(recurse=False))
    return owners >= 1 and owners + own >= 2


def _size(unit: _Unit) -> int:
    return sum(p.numel() for p in unit[2])


def _expand(units: list[_Unit], heads: list[str]) -> list[_Unit]:
    while True:
        total = sum(_size(u) for u in units) or 1
        open_ = [i for i, u in enumerate(units) if _expandable(u)]
        if not open_:
            return units
        biggest = max(open_, key=lambda i: _size(units[i]))
        if len(units) >= _MIN_GROUPS and _size(units[biggest]) * 2 <= total:
            return units
        name, module, _ = units[biggest]
        units[biggest:biggest + 1] = _units_of(module, name, heads)


def _merge(units: list[_Unit]) -> list[tuple[str, list]]:
    groups: list[tuple[str, list]] = []
    pending: list[_Unit] = []  # bare parameters waiting for the next unit
    for unit in units:
        name, module, params = unit
        if module is None:
            pending.append(unit)
            continue
        if isinstance(module, _NORMS) and groups and not pending:
            prev_name, prev_params = groups[-1]
            groups[-1] = (f"{prev_name}+{name}", prev_params + params)
            continue
        names = [u[0] for u in pending] + [name]
        groups.append(("+".join(names), [p for u in pending for p in u[2]] + params))
        pending = []
    if pending:
        groups.append(("+".join(u[0] for u in pending), [p for u in pending for p in u[2]]))
    return groups


def layer_groups(model: nn.Module, *, head: str | None = None) -> list[tuple[str, list[nn.Parameter]]]:
    """Split the model's parameters into groups by depth: input side first, the head last.

    Every parameter appears in exactly one group (shared parameters once). The head group
    holds the head and any auxiliary classifiers; it is left out when the head has no
    parameters (``nn.Identity`` after ``replace_head(model, 0)``).

    Args:
        model: the network.
        head: explicit dotted name of the head (see ``find_head``).

    Returns:
        A list of ``(name, [parameters])``; names are dotted module names, joined with ``+``
        where small pieces (a stem's norm layer, ViT's ``class_token``) were merged.

    Raises:
        TypeError: ``model`` is not a module.
        ValueError: no head can be found.

    Example:
        >>> [n for n, _ in layer_groups(torchvision.models.resnet18())]
        ['conv1+bn1', 'layer1', 'layer2', 'layer3', 'layer4.0', 'layer4.1', 'fc']
    """
    backbone, head_group = split_layer_groups(model, head=head)
    return backbone + head_group


def head_parameters(model: nn.Module, *, head: str | None = None) -> list[nn.Parameter]:
    """The parameters of the head and of any auxiliary classifiers, each once."""
    seen: dict[int, nn.Parameter] = {}
    for name in head_names(model, head=head):
        for p in model.get_submodule(name).parameters():
            seen.setdefault(id(p), p)
    return list(seen.values())


def split_layer_groups(model: nn.Module, *, head: str | None = None) -> tuple[list, list]:
    """``layer_groups`` as ``(backbone groups, [head group])``; the second list is empty when
    the head has no parameters of its own."""
    check_module("model", model)
    heads = head_names(model, head=head)
    backbone = _merge(_expand(_units_of(model, "", heads), heads))
    seen: set[int] = set()

    def unique(params: list) -> list:
        return [p for p in params if id(p) not in seen and not seen.add(id(p))]

    backbone = [(name, ps) for name, ps in ((n, unique(ps)) for n, ps in backbone) if ps]
    head_params = unique(head_parameters(model, head=head))
    head_group = [("+".join(heads), head_params)] if head_params else []
    _check_partition(model, backbone + head_group)
    return backbone, head_group


def _check_partition(model: nn.Module, groups: list[tuple[str, list]]) -> None:
    ids = [id(p) for _, ps in groups for p in ps]
    expected = {id(p) for p in model.parameters()}
    if len(ids) != len(set(ids)) or set(ids) != expected:
        raise RuntimeError(
            f"internal error: layer groups of {type(model).__name__} are not a partition of its "
            "parameters; please report this with the model's definition")
