"""A thin training loop over the building blocks: head warm-up, then fine-tuning.

Phase 1 (``warmup``): ``freeze_backbone`` + ``freeze_bn_running_stats``; only the head
learns, and when the data is deterministic the backbone runs once and the head trains on
cached features. Phase 2 (``finetune``): ``unfreeze`` (all, or the last N layer groups)
with the differential learning rates of ``param_groups``; BatchNorm statistics pinned,
adapting, or pinned in the early stages only. One optimizer is built over all parameters
before the warm-up; frozen parameters have no gradient, so it skips them until unfrozen.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from ..base import check_bool, check_choice, check_float, check_head_name, check_module, check_seed, describe
from ..data.batches import check_targets, split_batch
from ..model.freezing import set_phase
from ..model.heads import find_head
from ..model.optim import param_groups
from . import checkpoint as ckpt
from .distributed import Distributed
from .evaluation import _split_outputs, _Tally, evaluate, predict
from .feature_cache import FeatureCache, cached_step_module, warmup_caches
from .history import History
from .loaders import loader_generators
from .runtime import Precision, Progress, memory_layout, pick_device, use_channels_last
from .selection import BestEpoch
from .settings import UNSET as _UNSET
from .settings import caching_plan, fit_settings
from .strategy import Strategy

__all__ = ["Trainer"]


class Trainer:
    """Train a pretrained model in two phases with the transfer-learning pitfalls handled.

    Args:
        model: the network, with its new head already in place (``replace_head``).
        head: explicit dotted name of the head (see ``find_head``).
        device: ``None`` picks cuda, then mps, then cpu.
        amp: mixed precision: ``True`` (bf16 on CPU; bf16, or fp16 with a GradScaler, on
            CUDA), ``"bf16"``, ``"fp16"`` or ``False``.
        grad_clip: clip the gradient norm of the trainable parameters to this value.
        progress: ``True`` (bars on a terminal, a line per epoch otherwise), ``"bar"``,
            ``"line"`` or ``False`` (silent).
        seed: seed torch, numpy and ``random`` at the start of ``fit``; a CPU run is then
            bitwise reproducible from there. The model's new head was drawn before that, when
            ``load_model(..., num_classes=)`` or ``replace_head`` built it: for the same head
            every run, seed before building the model (``torch.manual_seed(0)``), as the
            ``transferlearn fit --seed`` command does.
        checkpoint_dir: write ``last.pt`` there atomically after every epoch.
        criterion: the loss (default ``nn.CrossEntropyLoss()``).
        optimizer: a callable taking parameter groups (default ``torch.optim.AdamW``).
        aux_weight: weight of auxiliary-head losses (inception_v3, googlenet).
        channels_last: run convolutions in the channels_last memory layout during ``fit``,
            ``evaluate`` and ``predict`` (the model is given back in its own layout after
            each): ``"auto"`` (on CPU and CUDA for convolutional models, where it measured
            faster), ``True`` or ``False``.
        compile: train through ``torch.compile(model)`` (recompiled at each phase switch;
            not on cached features). Opt-in: on 2 CPU cores compiling MobileNetV2 took
            130-194 s for a 1.12x faster step (0.85x with channels_last), paying off only
            after ~3,000 steps (docs/performance.md).

    Example:
        >>> trainer = Trainer(load_model("mobilenet_v2", weights="IMAGENET1K_V1", num_classes=5))
        >>> history = trainer.fit(train_loader, val_loader, warmup_epochs=2, finetune_epochs=3)
        >>> trainer.evaluate(test_loader)
        {'loss': 0.21, 'accuracy': 0.94}
    """

    def __init__(self, model: nn.Module, *, head: str | None = None, device: Any = None,
                 amp: bool | str = False, grad_clip: float | None = None, progress: bool | str = True,
                 seed: int | None = None, checkpoint_dir: str | Path | None = None,
                 criterion: Callable | None = None, optimizer: Callable | None = None,
                 aux_weight: float = 0.4, channels_last: bool | str = "auto", compile: bool = False) -> None:
        check_module("model", model)
        self.head = check_head_name(head)
        find_head(model, head=head)  # fail now, not after an epoch
        self.dist = Distributed()
        self.device = self.dist.setup(pick_device(device))
        self.model = model.to(self.device)
        self._forward: nn.Module = self.model  # the model, or its DDP wrapper under torchrun
        self._running: nn.Module = self.model  # what a step runs: the model, or (cached) the head and its Dropout
        self._trainable: list[tuple[str, torch.Tensor]] = []  # set per phase: what the optimizer moves
        self.precision = Precision(amp, self.device)
        self.channels_last = use_channels_last(channels_last, self.device, self.model)
        self._nhwc = False
        self.compile = check_bool("compile", compile)
        self.grad_clip = None if grad_clip is None else check_float("grad_clip", grad_clip, strict=True)
        self.progress = Progress(progress if self.dist.is_main else False)
        self.seed = None if seed is None else check_seed("seed", seed)
        if checkpoint_dir is not None and not isinstance(checkpoint_dir, (str, os.PathLike)):
            raise TypeError(f"checkpoint_dir must be None or a folder path, got {describe(checkpoint_dir)}")
        self.checkpoint_dir = None if checkpoint_dir is None else Path(checkpoint_dir)
        self.criterion = criterion if criterion is not None else nn.CrossEntropyLoss()
        self.make_optimizer = optimizer if optimizer is not None else torch.optim.AdamW
        self.aux_weight = check_float("aux_weight", aux_weight)
        self.optimizer: torch.optim.Optimizer | None = None
        self.history = History()

    # ----------------------------------------------------------------------------- fit
    def fit(self, train_loader: Any, val_loader: Any = None, *, warmup_epochs: int = _UNSET,
            finetune_epochs: int = _UNSET, head_lr: float = _UNSET, backbone_lr: Any = _UNSET,
            weight_decay: float = _UNSET, freeze_bn: bool | str = _UNSET, unfreeze: int | None = _UNSET,
            cache_features: bool | str = "auto", strategy: Strategy | None = None,
            resume: bool | str | Path = False, monitor: str = "val_loss", patience: int | None = None,
            restore_best: bool = True) -> History:
        """Warm the head up with the backbone frozen, then fine-tune; return the history.

        Defaults: ``warmup_epochs=2, finetune_epochs=3, head_lr=1e-3, backbone_lr=None``
        (head/10), ``weight_decay=0, freeze_bn=True, unfreeze=None`` (all). A ``strategy``
        supplies these settings; arguments given explicitly win over it. ``freeze_bn`` is
        ``True``, ``False`` or ``"early"`` (first half of the backbone pinned).
        ``cache_features``: ``"auto"`` caches warm-up features when the training data is
        deterministic (``features.is_deterministic``) and its batches can be replayed (a
        DataLoader over a map-style dataset with the default collate), ``True`` forces (an
        error when they cannot be replayed), ``False`` never. The cache replays the loader's own
        sampler or batch_sampler every epoch, so a subset, weighted or batch sampler trains on
        exactly what it would draw uncached.
        ``resume``: ``True`` continues from ``checkpoint_dir/last.pt`` if present,
        a path continues from that file; the checkpoint is checked against the model and
        optimizer before anything is loaded.
        With ``val_loader``, the model ends with the weights of the best epoch by ``monitor``
        (``"val_loss"``, lower is better; or ``"val_accuracy"``, ties to the lower loss; the
        earliest of equal epochs) unless ``restore_best=False``; ``patience=N`` ends a phase
        after N epochs without a new best. See ``selection``.

        Returns:
            The ``History``, one record per epoch (also kept as ``trainer.history``); with
            validation, the best epoch's record has ``best=True``. The model is left in eval
            mode, with the last phase's trainable parameters and BatchNorm policy.

        Raises:
            TypeError: a setting of the wrong type.
            ValueError: a bad setting, or a checkpoint that does not fit this run.
            FileNotFoundError: the ``resume`` path is missing.
            FloatingPointError: a non-finite loss, gradient norm, validation loss or weight
                (the run stops; the last checkpoint stays the last good one).
        """
        explicit = {"warmup_epochs": warmup_epochs, "finetune_epochs": finetune_epochs, "head_lr": head_lr,
                    "backbone_lr": backbone_lr, "weight_decay": weight_decay, "freeze_bn": freeze_bn,
                    "unfreeze": unfreeze}
        cfg = fit_settings(strategy, {k: v for k, v in explicit.items() if v is not _UNSET})
        caching = caching_plan(cache_features, train_loader, val_loader, cfg["warmup_epochs"])
        check_choice("restore_best", restore_best, (True, False))
        best = BestEpoch(monitor, patience, validating=val_loader is not None)
        with memory_layout(self.model, self.channels_last) as self._nhwc:
            history = self._run(cfg, train_loader, val_loader, resume, best, caching)
        self._finish(history, best, restore_best and val_loader is not None)
        return history

    def _run(self, cfg: dict[str, Any], train_loader: Any, val_loader: Any, resume: Any, best: BestEpoch,
             caching: tuple[bool, bool, bool]) -> History:
        """The loop: seed, optimizer, resume, then epoch after epoch through the plan."""
        use_cache, cache_val, forced = caching
        if self.seed is not None:
            ckpt.seed_everything(self.seed)
        self.optimizer = self.make_optimizer(param_groups(
            self.model, head_lr=cfg["head_lr"], backbone_lr=cfg["backbone_lr"],
            weight_decay=cfg["weight_decay"], head=self.head))
        plan = ["warmup"] * cfg["warmup_epochs"] + ["finetune"] * cfg["finetune_epochs"]
        train_loader = self.dist.shard_train(train_loader, seed=self.seed)
        generators = loader_generators(train_loader)
        history, epoch = self._restore(resume, plan, generators, best)
        cache, val_cache, entered = None, None, None
        while epoch < len(plan):
            phase = plan[epoch]
            warm = phase == "warmup"
            if warm and (use_cache or cache_val) and cache is None and val_cache is None:
                cache, val_cache = warmup_caches(
                    self.model, train_loader if use_cache else None, val_loader if cache_val else None,
                    forced=forced, dist=self.dist, head=self.head, device=self.device, precision=self.precision,
                    criterion=self.criterion)
                use_cache, cache_val = cache is not None, val_cache is not None  # built once, or never
            if entered != phase:
                new = epoch == 0 or plan[epoch - 1] != phase  # not when resuming inside a phase
                entered = self._enter_phase(phase, cfg, cached=use_cache and warm, best=best, new=new)
            self.dist.set_epoch(train_loader, epoch)
            record = self._epoch(epoch, plan, train_loader, val_loader, cache if warm else None,
                                 val_cache if warm else None)
            if val_loader is not None:
                best.update(record, self.model)  # the record's ``best`` flag is set once, at the end
            epoch += 1
            if best.should_stop():
                record["stopped_early"] = True
                epoch = plan.index("finetune", epoch) if phase == "warmup" and "finetune" in plan[epoch:] \
                    else len(plan)
            history.append(record)
            self.progress.epoch(record, len(plan))
            self._save(epoch, phase, history, generators, best)
        if entered is None:  # a finished run resumed: leave the model as that run left it
            self._enter_phase(plan[-1], cfg, cached=False, best=best, new=False)
        return history

    def _finish(self, history: History, best: BestEpoch, restore: bool) -> None:
        if best.epoch is not None:
            history.mark_best(best.epoch)
            if restore and best.state is not None:
                self.model.load_state_dict(best.state)
        self.model.eval()  # ready for inference: no one forgets eval() after fit
        self.history = history

    def _epoch(self, epoch: int, plan: list[str], train_loader: Any, val_loader: Any,
               cache: FeatureCache | None, val_cache: FeatureCache | None) -> dict[str, Any]:
        """Train one epoch (on cached features when given), validate (the head alone on cached
        validation features while the backbone is frozen), return its record."""
        began = time.perf_counter()
        phase = plan[epoch]
        where = f"epoch {epoch + 1}/{len(plan)} {phase}"
        loss, accuracy = self._train_epoch(train_loader, cache, where)
        self.dist.sync_buffers(self.model)
        record = {"epoch": epoch + 1, "phase": phase, "train_loss": loss, "train_accuracy": accuracy,
                  "lr": {g["name"]: g["lr"] for g in self.optimizer.param_groups
                         if any(p.requires_grad for p in g["params"])}}
        if val_loader is not None:
            scores = self._validate(val_loader, val_cache, where)
            record.update(val_loss=scores["loss"], val_accuracy=scores["accuracy"])
            if not math.isfinite(scores["loss"]):
                raise FloatingPointError(f"non-finite validation loss {scores['loss']} in {where}: val_loader yields "
                                         "NaN/inf inputs, or the model gives them on it; the run stops and this "
                                         "epoch is not saved")
        record["seconds"] = time.perf_counter() - began
        return record

    def _validate(self, val_loader: Any, val_cache: FeatureCache | None, where: str) -> dict[str, float | None]:
        if val_cache is None:
            return self.evaluate(val_loader, source=f"val_loader, {where}")
        return evaluate(self._head_module(), val_cache.batches(val_loader), criterion=self.criterion,
                        device=self.device, precision=self.precision, source=f"val_loader, {where}")

    def _head_module(self) -> nn.Module:
        return find_head(self.model, head=self.head)[1]

    # -------------------------------------------------------------------------- phases
    def _enter_phase(self, phase: str, cfg: dict[str, Any], cached: bool, best: BestEpoch, new: bool) -> str:
        self._forward = self.model  # drop an old DDP wrapper before the trainable set changes
        if new:
            best.new_phase()
        set_phase(self.model, phase, last=cfg["unfreeze"], freeze_bn=cfg["freeze_bn"], head=self.head)
        # DDP syncs what is trainable when it is built: the head alone on cached features
        self._running = cached_step_module(self.model, self.head) if cached else self.model
        self._trainable = [(n, p) for n, p in self.model.named_parameters() if p.requires_grad]
        self._forward = self.dist.wrap(self._running, self.device)
        if self.compile and not cached:
            self._forward = torch.compile(self._forward)
        return phase

    # ---------------------------------------------------------------------------- loop
    def _train_epoch(self, loader: Any, cache: FeatureCache | None, where: str) -> tuple[float, float | None]:
        self._running.train()  # on cached features only the head runs; the backbone's modes do not matter
        if cache is not None:
            batches: Any = cache.batches(loader)
            total = len(loader.batch_sampler) if hasattr(loader.batch_sampler, "__len__") else None
        else:
            batches = loader
            try:
                total = len(loader)
            except TypeError:  # an IterableDataset or a batch_sampler without a length
                total = None
        trainable = [p for _, p in self._trainable]
        tally = _Tally(self.criterion)
        for step, batch in enumerate(self.progress.batches(batches, total, where)):
            inputs, targets = split_batch(batch, source="train_loader")
            if targets is None:
                raise ValueError("train_loader must yield (inputs, targets) batches")
            inputs, targets = inputs.to(self.device), targets.to(self.device)
            if self._nhwc and inputs.ndim == 4:
                inputs = inputs.contiguous(memory_format=torch.channels_last)
            with self.precision.autocast():
                logits, aux = _split_outputs(self._forward(inputs))
                if not check_targets(targets, logits, criterion=self.criterion, where=f"train_loader, {where}, "
                                     f"batch {step + 1}") and not self.dist.enabled:
                    tally.add(0.0, logits, targets)   # every target is ignore_index: nothing to learn, no step
                    continue
                loss = self.criterion(logits, targets)
                if aux:  # inception_v3 / googlenet in train mode
                    loss = loss + sum(self.aux_weight * self.criterion(a, targets) for a in aux)
            value = float(loss.detach())
            self._check_finite(math.isfinite(value), f"loss {value}", where, step)
            self._step(loss, trainable, where, step)
            tally.add(value, logits, targets)
        return tally.result("train_loader yielded no batches", self.dist)

    def _step(self, loss: torch.Tensor, trainable: list[torch.Tensor], where: str, step: int) -> None:
        """Backward, optional clipping (a non-finite norm stops the run unless a GradScaler is
        handling fp16 overflow), optimizer step."""
        self.optimizer.zero_grad(set_to_none=True)
        scaler = self.precision.scaler
        scaler.scale(loss).backward()
        if self.grad_clip is not None:
            scaler.unscale_(self.optimizer)
            norm = float(torch.nn.utils.clip_grad_norm_(trainable, self.grad_clip))
            self._check_finite(math.isfinite(norm) or scaler.is_enabled(), f"gradient norm {norm}", where, step)
        scaler.step(self.optimizer)
        scaler.update()

    def _check_finite(self, finite: bool, what: str, where: str, step: int) -> None:
        if not self.dist.all_true(finite):
            last = None if self.checkpoint_dir is None else self.checkpoint_dir / ckpt.LAST
            kept = f"; {last} still holds the last good epoch" if last is not None and last.exists() else ""
            raise FloatingPointError(
                f"non-finite {what if finite is False else 'value on another rank'} in {where}, batch {step + 1}: "
                f"the run stops before the optimizer step{kept}. Look for NaN/inf in the inputs or targets, or "
                "lower the learning rate (or set grad_clip)")

    # ---------------------------------------------------------------------- evaluation
    def evaluate(self, loader: Any, *, source: str = "loader") -> dict[str, float | None]:
        """Mean loss and accuracy over every sample of ``loader`` (``source`` names it in errors);
        see ``evaluation.evaluate``."""
        with memory_layout(self.model, self.channels_last):
            return evaluate(self.model, loader, criterion=self.criterion, device=self.device,
                            precision=self.precision, distributed=self.dist, source=source)

    def predict(self, data: Any, *, batch_size: int = 256) -> torch.Tensor:
        """Class probabilities for a tensor of images or a loader; see ``evaluation.predict``."""
        with memory_layout(self.model, self.channels_last):
            return predict(self.model, data, batch_size=batch_size, device=self.device, precision=self.precision)

    # --------------------------------------------------------------------- checkpoints
    def _save(self, next_epoch: int, phase: str, history: History, generators: list, best: BestEpoch) -> None:
        # only the optimizer moves weights, and only trainable ones (frozen ones cannot have changed)
        bad = [n for n, p in self._trainable if not bool(torch.isfinite(p).all())]
        if bad:
            raise FloatingPointError(f"non-finite weights after epoch {history[-1]['epoch']} ({', '.join(bad[:3])}); "
                                     "the run stops and no checkpoint is written. Lower the learning rate "
                                     "or set grad_clip")
        if self.checkpoint_dir is None:
            return
        if self.dist.is_main:  # rank 0 alone writes; the others wait for the files
            ckpt.write_epoch(self.checkpoint_dir, model=self.model, optimizer=self.optimizer,
                             scaler=self.precision.scaler, history=history.records(), phase=phase,
                             next_epoch=next_epoch, generators=generators, best=best.summary(),
                             best_state=best.state if best.epoch == history[-1]["epoch"] else None)
        self.dist.barrier()

    def _restore(self, resume: Any, plan: list[str], generators: list, best: BestEpoch) -> tuple[History, int]:
        """Continue from a checkpoint: checked against this run before anything is loaded."""
        path = ckpt.resolve_resume(resume, self.checkpoint_dir)
        if path is None:
            return History(), 0
        state, best_state = ckpt.read_resume(path, plan=plan, model=self.model, optimizer=self.optimizer,
                                             generators=generators)
        best.restore(state["best"], best_state)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.precision.scaler.load_state_dict(state["scaler"])
        ckpt.set_rng_state(state["rng"], generators)
        return History(state["history"]), state["next"]
