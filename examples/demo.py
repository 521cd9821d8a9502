"""The transferlearn demo: random init vs feature extraction vs fine-tuning, on real images.

Offline, on 2 CPU cores, in a couple of minutes. scikit-learn's handwritten digits (real
scans, 8x8 grayscale) are written to an ImageFolder at run time and upscaled to the input
size; the pretrained network is torchvision's MobileNetV2 IMAGENET1K_V1 from the local
torch cache (scripts/setup.sh puts it there). Three runs, same data, same epoch budget:

- random init:         MobileNetV2 with weights=None, every layer trained from scratch;
- feature extraction:  pretrained backbone frozen (BatchNorm pinned), only the head trains;
                       the backbone runs once and the head trains on cached features;
- fine-tuning:         2 warm-up epochs on the head, then 3 epochs of everything with the
                       backbone at a 10x lower learning rate.

Prints a table (test accuracy, seconds), saves a plot of the validation curves, and writes
the fine-tuned model's report on the test split as one self-contained page (report.html:
curves, per-class scores, confusion matrix, top losses with heat maps).

    python examples/demo.py [--per-class 50] [--size 64] [--epochs 5] [--out runs/demo]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from torchvision.datasets import ImageFolder

import transferlearn as tl

from data import write_digits

WEIGHTS = "MobileNet_V2_Weights.IMAGENET1K_V1"


def run(name: str, model: torch.nn.Module, loaders: dict, progress: bool, **fit) -> dict:
    print(f"\n== {name}")
    trainer = tl.Trainer(model, seed=0, progress=progress)
    start = time.perf_counter()
    history = trainer.fit(loaders["train"], loaders["val"], **fit)
    seconds = time.perf_counter() - start
    return {"name": name, "history": history, "seconds": seconds, "model": model,
            "test": trainer.evaluate(loaders["test"])["accuracy"]}


def write_report(out: Path, result: dict, test_set: torch.utils.data.Dataset, classes: list[str],
                 settings: dict) -> Path:
    """``out/report.html``: the fine-tuned model on the test split, as the CLI's ``fit`` writes it."""
    report = tl.classification_report(result["model"], test_set, classes)
    return report.to_html(out / "report.html", history=result["history"], model=result["model"],
                          settings={**settings, "test images": report.count, "seconds": round(result["seconds"], 1)},
                          title=f"transferlearn demo: {result['name']} on the digits' test split")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-class", type=int, default=50, help="training images per class")
    parser.add_argument("--size", type=int, default=64, help="input side in pixels")
    parser.add_argument("--epochs", type=int, default=5, help="epoch budget of every run")
    parser.add_argument("--out", default="runs/demo", help="folder for the plot, histories and report.html")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tf = tl.imagenet_transform(weights=WEIGHTS, size=args.size, resize=args.size)
    warmup = min(2, args.epochs - 1)

    with tempfile.TemporaryDirectory() as tmp:
        train_dir, test_dir = write_digits(tmp, train_per_class=args.per_class)
        train_set, test_set = ImageFolder(train_dir, transform=tf), ImageFolder(test_dir, transform=tf)
        half = len(test_set) // 2
        idx = torch.randperm(len(test_set), generator=torch.Generator().manual_seed(0)).tolist()
        loaders = {"train": DataLoader(train_set, batch_size=32, shuffle=True),
                   "val": DataLoader(torch.utils.data.Subset(test_set, idx[:half]), batch_size=128),
                   "test": DataLoader(torch.utils.data.Subset(test_set, idx[half:]), batch_size=128)}
        print(f"digits: {len(train_set)} training images ({args.per_class} per class), "
              f"{half} validation, {len(test_set) - half} test; {args.size}x{args.size} px")
        progress = not args.no_progress
        torch.manual_seed(0)
        results = [
            run("random init", tl.load_model("mobilenet_v2", weights=None, num_classes=10), loaders,
                progress, warmup_epochs=0, finetune_epochs=args.epochs, head_lr=1e-3, backbone_lr=1e-3,
                freeze_bn=False),
            run("feature extraction", tl.load_model("mobilenet_v2", weights="IMAGENET1K_V1", num_classes=10),
                loaders, progress, warmup_epochs=args.epochs, finetune_epochs=0, head_lr=1e-3),
            run("fine-tuning", tl.load_model("mobilenet_v2", weights="IMAGENET1K_V1", num_classes=10),
                loaders, progress, warmup_epochs=warmup, finetune_epochs=args.epochs - warmup,
                head_lr=1e-3, backbone_lr=1e-4),
        ]
        recipe = f"{warmup} warm-up + {args.epochs - warmup} fine-tune epochs, head lr 1e-3, backbone lr 1e-4"
        page = write_report(out, results[-1], loaders["test"].dataset, train_set.classes,
                            {"data": "scikit-learn digits", "training images": len(train_set), "validation images":
                             half, "image size": args.size, "architecture": "mobilenet_v2", "weights": WEIGHTS,
                             "recipe": recipe})

    print("\n| strategy | test accuracy | seconds |\n| --- | ---: | ---: |")
    for r in results:
        print(f"| {r['name']} | {r['test']:.3f} | {r['seconds']:.1f} |")
    plot = tl.plot_history({r["name"]: r["history"] for r in results}, out / "demo.png")
    for r in results:
        r["history"].to_json(out / f"{r['name'].replace(' ', '_')}.json")
    print(f"\nplot: {plot}   histories: {out}/*.json   report: {page}")


if __name__ == "__main__":
    main()
