"""The bottom layer: argument checks, atomic file writes, temporary eval mode, where a model runs.

Every check's message names the argument, what it got and what is accepted, so a user can fix
the call without reading our source. Everything above (model, data, train, ship, cli) imports
from here; this module imports nothing of the package.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import hashlib
import math
import os
import re
import secrets
import socket
import stat
from pathlib import Path
from typing import IO, Any, Callable, Iterator, Mapping

import torch
from torch import nn

__all__ = ["literal_text"]

__version__ = "0.2.0"  # re-exported as transferlearn.__version__; read by pyproject.toml


def describe(value: Any) -> str:
    """A short, readable description of ``value`` for error messages."""
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{text} ({type(value).__name__})"


def check_module(name: str, value: Any) -> nn.Module:
    """Raise ``TypeError`` unless ``value`` is an ``nn.Module``."""
    if not isinstance(value, nn.Module):
        raise TypeError(f"{name} must be a torch.nn.Module, got {describe(value)}")
    return value


def check_int(name: str, value: Any, *, minimum: int = 0, maximum: int | None = None) -> int:
    """Raise unless ``value`` is an ``int`` (not ``bool``) in ``[minimum, maximum]``."""
    bound = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int {bound}, got {describe(value)}")
    if value < minimum or (maximum is not None and value > maximum):
        raise ValueError(f"{name} must be an int {bound}, got {value}")
    return value


def check_bool(name: str, value: Any) -> bool:
    """Raise ``TypeError`` unless ``value`` is exactly ``True`` or ``False`` (``0``/``1`` are not)."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {describe(value)}")
    return value


def state_differences(reference: Mapping[str, Any], other: Mapping[str, Any]) -> tuple[list[str], list[str],
                                                                                       list[tuple[str, tuple, tuple]]]:
    """How ``other`` (a state dict, or names to tensors) differs from ``reference``: the keys it
    lacks, the keys it has in addition, and ``(key, other's shape, reference's shape)`` where
    both hold a tensor of different shapes; reference order. The one comparison behind resume
    checks, classifier loading and the save-time rebuild check."""
    missing = [k for k in reference if k not in other]
    unexpected = [k for k in other if k not in reference]
    shapes = [(k, tuple(other[k].shape), tuple(v.shape)) for k, v in reference.items()
              if k in other and isinstance(other[k], torch.Tensor) and isinstance(v, torch.Tensor)
              and other[k].shape != v.shape]
    return missing, unexpected, shapes


def sha256_file(path: str | os.PathLike) -> str:
    """The SHA-256 hex digest of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_regular_file(path: str | os.PathLike, *, limit: int, what: str = "the file") -> bytes:
    """The bytes of ``path``, a regular file (no link, device or pipe) of at most ``limit`` bytes, else
    a ``ValueError`` naming it: how a run directory's files are read (never outside it, never unbounded)."""
    path = Path(path)
    info = os.lstat(path)  # a missing file: FileNotFoundError, as open() gives
    if stat.S_ISLNK(info.st_mode):
        raise ValueError(f"{path} is a symbolic link; {what} is read only as a regular file inside its folder")
    if not stat.S_ISREG(info.st_mode):
        raise ValueError(f"{path} is not a regular file; {what} is read only as a regular file")
    if info.st_size > limit:
        raise ValueError(f"{path} is {info.st_size} bytes; {what} is at most {limit} bytes")
    with os.fdopen(os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0)), "rb") as f:
        data = f.read(limit + 1)
    if len(data) > limit:  # it grew since lstat
        raise ValueError(f"{path} is over {limit} bytes; {what} is at most {limit} bytes")
    return data


def check_path(name: str, value: Any) -> Path:
    """``value`` as a ``Path``; ``TypeError`` unless it is a ``str`` or ``os.PathLike`` (bytes are
    refused: a path of bytes is almost always a file's content passed by mistake)."""
    if not isinstance(value, (str, os.PathLike)) or isinstance(value, bytes):
        raise TypeError(f"{name} must be a str or os.PathLike, got {describe(value)}")
    return Path(value)


def check_choice(name: str, value: Any, choices: tuple[Any, ...]) -> Any:
    """Raise unless ``value`` is one of ``choices`` (bools and strings, matched by type too).

    ``0``, ``1`` or ``None`` never stand in for ``False``/``True``: a value of another type
    than the choices is a ``TypeError``; a bool or string that is not a choice a ``ValueError``.
    """
    names = [repr(c) for c in choices]
    accepted = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]
    if not any(type(value) is type(c) and value == c for c in choices):
        kinds = tuple({type(c) for c in choices})
        error = ValueError if isinstance(value, kinds) else TypeError
        raise error(f"{name} must be {accepted}, got {describe(value)}")
    return value


