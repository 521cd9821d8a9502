"""transferlearn fit's settings: the recipe flags, run.json, --config, --resume after a real kill."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from transferlearn import recommend_strategy
from transferlearn.cli import main
from transferlearn.cli._runfile import SETTINGS
from transferlearn.cli.commands import _strategy
from transferlearn.ship.claim import CLAIM_NAME

ROOT = Path(__file__).parents[1]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """Two classes of 7 and 5 small pictures, each class its own colour cast."""
    root = tmp_path_factory.mktemp("data")
    for c, (name, n) in enumerate({"red": 7, "blue": 5}.items()):
        (root / name).mkdir()
        for i in range(n):
            pixels = np.random.default_rng(10 * c + i).integers(0, 200, (40, 48, 3), dtype=np.uint8)
            pixels[..., 2 * c] += 55
            Image.fromarray(pixels).save(root / name / f"{i}.png")
    return root


def tiny(data: Path, out: Path, *extra: str) -> list[str]:
    return ["fit", str(data), "--out", str(out), "--weights", "none", "--arch", "mobilenet_v3_small", "--epochs", "4",
            "--strategy", "fine_tune_all", "--image-size", "32", "--batch-size", "4", "--workers", "0", *extra]


def weights(run: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in run.glob("model-*.safetensors")}


def settings(run: Path) -> dict:
    return json.loads((run / "run.json").read_text())["settings"]


# --- run.json and the flags -------------------------------------------------------------------------------

def test_run_json_records_every_setting_and_the_trainer_gets_them(data, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(tiny(data, run, "--lr", "0.02", "--backbone-lr", "0.003", "--augment", "trivial", "--balance",
                     "sampler", "--patience", "3", "--amp", "bf16", "--device", "cpu", "--seed", "4")) == 0, \
        capsys.readouterr().err
    recorded = settings(run)
    assert set(recorded) == set(SETTINGS)
    assert recorded == {"data_dir": str(data.resolve()), "arch": "mobilenet_v3_small", "weights": "none",
                        "strategy": "fine_tune_all", "epochs": 4, "image_size": 32, "batch_size": 4,
                        "val_fraction": 0.2, "seed": 4, "workers": 0, "lr": 0.02, "backbone_lr": 0.003,
                        "augment": "trivial", "balance": "sampler", "patience": 3, "amp": "bf16", "device": "cpu",
                        "different_domain": False}
    history = json.loads((run / "history.json").read_text())
    lrs = history[-1]["lr"]
    assert 0.02 in lrs.values() and 0.003 in lrs.values()           # the head's and the backbone's rates
    assert not (run / "checkpoints").exists() and not (run / CLAIM_NAME).exists()   # saved: nothing to resume


def test_defaults_are_recorded_as_the_flags_defaults(data, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["fit", str(data), "--out", str(run), "--weights", "none", "--arch", "mobilenet_v3_small",
                 "--epochs", "1", "--image-size", "32", "--workers", "0"]) == 0, capsys.readouterr().err
    recorded = settings(run)
    assert {k: recorded[k] for k in ("strategy", "batch_size", "val_fraction", "seed", "augment", "balance", "amp",
                                     "lr", "backbone_lr", "patience", "device", "different_domain")} == {
        "strategy": "auto", "batch_size": 32, "val_fraction": 0.2, "seed": 0, "augment": "none", "balance": "none",
        "amp": "off", "lr": None, "backbone_lr": None, "patience": None, "device": None, "different_domain": False}


def test_config_reruns_a_run_with_the_same_weights_and_flags_win(data, tmp_path, capsys):
    first, again, other = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    assert main(tiny(data, first, "--augment", "light", "--balance", "sampler")) == 0, capsys.readouterr().err
    assert main(["fit", "--config", str(first / "run.json"), "--out", str(again)]) == 0, capsys.readouterr().err
    assert weights(again) == weights(first) and len(weights(first)) == 1
    assert settings(again) == settings(first)
    assert main(["fit", "--config", str(first / "run.json"), "--out", str(other), "--seed", "1"]) == 0
    assert settings(other) == {**settings(first), "seed": 1} and weights(other) != weights(first)


def test_different_domain_asks_the_table_for_a_different_domain(data, tmp_path, capsys):
    assert _strategy("auto", 2000, None, similar_domain=False) == recommend_strategy(2000, similar_domain=False)
    assert _strategy("auto", 2000, None).kind != _strategy("auto", 2000, None, similar_domain=False).kind
    run = tmp_path / "run"
    assert main(["fit", str(data), "--out", str(run), "--weights", "none", "--arch", "mobilenet_v3_small",
                 "--epochs", "1", "--image-size", "32", "--workers", "0", "--different-domain"]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["strategy"]["reason"] == recommend_strategy(4, similar_domain=False).reason
    assert settings(run)["different_domain"] is True


def _error_cases(data: Path, tmp: Path) -> list[tuple[list[str], str]]:
    done = tmp / "done"
    done.mkdir()
    (done / "classifier.json").write_text("{}")
    (done / "run.json").write_text(json.dumps({"format": 1, "settings": {"data_dir": str(data)}}))
    (tmp / "bad.json").write_text(json.dumps({"format": 1, "settings": {"seed": -3}}))
    (tmp / "odd.json").write_text(json.dumps({"format": 1, "settings": {"sed": 3}}))
    (tmp / "other.json").write_text(json.dumps({"something": "else"}))
    out = str(tmp / "new")
    cases = [
        (tiny(data, tmp / "n1", "--lr", "0"), r"argument --lr: must be a finite number > 0, got 0"),
        (tiny(data, tmp / "n2", "--lr", "nan"), r"argument --lr: must be a finite number > 0, got nan"),
        (tiny(data, tmp / "n3", "--backbone-lr=-1e-4"), r"argument --backbone-lr: must be a finite number > 0"),
        (tiny(data, tmp / "n4", "--augment", "heavy"), r"argument --augment: invalid choice: 'heavy'"),
        (tiny(data, tmp / "n5", "--balance", "loss"), r"argument --balance: invalid choice: 'loss'"),
        (tiny(data, tmp / "n6", "--patience", "0"), r"argument --patience: must be an integer >= 1, got 0"),
        (tiny(data, tmp / "n7", "--amp", "fp32"), r"argument --amp: invalid choice: 'fp32'"),
        (tiny(data, tmp / "n8", "--device", "tpu"), r"argument --device: must be a device name"),
        (tiny(data, tmp / "n9", "--different-domain"), r"--different-domain applies to --strategy auto"),
        (tiny(data, tmp / "n10", "--amp", "fp16", "--device", "cpu"), r"amp='fp16' needs CUDA"),
        (tiny(data, tmp / "n11", "--strategy", "feature_extraction", "--backbone-lr", "1e-4"),
         r"--backbone-lr has no effect: strategy feature_extraction"),
        (["fit", "--out", out], r"DATA_DIR is required \(or --config RUN_DIR/run.json, or --resume\)"),
        (["fit", "--out", out, "--config", str(tmp / "missing.json")], r"--config: '.*missing.json' does not exist"),
        (["fit", "--out", out, "--config", str(tmp / "bad.json")], r"field 'settings.seed' must be an int >= 0, got -3"),
        (["fit", "--out", out, "--config", str(tmp / "odd.json")], r"has unknown settings \['sed'\]"),
        (["fit", "--out", out, "--config", str(tmp / "other.json")], r"is not a transferlearn run.json"),
        (["fit", "--out", str(tmp / "nowhere"), "--resume"], r"--resume: '.*nowhere/run.json' does not exist"),
        (["fit", "--out", str(done), "--resume"], r"has no checkpoint to continue .*its fit finished"),
        (["fit", "--out", str(done), "--resume", "--force"], r"--resume .* --force does not go with it"),
        (["fit", "--out", str(done), "--resume", "--seed", "3"], r"--seed 3 differs from the run being resumed"),
    ]
    if not torch.cuda.is_available():
        cases.append((tiny(data, tmp / "n12", "--device", "cuda"), r"argument --device: cuda: CUDA is not available"))
    return cases


def test_every_bad_setting_is_one_line_and_status_2(data, tmp_path, capsys):
    import re
    for argv, pattern in _error_cases(data, tmp_path):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and err.startswith("transferlearn: error: "), (argv, err)
        assert re.search(pattern, err), (argv, err)
    assert not any((tmp_path / f"n{i}").exists() for i in range(1, 13))    # refused before anything was written


# --- --resume after a real interruption --------------------------------------------------------------------

_SLOW = """
import os, sys, time
import transferlearn.train.checkpoint as ckpt
real, calls = ckpt.write_epoch, []
def write_epoch(*args, **kwargs):
    real(*args, **kwargs)
    calls.append(1)
    if len(calls) == {stop}:                   # epoch {stop} is on disk: signal the test, then wait to be stopped
        open({marker!r}, "w").close()
        time.sleep(120)
