"""The ``transferlearn lr-find`` command: the suggestion printed, the curve written, errors in one line."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from transferlearn.cli import main


@pytest.fixture
def folder(tmp_path):
    rng = np.random.default_rng(0)
    for c, name in enumerate(("a", "b")):
        (tmp_path / "data" / name).mkdir(parents=True)
        for i in range(6):
            pixels = rng.integers(0, 80, (40, 40, 3), dtype=np.uint8)
            pixels[..., c] += 150  # the class is the brighter channel
            Image.fromarray(pixels).save(tmp_path / "data" / name / f"{i}.png")
    return tmp_path


def test_lr_find_prints_the_suggestion_and_writes_the_curve(folder, capsys):
    pytest.importorskip("matplotlib")
    out = folder / "lr.png"
    assert main(["lr-find", str(folder / "data"), "--arch", "resnet18", "--weights", "none", "--image-size", "32",
                 "--steps", "12", "--batch-size", "4", "--workers", "0", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("head: ") and "on cached features" in printed and "suggested head_lr: " in printed
    assert out.read_bytes()[:4] == b"\x89PNG"


def test_lr_find_errors_are_one_line(folder, capsys):
    assert main(["lr-find", str(folder / "missing"), "--weights", "none"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("transferlearn: error: ") and err.count("\n") == 1
    assert main(["lr-find", str(folder / "data"), "--phase", "all"]) == 2
    assert "invalid choice: 'all'" in capsys.readouterr().err
