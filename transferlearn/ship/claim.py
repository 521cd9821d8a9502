"""An exclusive claim on a directory being written: one writer at a time, interruptions marked.

A writer (``save_classifier``, ``transferlearn fit``) creates ``.transferlearn-writing`` in
the directory first, with ``O_CREAT | O_EXCL`` (atomic: of two writers exactly one gets it),
holding its pid, machine and start time, and removes it last. So a second writer is refused
while the first runs, and a folder that a killed writer left half-written is recognisable
("an interrupted save (started ..., pid ...)") instead of looking like any other folder.
A claim whose pid no longer runs on this machine is dead and may be taken over.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from ..base import pid_running, read_regular_file

__all__ = ["CLAIM_NAME", "Claim", "ClaimedError", "claimed", "read_claim"]

_MAX_CLAIM_BYTES = 1 << 16  # pid, host, time, what, token: a few hundred bytes

CLAIM_NAME = ".transferlearn-writing"
_HELD: dict[str, tuple[int, "Claim"]] = {}       # resolved directory -> (thread, claim) held here
_LOCK = threading.Lock()


class ClaimedError(FileExistsError):
    """The directory is claimed by another writer (live, or dead and not taken over)."""


@dataclass(frozen=True)
class Claim:
    """Who writes (or wrote) a directory: pid and machine, start time, what, a unique token."""

    pid: int
    host: str
    started: str
    what: str
    token: str

    @property
    def running(self) -> bool:
        """True unless the writer is provably gone: a pid of this machine that no longer runs, or
        this process when no ``claimed`` block of it holds the claim (an exception ended it)."""
        if self.host != socket.gethostname():
            return True
        if self.pid == os.getpid():
            with _LOCK:
                return any(claim == self for _, claim in _HELD.values())
        return pid_running(self.pid)

    def describe(self) -> str:
        where = "" if self.host == socket.gethostname() else f" on {self.host}"
        return f"{self.what}, started {self.started}, pid {self.pid}{where}"


def read_claim(directory: Path) -> Claim | None:
    """The claim in ``directory``, None if there is none; an unreadable one reads as a dead writer."""
    try:
        data = json.loads(read_regular_file(directory / CLAIM_NAME, limit=_MAX_CLAIM_BYTES, what="a claim marker"))
        return Claim(int(data["pid"]), str(data["host"]), str(data["started"]), str(data["what"]),
                     str(data["token"]))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError):
        return Claim(-1, socket.gethostname(), "at an unknown time", "a write", "")


def _create(directory: Path, what: str) -> Claim | None:
    """Create the claim file; None when one is there already."""
    claim = Claim(os.getpid(), socket.gethostname(), time.strftime("%Y-%m-%d %H:%M:%S"), what,
                  secrets.token_hex(8))
    try:
        fd = os.open(directory / CLAIM_NAME, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except FileExistsError:
        return None
    with os.fdopen(fd, "w") as f:
        json.dump(claim.__dict__, f)
        f.flush()
        os.fsync(f.fileno())
    return claim


def _take_over(directory: Path, dead: Claim, what: str) -> Claim | None:
    """Move a dead claim aside (atomic: one taker wins) and claim; None if another taker won."""
    aside = directory / f"{CLAIM_NAME}.{secrets.token_hex(6)}.dead"
    if read_claim(directory) != dead:
        return None
    try:
        os.rename(directory / CLAIM_NAME, aside)
    except FileNotFoundError:
        return None
    with contextlib.suppress(OSError):
        aside.unlink()
    return _create(directory, what)


def _refusal(directory: Path, other: Claim) -> ClaimedError:
    if other.running:
        return ClaimedError(f"'{directory}' is being written by {other.describe()}; wait for it to "
                            "finish or write elsewhere")
    return ClaimedError(f"'{directory}' holds an interrupted save ({other.describe()}, no longer "
                        "running); rerun with --force to replace it")


def _acquire(directory: Path, what: str, take_over: bool) -> Claim:
    claim = _create(directory, what)
    if claim is None:
        other = read_claim(directory) or Claim(-1, "", "", "a write", "")
        if not other.running and take_over:
            claim = _take_over(directory, other, what)
        if claim is None:
            raise _refusal(directory, read_claim(directory) or other)
    return claim


@contextlib.contextmanager
def claimed(directory: Path, what: str, *, take_over: bool = False) -> Iterator[Claim]:
    """Hold the claim on ``directory`` (created if needed) for the ``with`` block.

    Nested use in the same thread (``fit`` claims, then calls ``save_classifier``) reuses
    the outer claim. On a normal exit the claim file is removed. On an exception it is
    removed too unless the directory changed (then it stays, marking the folder as an
    interrupted write); a directory this call created and left empty is removed, and so are
    the parents it created for it (``runs/new/deeper``), each while empty.

    Args:
        directory: the directory to write.
        what: who writes, for messages (``"transferlearn fit"``, ``"save_classifier"``).
        take_over: replace a dead writer's claim (its pid no longer runs on this machine).

    Returns:
        A context manager yielding the ``Claim``.

    Raises:
        ClaimedError: another writer holds the claim (a ``FileExistsError``); or a dead one
            does and ``take_over`` is False.

    Example:
        >>> with claimed(Path("runs/pets"), "my script"):
        ...     save_classifier(model, "runs/pets", classes=classes, transform=tf)
    """
    key = str(directory.resolve())
    with _LOCK:
        held = _HELD.get(key)
    if held is not None and held[0] == threading.get_ident():
        yield held[1]
        return
    if held is not None:
        raise _refusal(directory, held[1])
    created = _missing_parents(directory)           # the folders this call creates, innermost first
    directory.mkdir(parents=True, exist_ok=True)
    before = _listing(directory)
    claim = _acquire(directory, what, take_over)      # refused: the directory was there (and claimed)
    with _LOCK:
        _HELD[key] = (threading.get_ident(), claim)
    try:
        yield claim
    except BaseException:
        if _listing(directory) == before:
            _release(directory, claim)
            _remove_empty(created)
        raise
    else:
        _release(directory, claim)
    finally:
        with _LOCK:
            _HELD.pop(key, None)


def _listing(directory: Path) -> dict[str, int]:
    """Names and modification times (ns) of the files in ``directory``, the claim left out."""
    out = {}
    for entry in os.scandir(directory):
        if not entry.name.startswith(CLAIM_NAME):
            with contextlib.suppress(OSError):
                out[entry.name] = entry.stat(follow_symlinks=False).st_mtime_ns
    return out


def _release(directory: Path, claim: Claim) -> None:
    if read_claim(directory) == claim:
        with contextlib.suppress(OSError):
            (directory / CLAIM_NAME).unlink()


def _missing_parents(directory: Path) -> list[Path]:
    """``directory`` and those of its parents that do not exist, innermost first."""
    missing, path = [], directory.absolute()
    while not path.exists() and path != path.parent:
        missing.append(path)
        path = path.parent
    return missing


def _remove_empty(folders: list[Path]) -> None:
    """Remove the folders a claim created (innermost first), each only while it is empty."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            return
