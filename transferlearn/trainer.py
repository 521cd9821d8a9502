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
import random
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from . import checkpoint as ckpt
from ._checks import check_float, check_head_name, check_int, check_module, describe
from ._runtime import Precision, Progress, pick_device
from .batchnorm import freeze_bn_running_stats, unfreeze_bn_running_stats
from .distributed import Distributed
from .evaluation import _split_outputs, _Tally, evaluate, predict
from .features import _inputs_targets, cached_batches, extract_features, is_deterministic
from .freezing import freeze_backbone, unfreeze
from .groups import split_layer_groups
from .heads import find_head
from .history import History
from .optim import param_groups
from .strategy import Strategy

__all__ = ["Trainer"]


class _Unset:
    def __repr__(self) -> str:
        return "<default>"


_UNSET: Any = _Unset()
_DEFAULTS = {"warmup_epochs": 2, "finetune_epochs": 3, "head_lr": 1e-3, "backbone_lr": None,
             "weight_decay": 0.0, "freeze_bn": True, "unfreeze": None}


def _pin_early_bn(model: nn.Module, head: str | None) -> None:
    """Pin BatchNorm statistics in the first half of the backbone's layer groups."""
    backbone, _ = split_layer_groups(model, head=head)
    early = {id(p) for _, ps in backbone[: len(backbone) // 2] for p in ps}
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and \
                any(id(p) in early for p in module.parameters(recurse=False)):
            freeze_bn_running_stats(module)


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
            bitwise reproducible.
        checkpoint_dir: write ``last.pt`` there atomically after every epoch.
        criterion: the loss (default ``nn.CrossEntropyLoss()``).
        optimizer: a callable taking parameter groups (default ``torch.optim.AdamW``).
        aux_weight: weight of auxiliary-head losses (inception_v3, googlenet).

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
                 aux_weight: float = 0.4) -> None:
        check_module("model", model)
        self.head = check_head_name(head)
        find_head(model, head=head)  # fail now, not after an epoch
        self.dist = Distributed()
        self.device = self.dist.setup(pick_device(device))
        self.model = model.to(self.device)
        self._forward: nn.Module = self.model  # the model, or its DDP wrapper under torchrun
        self.precision = Precision(amp, self.device)
        self.grad_clip = None if grad_clip is None else check_float("grad_clip", grad_clip, strict=True)
        self.progress = Progress(progress if self.dist.is_main else False)
        self.seed = None if seed is None else check_int("seed", seed)
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
            resume: bool | str | Path = False) -> History:
        """Warm the head up with the backbone frozen, then fine-tune; return the history.

        Defaults: ``warmup_epochs=2, finetune_epochs=3, head_lr=1e-3, backbone_lr=None``
        (head/10), ``weight_decay=0, freeze_bn=True, unfreeze=None`` (all). A ``strategy``
        supplies these settings; arguments given explicitly win over it. ``freeze_bn`` is
        ``True``, ``False`` or ``"early"`` (first half of the backbone pinned).
        ``cache_features``: ``"auto"`` caches warm-up features when the training data is
        deterministic (``features.is_deterministic``), ``True`` forces, ``False`` never.
        ``resume``: ``True`` continues from ``checkpoint_dir/last.pt`` if present,
        a path continues from that file.

        Returns:
            The ``History``, one record per epoch (also kept as ``trainer.history``). The
            model is left in eval mode, with the last phase's trainable parameters and
            BatchNorm policy.

        Raises:
            TypeError, ValueError: bad settings; FileNotFoundError: ``resume`` path missing.
        """
        explicit = {"warmup_epochs": warmup_epochs, "finetune_epochs": finetune_epochs, "head_lr": head_lr,
                    "backbone_lr": backbone_lr, "weight_decay": weight_decay, "freeze_bn": freeze_bn,
                    "unfreeze": unfreeze}
        cfg = self._settings(strategy, {k: v for k, v in explicit.items() if v is not _UNSET})
        use_cache = self._use_cache(cache_features, train_loader, cfg["warmup_epochs"])
        if self.seed is not None:
            torch.manual_seed(self.seed)
            random.seed(self.seed)
            np.random.seed(self.seed)
        self.optimizer = self.make_optimizer(param_groups(
            self.model, head_lr=cfg["head_lr"], backbone_lr=cfg["backbone_lr"],
            weight_decay=cfg["weight_decay"], head=self.head))
        plan = ["warmup"] * cfg["warmup_epochs"] + ["finetune"] * cfg["finetune_epochs"]
        train_loader = self.dist.shard_train(train_loader, seed=self.seed or 0)
        generator = getattr(train_loader, "generator", None) or \
            getattr(getattr(train_loader, "sampler", None), "generator", None)
        history, start = self._restore(resume, plan, generator)
        cache = None
        for epoch in range(start, len(plan)):
            phase = plan[epoch]
            if epoch == start or phase != plan[epoch - 1]:
                self._enter_phase(phase, cfg, cached=use_cache and phase == "warmup")
            if phase == "warmup" and use_cache and cache is None:
                cache = self._features(train_loader, generator)
            self.dist.set_epoch(train_loader, epoch)
            record = self._epoch(epoch, plan, train_loader, val_loader, cache if phase == "warmup" else None)
            history.append(record)
            self.progress.epoch(record, len(plan))
            self._save(epoch + 1, phase, history, generator)
        self.model.eval()  # ready for inference: no one forgets eval() after fit
        self.history = history
        return history

    def _epoch(self, epoch: int, plan: list[str], train_loader: Any, val_loader: Any,
               cache: Any) -> dict[str, Any]:
        """Train one epoch (on cached features when given), validate, return its record."""
        began = time.perf_counter()
        phase = plan[epoch]
        loss, accuracy = self._train_epoch(train_loader, cache, f"epoch {epoch + 1}/{len(plan)} {phase}")
        self.dist.sync_buffers(self.model)
        record = {"epoch": epoch + 1, "phase": phase, "train_loss": loss, "train_accuracy": accuracy,
                  "lr": {g["name"]: g["lr"] for g in self.optimizer.param_groups
                         if any(p.requires_grad for p in g["params"])}}
        if val_loader is not None:
            scores = self.evaluate(val_loader)
            record.update(val_loss=scores["loss"], val_accuracy=scores["accuracy"])
        record["seconds"] = time.perf_counter() - began
        return record

    def _settings(self, strategy: Strategy | None, given: dict[str, Any]) -> dict[str, Any]:
        if strategy is not None and not isinstance(strategy, Strategy):
            raise TypeError(f"strategy must be None or a Strategy (see recommend_strategy), got {describe(strategy)}")
        cfg = {**_DEFAULTS, **(strategy.fit_kwargs() if strategy else {}), **given}
        check_int("warmup_epochs", cfg["warmup_epochs"])
        check_int("finetune_epochs", cfg["finetune_epochs"])
        if cfg["warmup_epochs"] + cfg["finetune_epochs"] == 0:
            raise ValueError("warmup_epochs and finetune_epochs are both 0: nothing to train")
        if cfg["freeze_bn"] not in (True, False, "early"):
            raise ValueError(f"freeze_bn must be True, False or 'early', got {describe(cfg['freeze_bn'])}")
        if cfg["unfreeze"] is not None:
            check_int("unfreeze", cfg["unfreeze"])
        return cfg

    def _use_cache(self, cache_features: Any, loader: Any, warmup_epochs: int) -> bool:
        if cache_features not in ("auto", True, False):
            raise ValueError(f"cache_features must be 'auto', True or False, got {describe(cache_features)}")
        if cache_features is True and not isinstance(loader, DataLoader):
            raise ValueError(f"cache_features=True needs train_loader to be a DataLoader, got {describe(loader)}")
        if cache_features == "auto":
            return warmup_epochs > 0 and isinstance(loader, DataLoader) and is_deterministic(loader.dataset)
        return bool(cache_features) and warmup_epochs > 0

    # -------------------------------------------------------------------------- phases
    def _enter_phase(self, phase: str, cfg: dict[str, Any], cached: bool) -> None:
        self._forward = self.model  # drop an old DDP wrapper before the trainable set changes
        if phase == "warmup":
            freeze_backbone(self.model, head=self.head)
            freeze_bn_running_stats(self.model)
        else:
            unfreeze(self.model, last=cfg["unfreeze"], head=self.head)
            if cfg["freeze_bn"] is True:
                freeze_bn_running_stats(self.model)
            else:
                unfreeze_bn_running_stats(self.model)
            if cfg["freeze_bn"] == "early":
                _pin_early_bn(self.model, self.head)
        # DDP syncs what is trainable when it is built: the head alone on cached features
        target = self.model.get_submodule(find_head(self.model, head=self.head)[0]) if cached else self.model
        self._forward = self.dist.wrap(target, self.device)

    def _features(self, loader: DataLoader, generator: torch.Generator | None):
        """Backbone features once, in dataset order, without disturbing any random state
        (so a resumed run caches exactly what the uninterrupted one did)."""
        ordered = self.dist.ordered(loader)
        saved = generator.get_state() if generator is not None else None
        with torch.random.fork_rng(devices=[]):
            features = extract_features(self.model, ordered, head=self.head, device=self.device)
        if generator is not None:
            generator.set_state(saved)
        if len(features.tensors) < 2:
            raise ValueError("train_loader must yield (inputs, targets) batches")
        return features

    # ---------------------------------------------------------------------------- loop
    def _train_epoch(self, loader: Any, cache: Any, desc: str) -> tuple[float, float | None]:
        self.model.train()
        if cache is not None:
            bs = loader.batch_size or len(cache)
            batches: Any = cached_batches(cache, loader)
            total = len(cache) // bs if loader.drop_last else math.ceil(len(cache) / bs)
        else:
            batches = loader
            total = len(loader) if hasattr(loader, "__len__") else None
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        tally = _Tally()
        for batch in self.progress.batches(batches, total, desc):
            inputs, targets = _inputs_targets(batch)
            if targets is None:
                raise ValueError("train_loader must yield (inputs, targets) batches")
            inputs, targets = inputs.to(self.device), targets.to(self.device)
            with self.precision.autocast():
                logits, aux = _split_outputs(self._forward(inputs))
                loss = self.criterion(logits, targets)
                loss = loss + sum(self.aux_weight * self.criterion(a, targets) for a in aux)
            self.optimizer.zero_grad(set_to_none=True)
            scaler = self.precision.scaler
            scaler.scale(loss).backward()
            if self.grad_clip is not None:
                scaler.unscale_(self.optimizer)
                torch.nn.utils.clip_grad_norm_(trainable, self.grad_clip)
            scaler.step(self.optimizer)
            scaler.update()
            tally.add(float(loss.detach()), logits, targets)
        return tally.result("train_loader yielded no batches", self.dist)

    # ---------------------------------------------------------------------- evaluation
    def evaluate(self, loader: Any) -> dict[str, float | None]:
        """Mean loss and accuracy over every sample of ``loader``; see ``evaluation.evaluate``."""
        return evaluate(self.model, loader, criterion=self.criterion, device=self.device,
                        precision=self.precision, distributed=self.dist)

    def predict(self, data: Any, *, batch_size: int = 256) -> torch.Tensor:
        """Class probabilities for a tensor of images or a loader; see ``evaluation.predict``."""
        return predict(self.model, data, batch_size=batch_size, device=self.device, precision=self.precision)

    # --------------------------------------------------------------------- checkpoints
    def _save(self, epoch: int, phase: str, history: History, generator: Any) -> None:
        if self.checkpoint_dir is None:
            return
        if self.dist.is_main:  # rank 0 alone writes; the others wait for the file
            ckpt.save_checkpoint(self.checkpoint_dir / ckpt.LAST, {
                "format": 1, "epoch": epoch, "phase": phase, "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(), "scaler": self.precision.scaler.state_dict(),
                "history": history.records(), "rng": ckpt.rng_state(generator)})
        self.dist.barrier()

    def _restore(self, resume: Any, plan: list[str], generator: Any) -> tuple[History, int]:
        path = ckpt.resolve_resume(resume, self.checkpoint_dir)
        if path is None:
            return History(), 0
        state = ckpt.load_checkpoint(path)
        epoch = state["epoch"]
        if epoch > len(plan) or plan[epoch - 1] != state["phase"]:
            raise ValueError(f"checkpoint {str(path)!r} ended epoch {epoch} in phase {state['phase']!r}, "
                             f"which does not fit this run's plan of {plan.count('warmup')} warm-up and "
                             f"{plan.count('finetune')} fine-tune epochs")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.precision.scaler.load_state_dict(state["scaler"])
        ckpt.set_rng_state(state["rng"], generator)
        return History(state["history"]), epoch
