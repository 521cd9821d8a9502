"""The chapter's loops written plainly in PyTorch: the side the library is compared against.

Written from the recipe of ``transfer-learning-chapter.txt`` (feature extraction: freeze
every parameter, new head, ``model.train()``, Adam 1e-3 on the head, 5 epochs; fine-tuning:
Adam with a 1e-4 backbone group and a 1e-3 head group, 2 epochs with the backbone frozen,
then 3 with everything trainable), for MobileNetV2 instead of the chapter's ResNet-18 (the
one ImageNet checkpoint these machines have). Nothing here uses transferlearn.
``amp`` (bf16 autocast) and ``channels_last`` exist only for the GPU check, where both
sides get the same settings.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
import torchvision
from torch import nn
from torch.utils.data import DataLoader

__all__ = ["Settings", "chapter_model", "feature_extraction", "fine_tuning", "raw_predict",
           "floor_pass", "accuracy"]


class Settings:
    """Where and how the loops run: device, bf16 autocast, channels_last."""

    def __init__(self, device: torch.device, amp: bool = False, channels_last: bool = False) -> None:
        self.device, self.amp, self.channels_last = device, amp, channels_last

    def autocast(self) -> contextlib.AbstractContextManager:
        if not self.amp:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16)

    def inputs(self, x: torch.Tensor) -> torch.Tensor:
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        return x.to(self.device, memory_format=fmt, non_blocking=True)

    def model(self, model: nn.Module) -> nn.Module:
        model = model.to(self.device)
        return model.to(memory_format=torch.channels_last) if self.channels_last else model


def chapter_model(num_classes: int, weights: str | None, settings: Settings, seed: int = 0) -> nn.Module:
    """Pretrained MobileNetV2 with a new ``num_classes`` head, as the chapter builds it
    (the global RNG seeded with ``seed`` first: the new head's init and the loop's Dropout
    masks follow from it)."""
    torch.manual_seed(seed)
    model = torchvision.models.get_model("mobilenet_v2", weights=weights)
    model.classifier[1] = nn.Linear(model.last_channel, num_classes)
    return settings.model(model)


def _train_epoch(model: nn.Module, loader: DataLoader, optimizer: torch.optim.Optimizer,
                 settings: Settings) -> float:
    criterion = nn.CrossEntropyLoss()
    model.train()
    correct, total = 0, 0
    for images, labels in loader:
        images, labels = settings.inputs(images), labels.to(settings.device)
        with settings.autocast():
            outputs = model(images)
            loss = criterion(outputs, labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        correct += int((outputs.argmax(1) == labels).sum())
        total += labels.size(0)
    return correct / max(total, 1)


def feature_extraction(model: nn.Module, loader: DataLoader, settings: Settings, epochs: int = 5) -> nn.Module:
    """Freeze everything but the new head; Adam 1e-3 on the head; ``epochs`` epochs in train mode."""
    for name, param in model.named_parameters():
        param.requires_grad = name.startswith("classifier.1.")
    optimizer = torch.optim.Adam(model.classifier[1].parameters(), lr=1e-3)
    for _ in range(epochs):
        _train_epoch(model, loader, optimizer, settings)
    return model


def fine_tuning(model: nn.Module, loader: DataLoader, settings: Settings, warmup: int = 2,
                finetune: int = 3) -> nn.Module:
    """Adam with backbone 1e-4 and head 1e-3; ``warmup`` epochs frozen, ``finetune`` unfrozen."""
    backbone = [p for name, p in model.named_parameters() if not name.startswith("classifier.")]
    optimizer = torch.optim.Adam([{"params": backbone, "lr": 1e-4},
                                  {"params": model.classifier.parameters(), "lr": 1e-3}])
    for param in backbone:
        param.requires_grad = False
    for _ in range(warmup):
        _train_epoch(model, loader, optimizer, settings)
    for param in backbone:
        param.requires_grad = True
    for _ in range(finetune):
        _train_epoch(model, loader, optimizer, settings)
    return model


def raw_predict(model: nn.Module, loader: Any, settings: Settings) -> torch.Tensor:
    """Class probabilities: eval mode, ``inference_mode``, one forward per batch."""
    model.eval()
    out = []
    with torch.inference_mode(), settings.autocast():
        for batch in loader:
            out.append(model(settings.inputs(batch[0])).float().softmax(1).cpu())
    return torch.cat(out)


def floor_pass(model: nn.Module, loader: Any, settings: Settings) -> int:
    """One inference pass of the backbone (``features`` + pooling) over ``loader``; images seen."""
    model.eval()
    seen = 0
    with torch.inference_mode(), settings.autocast():
        for batch in loader:
            x = model.features(settings.inputs(batch[0]))
            nn.functional.adaptive_avg_pool2d(x, 1)
            seen += len(batch[0])
    return seen


def accuracy(model: nn.Module, loader: Any, settings: Settings) -> float:
    """Top-1 accuracy in eval mode (the chapter never evaluates; every side is scored by this)."""
    model.eval()
    correct, total = 0, 0
    with torch.inference_mode(), settings.autocast():
        for images, labels in loader:
            correct += int((model(settings.inputs(images)).argmax(1).cpu() == labels).sum())
            total += len(labels)
    return correct / max(total, 1)
