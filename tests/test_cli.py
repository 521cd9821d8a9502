"""The command line: install-weights and recommend."""

from __future__ import annotations

import subprocess
import sys

import torch

from transferlearn.cli import main


def test_recommend_prints_the_strategy(capsys):
    assert main(["recommend", "300"]) == 0
    out = capsys.readouterr().out
    assert "kind             feature_extraction" in out and "head_lr          0.001" in out


def test_recommend_bad_input_exits_2(capsys):
    assert main(["recommend", "0"]) == 2
    assert "transferlearn: error: images_per_class must be an int >= 1, got 0" in capsys.readouterr().err


def test_install_weights_hash_mismatch_exits_2(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))
    bad = tmp_path / "x.pth"
    bad.write_bytes(b"nope")
    assert main(["install-weights", str(bad), "ResNet18_Weights.IMAGENET1K_V1"]) == 2
    assert "expects a hash starting with 'f37072fd'" in capsys.readouterr().err
    assert main(["install-weights", str(bad), "ResNet18_Weights.IMAGENET1K_V1", "--no-check-hash"]) == 0
    assert (tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth").read_bytes() == b"nope"


def test_python_dash_m():
    done = subprocess.run([sys.executable, "-m", "transferlearn", "recommend", "5000", "--different-domain"],
                          capture_output=True, text=True, check=True)
    assert "fine_tune_all" in done.stdout and "early" in done.stdout
