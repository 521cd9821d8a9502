"""Which image files a folder of class folders holds, each under one class, each once.

``scan_layout`` finds the layout (``root/train`` + ``root/val``, or ``root/<class>``) and the
image files of every class, following symbolic links with care:

- a directory is read once, by its real path: a link back to a folder already read (a loop,
  ``cat/again -> ..``) is never followed, and is noted;
- a file reachable twice within one class (a link to a file of the same class) counts once,
  and the other path is noted; a file reachable under two classes, or in both ``train`` and
  ``val``, has no single label and is an error naming both paths;
- a dangling link, a link loop and a folder that cannot be listed are broken entries,
  handled like unreadable images (``skip_broken``);
- a folder holding one of ``RUN_MARKERS`` (``classifier.json``: a transferlearn run or a saved
  classifier, e.g. a ``fit --out`` put inside the data; ``.transferlearn-overlays``: the heat
  maps of ``transferlearn explain --out``) is not a class and is not read; it is noted and warned.

Notes are ``(path, reason)`` pairs; ``load_image_folder`` lists them in ``.skipped``.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import NamedTuple

from .images import IMAGE_EXTENSIONS

__all__ = ["OVERLAYS_MARKER", "RUN_MARKER", "RUN_MARKERS", "Scan", "is_run_dir", "run_marker", "scan_layout"]

RUN_MARKER = "classifier.json"   # what makes a folder a transferlearn run / saved classifier
OVERLAYS_MARKER = ".transferlearn-overlays"   # what makes a folder the overlays of `transferlearn explain`
RUN_MARKERS = (RUN_MARKER, OVERLAYS_MARKER)   # a folder holding one is transferlearn's output, never a class


class Scan(NamedTuple):
    """What ``scan_layout`` found.

    Attributes:
        layout: ``"train/val"`` or ``"split"``.
        parts: ``{"train": {class: paths}, "val": {...}}`` or ``{"all": {class: paths}}``,
            paths sorted, each file once.
        broken: ``{path: reason}`` for dangling links and link loops (they stay in ``parts``,
            like any unreadable file) and for folders that cannot be listed.
        notes: ``(path, reason)`` of what was left out on purpose (run folders, second paths
            to a file, links to a folder already read).
        runs: the run / classifier folders among the notes (the caller warns about them).
    """

    layout: str
    parts: dict[str, dict[str, list[str]]]
    broken: dict[str, str]
    notes: list[tuple[str, str]]
    runs: list[str]


def run_marker(path: str | os.PathLike) -> str | None:
    """The first of ``RUN_MARKERS`` the folder ``path`` holds, None if none."""
    return next((m for m in RUN_MARKERS if os.path.isfile(os.path.join(path, m))), None)


def is_run_dir(path: str | os.PathLike) -> bool:
    """True when ``path`` is a folder of transferlearn's output: it holds one of ``RUN_MARKERS``
    (``classifier.json`` of a run or a saved classifier, ``.transferlearn-overlays`` of ``explain``)."""
    return run_marker(path) is not None


def _is_image(name: str) -> bool:
    return not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS)


def _is_dir(entry: os.DirEntry) -> bool:
    """``entry.is_dir()``, False for a link that cannot be followed (dangling, or a loop)."""
    try:
        return entry.is_dir()
    except OSError:
        return False


def _broken_link(path: str, exc: OSError) -> str:
    if exc.errno == errno.ELOOP:
        return "a symbolic link loop (the link leads back to itself)"
    if os.path.islink(path) and isinstance(exc, FileNotFoundError):
        return f"a symbolic link to {os.readlink(path)!r}, which does not exist"
    return f"cannot be opened ({type(exc).__name__}: {exc.strerror or exc})"


def _identity(path: str) -> tuple[int, int] | str:
    """What a path leads to: (device, inode), so links and hard links are one file."""
    st = os.stat(path)
    return (st.st_dev, st.st_ino) if st.st_ino else os.path.realpath(path)


class _Walker:
    """Reads folders; collects what was broken and what was left out on purpose."""

    def __init__(self) -> None:
        self.broken: dict[str, str] = {}
        self.notes: list[tuple[str, str]] = []
        self.runs: list[str] = []

    def run_dir(self, path: str) -> bool:
        marker = run_marker(path)
        if marker is None:
            return False
        what = "run or classifier" if marker == RUN_MARKER else "explain overlays"
        self.notes.append((path, f"a transferlearn {what} folder (it has {marker}), not images of a class: not read"))
        self.runs.append(path)
        return True

    def images_under(self, folder: str) -> list[str]:
        """Image files anywhere under ``folder``, each directory read once by its real path."""
        found: list[str] = []
        read = {os.path.realpath(folder): folder}
        pending = [folder]
        while pending:
            top = pending.pop()
            try:
                with os.scandir(top) as listing:
                    entries = sorted(listing, key=lambda e: e.name)
            except OSError as exc:
                self.broken[top] = f"cannot list this folder ({type(exc).__name__}: {exc.strerror or exc})"
                continue
            subdirs = []   # real folders first: a link to one of them is the one not read again
            for entry in sorted(entries, key=lambda e: (e.is_symlink(), e.name)):
                if entry.name.startswith("."):
                    continue
                if _is_dir(entry):
                    subdirs.append(entry.path)
                elif _is_image(entry.name):
                    found.append(entry.path)
            for sub in subdirs:
                real = os.path.realpath(sub)
                if real in read:
                    self.notes.append((sub, f"the same folder as {read[real]!r} (through a link), already read: "
                                            "not read again"))
                elif not self.run_dir(sub):
                    read[real] = sub
                    pending.append(sub)
        return sorted(found)

    def once(self, paths: list[str], seen: dict, label: str) -> list[str]:
        """``paths`` with every file once (the real file kept over a link to it); a file seen
        under another ``label`` (class or split) in ``seen`` is an error naming both paths. A
        path that cannot be followed stays in, marked broken."""
        kept = []
        for path in sorted(paths, key=lambda p: (os.path.islink(p), p)):
            try:
                key = _identity(path)
            except OSError as exc:
                self.broken[path] = _broken_link(path, exc)
                kept.append(path)
                continue
            if key not in seen:
                seen[key] = (path, label)
                kept.append(path)
                continue
            first, where = seen[key]
            if where != label:
                raise ValueError(f"{first!r} ({where}) and {path!r} ({label}) are the same file (through a link): "
                                 "a file can have only one label and be in only one split; remove the link")
            self.notes.append((path, f"the same file as {first!r} (a link): counted once"))
        return sorted(kept)

    def classes(self, folder: Path, seen: dict, split: str = "") -> dict[str, list[str]]:
        """``{class: image paths}`` for the visible, non-run sub-folders of ``folder``."""
        with os.scandir(folder) as listing:
            entries = sorted((e for e in listing if not e.name.startswith(".")), key=lambda e: e.name)
        names = [e.name for e in entries if _is_dir(e) and not self.run_dir(e.path)]
        for entry in entries:
            if entry.is_symlink() and not os.path.exists(entry.path):
                self.notes.append((entry.path, f"a symbolic link to {os.readlink(entry.path)!r}, which does "
                                               "not exist: not read as a class"))
        if not names:
            loose = sum(_is_image(e.name) for e in entries if os.path.isfile(e.path))
            hint = f" (it holds {loose} images directly: put them in one folder per class)" if loose else ""
            raise ValueError(f"{str(folder)!r} has no class folders{hint}; expected root/<class>/<image>, "
                             "or root/train/<class>/<image> with root/val/<class>/<image>")
        prefix = f"{split}/" if split else ""
        files = {name: self.once(self.images_under(str(folder / name)), seen, f"{prefix}{name}") for name in names}
        for name, paths in files.items():
            where = str(folder / name)
            if not paths and not any(p == where or p.startswith(where + os.sep) for p in self.broken):
                raise ValueError(f"class folder {str(folder / name)!r} has no image files "
                                 f"({', '.join(IMAGE_EXTENSIONS)}); remove the folder or add images")
        return files


def scan_layout(root: Path) -> Scan:
    """The layout of ``root`` and its image files by class (see the module docstring).

    Raises:
        ValueError: no class folders, a class folder without image files, train and val with
            different classes, only one of train/val, or a file under two classes / splits.
    """
    walker = _Walker()
    seen: dict = {}
    has = {name: (root / name).is_dir() for name in ("train", "val")}
    if has["train"] and has["val"]:
        train, val = walker.classes(root / "train", seen, "train"), walker.classes(root / "val", seen, "val")
        if list(train) != list(val):
            raise ValueError(f"{str(root)!r}: train and val have different classes (only in train: "
                             f"{sorted(set(train) - set(val))}, only in val: {sorted(set(val) - set(train))})")
        return Scan("train/val", {"train": train, "val": val}, walker.broken, walker.notes, walker.runs)
    if has["train"] or has["val"]:
        there, missing = ("train", "val") if has["train"] else ("val", "train")
        raise ValueError(f"{str(root)!r} has a {there!r} folder but no {missing!r} folder: give both "
                         f"(root/train/<class>, root/val/<class>), or one folder per class under root")
    return Scan("split", {"all": walker.classes(root, seen)}, walker.broken, walker.notes, walker.runs)
