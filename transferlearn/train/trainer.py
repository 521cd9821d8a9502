"""A thin training loop over the building blocks, running a ``Recipe``'s phases top to bottom.

The default recipe is the two-phase fit (head warm-up, then fine-tuning); gradual unfreezing
is a longer list of phases. One optimizer over all parameters serves every phase. Callbacks
step in at a few hooks (``callbacks.py``); the guards against non-finite numbers and unfit
checkpoints stay here, before any callback. See docs/trainer.md.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import nn

from ..base import check_bool, check_float, check_head_name, check_module, check_seed, describe
from ..model.heads import find_head
from . import checkpoint as ckpt
from .callbacks import check_callbacks
from .distributed import Distributed
from .evaluation import evaluate, predict
from .feature_cache import cached_step_module
from .history import History
from .lr_find import LRFindResult, lr_find
from .recipe import DEFAULT, Phase, Recipe
from .run import Run
from .runtime import Precision, Progress, memory_layout, pick_device, seed_everything, use_channels_last
from .step import check_weights, train_epoch, validate
from .strategy import Strategy

__all__ = ["Trainer"]


class Trainer:
    """Train a pretrained model phase by phase with the transfer-learning pitfalls handled.

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
        channels_last: channels_last memory layout during ``fit``, ``evaluate`` and ``predict``
            (the model given back in its own layout): ``"auto"`` (CPU and CUDA, convolutional
            models), ``True`` or ``False`` (docs/performance.md).
        compile: train through ``torch.compile(model)`` (per phase; not on cached features).
            Opt-in: it pays off only after thousands of steps (docs/performance.md).
        callbacks: objects with any of the hooks of ``callbacks.py`` (docs/trainer.md); their
            ``state_dict()`` goes into checkpoints and comes back on resume.

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
                 aux_weight: float = 0.4, channels_last: bool | str = "auto", compile: bool = False,
                 callbacks: Sequence[Any] = ()) -> None:
        check_module("model", model)
        self.head = check_head_name(head)
        find_head(model, head=head)  # fail now, not after an epoch
        self.dist = Distributed()
        self.device = self.dist.setup(pick_device(device))
        self.model = model.to(self.device)
        self.precision = Precision(amp, self.device)
        self.channels_last = use_channels_last(channels_last, self.device, self.model)
        self.compile = check_bool("compile", compile)
        self.grad_clip = None if grad_clip is None else check_float("grad_clip", grad_clip, strict=True)
        self.progress = Progress(progress if self.dist.is_main else False)
        self.seed = None if seed is None else check_seed("seed", seed)
        if checkpoint_dir is not None and not isinstance(checkpoint_dir, (str, os.PathLike)):
            raise TypeError(f"checkpoint_dir must be None or a folder path, got {describe(checkpoint_dir)}")
        self.checkpoint_dir = None if checkpoint_dir is None else Path(checkpoint_dir)
        self.criterion = criterion if criterion is not None else nn.CrossEntropyLoss()
        self.criterion_given = criterion is not None
        self.make_optimizer = optimizer if optimizer is not None else torch.optim.AdamW
        self.aux_weight = check_float("aux_weight", aux_weight)
        self.callbacks = check_callbacks(callbacks)
        self.optimizer: torch.optim.Optimizer | None = None  # results of the last fit, read-only
        self.history = History()

    def fit(self, train_loader: Any, val_loader: Any = None, *, warmup_epochs: int = DEFAULT,
            finetune_epochs: int = DEFAULT, head_lr: float = DEFAULT, backbone_lr: Any = DEFAULT,
            weight_decay: float = DEFAULT, freeze_bn: bool | str = DEFAULT, unfreeze: int | None = DEFAULT,
            cache_features: bool | str = "auto", strategy: Strategy | None = None,
            resume: bool | str | Path = False, monitor: str = "val_loss", patience: int | None = None,
            restore_best: bool = True, phases: Sequence[Phase] | None = None, schedule: Any = DEFAULT,
            warmup_steps: int = DEFAULT, accumulate: int = 1, ema: float | None = None, label_smoothing: float = 0.0,
            mixup: float = 0.0, cutmix: float = 0.0, balance: str | None = None) -> History:
        """Run the recipe's phases (by default: warm the head up, then fine-tune); return the history.

        A ``strategy`` supplies the recipe's settings; arguments given explicitly win over it.
        Every option in detail: docs/trainer.md.

        Args:
            train_loader: batches of ``(inputs, targets)``.
            val_loader: validation batches (the best epoch is kept), or None.
            warmup_epochs: head-only epochs, backbone frozen (default 2).
            finetune_epochs: fine-tune epochs (default 3); with an ``unfreeze`` tuple, per phase.
            head_lr: learning rate of the head (default 1e-3).
            backbone_lr: None (head_lr / 10), a float, or a ``(low, high)`` pair over the stages.
            weight_decay: decay of weight matrices and kernels (default 0).
            freeze_bn: fine-tune BatchNorm statistics pinned (True), adapting (False) or ``"early"``.
            unfreeze: None (all), the last N stages, or a tuple such as ``(1, 3, None)``: gradual.
            cache_features: warm up on cached features: ``"auto"``, True or False.
            strategy: a ``Strategy`` (``recommend_strategy``).
            resume: True (``checkpoint_dir/last.pt``) or a checkpoint path; checked first.
            monitor: ``"val_loss"``, ``"val_accuracy"`` or ``"val_macro_f1"``: ranks the epochs.
            patience: end a phase after this many epochs without a new best.
            restore_best: end with the best epoch's weights (default True).
            phases: ``[Phase(...), ...]`` instead of the epoch/rate/freezing arguments above.
            schedule: every phase's rates per optimizer step: ``"constant"`` (default),
                ``"cosine"``, ``"one_cycle"``, a ``Schedule`` or a callable (docs/recipe.md).
            warmup_steps: linear warm-up steps at the start of each phase (default 0).
            accumulate: step the optimizer every N batches, on their mean gradient (default 1).
            ema: decay of a moving average of the weights (e.g. 0.999): it validates, and is kept.
            label_smoothing: of the training loss (``nn.CrossEntropyLoss``'s), e.g. 0.1.
            mixup: MixUp's alpha on the phases that read images (not the cached warm-up).
            cutmix: CutMix's alpha, likewise (with both, one of the two per batch).
            balance: ``"loss"``: class weights ``N / (C * count)`` in the training loss.

        Returns:
            The ``History`` (also ``trainer.history``); with validation the best epoch's record
            has ``best=True``. The model is left in eval mode, in the last phase's state.

        Raises:
            TypeError: a setting of the wrong type.
            ValueError: a bad setting, or a checkpoint that does not fit this run.
            FileNotFoundError: the ``resume`` path is missing.
            FloatingPointError: a non-finite loss, gradient norm, validation loss or weight
                (the run stops; the last checkpoint stays the last good one).

        Example:
            >>> history = trainer.fit(train_loader, val_loader, unfreeze=(1, 2, None), finetune_epochs=2)
            >>> [r["phase"] for r in history][:3]
            ['warmup', 'warmup', 'finetune:last1']
        """
        recipe = Recipe.from_fit(strategy, phases, cache_features=cache_features, weight_decay=weight_decay,
                                 monitor=monitor, patience=patience, restore_best=restore_best,
                                 warmup_epochs=warmup_epochs, finetune_epochs=finetune_epochs, head_lr=head_lr,
                                 backbone_lr=backbone_lr, freeze_bn=freeze_bn, unfreeze=unfreeze,
                                 schedule=schedule, warmup_steps=warmup_steps, accumulate=accumulate, ema=ema,
                                 label_smoothing=label_smoothing, mixup=mixup, cutmix=cutmix, balance=balance)
        run = Run(self, recipe, train_loader, val_loader)
        with memory_layout(self.model, self.channels_last) as run.nhwc:
            self._run(run, resume)
        self._finish(run)
        return run.history

    def _run(self, run: Run, resume: Any) -> None:
        """The loop: seed, optimizer, resume, then the phases' epochs top to bottom."""
        if self.seed is not None:
            seed_everything(self.seed)
        run.start(self.make_optimizer, self.dist.shard_train(run.train_loader, seed=self.seed))
        self.optimizer = run.optimizer
        run.restore(ckpt.resolve_resume(resume, self.checkpoint_dir))  # checked before anything is loaded
        self.history = run.history
        run.hooks("on_fit_start")
        while run.epoch < run.recipe.epochs:
            if run.entered != run.recipe.plan[run.epoch]:
                self._enter_phase(run, run.recipe.plan[run.epoch])
            self.dist.set_epoch(run.train_loader, run.epoch)
            record = self._epoch(run)
            check_weights(run, record)
            run.history.append(record)
            run.hooks("on_epoch_end", run.history[-1])  # the best epoch, patience, progress, yours
            run.epoch = run.next_epoch()
            self._save(run.epoch, run)
        if run.entered is None:  # a finished run resumed: leave the model as that run left it
            self._enter_phase(run, run.recipe.plan[-1], resumed=True)

    def _finish(self, run: Run) -> None:
        best, restored = run.best, False
        if best.epoch is not None:
            run.history.mark_best(best.epoch)
            if run.recipe.restore_best and run.val_loader is not None and best.state is not None:
                self.model.load_state_dict(best.state)
                restored = True
        if run.ema is not None and not restored:  # the average is the model a fit with ema gives back
            self.model.load_state_dict(run.ema.module.state_dict())
        self.model.eval()  # ready for inference: no one forgets eval() after fit
        self.history = run.history
        run.hooks("on_fit_end", run.history)

    def _enter_phase(self, run: Run, index: int, resumed: bool = False) -> None:
        """Put the model in phase ``index``'s state (``resumed``: as a finished run left it, no
        caches); ``on_phase_start`` when the phase begins (not when a run resumes inside it)."""
        phase = run.recipe.phases[index]
        if not resumed:
            run.prepare_caches(index, dist=self.dist, device=self.device, precision=self.precision,
                               criterion=self.criterion)
        run.forward = self.model  # drop an old DDP wrapper before the trainable set changes
        phase.apply(self.model, **run.structure)
        run.set_rates(phase)
        # DDP syncs what is trainable when it is built: the head alone on cached features
        run.running = cached_step_module(self.model, **run.structure) if run.cached else self.model
        run.trainable = [(n, p) for n, p in self.model.named_parameters() if p.requires_grad]
        run.forward = self.dist.wrap(run.running, self.device)
        if self.compile and not run.cached:
            run.forward = torch.compile(run.forward)
        run.entered = index
        if not resumed and run.epoch == run.recipe.first_epoch(index):
            run.hooks("on_phase_start", phase)

    def _epoch(self, run: Run) -> dict[str, Any]:
        """Train one epoch (on cached features when the phase has them), validate (the head
        alone on cached validation features while the backbone is fixed), return its record."""
        began = time.perf_counter()
        phase = run.phase
        where = f"epoch {run.epoch + 1}/{run.recipe.epochs} {phase.name}"
        loss, accuracy = train_epoch(self, run, phase, where)
        self.dist.sync_buffers(self.model)
        record = {"epoch": run.epoch + 1, "phase": phase.name, "train_loss": loss, "train_accuracy": accuracy,
                  "lr": run.lrs()}
        if run.mixer is not None:  # the cached warm-up trains on clean features
            record["mix"] = "off (cached features)" if run.cached else run.mixer.label
        if run.val_loader is not None:
            scores = validate(self, run, where)
            record.update(val_loss=scores["loss"], val_accuracy=scores["accuracy"], val_macro_f1=scores.get("macro_f1"))
            if run.ema is not None:
                record["validated"] = "ema"
            if not math.isfinite(scores["loss"]):
                raise FloatingPointError(f"non-finite validation loss {scores['loss']} in {where}: val_loader yields "
                                         "NaN/inf inputs, or the model gives them on it; the run stops and this "
                                         "epoch is not saved")
        record["seconds"] = time.perf_counter() - began
        return record

    def lr_find(self, train_loader: Any, *, phase: str = "head", start_lr: float = 1e-7, end_lr: float = 1.0,
                num_steps: int = 100, **options: Any) -> LRFindResult:
        """The learning-rate range test; leaves the model, optimizer and every random state as it found them.

        Args:
            train_loader: training batches (cycled when shorter than ``num_steps``).
            phase: ``"head"`` (the warm-up: on cached features when the recipe caches) or
                ``"finetune"`` (the backbone too, BatchNorm as the recipe sets it).
            start_lr: the head's first rate (exponential steps; the other groups keep their
                recipe ratio to the head, e.g. backbone = head / 10).
            end_lr: the head's last rate.
            num_steps: optimizer steps (fewer when the loss diverges).
            **options: ``diverge`` (4), ``smoothing`` (0.98), ``strategy`` and ``fit``'s recipe
                arguments (``backbone_lr``, ``freeze_bn``, ``unfreeze``...); see docs/recipe.md.

        Returns:
            An ``LRFindResult``: ``.lrs``, ``.losses`` (smoothed), ``.suggestion``, ``.plot(path)``.

        Raises:
            TypeError, ValueError: a bad option, or a loader without (inputs, targets) batches.

        Example:
            >>> result = trainer.lr_find(train_loader)
            >>> history = trainer.fit(train_loader, val_loader, head_lr=result.suggestion)
        """
        return lr_find(self, train_loader, phase=phase, start_lr=start_lr, end_lr=end_lr, num_steps=num_steps,
                       **options)

    def evaluate(self, loader: Any, *, source: str = "loader") -> dict[str, float | None]:
        """Mean loss, accuracy and macro-F1 over every sample of ``loader`` (``source`` names it
        in errors); see ``evaluation.evaluate``."""
        with memory_layout(self.model, self.channels_last):
            return evaluate(self.model, loader, criterion=self.criterion, device=self.device,
                            precision=self.precision, distributed=self.dist, source=source, macro_f1=True)

    def predict(self, data: Any, *, batch_size: int = 256) -> torch.Tensor:
        """Class probabilities for a tensor of images or a loader; see ``evaluation.predict``."""
        with memory_layout(self.model, self.channels_last):
            return predict(self.model, data, batch_size=batch_size, device=self.device, precision=self.precision)

    def _save(self, next_epoch: int, run: Run) -> None:
        """The built-in ``Checkpoints`` callback, after every other callback's ``on_epoch_end``
        (so their state is this epoch's); rank 0 alone writes, the others wait for the files."""
        if run.checkpoints is None:
            return
        if self.dist.is_main:
            run.checkpoints.write(run, next_epoch)
        self.dist.barrier()
