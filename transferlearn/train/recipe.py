"""The training recipe as a value: the phases in order, each saying what trains, at which rates,
with which BatchNorm policy, for how many epochs and whether on cached features.

``Recipe.from_fit`` turns ``Trainer.fit``'s arguments (or a ``Strategy``) into one: the
two-phase fit is the list ``[warmup, finetune]``; gradual unfreezing is a longer list. A
``Recipe`` and its ``Phase``s are frozen and checked when built, so the loop only reads them.
See docs/trainer.md ("The recipe").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence, Union

from ..base import check_choice, check_float, check_int, describe
from ..model.freezing import set_phase
from ..model.optim import backbone_lrs
from .features import is_deterministic
from .loaders import is_sequential, not_cacheable
from .schedules import Schedule, as_schedule
from .selection import MONITORS
from .step import check_step_options
from .strategy import Strategy

__all__ = ["Phase", "Recipe", "DEFAULT", "use_feature_cache", "caching_plan"]

BackboneLR = Union[float, tuple[float, float], None]


class _Default:
    """``fit``'s marker for an argument that was not given (so a strategy's value applies)."""

    def __repr__(self) -> str:
        return "<default>"


DEFAULT: Any = _Default()


def _check_trains(name: str, value: Any) -> str | int:
    if value in ("head", "all") and isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return check_int(name, value)
    raise TypeError(f"{name} must be 'head', 'all' or an int >= 0 (the head plus the last N stages), "
                    f"got {describe(value)}")


@dataclass(frozen=True)
class Phase:
    """One phase of a fit: what trains, how fast, with which BatchNorm policy, for how long.

    Attributes:
        name: the label of its epochs in the history (``record["phase"]``) and the progress line.
        epochs: number of epochs (0: the phase is skipped).
        trains: ``"head"`` (the backbone frozen), ``"all"``, or ``N``: the head plus the last
            ``N`` backbone stages (``unfreeze(model, last=N)``).
        head_lr: learning rate of the head.
        backbone_lr: ``None`` (``head_lr / 10``), a float, or a ``(low, high)`` pair spread over
            the backbone's stages (``param_groups``).
        freeze_bn: BatchNorm statistics pinned (``True``), adapting (``False``) or pinned in
            the first half of the backbone (``"early"``).
        cache: train on cached backbone features: ``"auto"`` (when the phase can and the data
            is deterministic), ``True`` (an error when it cannot) or ``False``. Only a phase
            that trains the head alone with BatchNorm pinned can.
        schedule: how the rates move over the phase's optimizer steps: a ``Schedule``, or a
            kind (``"constant"``, ``"cosine"``, ``"one_cycle"``) or callable made one.

    Example:
        >>> Phase("finetune", epochs=3, trains=2, backbone_lr=1e-4, freeze_bn="early", schedule="cosine")
    """

    name: str
    epochs: int
    trains: str | int = "all"
    head_lr: float = 1e-3
    backbone_lr: BackboneLR = None
    freeze_bn: bool | str = True
    cache: bool | str = "auto"
    schedule: Schedule = Schedule()

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise TypeError(f"Phase name must be a non-empty string, got {describe(self.name)}")
        check_int("epochs", self.epochs)
        _check_trains("trains", self.trains)
        check_float("head_lr", self.head_lr, strict=True)
        if isinstance(self.backbone_lr, list):
            object.__setattr__(self, "backbone_lr", tuple(self.backbone_lr))
        if self.backbone_lr is not None:
            backbone_lrs(self.backbone_lr, 2)  # the checks of param_groups, now
        check_choice("freeze_bn", self.freeze_bn, (True, False, "early"))
        check_choice("cache", self.cache, ("auto", True, False))
        object.__setattr__(self, "schedule", as_schedule(self.schedule))
        if self.cache is True and not self.cacheable:
            raise ValueError(f"Phase {self.name!r}: cache=True needs a phase that trains the head alone "
                             f"(trains='head') with BatchNorm pinned (freeze_bn=True), got trains={self.trains!r}, "
                             f"freeze_bn={self.freeze_bn!r}")

    @property
    def cacheable(self) -> bool:
        """Whether the backbone is fixed in this phase (frozen weights, pinned statistics)."""
        return self.trains == "head" and self.freeze_bn is True

    @property
    def rates(self) -> tuple[float, BackboneLR]:
        return self.head_lr, self.backbone_lr

    def apply(self, model: Any, *, head: str | None = None, anatomy: Any = None) -> Any:
        """Put ``model`` in this phase's state (``set_phase``): trainable parameters and
        BatchNorm policy; ``anatomy`` (read once per fit) or ``head`` says where its head and
        stages are. Returns ``model``."""
        if self.trains == "head" and self.freeze_bn is True:
            return set_phase(model, "warmup", head=head, anatomy=anatomy)
        last = 0 if self.trains == "head" else None if self.trains == "all" else self.trains
        return set_phase(model, "finetune", last=last, freeze_bn=self.freeze_bn, head=head, anatomy=anatomy)


def _check_phases(phases: Any) -> tuple[Phase, ...]:
    if isinstance(phases, (str, bytes)) or not isinstance(phases, Sequence) or not phases:
        raise TypeError(f"phases must be a non-empty list of Phase, got {describe(phases)}")
    for i, phase in enumerate(phases):
        if not isinstance(phase, Phase):
            raise TypeError(f"phases[{i}] must be a Phase, got {describe(phase)}")
    if sum(p.epochs for p in phases) == 0:
        raise ValueError("the phases have 0 epochs in total: nothing to train")
    pairs = {isinstance(p.backbone_lr, tuple) for p in phases}
    if len(pairs) > 1:
        raise ValueError("the phases must agree on the kind of backbone_lr (a (low, high) pair in every phase "
                         "or in none): one optimizer, with one set of parameter groups, serves the whole fit")
    return tuple(phases)


@dataclass(frozen=True)
class Recipe:
    """A whole fit: the phases in order and what holds across them.

    Attributes:
        phases: the ``Phase``s, run top to bottom.
        weight_decay: decay of weight matrices and kernels (``param_groups``).
        monitor: ``"val_loss"``, ``"val_accuracy"`` or ``"val_macro_f1"``: ranks the epochs.
        patience: end a phase after this many epochs without a new best (None: never).
        restore_best: end with the weights of the best validated epoch.
        accumulate: the optimizer steps every ``accumulate`` batches, on their mean gradient.
        ema: decay of an exponential moving average of the weights (None: off); the EMA is
            what validates and what ``fit`` ends with.
        label_smoothing: of the training loss (``nn.CrossEntropyLoss``'s own).
        mixup: Beta(alpha, alpha) of MixUp on the uncached phases (0: off).
        cutmix: Beta(alpha, alpha) of CutMix on the uncached phases (0: off).
        balance: ``None`` or ``"loss"``: class weights ``N / (C * count)`` in the training loss.

    Example:
        >>> Recipe((Phase("warmup", 2, trains="head"), Phase("finetune", 3))).epochs
        5
    """

    phases: tuple[Phase, ...]
    weight_decay: float = 0.0
    monitor: str = "val_loss"
    patience: int | None = None
    restore_best: bool = True
    accumulate: int = 1
    ema: float | None = None
    label_smoothing: float = 0.0
    mixup: float = 0.0
    cutmix: float = 0.0
    balance: str | None = None
    plan: tuple[int, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "phases", _check_phases(self.phases))
        check_float("weight_decay", self.weight_decay)
        check_choice("monitor", self.monitor, MONITORS)
        if self.patience is not None:
            check_int("patience", self.patience, minimum=1)
        check_choice("restore_best", self.restore_best, (True, False))
        check_step_options(self)
        plan = tuple(i for i, p in enumerate(self.phases) for _ in range(p.epochs))
        object.__setattr__(self, "plan", plan)  # the phase of each epoch, by index

    @property
    def epochs(self) -> int:
        return len(self.plan)

    def phase_at(self, epoch: int) -> Phase:
        """The phase of epoch ``epoch`` (0-based)."""
        return self.phases[self.plan[epoch]]

    def first_epoch(self, index: int) -> int:
        """The first (0-based) epoch of phase ``index``; ``epochs`` when it has none."""
        return sum(p.epochs for p in self.phases[:index])

    def describe(self) -> str:
        """The plan in words, for error messages."""
        if {p.name for p in self.phases} <= {"warmup", "finetune"}:
            n = sum(p.epochs for p in self.phases if p.name == "warmup")
            return f"{n} warm-up and {self.epochs - n} fine-tune epochs"
        return "phases " + ", ".join(f"{p.name} ({p.epochs} epochs)" for p in self.phases)

    @classmethod
    def from_fit(cls, strategy: Strategy | None = None, phases: Sequence[Phase] | None = None, *,
                 cache_features: Any = "auto", weight_decay: Any = DEFAULT, **given: Any) -> "Recipe":
        """The recipe of ``Trainer.fit``'s arguments: defaults, overridden by ``strategy``'s
        settings, overridden by the arguments given (those not ``DEFAULT``); or ``phases``.
        ``given`` holds the phases' settings (``two_phases``) and the recipe's other fields.

        Raises:
            TypeError, ValueError: a bad argument, named as ``fit`` names it.
        """
        if strategy is not None and not isinstance(strategy, Strategy):
            raise TypeError(f"strategy must be None or a Strategy (see recommend_strategy), got {describe(strategy)}")
        check_choice("cache_features", cache_features, ("auto", True, False))
        given = {k: v for k, v in given.items() if v is not DEFAULT}
        common = {k: given.pop(k) for k in list(given) if k in _FIELDS}
        common["weight_decay"] = 0.0 if weight_decay is DEFAULT else weight_decay
        if phases is not None:
            extra = sorted(given) + (["strategy"] if strategy is not None else []) + \
                (["cache_features"] if cache_features != "auto" else [])
            if extra:
                raise ValueError(f"phases= describes every phase; do not also pass {', '.join(extra)} "
                                 "(set them on the Phase objects)")
            return cls(_check_phases(phases), **common)
        settings = {**(strategy.fit_kwargs() if strategy else {}), **given}
        return cls(two_phases(cache_features=cache_features, **settings), **common)


_FIELDS = ("monitor", "patience", "restore_best", "accumulate", "ema", "label_smoothing", "mixup", "cutmix",
           "balance")  # Recipe fields fit passes through


def two_phases(*, warmup_epochs: int = 2, finetune_epochs: int | Sequence[int] = 3, head_lr: float = 1e-3,
               backbone_lr: BackboneLR = None, freeze_bn: bool | str = True,
               unfreeze: int | None | Sequence[int | None] = None, cache_features: bool | str = "auto",
               schedule: Any = "constant", warmup_steps: int = 0) -> tuple[Phase, ...]:
    """The phases of ``fit``'s keyword arguments (their defaults are here, once): a head warm-up,
    then one fine-tune phase, or one per entry of an ``unfreeze`` tuple (gradual unfreezing;
    ``finetune_epochs`` then an int for each, or a tuple with one count per entry)."""
    check_int("warmup_epochs", warmup_epochs)
    steps = _check_unfreeze(unfreeze)
    epochs = _check_finetune_epochs(finetune_epochs, len(steps))
    if warmup_epochs + sum(epochs) == 0:
        raise ValueError("warmup_epochs and finetune_epochs are both 0: nothing to train")
    check_choice("freeze_bn", freeze_bn, (True, False, "early"))
    check_float("head_lr", head_lr, strict=True)
    gradual = isinstance(unfreeze, (tuple, list))
    schedule = as_schedule(schedule, warmup_steps)
    warmup = Phase("warmup", warmup_epochs, trains="head", head_lr=head_lr, backbone_lr=backbone_lr,
                   cache=cache_features, schedule=schedule)
    tuned = [Phase(f"finetune:{'all' if n is None else f'last{n}'}" if gradual else "finetune", e,
                   trains="all" if n is None else n, head_lr=head_lr, backbone_lr=backbone_lr,
                   freeze_bn=freeze_bn, cache=False, schedule=schedule) for n, e in zip(steps, epochs)]
    return (warmup, *tuned)


def _check_unfreeze(unfreeze: Any) -> list[int | None]:
    items = list(unfreeze) if isinstance(unfreeze, (tuple, list)) else [unfreeze]
    if not items:
        raise ValueError("unfreeze=() has no phases; pass None (all), an int or a tuple such as (1, 3, None)")
    for item in items:
        if item is not None and (isinstance(item, bool) or not isinstance(item, int)):
            raise TypeError(f"unfreeze must be None (all), an int >= 0 or a tuple of them (gradual unfreezing), "
                            f"got {describe(unfreeze)}")
        if item is not None:
            check_int("unfreeze", item)
    return items


def _check_finetune_epochs(value: Any, n: int) -> list[int]:
    if isinstance(value, (tuple, list)):
        if len(value) != n:
            raise ValueError(f"finetune_epochs={tuple(value)} needs one count per unfreeze entry ({n})")
        return [check_int("finetune_epochs", v) for v in value]
    return [check_int("finetune_epochs", value)] * n


def use_feature_cache(cache_features: Any, loader: Any, warmup_epochs: int) -> bool:
    """Whether a head-only phase of ``warmup_epochs`` trains on cached features (see
    ``Trainer.fit``'s ``cache_features``)."""
    check_choice("cache_features", cache_features, ("auto", True, False))
    reason = not_cacheable(loader)
    if cache_features is True and reason is not None:
        raise ValueError(f"cache_features=True cannot replay this train_loader: {reason}; "
                         "pass cache_features=False")
    if cache_features == "auto":
        return warmup_epochs > 0 and reason is None and is_deterministic(loader.dataset)
    return cache_features is True and warmup_epochs > 0


def caching_plan(phase: Phase, train_loader: Any, val_loader: Any) -> tuple[bool, bool, bool]:
    """``(cache the training features, cache the validation features, caching was forced)`` for
    ``phase``: only a phase whose backbone is fixed can; validation is cached when it reads a
    deterministic dataset in order and caching is not off."""
    if not phase.cacheable:
        return False, False, False
    use = use_feature_cache(phase.cache, train_loader, phase.epochs)
    val = phase.cache is not False and is_sequential(val_loader) and \
        use_feature_cache("auto", val_loader, phase.epochs)
    return use, val, phase.cache is True

