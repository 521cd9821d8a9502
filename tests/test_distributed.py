"""The Trainer under torchrun: 2 CPU processes (gloo), DDP, sharded data, reduced metrics."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader

from transferlearn.train.checkpoint import BEST, LAST, load_checkpoint
from transferlearn.train.evaluation import evaluate

from .test_trainer import model, separable

ROOT = Path(__file__).resolve().parents[1]


def torchrun(out: Path, mode: str) -> tuple[str, list[dict]]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           str(ROOT / "tests" / "ddp_worker.py"), str(out), mode],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout, [torch.load(out / f"rank{r}.pt", weights_only=True) for r in (0, 1)]


@pytest.fixture(scope="module", params=["cache", "nocache"])
def ddp_run(request, tmp_path_factory):
    """cache: head-only DDP on cached features, BatchNorm pinned; nocache: whole-model DDP
    in both phases, BatchNorm statistics adapting in the fine-tune phase."""
    out = tmp_path_factory.mktemp("ddp")
    stdout, ranks = torchrun(out, request.param)
    return out, stdout, ranks


@pytest.mark.parametrize("mode", ["subset-cache", "subset-nocache"])
def test_a_subset_sampler_is_sharded_not_replaced_under_torchrun(tmp_path, mode):
    _, (r0, r1) = torchrun(tmp_path, mode)
    assert len(r0["batches"]) == len(r1["batches"]) == 3 * 2        # 3 epochs x batches of 4 + 2 per rank
    for epoch in range(3):
        mine = [sum(r["batches"][epoch * 2:(epoch + 1) * 2], []) for r in (r0, r1)]
        assert len(mine[0]) == len(mine[1]) == 6
        assert sorted(mine[0] + mine[1]) == list(range(0, 24, 2))   # the subset, each sample once, no other
    assert all(torch.equal(r0["state"][k], r1["state"][k]) for k in r0["state"])


def test_ranks_end_with_identical_weights_and_history(ddp_run):
    _, _, (r0, r1) = ddp_run
    assert r0["world"] == r1["world"] == 2
    assert all(torch.equal(r0["state"][k], r1["state"][k]) for k in r0["state"])
    def strip(history):
        return [{k: v for k, v in r.items() if k != "seconds"} for r in history]
    assert strip(r0["history"]) == strip(r1["history"])                 # metrics reduced over ranks
    assert [r["phase"] for r in r0["history"]] == ["warmup"] * 2 + ["finetune"] * 2


def test_validation_counts_every_sample_once_across_ranks(ddp_run):
    _, _, (r0, _) = ddp_run
    m = model(seed=1)
    m.load_state_dict(r0["state"])
    single = evaluate(m, DataLoader(separable(45, seed=7), batch_size=8))
    assert r0["history"][-1]["val_accuracy"] == pytest.approx(single["accuracy"], abs=1e-12)
    assert r0["history"][-1]["val_loss"] == pytest.approx(single["loss"], rel=1e-5)


def test_only_rank_zero_prints_and_writes(ddp_run):
    out, stdout, (r0, _) = ddp_run
    epoch_lines = [line for line in stdout.splitlines() if "epoch " in line and "/4" in line]
    assert len(epoch_lines) == 4
    assert load_checkpoint(out / "ckpt" / LAST)["epoch"] == 4
    best = load_checkpoint(out / "ckpt" / BEST)                     # fit ends with the best epoch's weights
    assert best["epoch"] == [r["epoch"] for r in r0["history"] if r["best"]][0]
    assert all(torch.equal(best["model"][k], r0["state"][k]) for k in r0["state"])
    assert sorted(p.name for p in (out / "ckpt").iterdir()) == [BEST, LAST]


def test_warmup_on_cached_features_moves_only_the_head(ddp_run):
    _, _, (r0, _) = ddp_run
    assert set(r0["history"][0]["lr"]) == {"fc"}
