"""Each speed lever of issue 8 measured in isolation, one sub-command per lever.

    python benchmarks/levers.py channels_last [--sizes 64 128 224]   # fp32 and bf16 autocast
    python benchmarks/levers.py compile [--size 64]                  # torch.compile break-even
    python benchmarks/levers.py backward [--size 128]                # does backward stop early?
    python benchmarks/levers.py workers                              # DataLoader on real JPEGs
    python benchmarks/levers.py head                                 # converged head on features
    python benchmarks/levers.py profile [--size 64]                  # where a fine-tune epoch goes
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
import json
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch
from benchutil import ROOT, machine, median, write_json
from torch import nn

import transferlearn as tl

__all__ = ["lever_channels_last", "lever_compile", "lever_backward", "lever_workers", "lever_head",
           "lever_profile", "report"]

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


# ------------------------------------------------------------------------------ workers
def lever_workers(size: int, settings: list[tuple[int, bool]], epochs: int,
                  save: Callable[[Any], None] = lambda rows: None) -> list[dict[str, Any]]:
    """Seconds for ``epochs`` passes over the real chess photos (decode + resize + crop
    through ImageFolder) with a MobileNetV2 forward, per DataLoader setting."""
    from torch.utils.data import DataLoader
    from torchvision import datasets

    root = _chess_root()
    transform = tl.imagenet_transform(size=size, resize=round(size * 256 / 224))
    data = datasets.ImageFolder(str(root), transform=transform)
    model = _model(num_classes=len(data.classes)).eval()
    rows = []
    for workers, persistent in settings:
        loader = DataLoader(data, batch_size=32, shuffle=True, num_workers=workers,
                            persistent_workers=persistent and workers > 0)
        began = time.perf_counter()
        per_epoch = []
        for _ in range(epochs):
            t0 = time.perf_counter()
            with torch.inference_mode():
                for xb, _ in loader:
                    model(xb)
            per_epoch.append(time.perf_counter() - t0)
        rows.append({"size": size, "num_workers": workers, "persistent_workers": persistent,
                     "epochs": epochs, "seconds": time.perf_counter() - began, "epoch_seconds": per_epoch,
                     "images": len(data)})
        print(f"  {size}px workers={workers} persistent={persistent}: {rows[-1]['seconds']:.1f}s "
              f"for {epochs} epochs ({', '.join(f'{s:.1f}' for s in per_epoch)})", flush=True)
        save(rows)
        del loader
    if hasattr(tl, "load_image_folder"):
        rows.append(_library_folder_epochs(root, size, epochs, model))
        save(rows)
    return rows


def _library_folder_epochs(root: Path, size: int, epochs: int, model: nn.Module) -> dict[str, Any]:
    """The same passes through ``load_image_folder`` (JPEG draft mode, decoded-image cache)
    and its ``loaders()`` defaults; the folder scan and check are inside the time."""
    began = time.perf_counter()
    data = tl.load_image_folder(root, size=size, val_fraction=0.0)
    loader, _ = data.loaders(batch_size=32)
    per_epoch = []
    for _ in range(epochs):
        t0 = time.perf_counter()
        with torch.inference_mode():
            for xb, _ in loader:
                model(xb)
        per_epoch.append(time.perf_counter() - t0)
    row = {"size": size, "num_workers": loader.num_workers, "persistent_workers": loader.persistent_workers,
           "variant": "load_image_folder + loaders() defaults", "epochs": epochs,
           "seconds": time.perf_counter() - began, "epoch_seconds": per_epoch, "images": len(data.train)}
    print(f"  {size}px load_image_folder (draft, cache; workers={loader.num_workers}): {row['seconds']:.1f}s "
          f"for {epochs} epochs ({', '.join(f'{s:.1f}' for s in per_epoch)})", flush=True)
    return row


def _chess_root() -> Path:
    """The chess photos, folder per class, from the evidence engineer's fetcher."""
    import datasets as bench_datasets  # benchmarks/datasets.py

    return Path(bench_datasets.chess())


