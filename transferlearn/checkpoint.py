"""Atomic training checkpoints that load with ``torch.load(weights_only=True)``."""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ._checks import describe
from ._io import atomic_write

__all__ = ["save_checkpoint", "load_checkpoint", "rng_state", "set_rng_state", "resolve_resume", "LAST"]

LAST = "last.pt"


def rng_state(generator: torch.Generator | None = None) -> dict[str, Any]:
    """Every random state a training epoch draws from, as weights_only-loadable values."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    if generator is not None:
        state["loader"] = generator.get_state()
    return state


def set_rng_state(state: dict[str, Any], generator: torch.Generator | None = None) -> None:
    """Restore what ``rng_state`` captured."""
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, gauss_np = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss_np))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if generator is not None and "loader" in state:
        generator.set_state(state["loader"])


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> Path:
    """Write ``state`` with ``torch.save`` to a temporary file, then ``os.replace`` it.

    A crash mid-write leaves the previous checkpoint intact, never a truncated one.
    """
    return atomic_write(path, lambda f: torch.save(state, f))


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a checkpoint with ``weights_only=True`` (no arbitrary code from the file)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist")
    return torch.load(path, map_location="cpu", weights_only=True)


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
