"""The learning-rate range test (Smith 2017; fastai's ``lr_find``): train a few steps at rates
rising exponentially from ``start_lr`` to ``end_lr``, record the smoothed loss, suggest a rate.

It runs the phase as the recipe would (the head on cached features when the recipe caches;
the backbone with BatchNorm as the recipe sets it) and then puts back EXACTLY what it found:
the weights and buffers, gradients, ``requires_grad`` flags, each module's train/eval mode and
class (pinned BatchNorm), and every random state (torch CPU and CUDA, numpy, ``random``, the
loader's generators), so a ``fit`` after it gives bitwise the result of a ``fit`` without it
(fastai #2892/#3013 and Lightning #6675 were this bug). See docs/recipe.md ("lr_find").
"""

from __future__ import annotations

import contextlib
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from torch import nn

from ..base import atomic_write, check_choice, check_float, check_int, describe
from ..data.batches import split_batch
from ..model.optim import param_groups
from .evaluation import _split_outputs
from .feature_cache import cached_step_module, warmup_caches
from .loaders import loader_generators
from .recipe import Recipe, caching_plan
from .runtime import memory_layout, rng_state, set_rng_state

__all__ = ["LRFindResult", "lr_find", "suggest_lr", "preserved"]


@dataclass(frozen=True)
class LRFindResult:
    """The range test's curve and its suggestion.

    Attributes:
        lrs: the head's rate at each step (the other groups keep their ratio to it).
        losses: the smoothed loss at each step (debiased exponential average).
        raw_losses: each step's loss as measured.
        suggestion: the suggested head rate (``suggest_lr``), or None when the curve is too short.
        phase: ``"head"`` or ``"finetune"``.
        cached: whether the steps ran on cached features.
        diverged: whether the test stopped early because the loss exceeded ``diverge`` x its best.
    """

    lrs: list[float]
    losses: list[float]
    raw_losses: list[float] = field(repr=False)
    suggestion: float | None
    phase: str = "head"
    cached: bool = False
    diverged: bool = False

    def plot(self, path: str | os.PathLike) -> Path:
        """Draw loss against rate (log scale), the suggestion marked, to a PNG at ``path``.

        Raises:
            ImportError: matplotlib is not installed (``pip install matplotlib``).
        """
        try:
            from matplotlib.backends.backend_agg import FigureCanvasAgg
            from matplotlib.figure import Figure
        except ImportError as error:
            raise ImportError("LRFindResult.plot needs matplotlib: pip install matplotlib") from error
        fig = Figure(figsize=(6, 4))
        FigureCanvasAgg(fig)  # this figure renders with Agg; the process-wide backend is left alone
        ax = fig.subplots()
        ax.plot(self.lrs, self.losses, label="smoothed loss")
        if self.suggestion is not None:
            ax.axvline(self.suggestion, color="C3", linestyle="--", label=f"suggestion {self.suggestion:.2e}")
        ax.set(xscale="log", xlabel=f"learning rate ({self.phase})", ylabel="training loss",
               title="lr_find" + (" (on cached features)" if self.cached else ""))
        ax.legend()
        fig.tight_layout()
        return atomic_write(Path(path), lambda f: fig.savefig(f, format="png", dpi=100))


