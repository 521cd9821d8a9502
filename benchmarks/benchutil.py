"""Shared helpers of the speed benchmarks: timing with peak memory, the machine, tiny data.

Used by ``compare_loops.py`` and ``levers.py`` (run from the repository root as
``python benchmarks/<script>.py``; this folder is then first on ``sys.path``).
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

import torch

__all__ = ["ROOT", "Measured", "measure", "median", "machine", "split_folder", "write_json", "sync"]

ROOT = Path(__file__).resolve().parents[1]
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
        seconds = time.perf_counter() - began
    cuda = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    return Measured(seconds=seconds, peak_rss_mb=rss.peak / 2**20,
                    rss_growth_mb=(rss.peak - rss.start_rss) / 2**20, cuda_peak_mb=cuda, value=value)


def median(values: list[float]) -> float:
    """The median, or NaN for an empty list."""
    return statistics.median(values) if values else float("nan")


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


def split_folder(name: str, *, test_fraction: float, seed: int = 0) -> tuple[Path, Path]:
    """A stratified, seeded split of a ``benchmarks/datasets.py`` folder into ``train``/``val``.

    The files are symlinked (not copied) into ``.cache/bench/<name>-split-<fraction>-<seed>``,
    so ``ImageFolder(root/"train")`` and ``load_image_folder(root)`` read the same photos.
    """
    import random

    import datasets as bench_datasets  # benchmarks/datasets.py: the one fetcher

    source = Path(getattr(bench_datasets, name)())
    dest = ROOT / ".cache" / "bench" / f"{name}-split-{test_fraction:g}-{seed}"
    if not (dest / ".done").exists():
        rng = random.Random(seed)
        for cls in sorted(p.name for p in source.iterdir() if p.is_dir()):
            files = sorted(f for f in (source / cls).iterdir() if f.is_file())
            rng.shuffle(files)
            n_val = round(len(files) * test_fraction)
            for split, members in (("val", files[:n_val]), ("train", files[n_val:])):
                folder = dest / split / cls
                folder.mkdir(parents=True, exist_ok=True)
                for f in members:
                    link = folder / f.name
                    if not link.exists():
                        link.symlink_to(f.resolve())
        (dest / ".done").write_text("ok\n")
    return dest / "train", dest / "val"


def write_json(path: Path, payload: dict[str, Any]) -> Path:
    """Write ``payload`` as indented JSON (non-JSON values become strings)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    return path
