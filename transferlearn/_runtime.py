"""Device choice, mixed precision and progress display for the Trainer."""

from __future__ import annotations

import contextlib
import sys
from typing import Any, Iterable, Iterator

import torch

from ._checks import check_choice, describe

__all__: list[str] = []


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


class Precision:
    """Autocast and gradient scaling for ``amp``: bf16 on CPU; bf16 or fp16 + GradScaler on CUDA."""

    def __init__(self, amp: bool | str, device: torch.device) -> None:
        check_choice("amp", amp, (False, True, "bf16", "fp16"))
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


class Progress:
    """tqdm bars on a terminal, one summary line per epoch otherwise, nothing when off."""

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

    def epoch(self, record: dict[str, Any], total_epochs: int) -> None:
        if self.mode is False:
            return
        parts = [f"epoch {record['epoch']}/{total_epochs} {record['phase']:8s}"]
        for key, label in (("train_loss", "loss"), ("train_accuracy", "acc"),
                           ("val_loss", "val_loss"), ("val_accuracy", "val_acc")):
            if record.get(key) is not None:
                parts.append(f"{label} {record[key]:.4f}" if "loss" in key else f"{label} {record[key]:.3f}")
        parts.append(f"{record['seconds']:.1f}s")
        print("  ".join(parts), flush=True)
