"""Atomic training checkpoints that load with ``torch.load(weights_only=True)``."""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from ..base import atomic_write, describe, state_differences
from .runtime import rng_state

__all__ = ["save_checkpoint", "load_checkpoint", "check_resumable", "model_differences", "optimizer_layout",
           "write_epoch", "read_resume", "resolve_resume", "describe_phases", "LAST", "BEST", "FORMAT"]

LAST = "last.pt"
BEST = "best.pt"
_BEST_NEXT = "best.pt.next"
FORMAT = 2
_FIELDS = ("epoch", "next", "phase", "model", "optimizer", "optimizer_class", "groups", "scaler", "history",
           "rng", "best")  # and, optional: "callbacks" (when a callback has state), "recipe" (since 0.3)
_PHASE_FIELDS = ("name", "trains", "head_lr", "backbone_lr", "freeze_bn", "cache", "schedule")


def describe_phases(phases: Any) -> list[dict[str, Any]]:
    """Each phase of a recipe as plain values (what a checkpoint records and a resume compares):
    name, what trains, the rates, the BatchNorm policy, the cache setting and the schedule.
    The epoch counts are not among them (the plan check covers them).

    Example:
        >>> describe_phases(Recipe.from_fit(warmup_epochs=1, finetune_epochs=1).phases)[0]["trains"]
        'head'
    """
    def plain(value: Any) -> Any:
        return list(value) if isinstance(value, tuple) else value
    out = []
    for phase in phases:
        kind = phase.schedule.kind
        kind = kind if isinstance(kind, str) else getattr(kind, "__qualname__", type(kind).__name__)
        record = {k: plain(getattr(phase, k)) for k in _PHASE_FIELDS if k != "schedule"}
        out.append({**record, "schedule": [kind, phase.schedule.warmup_steps]})
    return out


def _recipe_differences(saved: Any, ours: list[dict[str, Any]]) -> list[str]:
    """The phase fields that differ between a checkpoint's recipe and this run's, by phase name."""
    if not isinstance(saved, list) or not all(isinstance(p, dict) for p in saved):
        return [f"its recipe record is not a list of phases (got {describe(saved)})"]
    if [p.get("name") for p in saved] != [p["name"] for p in ours]:
        return [f"phases {[p.get('name') for p in saved]} in the checkpoint, {[p['name'] for p in ours]} in this run"]
    return [f"phase {mine['name']!r} field {key!r}: {theirs.get(key)!r} in the checkpoint, {mine[key]!r} in this run"
            for theirs, mine in zip(saved, ours) for key in _PHASE_FIELDS if theirs.get(key) != mine[key]]


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> Path:
    """Write ``state`` with ``torch.save`` to a temporary file, then ``os.replace`` it.

    A crash mid-write leaves the previous checkpoint intact, never a truncated one.
    """
    return atomic_write(path, lambda f: torch.save(state, f))


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a checkpoint with ``weights_only=True`` (no arbitrary code from the file).

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: the file is empty, truncated or not a torch checkpoint; the message names it.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist")
    if path.stat().st_size == 0:
        raise ValueError(f"checkpoint {str(path)!r} is empty (a crash while it was first written?); "
                         "delete it to start afresh")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, OSError, pickle.UnpicklingError, ValueError) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ValueError(f"checkpoint {str(path)!r} cannot be read ({reason}): it is truncated, "
                         "damaged or not a torch checkpoint; delete it to start afresh") from error


def _first(items: list[str], n: int = 5) -> str:
    return ", ".join(items[:n]) + (f" and {len(items) - n} more" if len(items) > n else "")


def model_differences(saved: dict[str, Any], model: nn.Module) -> list[str]:
    """Where a saved state dict does not fit ``model``: missing, unexpected, other shapes."""
    missing, unexpected, differ = state_differences(model.state_dict(), saved)
    shapes = [f"{k} {theirs} vs {ours}" for k, theirs, ours in differ]
    return ([f"missing {_first(missing)}"] if missing else []) + \
        ([f"unexpected {_first(unexpected)}"] if unexpected else []) + \
        ([f"shape {_first(shapes, 3)}"] if shapes else [])


def optimizer_layout(optimizer: torch.optim.Optimizer) -> list[list[Any]]:
    """What a resumed optimizer must match, per group: ``[name, n_params, lr, weight_decay]``
    (a resumed run continues with the checkpoint's optimizer state, so other learning rates
    given to the resumed ``fit`` would silently not apply)."""
    return [[g.get("name", str(i)), len(g["params"]), g.get("lr"), g.get("weight_decay")]
            for i, g in enumerate(optimizer.param_groups)]


