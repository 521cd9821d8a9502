"""``levers.py report``: the saved lever results as Markdown tables (docs/performance.md quotes them)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["report"]


# ------------------------------------------------------------------------------- report
def _table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    return "\n".join(lines + ["| " + " | ".join(str(c) for c in r) + " |" for r in rows])


def report(results: Path) -> str:
    """The saved lever results as Markdown tables (what docs/performance.md quotes)."""
    out = []
    for lever in ("channels_last", "backward", "compile", "workers", "head", "profile", "predict"):
        path = results / f"levers_{lever}.json"
        if not path.exists():
            continue
        saved = json.loads(path.read_text())
        rows, m = saved["rows"], saved["machine"]
        out.append(f"### {lever}\n\n`{saved.get('command', '')}` ({m['torch_threads']} thread(s), "
                   f"load average {m.get('load_average') or 0:.1f})\n")
        if lever == "channels_last":
            out.append(_table(["size", "pass", "layout", "precision", "ms / batch of 32", "speed-up vs fp32 NCHW"], [
                [r["size"], r["kind"], "channels_last" if r["channels_last"] else "contiguous",
                 "bf16" if r["bf16"] else "fp32", f"{r['seconds_per_batch'] * 1000:.0f}",
                 f"{r['speedup_vs_fp32_nchw']:.2f}x"] for r in rows]))
        elif lever == "backward":
            out.append(_table(["size", "step", "ms / batch of 32", "x forward"], [
                [r["size"], r["variant"], f"{r['seconds_per_batch'] * 1000:.0f}", f"{r['x_forward']:.2f}"]
                for r in rows]))
        elif lever == "compile":
            out.append(_table(["size", "layout", "first step (compile) s", "eager ms/step", "compiled ms/step",
                               "speed-up", "pays after steps"], [
                [r["size"], "channels_last" if r["channels_last"] else "contiguous",
                 f"{r['first_compiled_step_s']:.1f}", f"{r['eager_step_s'] * 1000:.0f}",
                 f"{r['compiled_step_s'] * 1000:.0f}", f"{r['speedup']:.2f}x",
                 "never" if r["break_even_steps"] is None else f"{r['break_even_steps']:.0f}"] for r in rows]))
        elif lever == "workers":
            out.append(_table(["loader", "seconds (all epochs)", "per epoch"], [
                [r.get("variant") or f"ImageFolder, num_workers={r['num_workers']}, persistent="
                 f"{r['persistent_workers']}", f"{r['seconds']:.1f}",
                 ", ".join(f"{x:.1f}" for x in r["epoch_seconds"])] for r in rows]))
        elif lever == "head":
            out.append(_table(["data", "head training", "test accuracy", "seconds"], [
                [f"{r['data']} {r['size']}px", r["variant"], f"{r['test_accuracy']:.4f}", f"{r['seconds']:.2f}"]
                for r in rows]))
        elif lever == "predict":
            out.append(_table(["size", "images", "raw forward s", "classifier.predict s", "throughput vs raw"], [
                [r["size"], r["images"], f"{r['raw_s']:.2f}", f"{r['classifier_s']:.2f}",
                 f"{r['throughput_vs_raw']:.2f}x"] for r in rows]))
        else:
            out.append(_table(["size", "layout", "seconds", "top operators (self CPU share)"], [
                [r["size"], "channels_last" if r["channels_last"] else "contiguous", f"{r['seconds']:.2f}",
                 ", ".join(f"{t['op']} {t['self_share']:.0%}" for t in r["top_ops"][:5])] for r in rows]))
        out.append("")
    return "\n".join(out)
