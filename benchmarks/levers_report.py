"""Markdown tables of saved lever results (what docs/performance.md quotes), one per lever.

Each ``<lever>_table(rows)`` renders the ``rows`` of ``benchmarks/results/levers_<lever>.json``;
``python -m benchmarks.levers report`` puts them together through the registry in
``benchmarks.levers``.

Example:
    >>> print(table(["a", "b"], [[1, 2]]))
    | a | b |
    | --- | --- |
    | 1 | 2 |
"""

from __future__ import annotations

from typing import Any

from .util import module_command

__all__ = ["table", "header", "channels_last_table", "backward_table", "compile_table", "workers_table",
           "head_table", "profile_table", "profile_head_table", "predict_table"]

Rows = list[dict[str, Any]]


def table(columns: list[str], rows: list[list[Any]]) -> str:
    """A Markdown table."""
    lines = ["| " + " | ".join(columns) + " |", "| " + " | ".join("---" for _ in columns) + " |"]
    return "\n".join(lines + ["| " + " | ".join(str(c) for c in r) + " |" for r in rows])


def header(lever: str, saved: dict[str, Any]) -> str:
    """The section title and the command (in its ``-m`` form), threads and load a saved result was measured with."""
    m = saved["machine"]
    return (f"### {lever}\n\n`{module_command(saved.get('command', ''))}` ({m['torch_threads']} thread(s), "
            f"load average {m.get('load_average') or 0:.1f})\n")


def _layout(row: dict[str, Any]) -> str:
    return "channels_last" if row["channels_last"] else "contiguous"


def _top_ops(row: dict[str, Any]) -> str:
    return ", ".join(f"{t['op']} {t['self_share']:.0%}" for t in row["top_ops"][:5])


def channels_last_table(rows: Rows) -> str:
    """The ``channels_last`` lever: ms per batch and speed-up over fp32 contiguous, per size, pass and variant."""
    return table(["size", "pass", "layout", "precision", "ms / batch of 32", "speed-up vs fp32 NCHW"], [
        [r["size"], r["kind"], _layout(r), "bf16" if r["bf16"] else "fp32", f"{r['seconds_per_batch'] * 1000:.0f}",
         f"{r['speedup_vs_fp32_nchw']:.2f}x"] for r in rows])


def backward_table(rows: Rows) -> str:
    """The ``backward`` lever: ms per train step of each trainable set, and its ratio to the forward alone."""
    return table(["size", "step", "ms / batch of 32", "x forward"], [
        [r["size"], r["variant"], f"{r['seconds_per_batch'] * 1000:.0f}", f"{r['x_forward']:.2f}"] for r in rows])


def compile_table(rows: Rows) -> str:
    """The ``compile`` lever: the first compiled step, eager and compiled ms per step, and when compiling pays."""
    return table(["size", "layout", "first step (compile) s", "eager ms/step", "compiled ms/step", "speed-up",
                  "pays after steps"], [
        [r["size"], _layout(r), f"{r['first_compiled_step_s']:.1f}", f"{r['eager_step_s'] * 1000:.0f}",
         f"{r['compiled_step_s'] * 1000:.0f}", f"{r['speedup']:.2f}x",
         "never" if r["break_even_steps"] is None else f"{r['break_even_steps']:.0f}"] for r in rows])


def workers_table(rows: Rows) -> str:
    """The ``workers`` lever: seconds per DataLoader setting over the chess photos, all epochs and each."""
    return table(["loader", "seconds (all epochs)", "per epoch"], [
        [r.get("variant") or f"ImageFolder, num_workers={r['num_workers']}, persistent={r['persistent_workers']}",
         f"{r['seconds']:.1f}", ", ".join(f"{x:.1f}" for x in r["epoch_seconds"])] for r in rows])


def head_table(rows: Rows) -> str:
    """The ``head`` lever: test accuracy and seconds of each way to train the head on cached features."""
    return table(["data", "head training", "test accuracy", "seconds"], [
        [f"{r['data']} {r['size']}px", r["variant"], f"{r['test_accuracy']:.4f}", f"{r['seconds']:.2f}"]
        for r in rows])


def profile_table(rows: Rows) -> str:
    """The ``profile`` lever: seconds of a profiled fine-tuning epoch and its top operators, per layout."""
    return table(["size", "layout", "seconds", "top operators (self CPU share)"], [
        [r["size"], _layout(r), f"{r['seconds']:.2f}", _top_ops(r)] for r in rows])


def profile_head_table(rows: Rows) -> str:
    """The ``profile_head`` lever: default feature extraction: seconds, cost per cached step, top operators."""
    return table(["size", "images", "cached head epochs", "seconds", "seconds with 1 epoch", "ms per cached step",
                  "top operators (self CPU share)"], [
        [r["size"], r["images"], r["epochs"], f"{r['seconds']:.2f}", f"{r['one_epoch_seconds']:.2f}",
         f"{r['ms_per_cached_step']:.3f}", _top_ops(r)] for r in rows])


def predict_table(rows: Rows) -> str:
    """The ``predict`` lever: seconds of the raw forward and of a loaded classifier's predict over the same files."""
    return table(["size", "images", "raw forward s", "classifier.predict s", "throughput vs raw"], [
        [r["size"], r["images"], f"{r['raw_s']:.2f}", f"{r['classifier_s']:.2f}", f"{r['throughput_vs_raw']:.2f}x"]
        for r in rows])
