"""The training epoch of the Trainer's loop: batches, the loss, backward, the optimizer step.

The guards against non-finite numbers run here, before any callback sees the step. See
docs/trainer.md ("Non-finite values stop the run") and docs/recipe.md.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any

import torch

from ..base import check_choice, check_float, check_int
from ..data.batches import check_targets, split_batch
from . import checkpoint as ckpt
from .callbacks import Step
from .evaluation import _split_outputs, _Tally, evaluate

__all__ = ["train_epoch", "check_step_options", "check_finite", "check_weights", "validate"]


def check_step_options(recipe: Any) -> None:
    """The recipe's options of the training step: accumulation, EMA, the loss and the mixing."""
    check_int("accumulate", recipe.accumulate, minimum=1)
    if recipe.ema is not None:
        check_float("ema", recipe.ema, strict=True, maximum=1.0)
        if recipe.ema == 1.0:
            raise ValueError("ema must be None (off) or a decay < 1.0 such as 0.999, got 1.0 (it would never move)")
    check_float("label_smoothing", recipe.label_smoothing, maximum=1.0)
    check_float("mixup", recipe.mixup)
    check_float("cutmix", recipe.cutmix)
    if recipe.balance is not None:
        check_choice("balance", recipe.balance, ("loss",))


def train_epoch(trainer: Any, run: Any, phase: Any, where: str) -> tuple[float, float | None]:
    """Train one epoch of ``phase``: mean loss and accuracy over its batches. With
    ``accumulate=N`` the optimizer steps after every N-th batch and after the epoch's last."""
    run.running.train()  # on cached features only the head runs; the backbone's modes do not matter
    batches, total = run.batches()
    every = run.recipe.accumulate
    stepping = run.hooks.has("on_step_start") or run.hooks.has("on_step_end")
    tally, samples = _Tally(run.criterion), 0
    for step, batch in enumerate(trainer.progress.batches(batches, total, where)):
        inputs, hard = _to_device(trainer, run, batch)
        stepped = every == 1 or (step + 1) % every == 0 or step + 1 == total
        if stepping:
            run.hooks("on_step_start", Step(phase, run.epoch + 1, step))
        targets = hard
        if run.mixer is not None and not run.cached:  # soft targets; the cached warm-up trains on clean features
            inputs, targets = run.mixer(inputs, hard)
        if step % every == 0:
            run.optimizer.zero_grad(set_to_none=True)
        value = 0.0
        with _no_sync(run.forward, stepped):
            logits, loss = _loss(trainer, run, inputs, targets, hard, f"train_loader, {where}, batch {step + 1}")
            if loss is not None:  # None: every target is ignore_index, nothing to learn from this batch
                value = float(loss.detach())
                check_finite(trainer, math.isfinite(value), f"loss {value}", where, step)
                # accumulating: each batch's mean loss weighted by its size, the sum divided by the samples at
                # the step, so N batches of 8 give the gradient of one batch of 8N (a short last batch included)
                trainer.precision.scaler.scale(loss if every == 1 else loss * len(hard)).backward()
                samples += len(hard)
        stepped = stepped and samples > 0
        if stepped:
            _step(trainer, run, where, step, None if every == 1 else samples)
            samples = 0
        tally.add(value, logits, hard)  # accuracy: against the labels of the un-mixed batch
        if stepping:
            run.hooks("on_step_end", Step(phase, run.epoch + 1, step, value, stepped=stepped))
    return tally.result("train_loader yielded no batches", trainer.dist)