# --------------------------------------------------------------------------------- head
def _head_features(which: str, size: int) -> tuple[Any, Any, int]:
    """Pretrained MobileNetV2 features of a train and a test split (cached on disk)."""
    from torch.utils.data import DataLoader
    from torchvision import datasets

    cache = ROOT / ".cache" / "bench" / f"features_{which}_{size}.pt"
    if cache.exists():
        saved = torch.load(cache, weights_only=True)
        return saved["train"], saved["test"], saved["classes"]
    from benchutil import split_folder
    train_dir, test_dir = split_folder(which, test_fraction=0.3 if which == "digits" else 0.5)
    transform = tl.imagenet_transform(size=size, resize=round(size * 256 / 224))
    train = datasets.ImageFolder(str(train_dir), transform=transform)
    test = datasets.ImageFolder(str(test_dir), transform=transform)
    model = tl.load_model("mobilenet_v2", weights="IMAGENET1K_V1", num_classes=len(train.classes))
    feats = [tl.extract_features(model, DataLoader(d, batch_size=64)).tensors for d in (train, test)]
    cache.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"train": feats[0], "test": feats[1], "classes": len(train.classes)}, cache)
    return feats[0], feats[1], len(train.classes)


def _adam_head(train: Any, classes: int, epochs: int, seed: int) -> nn.Linear:
    torch.manual_seed(seed)
    x, y = train
    head = nn.Linear(x.shape[1], classes)
    opt = torch.optim.AdamW(head.parameters(), lr=1e-3, weight_decay=0.0)
    g = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        for idx in torch.randperm(len(x), generator=g).split(32):
            loss = nn.functional.cross_entropy(head(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return head


def _lbfgs_head(train: Any, classes: int, l2: float, max_iter: int) -> nn.Linear:
    torch.manual_seed(0)
    x, y = train
    head = nn.Linear(x.shape[1], classes)
    opt = torch.optim.LBFGS(head.parameters(), lr=1, max_iter=max_iter, history_size=20,
                            line_search_fn="strong_wolfe", tolerance_grad=1e-6, tolerance_change=1e-9)

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = nn.functional.cross_entropy(head(x), y) + 0.5 * l2 * head.weight.pow(2).sum()
        loss.backward()
        return loss
    opt.step(closure)
    return head


def _accuracy(head: nn.Module, test: Any) -> float:
    with torch.no_grad():
        return float((head(test[0]).argmax(1) == test[1]).float().mean())


def lever_head(which: str, size: int, seeds: int) -> list[dict[str, Any]]:
    """Adam for 5/10/20/50 cached epochs vs full-batch L-BFGS vs scikit-learn's converged
    logistic probe, on the same cached features: test accuracy and seconds."""
    from sklearn.linear_model import LogisticRegression

    train, test, classes = _head_features(which, size)
    n = len(train[0])
    variants: dict[str, Callable[[int], nn.Module]] = {
        f"adam {e} epochs": (lambda s, e=e: _adam_head(train, classes, e, s)) for e in (5, 10, 20, 50)}
    for l2 in (0.0, 1.0 / n, 10.0 / n):
        variants[f"lbfgs l2={l2:.1e}"] = lambda s, l2=l2: _lbfgs_head(train, classes, l2, 500)
    for iters in (50, 100, 200):  # l2 = 1/n is scikit-learn's C=1
        variants[f"lbfgs l2=1/n, max_iter={iters}"] = lambda s, i=iters: _lbfgs_head(train, classes, 1.0 / n, i)
    rows = []
    for name, make in variants.items():
        accs, secs = [], []
        for seed in range(seeds if name.startswith("adam") else 1):
            began = time.perf_counter()
            head = make(seed)
            secs.append(time.perf_counter() - began)
            accs.append(_accuracy(head, test))
        rows.append({"data": which, "size": size, "variant": name, "test_accuracy": sum(accs) / len(accs),
                     "accuracies": accs, "seconds": median(secs)})
    began = time.perf_counter()
    probe = LogisticRegression(C=1.0, max_iter=5000).fit(train[0].numpy(), train[1].numpy())
    rows.append({"data": which, "size": size, "variant": "sklearn LogisticRegression(C=1) probe",
                 "test_accuracy": float(probe.score(test[0].numpy(), test[1].numpy())),
                 "seconds": time.perf_counter() - began})
    for r in rows:
        print(f"  {which} {size}px {r['variant']:38s} acc {r['test_accuracy']:.4f}  {r['seconds']:.2f}s", flush=True)
    return rows


# ------------------------------------------------------------------------------ profile
def lever_profile(size: int, images: int, out: Path) -> list[dict[str, Any]]:
    """torch.profiler over one fine-tuning epoch of ``Trainer.fit`` (contiguous and
    channels_last): where the time of the part the feature cache cannot remove goes."""
    from torch.profiler import ProfilerActivity, profile
    from torch.utils.data import DataLoader, TensorDataset

    g = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.randn(images, 3, size, size, generator=g), torch.randint(0, 10, (images,), generator=g))
    rows = []
    for cl in (False, True):
        model = _model(channels_last=cl)
        trainer = tl.Trainer(model, progress=False, seed=0)
        trainer.fit(DataLoader(data, batch_size=32), warmup_epochs=0, finetune_epochs=1)  # warm
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            began = time.perf_counter()
            trainer.fit(DataLoader(data, batch_size=32), warmup_epochs=0, finetune_epochs=1)
            seconds = time.perf_counter() - began
        table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15)
        name = f"profile_finetune_{size}px_{'channels_last' if cl else 'contiguous'}.txt"
        (out / name).write_text(f"Trainer.fit(warmup_epochs=0, finetune_epochs=1), {images} images at {size}px, "
                                f"batch 32, {torch.get_num_threads()} threads: {seconds:.2f}s\n{table}\n")
        total = sum(e.self_cpu_time_total for e in prof.key_averages())
        top = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)[:8]
        rows.append({"size": size, "channels_last": cl, "seconds": seconds, "file": name,
                     "top_ops": [{"op": e.key, "self_share": e.self_cpu_time_total / total} for e in top]})
        print(f"  {size}px {'channels_last' if cl else 'contiguous'}: {seconds:.2f}s; " + ", ".join(
            f"{t['op']} {t['self_share']:.0%}" for t in rows[-1]["top_ops"][:5]), flush=True)
    return rows


