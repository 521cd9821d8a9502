"""The generic stage rule, for models that declare no structure and are not in the family table.

Start from the root's children (the head and its auxiliary classifiers set aside), then
repeatedly open up a container while the backbone has fewer than ``_MIN_GROUPS`` units or a
single container holds more than half of the backbone's parameters. Bare ``nn.Parameter``s
join the unit after them, normalisation layers join the unit before them. This is the rule
``layer_groups`` applied to every model before 0.2.0; it is now the fallback of ``anatomy``.
"""

from __future__ import annotations

from torch import nn

__all__ = ["heuristic_groups"]

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


def heuristic_groups(model: nn.Module, heads: list[str]) -> list[tuple[str, list[nn.Parameter]]]:
    """The backbone's groups by the generic rule: ``(name, [parameters])``, input side first,
    the modules named in ``heads`` left out (a parameter may still repeat: callers dedupe)."""
    return _merge(_expand(_units_of(model, "", heads), heads))
