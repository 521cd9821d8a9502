"""Trainer vs the plain PyTorch loop, side by side in one process; prints measured ratios.

Two comparisons on MobileNetV2 (random init: timing does not depend on the weights), on
synthetic images held in a TensorDataset (deterministic, so the Trainer may cache):

1. Warm-up / feature extraction, E epochs with the backbone frozen:
   plain loop  - the textbook loop: every epoch runs the whole network forward;
   Trainer     - cache_features="auto": the backbone runs once, then only the head.
   Target: ratio plain/Trainer close to E (the backbone dominates the cost).
2. One fine-tuning epoch with every layer trainable:
   plain loop  - forward, loss, backward, AdamW step;
   Trainer     - the same work (freeze_bn=False, so BatchNorm computes batch statistics as
                 in the plain loop) plus its bookkeeping (freezing, param groups, history).
   Target: ratio Trainer/plain close to 1.0 (the loop adds no real overhead).

Each measurement is repeated and the median taken (shared, noisy machines: compare ratios).

    python benchmarks/bench_trainer.py [--device cpu|cuda] [--n 256] [--size 64] [--epochs 5] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import transferlearn as tl


def make_model(device: torch.device) -> nn.Module:
    torch.manual_seed(0)
    return tl.load_model("mobilenet_v2", weights=None, num_classes=10).to(device)


def plain_epochs(model: nn.Module, params, loader: DataLoader, epochs: int, device: torch.device,
                 lr: float) -> None:
    """The textbook loop: train mode, forward, loss, backward, step."""
    opt = torch.optim.AdamW(params, lr=lr)
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    for _ in range(epochs):
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            opt.zero_grad()
            loss_fn(model(x), y).backward()
            opt.step()


def plain_warmup(loader: DataLoader, epochs: int, device: torch.device) -> None:
    model = make_model(device)
    for p in model.parameters():
        p.requires_grad_(False)
    head = model.classifier[1]
    for p in head.parameters():
        p.requires_grad_(True)
    plain_epochs(model, head.parameters(), loader, epochs, device, lr=1e-3)


def plain_finetune(loader: DataLoader, device: torch.device) -> None:
    model = make_model(device)
    plain_epochs(model, model.parameters(), loader, 1, device, lr=1e-4)


def trainer_run(loader: DataLoader, device: torch.device, warmup: int, finetune: int) -> None:
    # freeze_bn=False in fine-tuning: BatchNorm does the same (batch-statistics) work as in
    # the plain loop, so the ratio measures the Trainer's own overhead.
    tl.Trainer(make_model(device), device=device, progress=False).fit(
        loader, warmup_epochs=warmup, finetune_epochs=finetune, freeze_bn=False)


def timed(fn, repeats: int, device: torch.device) -> float:
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--n", type=int, default=256)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    device = torch.device(args.device)
    g = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.randn(args.n, 3, args.size, args.size, generator=g),
                         torch.randint(0, 10, (args.n,), generator=g))
    loader = DataLoader(data, batch_size=32, shuffle=True)
    print(f"device={device} threads={torch.get_num_threads()} n={args.n} size={args.size} "
          f"epochs={args.epochs} repeats={args.repeats} (medians)")

    plain = timed(lambda: plain_warmup(loader, args.epochs, device), args.repeats, device)
    cached = timed(lambda: trainer_run(loader, device, args.epochs, 0), args.repeats, device)
    print(f"warm-up x{args.epochs}: plain loop {plain:.2f}s, Trainer (cached) {cached:.2f}s, "
          f"speed-up plain/Trainer = {plain / cached:.2f}x (target ~{args.epochs}x)")

    plain = timed(lambda: plain_finetune(loader, device), args.repeats, device)
    ours = timed(lambda: trainer_run(loader, device, 0, 1), args.repeats, device)
    print(f"fine-tune x1: plain loop {plain:.2f}s, Trainer {ours:.2f}s, "
          f"overhead Trainer/plain = {ours / plain:.2f}x (target ~1.0x)")


if __name__ == "__main__":
    main()
