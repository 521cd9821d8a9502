"""Small shared helpers: atomic file writes, temporary eval mode, where a model runs."""

from __future__ import annotations

import contextlib
import glob
import os
import secrets
from pathlib import Path
from typing import IO, Callable, Iterator

import torch
from torch import nn

__all__: list[str] = []


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], None]) -> Path:
    """Call ``write(f)`` on a temporary file beside ``path``, then ``os.replace`` it into place.

    An exception mid-write leaves whatever was at ``path`` intact, and no temporary file
    behind; temporary files left by a process that was killed mid-write are removed by the next
    write to the same path. The file gets the permissions of any new file (0o666 less the umask),
    not the owner-only ones of ``tempfile.mkstemp``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    prefix = f".{path.name}."
    for stale in path.parent.glob(f"{glob.escape(prefix)}*.tmp"):
        with contextlib.suppress(OSError):
            stale.unlink()
    tmp = str(path.parent / f"{prefix}{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` in eval mode; afterwards give every module back its own previous mode."""
    modes = [(m, m.training) for m in model.modules()]
    try:
        model.eval()
        yield model
    finally:
        for module, mode in modes:
            module.training = mode


def run_device(model: nn.Module, device: object = None) -> torch.device:
    """``device`` if given, else the device of the model's first parameter (cpu if none)."""
    if device is not None:
        return torch.device(device)
    return next((p.device for p in model.parameters()), torch.device("cpu"))
