"""Device choice, randomness (seeding, saved random states), mixed precision and progress display
for the Trainer."""

from __future__ import annotations

import contextlib
import random
import sys
import time
from typing import Any, Iterable, Iterator

import numpy as np
import torch

from ..base import check_choice, describe

__all__ = ["pick_device", "use_channels_last", "memory_layout", "seed_everything", "rng_state", "set_rng_state",
           "Precision", "Progress", "Meter", "duration"]


def pick_device(device: Any) -> torch.device:
    """``None`` -> cuda, then mps, then cpu; otherwise ``torch.device(device)``."""
    if device is None:
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        return torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"device must be None, a torch.device or a name like 'cpu' or 'cuda:0', "
                         f"got {describe(device)}") from None


def use_channels_last(option: Any, device: torch.device, model: torch.nn.Module) -> bool:
    """``"auto"``: channels_last on CPU and CUDA for models with 2-D convolutions, where it
    measured faster (docs/performance.md has the figures); never on other devices."""
    check_choice("channels_last", option, ("auto", True, False))
    if option == "auto":
        return device.type in ("cpu", "cuda") and any(isinstance(m, torch.nn.Conv2d) for m in model.modules())
    return option


@contextlib.contextmanager
def memory_layout(model: torch.nn.Module, channels_last: bool) -> Iterator[bool]:
    """Within the block, the model's 4-D weights are channels_last; afterwards they are made
    contiguous again, so the model leaves as it came. A model whose weights are not all in
    the default layout (the user chose one) is left alone. Yields whether inputs should be
    converted too."""
    weights = [p for p in model.parameters() if p.ndim == 4]
    unambiguous = [p for p in weights if not p.is_contiguous(memory_format=torch.channels_last)]
    if not channels_last or not unambiguous or not all(p.is_contiguous() for p in weights):
        yield False
        return
    model.to(memory_format=torch.channels_last)
    try:
        yield True
    finally:
        model.to(memory_format=torch.contiguous_format)


def seed_everything(seed: int) -> None:
    """Seed torch, numpy and ``random`` (what ``rng_state`` captures)."""
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed)


