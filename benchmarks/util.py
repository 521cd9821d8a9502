"""Small helpers of the benchmarks: the repository root, argument checks, atomic writes.

The benchmarks use only transferlearn's public API (``import transferlearn as tl``), so the
few generic helpers they need live here rather than being borrowed from the library's
internals.

Example:
    >>> from benchmarks.util import ROOT, check_int, write_json
    >>> check_int("size", 32, minimum=8)
    32
"""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
from pathlib import Path
from typing import IO, Any, Callable

__all__ = ["ROOT", "describe", "check_int", "check_float", "check_root", "atomic_write", "write_json",
           "module_command"]

ROOT = Path(__file__).resolve().parents[1]


def describe(value: Any) -> str:
    """``repr(value)`` (cut to 60 characters) and its type, for error messages."""
    text = repr(value)
    return f"{text[:57] + '...' if len(text) > 60 else text} ({type(value).__name__})"


def check_int(name: str, value: Any, *, minimum: int = 0) -> int:
    """``value`` if it is an ``int`` (not a ``bool``) ``>= minimum``.

    Raises:
        TypeError: not an int.
        ValueError: below ``minimum``.
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int >= {minimum}, got {describe(value)}")
    if value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value}")
    return value


def check_float(name: str, value: Any, *, above: float = 0.0, maximum: float = math.inf) -> float:
    """``value`` as a float if it is a finite real number in ``(above, maximum]``.

    Raises:
        TypeError: not a real number.
        ValueError: not finite or out of range.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a real number, got {describe(value)}")
    if not (math.isfinite(value) and above < value <= maximum):
        bound = f"> {above}" + (f" and <= {maximum}" if maximum < math.inf else "")
        raise ValueError(f"{name} must be a finite number {bound}, got {value!r}")
    return float(value)


def check_root(value: Any, default: Path) -> Path:
    """The cache folder ``value`` (a path), or ``default`` for ``None``.

    Raises:
        TypeError: ``value`` is neither a path nor ``None``.
    """
    if value is None:
        return default
    if not isinstance(value, (str, os.PathLike)):
        raise TypeError(f"root must be a path (str or os.PathLike) or None, got {describe(value)}")
    return Path(value)


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], Any]) -> Path:
    """Call ``write(f)`` on a temporary file beside ``path``, then move it into place.

    An exception mid-write leaves whatever was at ``path`` as it was, and no temporary file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp",
                                     delete=False) as f:
        try:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        except BaseException:
            f.close()
            os.unlink(f.name)
            raise
    os.replace(f.name, path)
    return path


def write_json(path: Path, payload: dict[str, Any], *, indent: int = 2) -> Path:
    """Write ``payload`` as indented JSON, atomically (non-JSON values become strings)."""
    text = json.dumps(payload, indent=indent, default=str) + "\n"
    return atomic_write(path, lambda f: f.write(text.encode()))


_RENAMED = {"compare_loops": "compare"}


def module_command(command: str) -> str:
    """A recorded command in today's form: ``python benchmarks/levers.py head`` (how results
    saved before benchmarks/ became a package recorded it) reads ``python -m benchmarks.levers head``.

    Example:
        >>> module_command("python benchmarks/compare_loops.py --quick")
        'python -m benchmarks.compare --quick'
    """
    def sub(m: re.Match) -> str:
        return f"{m.group(1)} -m benchmarks.{_RENAMED.get(m.group(2), m.group(2))}"
    return re.sub(r"(\S*python\S*) (?:\S*/)?benchmarks/(\w+)\.py", sub, command)