def suggest_lr(lrs: list[float], losses: list[float]) -> float | None:
    """The rate of steepest descent of the smoothed curve, before its minimum, skipping the
    first tenth (where the average has not settled); the minimum's rate / 10 when that part
    is under 4 points; None for a curve under 5 points.

    Steepest descent is what pytorch-lr-finder and Lightning suggest; fastai v1 also offered
    the minimum / 10 (its ``lr_min``), the conservative fallback here. Searching only before
    the minimum keeps a noisy drop in the diverging tail from being picked.

    Example:
        >>> suggest_lr([1e-4, 1e-3, 1e-2, 1e-1, 1.0], [2.0, 1.9, 1.0, 0.9, 5.0])
        0.001
    """
    if len(losses) < 5:
        return None
    low, best = max(1, len(losses) // 10), int(np.argmin(losses))
    if best - low < 3:
        return lrs[best] / 10
    slopes = np.gradient(np.asarray(losses[low:best + 1]), np.log(np.asarray(lrs[low:best + 1])))
    return float(lrs[low + int(np.argmin(slopes))])


@contextlib.contextmanager
def preserved(model: nn.Module, loader: Any) -> Iterator[None]:
    """Within the block anything may change; afterwards the model's state (values, gradients,
    ``requires_grad``, every module's mode and class) and every random state are put back."""
    state = {k: v.detach().clone() for k, v in model.state_dict(keep_vars=True).items()}
    grads = {n: None if p.grad is None else p.grad.clone() for n, p in model.named_parameters()}
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    modules = {n: (m.__class__, m.training) for n, m in model.named_modules()}
    generators = loader_generators(loader)
    rng, fresh = rng_state(generators), getattr(loader, "_iterator", None) is None
    try:
        yield
    finally:
        for name, m in model.named_modules():
            m.__class__, m.training = modules[name]
        with torch.no_grad():
            for k, v in model.state_dict(keep_vars=True).items():
                v.copy_(state[k])
        for n, p in model.named_parameters():
            p.requires_grad_(flags[n])
            p.grad = grads[n]
        set_rng_state(rng, generators)
        if fresh and getattr(loader, "_iterator", None) is not None:  # persistent workers: as if never iterated
            loader._iterator._shutdown_workers()
            loader._iterator = None


def _check(phase: Any, start_lr: Any, end_lr: Any, num_steps: Any, diverge: Any, smoothing: Any) -> None:
    check_choice("phase", phase, ("head", "finetune"))
    check_float("start_lr", start_lr, strict=True)
    check_float("end_lr", end_lr, strict=True)
    if end_lr <= start_lr:
        raise ValueError(f"end_lr must be above start_lr, got start_lr={start_lr!r}, end_lr={end_lr!r}")
    check_int("num_steps", num_steps, minimum=2)
    check_float("diverge", diverge, strict=True, minimum=1.0)
    check_float("smoothing", smoothing, maximum=0.999)


def lr_find(trainer: Any, train_loader: Any, *, phase: str = "head", start_lr: float = 1e-7, end_lr: float = 1.0,
            num_steps: int = 100, diverge: float = 4.0, smoothing: float = 0.98, strategy: Any = None,
            **recipe: Any) -> LRFindResult:
    """Run the range test for ``trainer``'s model on ``train_loader``; see ``Trainer.lr_find``."""
    _check(phase, start_lr, end_lr, num_steps, diverge, smoothing)
    if trainer.dist.enabled:
        raise ValueError("lr_find runs in one process; call it before launching torchrun, or on one rank")
    plan = Recipe.from_fit(strategy, **{"warmup_epochs": 1, "finetune_epochs": 1, **recipe})
    chosen = plan.phases[0 if phase == "head" else 1]
    model = trainer.model
    with preserved(model, train_loader), memory_layout(model, trainer.channels_last) as nhwc:
        chosen.apply(model, head=trainer.head)
        batches, cached, running = _batches(trainer, chosen, train_loader)
        groups = param_groups(model, head_lr=chosen.head_lr, backbone_lr=chosen.backbone_lr,
                              weight_decay=plan.weight_decay, head=trainer.head)
        ratios = [g["lr"] / chosen.head_lr for g in groups]
        optimizer = trainer.make_optimizer(groups)
        scaler = torch.amp.GradScaler("cuda", enabled=trainer.precision.scaler.is_enabled())  # the fit's is left alone
        running.train()
        lrs = [start_lr * (end_lr / start_lr) ** (k / (num_steps - 1)) for k in range(num_steps)]
        raw, smooth, diverged = _sweep(trainer, running, (optimizer, scaler), ratios, lrs, batches, nhwc, diverge,
                                       smoothing)
    return LRFindResult(lrs=lrs[:len(smooth)], losses=smooth, raw_losses=raw, phase=phase, cached=cached,
                        suggestion=suggest_lr(lrs[:len(smooth)], smooth), diverged=diverged)


def _batches(trainer: Any, phase: Any, loader: Any) -> tuple[Iterator[Any], bool, nn.Module]:
    """Endless batches for the phase (cached features when the recipe caches), whether cached,
    and the module a step runs."""
    cache = None
    if caching_plan(phase, loader, None)[0]:
        cache, _ = warmup_caches(trainer.model, loader, None, forced=phase.cache is True, dist=trainer.dist,
                                 device=trainer.device, precision=trainer.precision, head=trainer.head)

    def endless() -> Iterator[Any]:
        while True:
            empty = True
            for batch in (cache.batches(loader) if cache is not None else loader):
                empty = False
                yield batch
            if empty:
                raise ValueError("train_loader yielded no batches: nothing to find a rate on")
    running = cached_step_module(trainer.model, head=trainer.head) if cache is not None else trainer.model
    return endless(), cache is not None, running


def _sweep(trainer: Any, running: nn.Module, stepper: tuple[Any, Any], ratios: list[float], lrs: list[float],
           batches: Iterator[Any], nhwc: bool, diverge: float, beta: float) -> tuple[list[float], list[float], bool]:
    """One optimizer step per rate; stop when the smoothed loss passes ``diverge`` x its best."""
    optimizer, scaler = stepper
    raw: list[float] = []
    smooth: list[float] = []
    average, best = 0.0, math.inf
    for k, (lr, batch) in enumerate(zip(lrs, batches)):
        inputs, targets = split_batch(batch, source="train_loader")
        if targets is None:
            raise ValueError(f"train_loader must yield (inputs, targets) batches, got {describe(batch)}")
        inputs, targets = inputs.to(trainer.device), targets.to(trainer.device)
        if nhwc and inputs.ndim == 4:
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        for group, ratio in zip(optimizer.param_groups, ratios):
            group["lr"] = lr * ratio
        optimizer.zero_grad(set_to_none=True)
        with trainer.precision.autocast():
            logits, _ = _split_outputs(running(inputs))
            loss = trainer.criterion(logits, targets)
        value = float(loss.detach())
        if not math.isfinite(value):
            return raw, smooth, True
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        average = beta * average + (1 - beta) * value
        raw.append(value)
        smooth.append(average / (1 - beta ** (k + 1)))
        best = min(best, smooth[-1])
        if smooth[-1] > diverge * best:
            return raw, smooth, True
    return raw, smooth, False
