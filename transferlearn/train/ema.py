"""An exponential moving average of the weights (``fit(ema=0.999)``), as a built-in callback.

After every optimizer step ``ema = ema + (1 - d) * (weights - ema)`` for each trainable
parameter and every floating-point buffer (BatchNorm statistics; pinned ones never move, so
their average stays bitwise equal), with the decay warmed up as TensorFlow's
``ExponentialMovingAverage(num_updates=...)`` does: ``d = min(decay, (1 + n) / (10 + n))``
after ``n`` updates, so a short fine-tuning run is not stuck near its first weights. The
average is what validates each epoch, so the best epoch is the average's, and what ``fit``
ends with. Its weights and update count are its state: saved in checkpoints, resumed
exactly. See docs/recipe.md ("EMA").
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

__all__ = ["WeightEMA"]


class WeightEMA:
    """A moving average of ``model``'s weights in a copy of the model (``.module``).

    Args:
        model: the model being trained (read after each optimizer step, never changed).
        decay: the long-run decay, in (0, 1), e.g. 0.999.

    Example:
        >>> ema = WeightEMA(model, 0.99)
        >>> ema.update()            # after an optimizer step (the Trainer does it)
        >>> evaluate(ema.module, val_loader)
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.model, self.decay, self.updates = model, float(decay), 0
        self.module = copy.deepcopy(model)
        for p in self.module.parameters():
            p.grad = None
            p.requires_grad_(False)  # raised to match the model's once it trains (the best-epoch snapshot reads it)
        self._pairs = list(zip(self.module.state_dict(keep_vars=True).values(),
                               self.model.state_dict(keep_vars=True).values()))

    def current_decay(self) -> float:
        """The decay of the next update: ``min(decay, (1 + n) / (10 + n))``."""
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self) -> None:
        """Move the average towards the model's current weights (one optimizer step's worth)."""
        weight = 1.0 - self.current_decay()
        moving, targets = [], []
        for mine, theirs in self._pairs:
            if not theirs.is_floating_point():
                mine.copy_(theirs)  # num_batches_tracked: counted, not averaged
            elif not isinstance(theirs, nn.Parameter) or theirs.requires_grad:
                if isinstance(theirs, nn.Parameter):
                    mine.requires_grad_(True)
                moving.append(mine.detach() if isinstance(mine, nn.Parameter) else mine)
                targets.append(theirs.detach())
        if moving:
            torch._foreach_lerp_(moving, targets, weight)
        self.updates += 1

    def on_step_end(self, trainer: Any, step: Any) -> None:
        if step.stepped:
            self.update()

    def state_dict(self) -> dict[str, Any]:
        return {"updates": self.updates, "weights": self.module.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.module.load_state_dict(state["weights"])
        self.updates = int(state["updates"])