def _to_device(trainer: Any, run: Any, batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
    inputs, targets = split_batch(batch, source="train_loader")
    if targets is None:
        raise ValueError("train_loader must yield (inputs, targets) batches")
    inputs, targets = inputs.to(trainer.device), targets.to(trainer.device)
    if run.nhwc and inputs.ndim == 4:
        inputs = inputs.contiguous(memory_format=torch.channels_last)
    return inputs, targets


def _no_sync(forward: Any, stepped: bool) -> contextlib.AbstractContextManager:
    """DDP's ``no_sync`` for a batch whose gradients only accumulate (they sync at the step)."""
    no_sync = getattr(forward, "no_sync", None)
    return contextlib.nullcontext() if stepped or no_sync is None else no_sync()


def _loss(trainer: Any, run: Any, inputs: torch.Tensor, targets: torch.Tensor, hard: torch.Tensor,
          where: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The batch's logits and loss, its (un-mixed) targets checked first (``check_targets``);
    the loss is None when every target is the criterion's ``ignore_index`` (under torchrun the
    ranks step together, so such a batch still takes its step there)."""
    criterion = run.criterion  # with the fit's label smoothing and class weights
    with trainer.precision.autocast():
        logits, aux = _split_outputs(run.forward(inputs))
        if not check_targets(hard, logits, criterion=criterion, where=where) and not trainer.dist.enabled:
            return logits, None
        loss = criterion(logits, targets)
        if aux:  # inception_v3 / googlenet in train mode
            loss = loss + sum(trainer.aux_weight * criterion(a, targets) for a in aux)
    return logits, loss


def _step(trainer: Any, run: Any, where: str, step: int, samples: int | None) -> None:
    """The gradients' mean over ``samples`` (accumulated), optional clipping (a non-finite norm
    stops the run unless a GradScaler is handling fp16 overflow), the optimizer step."""
    scaler = trainer.precision.scaler
    if samples is not None:
        for _, p in run.trainable:
            if p.grad is not None:
                p.grad.div_(samples)
    if trainer.grad_clip is not None:
        scaler.unscale_(run.optimizer)
        norm = float(torch.nn.utils.clip_grad_norm_([p for _, p in run.trainable], trainer.grad_clip))
        check_finite(trainer, math.isfinite(norm) or scaler.is_enabled(), f"gradient norm {norm}", where, step)
    scaler.step(run.optimizer)
    scaler.update()


def check_finite(trainer: Any, finite: bool, what: str, where: str, step: int) -> None:
    """Stop the run (``FloatingPointError``) unless ``finite`` holds on every rank."""
    if not trainer.dist.all_true(finite):
        last = None if trainer.checkpoint_dir is None else trainer.checkpoint_dir / ckpt.LAST
        kept = f"; {last} still holds the last good epoch" if last is not None and last.exists() else ""
        raise FloatingPointError(
            f"non-finite {what if finite is False else 'value on another rank'} in {where}, batch {step + 1}: "
            f"the run stops before the optimizer step{kept}. Look for NaN/inf in the inputs or targets, or "
            "lower the learning rate (or set grad_clip)")


def check_weights(run: Any, record: dict[str, Any]) -> None:
    """Stop the run when a trainable weight is not finite after an epoch (before any checkpoint)."""
    # only the optimizer moves weights, and only trainable ones (frozen ones cannot have changed)
    bad = [n for n, p in run.trainable if not bool(torch.isfinite(p).all())]
    if bad:
        raise FloatingPointError(f"non-finite weights after epoch {record['epoch']} ({', '.join(bad[:3])}); "
                                 "the run stops and no checkpoint is written. Lower the learning rate "
                                 "or set grad_clip")


def validate(trainer: Any, run: Any, where: str) -> dict[str, float | None]:
    """Score what is kept (the model, or its EMA): the head alone on cached validation features.
    ``where`` (epoch and phase) names the loader in errors."""
    source = f"val_loader, {where}"
    if not run.val_cached and run.ema is None:
        return trainer.evaluate(run.val_loader, source=source)
    if not run.val_cached:
        return evaluate(run.scored, run.val_loader, criterion=trainer.criterion, device=trainer.device,
                        precision=trainer.precision, distributed=trainer.dist, source=source, macro_f1=True)
    return evaluate(run.head_module(), run.val_cache.batches(run.val_loader), criterion=trainer.criterion,
                    device=trainer.device, precision=trainer.precision, source=source, macro_f1=True)
