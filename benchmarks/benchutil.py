"""The benchmarks' one set of timing helpers: a timed call with peak memory, interleaved
medians, and what machine the numbers came from.

Importing it points ``TORCH_HOME`` at the repository's ``.cache/torch`` unless it is set.

Example:
    >>> from benchmarks.benchutil import interleaved
    >>> sorted(interleaved({"a": lambda: None, "b": lambda: None}, rounds=3))
    ['a', 'b']
"""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from typing import Any, Callable

import torch

from .util import ROOT

__all__ = ["Measured", "measure", "median", "seconds", "interleaved", "machine", "sync"]

os.environ.setdefault("TORCH_HOME", str(ROOT / ".cache" / "torch"))


def sync(device: torch.device) -> None:
    """Wait for queued GPU work, so that a wall-clock reading covers it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class _PeakRSS:
    """Poll this process's resident memory in a thread; keep the highest value seen."""

    def __init__(self, interval: float = 0.01) -> None:
        import psutil

        self.process = psutil.Process()
        self.interval = interval
        self.peak = self.process.memory_info().rss
        self.start_rss = self.peak
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.process.memory_info().rss)
            self._stop.wait(self.interval)

    def __enter__(self) -> "_PeakRSS":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.process.memory_info().rss)


class Measured(dict):
    """One timed call: ``seconds``, ``peak_rss_mb``, ``rss_growth_mb``, ``cuda_peak_mb``, ``value``."""


def measure(fn: Callable[[], Any], device: torch.device) -> Measured:
    """Run ``fn()`` once; wall seconds, peak RSS (and its growth), CUDA max allocated."""
    import gc

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    sync(device)
    with _PeakRSS() as rss:
        began = time.perf_counter()
        value = fn()
        sync(device)
        elapsed = time.perf_counter() - began
    cuda = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    return Measured(seconds=elapsed, peak_rss_mb=rss.peak / 2**20,
                    rss_growth_mb=(rss.peak - rss.start_rss) / 2**20, cuda_peak_mb=cuda, value=value)


def median(values: list[float]) -> float:
    """The median, or NaN for an empty list."""
    return statistics.median(values) if values else float("nan")


def seconds(run: Callable[[], Any]) -> float:
    """Wall-clock seconds of one call of ``run()``."""
    began = time.perf_counter()
    run()
    return time.perf_counter() - began


def interleaved(fns: dict[Any, Callable[[], Any]], rounds: int, *, warm: bool = True) -> dict[Any, float]:
    """Median seconds per call of each function, timed round-robin (after one untimed call
    each when ``warm``), so slow drifts of a shared machine hit every variant alike."""
    if warm:
        for fn in fns.values():
            fn()
    times: dict[Any, list[float]] = {k: [] for k in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            times[name].append(seconds(fn))
    return {k: median(v) for k, v in times.items()}


def _lscpu() -> dict[str, str]:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    except OSError:
        return {}
    return {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in out.splitlines())}


def machine(device: torch.device) -> dict[str, Any]:
    """What the numbers were measured on: processor, cores, threads, torch, bf16, GPU."""
    cpu = _lscpu()
    info = {"cpu": cpu.get("Model name", platform.processor()), "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "cpu_bf16": "avx512_bf16" in cpu.get("Flags", "") or "amx_bf16" in cpu.get("Flags", ""),
            "python": sys.version.split()[0], "device": str(device),
            "load_average": os.getloadavg()[0] if hasattr(os, "getloadavg") else None}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info