ckpt.write_epoch = write_epoch
from transferlearn.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _fit(argv: list[str], code: str | None = None) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-c", code, *argv] if code else [sys.executable, "-m", "transferlearn", *argv]
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.fixture(scope="module")
def uninterrupted(data, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("whole") / "run"
    done = _fit(tiny(data, run, "--augment", "light", "--balance", "sampler"))
    _, err = done.communicate(timeout=300)
    assert done.returncode == 0, err
    return run


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT])
def test_resume_after_a_kill_ends_with_bitwise_the_uninterrupted_weights(data, tmp_path, uninterrupted, sig):
    run, marker = tmp_path / "run", tmp_path / "epoch-3-written"
    argv = tiny(data, run, "--augment", "light", "--balance", "sampler")
    proc = _fit(argv, textwrap.dedent(_SLOW.format(stop=3, marker=str(marker))))
    deadline = time.monotonic() + 300
    while not marker.exists():
        assert proc.poll() is None, proc.communicate()[1]
        assert time.monotonic() < deadline
        time.sleep(0.05)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == (-9 if sig == signal.SIGKILL else 130), err
    assert (run / "checkpoints" / "last.pt").is_file() and (run / "run.json").is_file()
    assert (run / CLAIM_NAME).is_file() and not (run / "classifier.json").exists()   # marked as interrupted
    refused = _fit(argv)                                             # without --resume nothing is overwritten
    assert refused.wait(timeout=300) == 2
    assert "(killed in training, pid " in (err := refused.stderr.read()) and \
        "continue it with --resume, or start again with --force" in err, err
    resumed = _fit(["fit", "--out", str(run), "--resume"])
    _, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    assert weights(run) == weights(uninterrupted) and len(weights(run)) == 1
    history = [json.loads((r / "history.json").read_text()) for r in (run, uninterrupted)]
    assert [(r["phase"], r["train_loss"], r["val_loss"]) for r in history[0]] == \
        [(r["phase"], r["train_loss"], r["val_loss"]) for r in history[1]] and len(history[0]) == 4
    assert not (run / CLAIM_NAME).exists() and not (run / "checkpoints").exists()
