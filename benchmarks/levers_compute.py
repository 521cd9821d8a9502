"""The compute levers of ``python -m benchmarks.levers``: memory layout and bf16, torch.compile,
how far backward runs, and profiles of a fine-tuning epoch and of the default feature extraction.

Every lever runs its variants interleaved (``benchutil.interleaved``) on MobileNetV2 at batch
32 with random weights (timing does not depend on them) and BatchNorm statistics pinned, as
the Trainer does by default.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

import transferlearn as tl

from .benchutil import interleaved, median, seconds
from .models import mobilenet

__all__ = ["lever_channels_last", "lever_compile", "lever_backward", "lever_profile", "lever_profile_head"]


def _model(channels_last: bool = False) -> nn.Module:
    """MobileNetV2, 10 classes, random weights, BatchNorm statistics pinned."""
    return mobilenet(10, weights=None, seed=0, channels_last=channels_last, pin_bn=True)


def _autocast(bf16: bool) -> contextlib.AbstractContextManager:
    return torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()


def _infer_fn(model: nn.Module, x: torch.Tensor, bf16: bool) -> Callable[[], None]:
    model.eval()

    def run() -> None:
        with torch.inference_mode(), _autocast(bf16):
            model(x)
    return run


def _step_fn(model: nn.Module, x: torch.Tensor, y: torch.Tensor, bf16: bool) -> Callable[[], None]:
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    loss_fn = nn.CrossEntropyLoss()

    def run() -> None:
        with _autocast(bf16):
            loss = loss_fn(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return run


def _batch(size: int, channels_last: bool, batch: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 3, size, size, generator=g)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x, torch.randint(0, 10, (batch,), generator=g)


# ------------------------------------------------------------------------- channels_last
def lever_channels_last(sizes: list[int], rounds: int, bf16: bool,
                        save: Callable[[Any], None] = lambda rows: None) -> list[dict[str, Any]]:
    """Inference (the warm-up feature pass and eval are this forward) and a full train step,
    contiguous vs channels_last, fp32 and (when asked) bf16 autocast, per image size."""
    rows = []
    variants = [(cl, b) for b in ([False, True] if bf16 else [False]) for cl in (False, True)]
    for size in sizes:
        for kind in ("inference", "train_step"):
            fns = {}
            for cl, b in variants:
                model = _model(channels_last=cl)
                x, y = _batch(size, cl)
                fns[(cl, b)] = _infer_fn(model, x, b) if kind == "inference" else _step_fn(model, x, y, b)
            timed = interleaved(fns, rounds)
            base = timed[(False, False)]
            for (cl, b), s in timed.items():
                rows.append({"size": size, "kind": kind, "channels_last": cl, "bf16": b,
                             "seconds_per_batch": s, "images_per_s": 32 / s, "speedup_vs_fp32_nchw": base / s})
            print(_fmt_rows(rows[-len(variants):]), flush=True)
            save(rows)
    return rows


def _fmt_rows(rows: list[dict[str, Any]]) -> str:
    return "\n".join(
        f"  {r['size']:4d}px {r['kind']:10s} {'channels_last' if r['channels_last'] else 'contiguous':13s} "
        f"{'bf16' if r['bf16'] else 'fp32'}  {r['seconds_per_batch'] * 1000:8.1f} ms/batch  "
        f"{r['speedup_vs_fp32_nchw']:.2f}x" for r in rows)


# ------------------------------------------------------------------------------ compile
def lever_compile(size: int, rounds: int, channels_last: bool) -> dict[str, Any]:
    """Seconds of the first compiled train step (compilation) against the per-step gain."""
    import torch._dynamo

    x, y = _batch(size, channels_last)
    eager = _step_fn(_model(channels_last=channels_last), x, y, False)
    torch._dynamo.reset()
    compiled_model = torch.compile(_model(channels_last=channels_last))
    compiled = _step_fn(compiled_model, x, y, False)
    first = seconds(compiled)  # compiles forward and backward
    steps = interleaved({"eager": eager, "compiled": compiled}, rounds)
    gain = steps["eager"] - steps["compiled"]
    overhead = first - steps["compiled"]
    result = {"size": size, "channels_last": channels_last, "first_compiled_step_s": first,
              "eager_step_s": steps["eager"], "compiled_step_s": steps["compiled"],
              "speedup": steps["eager"] / steps["compiled"], "compile_overhead_s": overhead,
              "break_even_steps": overhead / gain if gain > 0 else None}
    print(f"  {size}px: compile {first:.1f}s, eager {steps['eager'] * 1000:.0f} ms/step, compiled "
          f"{steps['compiled'] * 1000:.0f} ms/step ({result['speedup']:.2f}x); pays after "
          f"{result['break_even_steps'] or float('inf'):.0f} steps", flush=True)
    return result


# ----------------------------------------------------------------------------- backward
def lever_backward(size: int, rounds: int, lasts: list[int]) -> list[dict[str, Any]]:
    """A train step with only the head, the last N groups, or everything trainable; and the
    forward alone. If backward stops at the first trainable layer, ``last=1`` costs about
    one forward plus a little."""
    x, y = _batch(size, False)
    fns: dict[str, Callable[[], None]] = {}
    forward_model = _model()
    forward_model.train()

    def forward_only() -> None:
        with torch.no_grad():
            forward_model(x)
    fns["forward only (train mode, no grad)"] = forward_only
    head_only = tl.freeze_backbone(_model())
    fns["head only (frozen backbone, no cache)"] = _step_fn(head_only, x, y, False)
    for last in lasts:
        fns[f"unfreeze(last={last})"] = _step_fn(tl.unfreeze(_model(), last=last), x, y, False)
    fns["all layers"] = _step_fn(tl.unfreeze(_model()), x, y, False)
    timed = interleaved(fns, rounds)
    fwd = timed["forward only (train mode, no grad)"]
    rows = [{"size": size, "variant": k, "seconds_per_batch": s, "x_forward": s / fwd} for k, s in timed.items()]
    for r in rows:
        print(f"  {size}px {r['variant']:40s} {r['seconds_per_batch'] * 1000:8.1f} ms  {r['x_forward']:.2f}x forward",
              flush=True)
    return rows


# ------------------------------------------------------------------------------ profile
def _profiled(fit: Callable[[], Any], name: str, header: str, out: Path) -> dict[str, Any]:
    """``fit()`` once under torch.profiler: its seconds, the operator table (written to
    ``out/name``) and the operators with the largest self CPU time."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        elapsed = seconds(fit)
    table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15)
    (out / name).write_text(f"{header}, {torch.get_num_threads()} threads: {elapsed:.2f}s\n{table}\n")
    total = sum(e.self_cpu_time_total for e in prof.key_averages())
    top = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)[:8]
    return {"seconds": elapsed, "file": name,
            "top_ops": [{"op": e.key, "self_share": e.self_cpu_time_total / total} for e in top]}


