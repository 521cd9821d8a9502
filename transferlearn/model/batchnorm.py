"""Pin BatchNorm running statistics so that they survive ``model.train()``.

``requires_grad=False`` freezes a BatchNorm layer's affine weights but not its running mean
and variance: every forward pass in train mode normalises with batch statistics and moves
the stored ones. Calling ``bn.eval()`` once is not enough either, because the next
``model.train()`` switches it back. Here each BatchNorm layer's class is swapped for a
subclass whose ``train()`` always keeps it in eval mode; the state dict, ``isinstance``
checks, ``deepcopy`` and pickling are unaffected, and the original class comes back with
``unfreeze_bn_running_stats``. ``track_running_stats=False`` is never used: it would switch
the layer to batch statistics, the opposite of what is wanted.
"""

from __future__ import annotations

import sys

from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from ..base import check_bool, check_module
from .anatomy import Anatomy, model_anatomy

__all__ = ["freeze_bn_running_stats", "unfreeze_bn_running_stats", "is_bn_frozen", "pin_early_bn"]


class _FrozenStats:
    """Mixin: the layer stays in eval mode whatever ``train()`` is asked for."""

    _transferlearn_frozen_from: type

    def train(self, mode: bool = True):  # noqa: D102 - same contract as nn.Module.train
        return super().train(False)  # type: ignore[misc]

    def extra_repr(self) -> str:
        return super().extra_repr() + ", running_stats=frozen"  # type: ignore[misc]

    def __reduce_ex__(self, protocol: int):
        # Pickle as "the frozen twin of <original class>": a new process rebuilds the twin on
        # load, so even a user's BatchNorm subclass, whose twin is made at freeze time, loads.
        return _rebuild_frozen, (self._transferlearn_frozen_from,), self.__dict__.copy()


_FROZEN_CLASSES: dict[type, type] = {}


def _frozen_class(cls: type) -> type:
    """The frozen twin of a BatchNorm class, created once and importable for pickling."""
    if cls not in _FROZEN_CLASSES:
        name = f"Frozen{cls.__name__}"
        if hasattr(sys.modules[__name__], name):  # same name, other class (a user subclass)
            name = f"Frozen{cls.__module__.replace('.', '_')}_{cls.__name__}"
        frozen = type(name, (_FrozenStats, cls), {"_transferlearn_frozen_from": cls,
                                                  "__module__": __name__})
        frozen.__qualname__ = name
        setattr(sys.modules[__name__], name, frozen)
        _FROZEN_CLASSES[cls] = frozen
    return _FROZEN_CLASSES[cls]


def _rebuild_frozen(cls: type) -> nn.Module:
    """Unpickling helper: an empty instance of ``cls``'s frozen twin (its state comes next)."""
    return _frozen_class(cls).__new__(_frozen_class(cls))


# The standard layers' twins exist from import on, so pickled models load in a new process.
for _cls in (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm):
    _frozen_class(_cls)


def is_bn_frozen(module: nn.Module) -> bool:
    """Tell whether ``module`` is a BatchNorm layer pinned by ``freeze_bn_running_stats``.

    Args:
        module: any module.

    Returns:
        True for a pinned BatchNorm layer, False otherwise (containers included).
    """
    return isinstance(module, _FrozenStats)


def _batchnorms(module: nn.Module) -> list[_BatchNorm]:
    return [m for m in module.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]


def freeze_bn_running_stats(module: nn.Module, *, strict: bool = False) -> nn.Module:
    """Make every BatchNorm layer in ``module`` use and keep its stored running statistics.

    The layers stay in eval mode through any later ``model.train()`` call: running mean,
    variance and ``num_batches_tracked`` never change, and the train-mode output equals the
    eval-mode output. Affine weights keep their ``requires_grad`` and still learn. Pass a
    submodule (``model.layer1``) to pin only the early stages. A BatchNorm layer itself
    may be passed. Layers built with ``track_running_stats=False`` have no statistics to
    pin and are left as they are.

    Args:
        module: a model, a submodule or a single BatchNorm layer (changed in place).
        strict: raise when ``module`` holds no BatchNorm layer with running statistics
            (by default such a module, e.g. a ViT, is returned unchanged).

    Returns:
        ``module`` itself.

    Raises:
        TypeError: ``module`` is not an ``nn.Module``.
        ValueError: ``strict=True`` and there is nothing to freeze.

    Example:
        >>> freeze_bn_running_stats(model.layer1)   # only the first stage keeps ImageNet stats
        >>> model.train()                            # layer1's BatchNorms stay in eval mode
    """
    check_module("module", module)
    check_bool("strict", strict)
    layers = _batchnorms(module)
    if strict and not layers:
        raise ValueError(
            f"module {type(module).__name__} holds no BatchNorm layer with running statistics "
            "(BatchNorm1d/2d/3d or SyncBatchNorm with track_running_stats=True); nothing to freeze")
    for layer in layers:
        if not is_bn_frozen(layer):
            layer.__class__ = _frozen_class(type(layer))
        layer.train(False)
    return module


def unfreeze_bn_running_stats(module: nn.Module) -> nn.Module:
    """Undo ``freeze_bn_running_stats``: BatchNorm layers follow ``train()``/``eval()`` again.

    Each layer is put back in the mode of its nearest non-BatchNorm parent (the root's mode
    for a bare layer), so a model already in train mode resumes updating its statistics.

    Args:
        module: a model, a submodule or a single BatchNorm layer (changed in place).

    Returns:
        ``module`` itself.

    Raises:
        TypeError: ``module`` is not an ``nn.Module``.
    """
    check_module("module", module)
    parent_mode = {id(c): m.training for m in module.modules() for c in m.children()}
    for layer in module.modules():
        if is_bn_frozen(layer):
            layer.__class__ = layer._transferlearn_frozen_from
            layer.train(parent_mode.get(id(layer), module.training))
    return module


def pin_early_bn(model: nn.Module, *, head: str | None = None, anatomy: Anatomy | None = None) -> nn.Module:
    """Pin BatchNorm statistics in the first half of the backbone's stages only (the
    ``freeze_bn="early"`` policy: early, generic stages keep ImageNet statistics, later stages
    adapt to the new domain; on a ResNet ``conv1+bn1`` and ``layer1``). ``anatomy`` is the
    model's ``anatomy`` when already read. Returns ``model``."""
    stages, _ = model_anatomy(model, head=head, anatomy=anatomy).bind(model)
    early = {id(p) for _, ps in stages[: len(stages) // 2] for p in ps}
    for module in model.modules():
        if isinstance(module, _BatchNorm) and any(id(p) in early for p in module.parameters(recurse=False)):
            freeze_bn_running_stats(module)
    return model