def _check_fields(state: dict[str, Any], where: str) -> None:
    """The bookkeeping fields have the types and relations a Trainer writes."""
    epoch, nxt, history, best, rng = state["epoch"], state["next"], state["history"], state["best"], state["rng"]
    ints = all(isinstance(v, int) and not isinstance(v, bool) for v in (epoch, nxt))
    if not ints or not 1 <= epoch <= nxt or not isinstance(history, list) or not history \
            or not all(isinstance(r, dict) for r in history) or history[-1].get("epoch") != epoch:
        raise ValueError(f"{where} has inconsistent epoch bookkeeping (epoch {epoch!r}, next {nxt!r}, "
                         f"{len(history) if isinstance(history, list) else history!r} history records)")
    if not isinstance(best, dict) or not {"monitor", "epoch", "key", "stale"} <= set(best):
        raise ValueError(f"{where} has no valid 'best' record (got {describe(best)})")
    if not isinstance(rng, dict) or not {"torch", "python", "numpy"} <= set(rng):
        raise ValueError(f"{where} has no valid random state (got {describe(rng)})")


def _optimizer_state_differences(saved: Any, optimizer: torch.optim.Optimizer) -> list[str]:
    """Per-parameter optimizer state (e.g. Adam's moments) whose shape is not the parameter's."""
    if not isinstance(saved, dict) or "state" not in saved or "param_groups" not in saved:
        return ["the optimizer state is not an optimizer state_dict"]
    params = [p for g in optimizer.param_groups for p in g["params"]]
    wrong = [f"#{i} {tuple(v.shape)} vs {tuple(params[i].shape)}" for i, entry in saved["state"].items()
             if isinstance(i, int) and 0 <= i < len(params) and isinstance(entry, dict)
             for v in entry.values() if isinstance(v, torch.Tensor) and v.ndim > 0 and v.shape != params[i].shape]
    return [f"optimizer state shapes {_first(wrong, 3)}"] if wrong else []


def check_resumable(state: Any, path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, *,
                    layout_at: Callable[[int], list[list[Any]]] | None = None) -> None:
    """Raise ``ValueError`` (naming ``path`` and the first differences) unless ``state`` is a
    training checkpoint of this library whose model and optimizer fit ``model`` and ``optimizer``.
    ``layout_at(epoch)``: the parameter groups this run has after ``epoch`` (default: the
    optimizer's now). Nothing is loaded: on any mismatch the model and optimizer are untouched."""
    where = f"checkpoint {str(path)!r}"
    if not isinstance(state, dict) or "format" not in state:
        kind = "a plain state_dict" if isinstance(state, dict) else type(state).__name__
        raise ValueError(f"{where} is not a transferlearn training checkpoint (it looks like {kind}); "
                         "load weights with model.load_state_dict, or resume from the last.pt a Trainer wrote")
    if state["format"] != FORMAT:
        raise ValueError(f"{where} has format {state['format']!r}; this version reads format {FORMAT}")
    missing = [k for k in _FIELDS if k not in state]
    if missing:
        raise ValueError(f"{where} lacks the fields {missing}")
    _check_fields(state, where)
    problems = model_differences(state["model"], model) + _optimizer_state_differences(state["optimizer"], optimizer)
    if state["optimizer_class"] != type(optimizer).__name__:
        problems.append(f"optimizer {state['optimizer_class']} vs {type(optimizer).__name__}")
    layout = optimizer_layout(optimizer) if layout_at is None else layout_at(state["epoch"])
    if state["groups"] != layout:
        problems.append(f"parameter groups {state['groups']} vs {layout}")
    if problems:
        raise ValueError(f"{where} does not fit this model and optimizer: " + "; ".join(problems) +
                         ". Nothing was loaded; resume with the same model, head, optimizer and learning-rate "
                         "layout, or start afresh in another checkpoint_dir")


def write_epoch(directory: Path, *, model: nn.Module, optimizer: torch.optim.Optimizer, scaler: Any,
                history: list[dict[str, Any]], phase: str, next_epoch: int, generators: list[torch.Generator],
                best: dict[str, Any], best_state: dict[str, torch.Tensor] | None,
                groups: list[list[Any]] | None = None, callbacks: list[list[Any]] | None = None,
                recipe: list[dict[str, Any]] | None = None) -> None:
    """Write the end of an epoch. A new best goes to ``best.pt.next`` first, then ``last.pt``
    (naming it), then ``best.pt.next`` replaces ``best.pt``: a crash at any point leaves a
    ``last.pt`` whose best epoch is on disk (``read_resume`` finishes an interrupted swap).
    ``groups``: the layout a resume must match (default ``optimizer_layout(optimizer)``);
    ``callbacks``: ``[[name, state], ...]`` of the callbacks with state (an optional field);
    ``recipe``: ``describe_phases`` of the run's phases (an optional field, compared on resume)."""
    if best_state is not None:
        save_checkpoint(directory / _BEST_NEXT, {"epoch": best["epoch"], "model": best_state})
    state = {"format": FORMAT, "epoch": history[-1]["epoch"], "next": next_epoch, "phase": phase,
             "model": model.state_dict(), "optimizer": optimizer.state_dict(),
             "optimizer_class": type(optimizer).__name__,
             "groups": optimizer_layout(optimizer) if groups is None else groups,
             "scaler": scaler.state_dict(), "history": history, "rng": rng_state(generators), "best": best}
    if callbacks:
        state["callbacks"] = callbacks
    if recipe is not None:
        state["recipe"] = recipe
    save_checkpoint(directory / LAST, state)
    if best_state is not None:
        os.replace(directory / _BEST_NEXT, directory / BEST)


