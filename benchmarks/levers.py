"""Each speed lever of issue 8 measured in isolation, one sub-command per lever.

    python benchmarks/levers.py channels_last [--sizes 64 128 224]   # fp32 and bf16 autocast
    python benchmarks/levers.py compile [--size 64]                  # torch.compile break-even
    python benchmarks/levers.py backward [--size 128]                # does backward stop early?
    python benchmarks/levers.py workers                              # DataLoader on real JPEGs
    python benchmarks/levers.py head                                 # converged head on features
    python benchmarks/levers.py profile [--size 64]                  # where a fine-tune epoch goes
    python benchmarks/levers.py profile_head [--size 64]             # where default feature extraction goes
    python benchmarks/levers.py predict [--size 64]                  # saved classifier vs raw forward
    python benchmarks/levers.py all
    python benchmarks/levers.py report                               # the saved results as Markdown

Every lever runs its variants interleaved (round-robin, after one untimed call each) and
reports medians, so slow drifts of a shared machine hit all variants alike. Results go to
``benchmarks/results/levers_<lever>.json`` and a table on stdout. MobileNetV2 at batch 32;
timing does not depend on the weights, so only ``head`` loads the pretrained ones.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch
from benchutil import ROOT, machine, median, write_json
from levers_data import lever_head, lever_predict, lever_workers
from levers_report import report
from torch import nn

import transferlearn as tl

__all__ = ["lever_channels_last", "lever_compile", "lever_backward", "lever_workers", "lever_head",
           "lever_profile", "lever_profile_head", "report"]

RESULTS = ROOT / "benchmarks" / "results"
CPU = torch.device("cpu")


def _model(num_classes: int = 10, channels_last: bool = False) -> nn.Module:
    torch.manual_seed(0)
    model = tl.load_model("mobilenet_v2", weights=None, num_classes=num_classes)
    tl.freeze_bn_running_stats(model)  # the Trainer's default BatchNorm policy
    return model.to(memory_format=torch.channels_last) if channels_last else model


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


def interleaved(fns: dict[str, Callable[[], None]], rounds: int) -> dict[str, float]:
    """Median seconds per call of each function, timed round-robin after one untimed call."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            began = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - began)
    return {k: median(v) for k, v in times.items()}


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
            seconds = interleaved(fns, rounds)
            base = seconds[(False, False)]
            for (cl, b), s in seconds.items():
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
    began = time.perf_counter()
    compiled()  # compiles forward and backward
    first = time.perf_counter() - began
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
    seconds = interleaved(fns, rounds)
    fwd = seconds["forward only (train mode, no grad)"]
    rows = [{"size": size, "variant": k, "seconds_per_batch": s, "x_forward": s / fwd} for k, s in seconds.items()]
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
        seconds = _seconds(fit)
    table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15)
    (out / name).write_text(f"{header}, {torch.get_num_threads()} threads: {seconds:.2f}s\n{table}\n")
    total = sum(e.self_cpu_time_total for e in prof.key_averages())
    top = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)[:8]
    return {"seconds": seconds, "file": name,
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
    one = median([_seconds(fit(1)) for _ in range(3)])
    row = _profiled(fit(strategy.warmup_epochs), f"profile_feature_extraction_{size}px.txt",
                    f"Trainer.fit(strategy=recommend_strategy(29)) ({strategy.warmup_epochs} cached head epochs), "
                    f"{images} images at {size}px, batch 32", out)
    steps = (strategy.warmup_epochs - 1) * len(loader)
    row.update(size=size, images=images, epochs=strategy.warmup_epochs, one_epoch_seconds=one,
               ms_per_cached_step=(row["seconds"] - one) / steps * 1e3)
    print(f"  {size}px: {row['seconds']:.2f}s ({one:.2f}s with 1 epoch; {row['ms_per_cached_step']:.3f} ms per "
          "cached step); " + ", ".join(f"{t['op']} {t['self_share']:.0%}" for t in row["top_ops"][:5]), flush=True)
    return [row]


def _seconds(run: Callable[[], Any]) -> float:
    began = time.perf_counter()
    run()
    return time.perf_counter() - began


# --------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("lever", choices=["channels_last", "compile", "backward", "workers", "head", "profile",
                                          "profile_head", "predict", "all", "report"])
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 224])
    parser.add_argument("--size", type=int, default=None)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--no-bf16", action="store_true", help="skip bf16 autocast variants")
    parser.add_argument("--head-data", nargs="+", default=["digits:64"], help="e.g. digits:64 chess:224")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.lever == "report":
        print(report(args.out))
        return
    levers = ["channels_last", "backward", "head", "workers", "profile", "compile"] if args.lever == "all" \
        else [args.lever]
    for lever in levers:
        print(f"== {lever}", flush=True)
        path = args.out / f"levers_{lever}.json"

        def save(rows: Any, lever: str = lever, path: Path = path) -> None:
            write_json(path, {"machine": machine(CPU), "command": "python benchmarks/levers.py "
                              + " ".join(argv if argv is not None else sys.argv[1:]), "lever": lever, "rows": rows})
        if lever == "channels_last":
            result: Any = lever_channels_last(args.sizes, args.rounds, bf16=not args.no_bf16, save=save)
        elif lever == "compile":
            result = [lever_compile(args.size or 64, args.rounds, cl) for cl in (False, True)]
        elif lever == "backward":
            result = lever_backward(args.size or 128, args.rounds, [1, 2, 4])
        elif lever == "predict":
            result = [lever_predict(args.size or 64, 256, args.rounds, args.out)]
        elif lever == "profile":
            result = lever_profile(args.size or 64, 128, args.out)
        elif lever == "profile_head":
            result = lever_profile_head(args.size or 64, 600, args.out)
        elif lever == "workers":
            result = lever_workers(args.size or 128, [(0, False), (1, False), (2, False), (2, True)], 2, save=save)
        else:
            result = [r for spec in args.head_data
                      for r in lever_head(spec.split(":")[0], int(spec.split(":")[1]), args.seeds)]
        save(result)

if __name__ == "__main__":
    main()