def rng_state(generators: Iterable[torch.Generator] = ()) -> dict[str, Any]:
    """Every random state a training epoch draws from, as weights_only-loadable values."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    state["loaders"] = [g.get_state() for g in generators]
    return state


def set_rng_state(state: dict[str, Any], generators: Iterable[torch.Generator] = ()) -> None:
    """Restore what ``rng_state`` captured."""
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, gauss_np = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss_np))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    for generator, saved in zip(generators, state.get("loaders", [])):
        generator.set_state(saved)


class Precision:
    """Autocast and gradient scaling for ``amp``: bf16 on CPU; bf16 or fp16 + GradScaler on CUDA."""

    def __init__(self, amp: bool | str, device: torch.device) -> None:
        check_choice("amp", amp, (False, True, "bf16", "fp16"))
        if amp == "fp16" and device.type != "cuda":
            raise ValueError(f"amp='fp16' needs CUDA (its GradScaler guards against underflow); on {device.type} "
                             "use amp=True or 'bf16'")
        self.device_type = device.type
        self.enabled = amp is not False
        if amp == "fp16" or (amp is True and device.type == "cuda" and not torch.cuda.is_bf16_supported()):
            self.dtype = torch.float16
        else:
            self.dtype = torch.bfloat16
        use_scaler = self.enabled and self.dtype == torch.float16 and device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", enabled=use_scaler)

    def autocast(self) -> contextlib.AbstractContextManager:
        if not self.enabled:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device_type, dtype=self.dtype)


def duration(seconds: float) -> str:
    """``seconds`` for a progress line: ``"0.4 s"``, ``"42 s"``, ``"3 min 05 s"``, ``"1 h 02 min"``."""
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes} min {secs:02d} s" if minutes < 60 else f"{minutes // 60} h {minutes % 60:02d} min"


class Meter:
    """The progress of one counted pass (the feature-caching pass): a tqdm bar (``"bar"``), a
    line at each quarter done with the time left (``"line"``), or nothing (``False``); a
    closing line with the count and the time taken in either mode. Use it as a context
    manager and ``update(n)`` after each batch of ``n`` items. A pass shorter than
    ``min_seconds`` gets its closing line only.

    Args:
        mode: ``"bar"``, ``"line"`` or ``False`` (``Progress.mode``).
        desc: what the pass does ("caching features").
        total: how many items it will count, or None (no quarter lines then).
        unit: what it counts.
    """

    min_seconds = 2.0

    def __init__(self, mode: bool | str, desc: str, total: int | None, unit: str = "images") -> None:
        self.mode, self.desc, self.total, self.unit = mode, desc, total, unit
        self.done, self._quarter, self._began = 0, 0, time.perf_counter()
        self._bar: Any = None
        if mode == "bar":
            from tqdm.auto import tqdm
            self._bar = tqdm(total=total, desc=desc, unit=f" {unit}", leave=False, dynamic_ncols=True)

    def __enter__(self) -> "Meter":
        return self

    def __exit__(self, kind: Any, *_: Any) -> None:
        self.close(finished=kind is None)

    def update(self, n: int) -> None:
        """Count ``n`` more items (the bar moves; a line when a new quarter is done)."""
        self.done += n
        if self._bar is not None:
            self._bar.update(n)
        elif self.mode == "line" and self.total:
            quarter, elapsed = 4 * self.done // self.total, time.perf_counter() - self._began
            if self._quarter < quarter < 4 and elapsed >= self.min_seconds:
                self._quarter = quarter
                left = elapsed / self.done * (self.total - self.done)
                print(f"{self.desc}: {self.done}/{self.total} {self.unit}, {duration(elapsed)}, "
                      f"~{duration(left)} left", flush=True)

    def close(self, finished: bool = True) -> None:
        """End the pass: the bar goes, and (``finished``) the closing line is printed, once."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        if finished and self.mode is not False:
            print(f"{self.desc}: {self.done} {self.unit}, {duration(time.perf_counter() - self._began)}", flush=True)
            self.mode = False  # once


class Progress:
    """tqdm bars on a terminal, lines otherwise (one per epoch, a few per caching pass), nothing when off."""

    def __init__(self, mode: bool | str) -> None:
        check_choice("progress", mode, (True, False, "bar", "line"))
        if mode is True:
            mode = "bar" if sys.stderr.isatty() else "line"
        self.mode = mode

    def batches(self, items: Iterable, total: int | None, desc: str) -> Iterator:
        if self.mode != "bar":
            yield from items
            return
        from tqdm.auto import tqdm
        with tqdm(items, total=total, desc=desc, leave=False, dynamic_ncols=True) as bar:
            yield from bar

    def meter(self, desc: str, total: int | None, unit: str = "images") -> Meter:
        """A ``Meter`` for a pass over ``total`` items (None: unknown) in this mode."""
        return Meter(self.mode, desc, total, unit)

    def epoch(self, record: dict[str, Any], total_epochs: int, left: float | None = None) -> None:
        """The epoch's line: its numbers, its time and (``left``) the estimated time to the end of the fit."""
        if self.mode is False:
            return
        parts = [f"epoch {record['epoch']}/{total_epochs} {record['phase']:8s}"]
        for key, label in (("train_loss", "loss"), ("train_accuracy", "acc"),
                           ("val_loss", "val_loss"), ("val_accuracy", "val_acc")):
            if record.get(key) is not None:
                parts.append(f"{label} {record[key]:.4f}" if "loss" in key else f"{label} {record[key]:.3f}")
        parts.append(duration(record["seconds"]))
        if left is not None:
            parts.append(f"~{duration(left)} left")
        print("  ".join(parts), flush=True)