# ------------------------------------------------------------------------------- report
def _table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    return "\n".join(lines + ["| " + " | ".join(str(c) for c in r) + " |" for r in rows])


def report(results: Path) -> str:
    """The saved lever results as Markdown tables (what docs/performance.md quotes)."""
    out = []
    for lever in ("channels_last", "backward", "compile", "workers", "head", "profile"):
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
        else:
            out.append(_table(["size", "layout", "seconds", "top operators (self CPU share)"], [
                [r["size"], "channels_last" if r["channels_last"] else "contiguous", f"{r['seconds']:.2f}",
                 ", ".join(f"{t['op']} {t['self_share']:.0%}" for t in r["top_ops"][:5])] for r in rows]))
        out.append("")
    return "\n".join(out)


# --------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("lever", choices=["channels_last", "compile", "backward", "workers", "head", "profile",
                                          "all", "report"])
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
        elif lever == "profile":
            result = lever_profile(args.size or 64, 128, args.out)
        elif lever == "workers":
            result = lever_workers(args.size or 128, [(0, False), (1, False), (2, False), (2, True)], 2, save=save)
        else:
            result = [r for spec in args.head_data
                      for r in lever_head(spec.split(":")[0], int(spec.split(":")[1]), args.seeds)]
        save(result)

if __name__ == "__main__":
    main()