def read_resume(path: Path, *, plan: list[str], model: nn.Module, optimizer: torch.optim.Optimizer,
                generators: list[torch.Generator] = (), plan_text: str | None = None,
                layout_at: Callable[[int], list[list[Any]]] | None = None,
                recipe: list[dict[str, Any]] | None = None,
                ) -> tuple[dict[str, Any], dict[str, torch.Tensor] | None]:
    """Read ``path`` and the best weights it names, checked against this run's model,
    optimizer and ``plan`` (the phase name of each epoch; ``plan_text`` says it in words)
    and, field by field, ``recipe`` (``describe_phases``; a checkpoint written before 0.3
    records none and resumes as before); nothing is loaded into the model here.
    ``layout_at``: see ``check_resumable``."""
    state = load_checkpoint(path)
    epoch = state.get("epoch") if isinstance(state, dict) else None
    fits = isinstance(epoch, int) and 1 <= epoch <= len(plan)
    check_resumable(state, path, model, optimizer, layout_at=layout_at if fits else None)
    if epoch > len(plan) or plan[epoch - 1] != state["phase"] or state["next"] > len(plan):
        words = plan_text or f"{plan.count('warmup')} warm-up and {plan.count('finetune')} fine-tune epochs"
        raise ValueError(f"checkpoint {str(path)!r} ended epoch {epoch} in phase {state['phase']!r}, "
                         f"which does not fit this run's plan of {words}")
    differ = _recipe_differences(state["recipe"], recipe) if recipe is not None and "recipe" in state else []
    if differ:
        raise ValueError(f"checkpoint {str(path)!r} was written by another recipe: {'; '.join(differ[:3])}. Nothing "
                         "was loaded; resume with the same fit arguments (or strategy), or start afresh in another "
                         "checkpoint_dir")
    if len(state["rng"].get("loaders", [])) != len(generators):
        raise ValueError(f"checkpoint {str(path)!r} saved the states of {len(state['rng'].get('loaders', []))} "
                         f"random generators of the training loader, this loader has {len(generators)}; resume "
                         "with the same loader set-up (its generator and its sampler's)")
    if state["best"]["epoch"] is None:
        return state, None
    for name in (BEST, _BEST_NEXT):  # .next: a crash between writing last.pt and the swap
        best_file = path.parent / name
        saved = load_checkpoint(best_file) if best_file.is_file() else {}
        if saved.get("epoch") == state["best"]["epoch"]:
            problems = model_differences(saved.get("model", {}), model)
            if problems:
                raise ValueError(f"{str(best_file)!r} does not fit this model: " + "; ".join(problems))
            return state, saved["model"]
    raise ValueError(f"checkpoint {str(path)!r} names epoch {state['best']['epoch']} as the best, but "
                     f"{str(path.parent / BEST)!r} does not hold it (moved or from another run); start afresh")


def resolve_resume(resume: Any, checkpoint_dir: Path | None) -> Path | None:
    """The checkpoint ``fit(resume=...)`` continues from, or ``None`` for a fresh start.

    ``False``: fresh, and an existing ``last.pt`` is never overwritten silently (error).
    ``True``: ``checkpoint_dir/last.pt`` if it exists, else fresh. A path: that file.
    """
    last = None if checkpoint_dir is None else checkpoint_dir / LAST
    if resume is False:
        if last is not None and last.exists():
            raise ValueError(f"checkpoint_dir already holds {str(last)!r} from an earlier run; pass "
                             "resume=True to continue it, or move it / choose another checkpoint_dir")
        return None
    if resume is True:
        if last is None:
            raise ValueError("resume=True needs checkpoint_dir (or pass resume=<path of a checkpoint>)")
        return last if last.exists() else None
    if isinstance(resume, (str, os.PathLike)):
        if not Path(resume).is_file():
            raise FileNotFoundError(f"resume={str(resume)!r} is not a checkpoint file")
        return Path(resume)
    raise TypeError(f"resume must be a bool or a checkpoint path, got {describe(resume)}")
