"""Shared fixtures: a project-local torch cache, tiny models, the real pretrained checkpoint."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from hypothesis import settings
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("TORCH_HOME", str(ROOT / ".cache" / "torch"))

settings.register_profile("default", deadline=None, max_examples=40)
settings.load_profile("default")


class TinyNet(nn.Module):
    """Conv/BN stem, two stages, pooled features, a Linear head called ``fc``."""

    def __init__(self, num_classes: int = 3, width: int = 4) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU())
        self.stage1 = nn.Sequential(nn.Conv2d(width, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU())
        self.stage2 = nn.Sequential(nn.Conv2d(width, 2 * width, 3, padding=1), nn.BatchNorm2d(2 * width),
                                    nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(2 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stage2(self.stage1(self.stem(x)))
        return self.fc(torch.flatten(self.pool(x), 1))


@pytest.fixture
def tiny() -> TinyNet:
    torch.manual_seed(0)
    return TinyNet()


def pretrained_available() -> bool:
    from torchvision.models import MobileNet_V2_Weights

    from transferlearn.model.load import checkpoint_path
    return checkpoint_path(MobileNet_V2_Weights.IMAGENET1K_V1).is_file()


@pytest.fixture(scope="session")
def mobilenet_weights():
    """The real MobileNetV2 IMAGENET1K_V1 weights; required (not skipped) under scripts/test.sh."""
    from torchvision.models import MobileNet_V2_Weights
    if not pretrained_available():
        if os.environ.get("TRANSFERLEARN_REQUIRE_WEIGHTS") == "1":
            pytest.fail("MobileNetV2 IMAGENET1K_V1 is not in $TORCH_HOME; run scripts/setup.sh")
        pytest.skip("MobileNetV2 IMAGENET1K_V1 not cached; run scripts/setup.sh")
    return MobileNet_V2_Weights.IMAGENET1K_V1
