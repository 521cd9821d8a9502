"""The state of one ``Trainer.fit`` call: the recipe, the optimizer, the history, where the
loop is, and what the current phase runs. It lives as long as the call, never on the Trainer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..model.anatomy import anatomy
from ..model.optim import param_groups
from . import checkpoint as ckpt
from .balance import class_weights, loader_labels
from .callbacks import Checkpoints, EpochLine, Hooks, KeepBest, check_callback_states, load_callback_states
from .ema import WeightEMA
from .feature_cache import FeatureCache, warmup_caches
from .history import History
from .loaders import loader_generators
from .mixing import Mixer, num_classes, training_criterion
from .recipe import Phase, Recipe, caching_plan
from .runtime import set_rng_state
from .schedules import LRSchedule
from .selection import BestEpoch

__all__ = ["Run"]


class Run:
    """Per-fit state. Built by ``fit`` after the recipe is checked: the caching decision of
    each phase and the best-epoch tracker are made here, so a bad option fails before training.

    Args:
        trainer: the ``Trainer`` (its model, head, options and callbacks are read, not changed).
        recipe: the checked ``Recipe``.
        train_loader: the user's training loader.
        val_loader: the validation loader, or None.
    """

    def __init__(self, trainer: Any, recipe: Recipe, train_loader: Any, val_loader: Any) -> None:
        self.recipe, self.model, self.val_loader = recipe, trainer.model, val_loader
        # the model's structure (head, stages, no-decay names, pre-head layers), read ONCE per fit
        # and passed to every call below (docs/anatomy.md)
        self.anatomy = anatomy(self.model, head=trainer.head)
        self.structure: dict[str, Any] = {"anatomy": self.anatomy}
        self.caching = [caching_plan(p, train_loader, val_loader) for p in recipe.phases]
        self.best = BestEpoch(recipe.monitor, recipe.patience, validating=val_loader is not None)
        self.train_loader = train_loader
        self.scaler = trainer.precision.scaler
        self.progress = trainer.progress
        self.history, self.epoch, self.nhwc = History(), 0, False
        self.optimizer: torch.optim.Optimizer | None = None
        self.generators: list[torch.Generator] = []
        self._loss_options(trainer)
        self.ema = None if recipe.ema is None else WeightEMA(self.model, recipe.ema)
        self.scored = self.model if self.ema is None else self.ema.module  # what validates and is kept
        stateful = self._built_in_stateful()  # saved in checkpoints before the user's callbacks
        self.callbacks = stateful + list(trainer.callbacks)
        built_in: list[Any] = [KeepBest(self.best, self.scored)] if val_loader is not None else []
        self.hooks = Hooks(trainer, built_in + stateful + [EpochLine(trainer.progress, recipe)] +
                           trainer.callbacks)
        self.checkpoints = None if trainer.checkpoint_dir is None else \
            Checkpoints(trainer.checkpoint_dir, self.callbacks)
        # the current phase: its index, what a step runs, what the optimizer moves, the caches
        self.entered: int | None = None
        self.forward: nn.Module = self.model
        self.running: nn.Module = self.model
        self.trainable: list[tuple[str, torch.Tensor]] = []
        self.cache: FeatureCache | None = None
        self.val_cache: FeatureCache | None = None
        self.cached = self.val_cached = self.cache_failed = False
        self._rates: dict[tuple[Any, Any], list[float]] = {}
        self._head: nn.Module | None = None

    def _loss_options(self, trainer: Any) -> None:
        """Check the loss options now (the class weights are counted when the first phase starts)."""
        r, self.criterion = self.recipe, None
        classes = num_classes(self.model, **self.structure) if r.mixup or r.cutmix or r.balance else 0
        self.mixer = Mixer(r.mixup, r.cutmix, classes) if r.mixup or r.cutmix else None
        self._criterion_args = (trainer.criterion, r.label_smoothing, classes, trainer.criterion_given)
        training_criterion(trainer.criterion, label_smoothing=r.label_smoothing, user=trainer.criterion_given,
                           weight=torch.ones(classes) if r.balance else None)

    def _train_criterion(self, device: Any) -> Any:
        criterion, smoothing, classes, user = self._criterion_args
        weight = class_weights(loader_labels(self.train_loader, self.cache), classes).to(device) \
            if self.recipe.balance == "loss" else None
        return training_criterion(criterion, label_smoothing=smoothing, weight=weight, user=user)

    def _built_in_stateful(self) -> list[Any]:
        """The built-in callbacks with state this recipe needs: the schedule when a phase's moves
        the rates, the EMA."""
        found: list[Any] = []
        if self.recipe.accumulate > 1:
            self.steps_per_epoch("accumulate")  # a loader without a length fails now, not at the phase
        if any(p.schedule.moves and p.epochs for p in self.recipe.phases):
            self.steps_per_epoch()
            found.append(LRSchedule(self.rates, self.steps_per_epoch))
        return found + ([self.ema] if self.ema is not None else [])

    def steps_per_epoch(self, why: str = "schedule") -> int:
        """Optimizer steps in one epoch of the (sharded) training loader."""
        try:
            batches = len(self.train_loader)
        except TypeError:
            what = "a learning-rate schedule" if why == "schedule" else f"accumulate={self.recipe.accumulate}"
            raise ValueError(f"{what} needs a train_loader with a length (len(train_loader)) to count each "
                             f"epoch's steps; use {why}={'constant' if why == 'schedule' else 1!r} with this "
                             "loader") from None
        return -(-batches // self.recipe.accumulate)

    def start(self, make_optimizer: Any, train_loader: Any) -> None:
        """Build the one optimizer of the fit (over every parameter, at the first phase's
        rates) and take the (sharded) training loader and its random generators."""
        first = self.recipe.phases[self.recipe.plan[0]]
        groups = param_groups(self.model, head_lr=first.head_lr, backbone_lr=first.backbone_lr,
                              weight_decay=self.recipe.weight_decay, **self.structure)
        self._rates[first.rates] = [g["lr"] for g in groups]
        self.optimizer = make_optimizer(groups)
        self.train_loader, self.generators = train_loader, loader_generators(train_loader)

    def restore(self, path: Path | None) -> None:
        """Continue from the checkpoint at ``path`` (None: a fresh start). It is checked against
        this run (model, optimizer, plan, loader, callbacks) before anything is loaded."""
        if path is None:
            return
        state, best_state = ckpt.read_resume(path, plan=self.plan_names(), model=self.model, optimizer=self.optimizer,
                                             generators=self.generators, plan_text=self.recipe.describe(),
                                             layout_at=self.layout_at,
                                             recipe=ckpt.describe_phases(self.recipe.phases))
        check_callback_states(state.get("callbacks", []), self.callbacks, f"checkpoint {str(path)!r}")
        self.best.restore(state["best"], best_state)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        set_rng_state(state["rng"], self.generators)
        load_callback_states(state.get("callbacks", []), self.callbacks)
        self.history, self.epoch = History(state["history"]), state["next"]

    @property
    def phase(self) -> Phase:
        return self.recipe.phase_at(self.epoch)

    def plan_names(self) -> list[str]:
        return [self.recipe.phase_at(e).name for e in range(self.recipe.epochs)]

    def next_epoch(self) -> int:
        """After the epoch just recorded: the next one, or the next phase's first when a
        callback ended this phase (``stopped_early``)."""
        if self.history[-1].get("stopped_early"):
            return self.recipe.first_epoch(self.recipe.plan[self.epoch] + 1)
        return self.epoch + 1

    def rates(self, phase: Phase) -> list[float]:
        """The learning rate of each parameter group in ``phase`` (derived again only for a
        phase whose rates differ from the first's)."""
        if phase.rates not in self._rates:
            groups = param_groups(self.model, head_lr=phase.head_lr, backbone_lr=phase.backbone_lr,
                                  weight_decay=self.recipe.weight_decay, **self.structure)
            self._rates[phase.rates] = [g["lr"] for g in groups]
        return self._rates[phase.rates]

    def set_rates(self, phase: Phase) -> None:
        for group, lr in zip(self.optimizer.param_groups, self.rates(phase)):
            group["lr"] = lr

    def layout_at(self, epoch: int) -> list[list[Any]]:
        """The optimizer's parameter groups, at the rates of the phase of ``epoch`` (from 1):
        what a checkpoint of that epoch records and a resume must match."""
        rates = self.rates(self.recipe.phase_at(epoch - 1))
        return [[name, n, lr, wd] for (name, n, _, wd), lr in zip(ckpt.optimizer_layout(self.optimizer), rates)]

    def head_module(self) -> nn.Module:
        """The head of what validates (the model, or its EMA)."""
        if self._head is None:
            self._head = self.scored.get_submodule(self.anatomy.head)
        return self._head

    def lrs(self) -> dict[str, float]:
        """The learning rate of each group that trains now (the history's ``lr``)."""
        return {g["name"]: g["lr"] for g in self.optimizer.param_groups if any(p.requires_grad for p in g["params"])}

    def prepare_caches(self, index: int, **kwargs: Any) -> None:
        """Features for a phase whose backbone is fixed, built once for consecutive such
        phases (or never, when the model's output cannot be cached); dropped when a phase
        trains the backbone. ``kwargs`` go to ``warmup_caches`` (dist, device, precision), with
        the Trainer's progress (the caching pass's bar or lines)."""
        use, val, forced = self.caching[index]
        if not self.recipe.phases[index].cacheable:
            self.cache = self.val_cache = None
        need_train, need_val = use and self.cache is None, val and self.val_cache is None
        if (need_train or need_val) and not self.cache_failed:
            train, valid = warmup_caches(self.model, self.train_loader if need_train else None,
                                         self.val_loader if need_val else None, forced=forced,
                                         progress=self.progress, **kwargs, **self.structure)
            self.cache_failed = train is None and valid is None
            self.cache = train if need_train else self.cache
            self.val_cache = valid if need_val else self.val_cache
        self.cached = use and self.cache is not None
        self.val_cached = val and self.val_cache is not None
        if self.criterion is None:  # the class weights from the cache's labels when there is one
            self.criterion = self._train_criterion(kwargs["device"])

    def batches(self) -> tuple[Any, int | None]:
        """The epoch's batches (replayed from the cache when the phase has it) and their count."""
        loader = self.train_loader
        if self.cached:
            sampler = loader.batch_sampler
            return self.cache.batches(loader), len(sampler) if hasattr(sampler, "__len__") else None
        try:
            return loader, len(loader)
        except TypeError:  # an IterableDataset or a batch_sampler without a length
            return loader, None
