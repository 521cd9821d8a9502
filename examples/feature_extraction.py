"""Strategy 1, feature extraction: a frozen pretrained backbone, a new head, only the head trains.

Offline and on real images: scikit-learn's handwritten digits are written to an ImageFolder
at run time and classified with torchvision's ImageNet-pretrained MobileNetV2
(IMAGENET1K_V1, from the local torch cache; see scripts/setup.sh).

    python examples/feature_extraction.py [--epochs 5] [--size 64]
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch
from torch import nn
from torch.utils.data import DataLoader
from torchvision.datasets import ImageFolder

import transferlearn as tl

from data import write_digits


def accuracy(model: nn.Module, loader: DataLoader) -> float:
    model.eval()                                   # pitfall 4: judge the model in eval mode
    correct = total = 0
    with torch.inference_mode():
        for x, y in loader:
            correct += (model(x).argmax(1) == y).sum().item()
            total += len(y)
    return correct / total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--size", type=int, default=64, help="input side in pixels")
    parser.add_argument("--lr", type=float, default=1e-3)
    args = parser.parse_args()
    torch.manual_seed(0)

    weights = "MobileNet_V2_Weights.IMAGENET1K_V1"
    model = tl.load_model("mobilenet_v2", weights="IMAGENET1K_V1")
    tl.replace_head(model, 10)                     # new 10-class head, trainable
    tl.freeze_backbone(model)                      # everything else: requires_grad=False
    tl.freeze_bn_running_stats(model)              # and BatchNorm statistics stay ImageNet's
    # the weights' own statistics; grayscale digits become 3 equal channels
    tf = tl.imagenet_transform(weights=weights, size=args.size, resize=args.size)

    with tempfile.TemporaryDirectory() as tmp:
        train_dir, test_dir = write_digits(tmp)
        train = DataLoader(ImageFolder(train_dir, transform=tf), batch_size=64, shuffle=True)
        test = DataLoader(ImageFolder(test_dir, transform=tf), batch_size=256)
        optimizer = torch.optim.Adam(tl.param_groups(model, head_lr=args.lr, trainable_only=True))
        loss_fn = nn.CrossEntropyLoss()
        for epoch in range(1, args.epochs + 1):
            start = time.perf_counter()
            model.train()                          # BatchNorm stays pinned all the same
            for x, y in train:
                optimizer.zero_grad()
                loss_fn(model(x), y).backward()
                optimizer.step()
            print(f"epoch {epoch}: train accuracy {accuracy(model, train):.3f} "
                  f"({time.perf_counter() - start:.1f}s)")
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        print(f"test accuracy: {accuracy(model, test):.3f} "
              f"({trainable:,} trainable parameters of {sum(p.numel() for p in model.parameters()):,})")


if __name__ == "__main__":
    main()
