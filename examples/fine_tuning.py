"""Strategy 2, fine-tuning: warm the new head up, then train everything with differential rates.

The recipe: 2 warm-up epochs with the backbone frozen (head at 1e-3), then 3 epochs with
every layer trainable, the backbone at 1e-4 and the head at 1e-3, BatchNorm statistics
pinned throughout. Offline, on scikit-learn's real handwritten digits written to an
ImageFolder at run time, with torchvision's ImageNet-pretrained MobileNetV2.

    python examples/fine_tuning.py [--size 64] [--warmup 2] [--finetune 3]
"""

from __future__ import annotations

import argparse
import tempfile

from torch.utils.data import DataLoader
from torchvision.datasets import ImageFolder

import transferlearn as tl

from data import write_digits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=64, help="input side in pixels")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--finetune", type=int, default=3)
    args = parser.parse_args()

    model = tl.load_model("mobilenet_v2", weights="IMAGENET1K_V1", num_classes=10)
    tf = tl.imagenet_transform(weights="MobileNet_V2_Weights.IMAGENET1K_V1", size=args.size, resize=args.size)
    with tempfile.TemporaryDirectory() as tmp:
        train_dir, test_dir = write_digits(tmp)
        train = DataLoader(ImageFolder(train_dir, transform=tf), batch_size=32, shuffle=True)
        test = DataLoader(ImageFolder(test_dir, transform=tf), batch_size=256)
        trainer = tl.Trainer(model, seed=0)
        trainer.fit(train, test, warmup_epochs=args.warmup, finetune_epochs=args.finetune,
                    head_lr=1e-3, backbone_lr=1e-4, freeze_bn=True)
        print(f"test accuracy: {trainer.evaluate(test)['accuracy']:.3f}")


if __name__ == "__main__":
    main()
