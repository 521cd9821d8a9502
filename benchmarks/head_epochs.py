"""How many cached head epochs does a feature-extraction head need to converge?

Default run: extracts MobileNetV2 IMAGENET1K_V1 features once for the digits (64 px, 60
training images per class) and the chess photos (128 px, stratified 50/50), then trains a
fresh Linear head with AdamW (batch 32, shuffled) for 10-160 epochs at three learning rates,
3 seeds each, and compares with a logistic-regression probe (C=1) on the same features.

``--per-class 29`` measures the decision table's feature-extraction row instead (fewer than
30 images per class): digits, chess and the solar cells (elpv, a far domain) with 29
training images per class, lr 1e-3 (the strategy's), 25-200 epochs, 5 splits x seeds.

    TORCH_HOME=.cache/torch .venv/bin/python -m benchmarks.head_epochs
    TORCH_HOME=.cache/torch .venv/bin/python -m benchmarks.head_epochs --per-class 29
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

import transferlearn as tl

from .models import PRETRAINED, mobilenet
from .tensors import decoded

__all__ = ["features", "head_accuracy", "few_per_class", "main"]


Tensor = torch.Tensor


def features(name: str, size: int, per_class: int | None, seed: int = 0) -> tuple[Tensor, Tensor, Tensor, Tensor, int]:
    """Train/test features and labels of a stratified split, and the number of classes."""
    data = decoded(name, size=size)
    x = data.images.float() / 255
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    x = (x - torch.tensor(tl.IMAGENET_MEAN)[:, None, None]) / torch.tensor(tl.IMAGENET_STD)[:, None, None]
    y = data.labels
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in y.unique().tolist():
        idx = rng.permutation(np.flatnonzero(y.numpy() == c)).tolist()
        k = per_class or len(idx) // 2
        train += idx[:k]
        test += idx[k:]
    model = mobilenet(len(data.classes), weights=PRETRAINED)
    f = tl.extract_features(model, DataLoader(TensorDataset(x, y), batch_size=128)).tensors[0]
    return f[train], y[train], f[test], y[test], len(data.classes)


def head_accuracy(ftr: Tensor, ytr: Tensor, fte: Tensor, yte: Tensor, classes: int, lr: float, epochs: int,
                  seed: int) -> float:
    """Test accuracy of a fresh Linear head trained with AdamW (batch 32, shuffled) on the features."""
    torch.manual_seed(seed)
    head = torch.nn.Linear(ftr.shape[1], classes)
    opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=0.0)
    loader = DataLoader(TensorDataset(ftr, ytr), batch_size=32, shuffle=True)
    for _ in range(epochs):
        for a, b in loader:
            loss = torch.nn.functional.cross_entropy(head(a), b)
            opt.zero_grad()
            loss.backward()
            opt.step()
    with torch.no_grad():
        return (head(fte).argmax(1) == yte).float().mean().item()


def few_per_class(per_class: int) -> None:
    """The feature-extraction row: every epoch count against the probe, on 5 splits."""
    from sklearn.linear_model import LogisticRegression

    counts = (25, 50, 100, 200)
    for name, size in [("digits", 64), ("chess", 128), ("elpv", 128)]:
        gaps: dict[int, list[float]] = {e: [] for e in counts}
        probes = []
        for split in range(5):
            ftr, ytr, fte, yte, classes = features(name, size, per_class, seed=split)
            probe = LogisticRegression(C=1.0, max_iter=3000).fit(ftr.numpy(), ytr.numpy())
            probes.append(probe.score(fte.numpy(), yte.numpy()))
            for epochs in counts:
                gaps[epochs].append(probes[-1] - head_accuracy(ftr, ytr, fte, yte, classes, 1e-3, epochs, split))
        batches = -(-len(ytr) // 32)  # per epoch at batch 32
        print(f"{name} {size}px, {len(ytr)} training images ({batches} batches), "
              f"probe {np.mean(probes):.4f}", flush=True)
        for epochs in counts:
            print(f"  {epochs:4d} epochs ({epochs * batches:5d} steps): probe - head "
                  f"{np.mean(gaps[epochs]):+.4f} +- {np.std(gaps[epochs]):.4f}", flush=True)


def main(argv: list[str] | None = None) -> None:
    """The default epoch and learning-rate grid, or with ``--per-class N`` the few-images row."""
    from sklearn.linear_model import LogisticRegression

    p = argparse.ArgumentParser(prog="python -m benchmarks.head_epochs", description=__doc__.splitlines()[0])
    p.add_argument("--per-class", type=int, default=None,
                   help="training images per class: measure the decision table's feature-extraction row")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    if args.per_class is not None:
        few_per_class(args.per_class)
        return
    for name, size, per_class in [("digits", 64, 60), ("chess", 128, None)]:
        ftr, ytr, fte, yte, classes = features(name, size, per_class)
        probe = LogisticRegression(C=1.0, max_iter=3000).fit(ftr.numpy(), ytr.numpy())
        probe_acc = probe.score(fte.numpy(), yte.numpy())
        print(f"{name}: {len(ytr)} training images, probe {probe_acc:.4f}", flush=True)
        for lr in (1e-3, 3e-3, 1e-2):
            for epochs in (10, 20, 40, 80, 160):
                accs = [head_accuracy(ftr, ytr, fte, yte, classes, lr, epochs, seed) for seed in range(3)]
                print(f"  lr {lr:g} epochs {epochs:4d} acc {np.mean(accs):.4f} +- {np.std(accs):.4f} "
                      f"(probe - acc {probe_acc - np.mean(accs):+.4f})", flush=True)


if __name__ == "__main__":
    main()