def check_float(name: str, value: Any, *, minimum: float = 0.0, strict: bool = False,
                maximum: float | None = None) -> float:
    """Raise unless ``value`` is a finite real number in the accepted range."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a real number, got {describe(value)}")
    low_ok = value > minimum if strict else value >= minimum
    high_ok = maximum is None or value <= maximum
    if not math.isfinite(value) or not low_ok or not high_ok:
        bound = f"> {minimum}" if strict else f">= {minimum}"
        if maximum is not None:
            bound += f" and <= {maximum}"
        raise ValueError(f"{name} must be a finite number {bound}, got {value!r}")
    return float(value)


def check_seed(name: str, value: Any) -> int:
    """A seed torch, numpy and ``random`` all accept: an int in ``[0, 2**32 - 1]``."""
    return check_int(name, value, maximum=2**32 - 1)


def check_head_name(value: Any) -> str | None:
    """Validate the ``head=`` option shared by most functions."""
    if value is not None and not (isinstance(value, str) and value):
        raise TypeError(
            f"head must be None or a non-empty dotted module name such as 'fc', got {describe(value)}"
        )
    return value


def as_weights(value: Any, name: str = "weights") -> Any:
    """A torchvision ``WeightsEnum`` member from itself or its full name ("ResNet50_Weights.IMAGENET1K_V2")."""
    from torchvision.models import WeightsEnum, get_weight

    if isinstance(value, str):
        try:
            return get_weight(value)
        except (ValueError, KeyError, AttributeError):
            raise ValueError(f"{name}={value!r} is not a torchvision weights name such as "
                             "'ResNet50_Weights.IMAGENET1K_V2'") from None
    if not isinstance(value, WeightsEnum):
        raise TypeError(f"{name} must be a torchvision WeightsEnum member or its name, got {describe(value)}")
    return value


def _host_id() -> str:
    """A short, file-name-safe tag of this machine (temporary files name their writer by it)."""
    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]


def pid_running(pid: int) -> bool:
    """Whether process ``pid`` of this machine still runs; True when that cannot be told.

    POSIX: ``os.kill(pid, 0)`` (no signal is sent). Elsewhere (Windows, where ``os.kill``
    would end the process) the answer is always True, so nothing of a live writer is ever
    taken for dead.
    """
    if os.name != "posix" or pid <= 0:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:            # PermissionError: it runs, as another user
        return True
    return True


def _sweep_dead_temporaries(path: Path) -> None:
    """Remove temporary files of ``path`` whose writer (a pid of this machine) no longer runs.

    A temporary file is named ``.<name>.<host>-<pid>.<token>.tmp``; one of another machine,
    of a process still running (another live writer of the same file), or in another naming
    (not provably dead) is left alone.
    """
    pattern = re.compile(re.escape(f".{path.name}.") + r"([0-9a-f]{8})-(\d+)\.[0-9a-f]{12}\.tmp")
    host = _host_id()
    for stale in path.parent.glob(f"{glob.escape(f'.{path.name}.')}*.tmp"):
        found = pattern.fullmatch(stale.name)
        if found and found.group(1) == host and int(found.group(2)) != os.getpid() \
                and not pid_running(int(found.group(2))):
            with contextlib.suppress(OSError):
                stale.unlink()


def _place(tmp: str, path: Path, overwrite: bool) -> None:
    if overwrite:
        os.replace(tmp, path)
        return
    try:
        os.link(tmp, path)          # atomic and never replaces: FileExistsError if taken
    except FileExistsError:
        raise FileExistsError(errno.EEXIST, "exists; not overwritten", str(path)) from None
    except OSError:                 # a file system without hard links: check, then rename
        if os.path.lexists(path):
            raise FileExistsError(errno.EEXIST, "exists; not overwritten", str(path)) from None
        os.replace(tmp, path)


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], None], *,
                 overwrite: bool = True) -> Path:
    """Call ``write(f)`` on a temporary file beside ``path``, then move it into place.

    An exception mid-write leaves whatever was at ``path`` intact, and no temporary file
    behind. The temporary file's name carries this machine and process
    (``.<name>.<host>-<pid>.<token>.tmp``); those left by a process of this machine that no
    longer runs (killed mid-write) are removed by the next write to the same path, while a
    live writer's are never touched. The file gets the permissions of any new file (0o666
    less the umask), not the owner-only ones of ``tempfile.mkstemp``. With
    ``overwrite=False`` an existing ``path`` is never replaced (``FileExistsError``), checked
    atomically with a hard link where the file system has them.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _sweep_dead_temporaries(path)
    tmp = str(path.parent / f".{path.name}.{_host_id()}-{os.getpid()}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        _place(tmp, path, overwrite)
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


def model_dtype(model: nn.Module) -> torch.dtype:
    """The dtype of the model's first floating-point parameter (float32 if it has none)."""
    return next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)


def to_model(model: nn.Module, inputs: torch.Tensor, device: object = None) -> torch.Tensor:
    """``inputs`` on the model's device (or ``device``) and, when floating, in the model's dtype:
    what a float16, bfloat16 or float64 model takes (``predict_proba``, reports, CAMs).

    Example:
        >>> to_model(nn.Linear(2, 2).half(), torch.zeros(1, 2)).dtype
        torch.float16
    """
    dtype = model_dtype(model) if inputs.is_floating_point() else inputs.dtype
    return inputs.to(device=run_device(model, device), dtype=dtype)


def run_device(model: nn.Module, device: object = None) -> torch.device:
    """``device`` if given, else the device of the model's first parameter (cpu if none)."""
    if device is not None:
        return torch.device(device)
    return next((p.device for p in model.parameters()), torch.device("cpu"))


def literal_text(figure: Any) -> Any:
    """Draw every text of a matplotlib ``figure`` as written: a ``$`` in a class name, a run's label
    or a title is a dollar sign, never the start of mathtext (``under_$5 -> over_$10`` would not
    parse). Call it once the figure's texts exist, before its layout or ``savefig``.

    Args:
        figure: a ``matplotlib.figure.Figure``.

    Returns:
        ``figure``, changed in place.

    Example:
        >>> ax.set_title(f"{true} -> {predicted}")
        >>> literal_text(figure).savefig("top_losses.png")
    """
    from matplotlib.text import Text

    for text in figure.findobj(Text):
        text.set_parse_math(False)
    return figure
