"""Parameter groups with differential learning rates for any ``torch.optim`` optimizer."""

from __future__ import annotations

from typing import Any, Sequence

from torch import nn

from ..base import check_bool, check_float, check_head_name, check_module, describe
from .anatomy import Anatomy, model_anatomy
from .groups import split_layer_groups

__all__ = ["param_groups", "backbone_lrs"]


def backbone_lrs(backbone_lr: float | Sequence[float], n_groups: int) -> list[float]:
    """Learning rate of each of ``n_groups`` backbone stages, input side first.

    A float gives every group that rate; a pair ``(low, high)`` spreads rates geometrically,
    the earliest group ``low`` and the latest ``high`` (a single group gets ``high``).
    """
    if isinstance(backbone_lr, (int, float)) and not isinstance(backbone_lr, bool):
        return [check_float("backbone_lr", backbone_lr)] * n_groups
    if not (isinstance(backbone_lr, (tuple, list)) and len(backbone_lr) == 2):
        raise TypeError(f"backbone_lr must be None, a float or a (low, high) pair, got "
                        f"{describe(backbone_lr)}")
    low = check_float("backbone_lr[0]", backbone_lr[0], strict=True)
    high = check_float("backbone_lr[1]", backbone_lr[1], strict=True)
    if low > high:
        raise ValueError(f"backbone_lr=(low, high) needs low <= high, got {tuple(backbone_lr)}")
    if n_groups == 1:
        return [high]
    return [low * (high / low) ** (i / (n_groups - 1)) for i in range(n_groups)]


def _split_decay(name: str, params: list, lr: float, weight_decay: float,
                 no_decay_ids: set[int]) -> list[dict[str, Any]]:
    if weight_decay == 0:
        return [{"name": name, "params": params, "lr": lr, "weight_decay": 0.0}]
    no_decay = [p for p in params if id(p) in no_decay_ids]
    decay = [p for p in params if id(p) not in no_decay_ids]
    return [{"name": name, "params": decay, "lr": lr, "weight_decay": weight_decay},
            {"name": f"{name}/no_decay", "params": no_decay, "lr": lr, "weight_decay": 0.0}]


def param_groups(model: nn.Module, *, head_lr: float,
                 backbone_lr: float | tuple[float, float] | None = None,
                 weight_decay: float = 0.0, head: str | None = None,
                 trainable_only: bool = False, anatomy: Anatomy | None = None) -> list[dict[str, Any]]:
    """Build optimizer parameter groups: the head at ``head_lr``, the backbone lower.

    Every group is a dict with explicit ``params``, ``lr``, ``weight_decay`` and a readable
    ``name``, so the optimizer's own default learning rate never applies. Every parameter
    appears exactly once (checked). Frozen parameters are included, so an optimizer built
    before the warm-up keeps working after ``unfreeze``; PyTorch optimizers skip parameters
    whose ``.grad`` is ``None``.

    Args:
        model: the network.
        head_lr: learning rate of the head (and auxiliary heads).
        backbone_lr: ``None`` for ``head_lr / 10``; a float for one backbone group; a pair
            ``(low, high)`` for one group per stage (``anatomy(model).stages``), spaced
            geometrically from ``low`` at the input to ``high`` next to the head.
        weight_decay: decay for weight matrices and kernels; the parameters of
            ``anatomy(model).no_decay`` (biases, 1-D norm weights, and what the model
            declares: ViT's class token and position embeddings, timm's
            ``no_weight_decay()``) go to twin ``"<name>/no_decay"`` groups with
            ``weight_decay=0``.
        head: explicit dotted name of the head (see ``find_head``).
        trainable_only: leave out parameters with ``requires_grad=False``.
        anatomy: the model's ``anatomy``, when already read (the Trainer passes its own).

    Returns:
        A list of dicts for ``torch.optim.*(groups)``; empty groups are left out.

    Raises:
        TypeError: wrong argument types.
        ValueError: negative or non-finite rates, ``low > high``, no head found, an
            ``anatomy`` that does not match the model.

    Example:
        >>> opt = torch.optim.AdamW(param_groups(model, head_lr=1e-3, backbone_lr=(1e-5, 1e-4)))
    """
    check_module("model", model)
    check_head_name(head)
    head_lr = check_float("head_lr", head_lr, strict=True)
    weight_decay = check_float("weight_decay", weight_decay)
    check_bool("trainable_only", trainable_only)
    found = model_anatomy(model, head=head, anatomy=anatomy)
    backbone, heads = split_layer_groups(model, anatomy=found)
    by_name = dict(model.named_parameters())
    no_decay = {id(by_name[n]) for n in found.no_decay}
    if backbone_lr is None:
        backbone_lr = head_lr / 10
    if isinstance(backbone_lr, (int, float)) and not isinstance(backbone_lr, bool):
        backbone = [("backbone", [p for _, ps in backbone for p in ps])] if backbone else []
    rates = backbone_lrs(backbone_lr, len(backbone)) if backbone else []
    named = [(n, ps, lr) for (n, ps), lr in zip(backbone, rates)]
    named += [(n, ps, head_lr) for n, ps in heads]
    out = []
    for name, params, lr in named:
        if trainable_only:
            params = [p for p in params if p.requires_grad]
        out += [g for g in _split_decay(name, params, lr, weight_decay, no_decay) if g["params"]]
    _check_partition(model, out, trainable_only)
    return out


def _check_partition(model: nn.Module, groups: list[dict[str, Any]], trainable_only: bool) -> None:
    ids = [id(p) for g in groups for p in g["params"]]
    expected = {id(p) for p in model.parameters() if p.requires_grad or not trainable_only}
    if len(ids) != len(set(ids)) or set(ids) != expected:
        raise RuntimeError("internal error: parameter groups are not a partition of the "
                           f"parameters of {type(model).__name__}; please report this")