def _images(images: int, size: int) -> Any:
    from torch.utils.data import TensorDataset

    g = torch.Generator().manual_seed(0)
    return TensorDataset(torch.randn(images, 3, size, size, generator=g), torch.randint(0, 10, (images,), generator=g))


def lever_profile(size: int, images: int, out: Path) -> list[dict[str, Any]]:
    """torch.profiler over one fine-tuning epoch of ``Trainer.fit`` (contiguous and
    channels_last): where the time of the part the feature cache cannot remove goes."""
    from torch.utils.data import DataLoader

    data = _images(images, size)
    rows = []
    for cl in (False, True):
        trainer = tl.Trainer(_model(channels_last=cl), progress=False, seed=0)

        def fit(trainer: tl.Trainer = trainer) -> Any:
            return trainer.fit(DataLoader(data, batch_size=32), warmup_epochs=0, finetune_epochs=1)
        fit()  # warm
        layout = "channels_last" if cl else "contiguous"
        row = _profiled(fit, f"profile_finetune_{size}px_{layout}.txt",
                        f"Trainer.fit(warmup_epochs=0, finetune_epochs=1), {images} images at {size}px, batch 32", out)
        rows.append({"size": size, "channels_last": cl, **row})
        print(f"  {size}px {layout}: {row['seconds']:.2f}s; " + ", ".join(
            f"{t['op']} {t['self_share']:.0%}" for t in row["top_ops"][:5]), flush=True)
    return rows


def lever_profile_head(size: int, images: int, out: Path) -> list[dict[str, Any]]:
    """Where the default feature extraction's time goes: ``fit(strategy=recommend_strategy(29))``
    (200 cached head epochs) under torch.profiler, and the same fit with 1 epoch (the
    backbone pass that builds the cache, plus one epoch) timed beside it."""
    from torch.utils.data import DataLoader

    data = _images(images, size)
    strategy = tl.recommend_strategy(29)
    loader = DataLoader(data, batch_size=32, shuffle=True, generator=torch.Generator().manual_seed(0))

    def fit(epochs: int) -> Callable[[], Any]:
        return lambda: tl.Trainer(_model(), progress=False, seed=0).fit(loader, strategy=strategy,
                                                                         warmup_epochs=epochs)
    fit(1)()  # warm
    one = median([seconds(fit(1)) for _ in range(3)])
    row = _profiled(fit(strategy.warmup_epochs), f"profile_feature_extraction_{size}px.txt",
                    f"Trainer.fit(strategy=recommend_strategy(29)) ({strategy.warmup_epochs} cached head epochs), "
                    f"{images} images at {size}px, batch 32", out)
    steps = (strategy.warmup_epochs - 1) * len(loader)
    row.update(size=size, images=images, epochs=strategy.warmup_epochs, one_epoch_seconds=one,
               ms_per_cached_step=(row["seconds"] - one) / steps * 1e3)
    print(f"  {size}px: {row['seconds']:.2f}s ({one:.2f}s with 1 epoch; {row['ms_per_cached_step']:.3f} ms per "
          "cached step); " + ", ".join(f"{t['op']} {t['self_share']:.0%}" for t in row["top_ops"][:5]), flush=True)
    return [row]
