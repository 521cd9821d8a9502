"""Learning-rate schedules: each phase's rates scaled per optimizer step, per parameter group.

A ``Schedule`` is a value on each ``Phase`` (``fit(schedule="cosine", warmup_steps=...)`` sets
it on every phase); ``LRSchedule`` is the built-in callback that applies it through the
``on_step_start`` seam. Every group keeps its own peak rate (the phase's ``param_groups``
rates) and is scaled by the same factor; each phase runs its own schedule over its own
optimizer steps (``epochs * ceil(batches / accumulate)``). The formulas are the ones of
PyTorch's ``OneCycleLR`` and of transformers' ``get_cosine_schedule_with_warmup``
(tests/test_schedules.py compares them step by step). See docs/recipe.md ("Schedules").
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Union

from ..base import check_int, describe

__all__ = ["Schedule", "as_schedule", "LRSchedule", "KINDS", "ONE_CYCLE_DIV", "ONE_CYCLE_FINAL_DIV",
           "ONE_CYCLE_PCT"]

KINDS = ("constant", "cosine", "one_cycle")
ONE_CYCLE_DIV = 25.0          # OneCycleLR's div_factor: the first step runs at peak / 25
ONE_CYCLE_FINAL_DIV = 1e4     # OneCycleLR's final_div_factor: the last at peak / 25 / 1e4
ONE_CYCLE_PCT = 0.3           # OneCycleLR's pct_start, when warmup_steps is 0

Factor = Callable[[int, int], float]


def _cos(start: float, end: float, pct: float) -> float:
    """OneCycleLR's cosine annealing from ``start`` to ``end`` as ``pct`` goes 0 -> 1."""
    return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)


@dataclass(frozen=True)
class Schedule:
    """How a phase's rates move over its optimizer steps (a factor of each group's peak rate).

    Attributes:
        kind: ``"constant"``; ``"cosine"`` (linear warm-up over ``warmup_steps`` from 0, then
            cosine decay to 0: transformers' ``get_cosine_schedule_with_warmup``; with no
            warm-up, ``CosineAnnealingLR(T_max=steps)``); ``"one_cycle"`` (``OneCycleLR`` with
            its defaults: cosine up from peak/25 over ``warmup_steps`` or 30 % of the steps,
            then down to peak/25/1e4); or a callable ``factor(step, total) -> float``
            (``step`` counted from 0 within the phase).
        warmup_steps: optimizer steps of linear warm-up (``constant``/``cosine``) or of the
            rising half (``one_cycle``); 0: none (``one_cycle``: 30 %).

    Example:
        >>> Schedule("cosine", warmup_steps=2).factor(1, 10)
        0.5
    """

    kind: Union[str, Factor] = "constant"
    warmup_steps: int = 0

    def __post_init__(self) -> None:
        if not callable(self.kind) and self.kind not in KINDS:
            raise ValueError(f"schedule must be one of {', '.join(map(repr, KINDS))}, a Schedule or a callable "
                             f"factor(step, total), got {describe(self.kind)}")
        check_int("warmup_steps", self.warmup_steps)

    @property
    def moves(self) -> bool:
        """Whether the rates ever differ from the phase's (constant without warm-up does not)."""
        return self.kind != "constant" or self.warmup_steps > 0

    def factor(self, step: int, total: int) -> float:
        """The factor of the peak rates at optimizer ``step`` (from 0) of a phase of ``total`` steps."""
        w = self.warmup_steps
        if callable(self.kind):
            value = self.kind(step, total)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                    or value < 0:
                raise ValueError(f"the schedule callable returned {describe(value)} at step {step} of {total}; "
                                 "it must return a finite number >= 0 (a factor of the phase's rates)")
            return float(value)
        if self.kind == "one_cycle":
            return self._one_cycle(step, total)
        if step < w:
            return step / max(1, w)
        if self.kind == "constant":
            return 1.0
        progress = (step - w) / max(1, total - w)
        return max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))

    def _one_cycle(self, step: int, total: int) -> float:
        up = (float(self.warmup_steps) if self.warmup_steps else ONE_CYCLE_PCT * total) - 1
        start, low = 1.0 / ONE_CYCLE_DIV, 1.0 / ONE_CYCLE_DIV / ONE_CYCLE_FINAL_DIV
        if step <= up:
            return _cos(start, 1.0, step / up) if up > 0 else 1.0
        down = total - 1 - up
        return _cos(1.0, low, min(1.0, (step - up) / down)) if down > 0 else low


def as_schedule(value: Any, warmup_steps: int = 0) -> Schedule:
    """``value`` as a ``Schedule``: a kind name or a callable (with ``warmup_steps``), or a
    ``Schedule`` itself (then ``warmup_steps`` must be 0: it has its own).

    Raises:
        TypeError, ValueError: neither, or a ``Schedule`` together with ``warmup_steps``.
    """
    if isinstance(value, Schedule):
        if warmup_steps:
            raise ValueError(f"warmup_steps={warmup_steps} with schedule={value!r}: set warmup_steps on the Schedule")
        return value
    if not (isinstance(value, str) or callable(value)):
        raise TypeError(f"schedule must be one of {', '.join(map(repr, KINDS))}, a Schedule or a callable "
                        f"factor(step, total), got {describe(value)}")
    return Schedule(value, warmup_steps)


class LRSchedule:
    """Built in when a phase's schedule moves the rates: before every batch it sets each
    parameter group's rate to the phase's rate times the schedule's factor at the current
    optimizer step; it counts the steps the optimizer took (``Step.stepped``), so under
    gradient accumulation the rate moves once per optimizer step. Its state (the step and
    the phase's total) goes into checkpoints, so a resumed run continues exactly.

    Args:
        rates: ``rates(phase)``: the phase's rate of each group (``Run.rates``).
        steps_per_epoch: optimizer steps in one epoch (``Run.steps_per_epoch``).
    """

    def __init__(self, rates: Callable[[Any], list[float]], steps_per_epoch: Callable[[], int]) -> None:
        self.rates, self.steps_per_epoch = rates, steps_per_epoch
        self.step, self.total = 0, 0

    def on_phase_start(self, trainer: Any, phase: Any) -> None:
        self.step, self.total = 0, phase.epochs * self.steps_per_epoch()

    def on_step_start(self, trainer: Any, step: Any) -> None:
        schedule = step.phase.schedule
        if not schedule.moves:
            return
        factor = schedule.factor(self.step, self.total)
        for group, peak in zip(trainer.optimizer.param_groups, self.rates(step.phase)):
            group["lr"] = peak * factor

    def on_step_end(self, trainer: Any, step: Any) -> None:
        if step.stepped:
            self.step += 1

    def state_dict(self) -> dict[str, int]:
        return {"step": self.step, "total": self.total}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.step, self.total = int(state["step"]), int(state["total"])
