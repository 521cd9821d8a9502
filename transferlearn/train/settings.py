"""The settings of ``Trainer.fit``: defaults, a strategy's recipe, explicit arguments, checked."""

from __future__ import annotations

from typing import Any

from ..base import check_choice, check_int, describe
from .features import is_deterministic
from .loaders import is_sequential, not_cacheable
from .strategy import Strategy

__all__ = ["DEFAULTS", "UNSET", "fit_settings", "use_feature_cache", "caching_plan"]


class _Unset:
    def __repr__(self) -> str:
        return "<default>"


UNSET: Any = _Unset()
DEFAULTS = {"warmup_epochs": 2, "finetune_epochs": 3, "head_lr": 1e-3, "backbone_lr": None,
            "weight_decay": 0.0, "freeze_bn": True, "unfreeze": None}


def fit_settings(strategy: Strategy | None, given: dict[str, Any]) -> dict[str, Any]:
    """Defaults, overridden by ``strategy``'s recipe, overridden by the arguments ``given``."""
    if strategy is not None and not isinstance(strategy, Strategy):
        raise TypeError(f"strategy must be None or a Strategy (see recommend_strategy), got {describe(strategy)}")
    cfg = {**DEFAULTS, **(strategy.fit_kwargs() if strategy else {}), **given}
    check_int("warmup_epochs", cfg["warmup_epochs"])
    check_int("finetune_epochs", cfg["finetune_epochs"])
    if cfg["warmup_epochs"] + cfg["finetune_epochs"] == 0:
        raise ValueError("warmup_epochs and finetune_epochs are both 0: nothing to train")
    check_choice("freeze_bn", cfg["freeze_bn"], (True, False, "early"))
    if cfg["unfreeze"] is not None:
        check_int("unfreeze", cfg["unfreeze"])
    return cfg


def use_feature_cache(cache_features: Any, loader: Any, warmup_epochs: int) -> bool:
    """Whether the warm-up trains on cached features (see ``Trainer.fit``'s ``cache_features``)."""
    check_choice("cache_features", cache_features, ("auto", True, False))
    reason = not_cacheable(loader)
    if cache_features is True and reason is not None:
        raise ValueError(f"cache_features=True cannot replay this train_loader: {reason}; "
                         "pass cache_features=False")
    if cache_features == "auto":
        return warmup_epochs > 0 and reason is None and is_deterministic(loader.dataset)
    return cache_features is True and warmup_epochs > 0


def caching_plan(cache_features: Any, train_loader: Any, val_loader: Any,
                 warmup_epochs: int) -> tuple[bool, bool, bool]:
    """``(cache the training features, cache the validation features, caching was forced)``:
    validation is cached when it reads a deterministic dataset in order and caching is not off."""
    use = use_feature_cache(cache_features, train_loader, warmup_epochs)
    val = cache_features is not False and is_sequential(val_loader) and \
        use_feature_cache("auto", val_loader, warmup_epochs)
    return use, val, cache_features is True
