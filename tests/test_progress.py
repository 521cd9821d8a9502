"""Progress: the caching pass and every epoch tell how far the run is and how long it has left,
as lines when not on a terminal, as bars on one, and not at all when off."""

from __future__ import annotations

import re

import pytest
from torch.utils.data import DataLoader

from transferlearn import Trainer, extract_features
from transferlearn.train.callbacks import EpochLine
from transferlearn.train.recipe import Phase, Recipe
from transferlearn.train.runtime import Meter, Progress, duration

from .test_trainer import loaders, model, separable

LEFT = r"~\d+(\.\d)? s left"


def test_a_fit_not_on_a_terminal_prints_the_caching_pass_and_each_epoch_with_the_time_left(capsys):
    train, val = loaders()  # 96 + 48 images, deterministic: the warm-up is cached
    Trainer(model(), progress=True).fit(train, val, warmup_epochs=2, finetune_epochs=2)
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert captured.err == ""  # capsys is no terminal: lines, not bars
    assert re.fullmatch(r"caching features: 96 images, \d+\.\d s", lines[0])
    assert re.fullmatch(r"caching validation features: 48 images, \d+\.\d s", lines[1])
    epochs = lines[2:]
    assert [line.split()[:3] for line in epochs] == [["epoch", f"{e}/4", p] for e, p in
                                                     ((1, "warmup"), (2, "warmup"), (3, "finetune"), (4, "finetune"))]
    assert all(re.search(rf"  \d+\.\d s  {LEFT}$", line) for line in epochs[:3])
    assert re.search(r"  \d+\.\d s$", epochs[3])  # the last epoch: nothing left


def test_long_passes_print_a_line_at_each_quarter_with_the_time_left(capsys, monkeypatch):
    monkeypatch.setattr(Meter, "min_seconds", 0.0)
    train = DataLoader(separable(64), batch_size=8, shuffle=True)
    Trainer(model(), progress="line").fit(train, warmup_epochs=1, finetune_epochs=0)
    lines = capsys.readouterr().out.splitlines()
    assert [re.sub(r"\d+\.\d s", "T", line) for line in lines[:4]] == [
        "caching features: 16/64 images, T, ~T left", "caching features: 32/64 images, T, ~T left",
        "caching features: 48/64 images, T, ~T left", "caching features: 64 images, T"]


def test_progress_false_prints_nothing_for_caching_or_epochs(capsys, monkeypatch):
    monkeypatch.setattr(Meter, "min_seconds", 0.0)
    train, val = loaders()
    Trainer(model(), progress=False).fit(train, val, warmup_epochs=2, finetune_epochs=1)
    assert capsys.readouterr() == ("", "")


def test_bars_on_a_terminal_for_the_caching_pass_and_the_batches(capsys):
    train, _ = loaders()
    Trainer(model(), progress="bar").fit(train, warmup_epochs=1, finetune_epochs=1)
    captured = capsys.readouterr()
    assert "caching features" in captured.err and "epoch 2/2 finetune" in captured.err  # tqdm, on stderr
    assert captured.out.splitlines()[0].startswith("caching features: 96 images")


def test_extract_features_shows_its_own_pass(capsys):
    extract_features(model(), DataLoader(separable(24), batch_size=8), progress="line")
    assert re.fullmatch(r"extracting features: 24 images, \d+\.\d s\n", capsys.readouterr().out)
    extract_features(model(), DataLoader(separable(24), batch_size=8))
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize("record, left", [
    ({"epoch": 1, "phase": "warmup", "seconds": 1.0}, 1.0 + 3 * 1.0),   # an unseen phase: the mean so far
    ({"epoch": 2, "phase": "warmup", "seconds": 3.0}, 3 * 2.0),
    ({"epoch": 3, "phase": "finetune", "seconds": 10.0}, 2 * 10.0),    # then its own epochs' mean
    ({"epoch": 1, "phase": "warmup", "seconds": 1.0, "stopped_early": True}, 3 * 1.0),  # the phase ends early
    ({"epoch": 5, "phase": "finetune", "seconds": 4.0}, None),
])
def test_the_time_left_counts_each_epoch_still_to_run_at_its_phases_pace(record, left):
    recipe = Recipe(phases=(Phase("warmup", 2, trains="head"), Phase("finetune", 3)))
    done = {1: [], 2: [{"phase": "warmup", "seconds": 1.0}], 3: [{"phase": "warmup", "seconds": 1.0}] * 2,
            5: [{"phase": "finetune", "seconds": 4.0}] * 4}[record["epoch"]]
    assert EpochLine(Progress(False), recipe).time_left([*done, record], record) == left


@pytest.mark.parametrize("seconds, text", [(0.04, "0.0 s"), (4.26, "4.3 s"), (42.4, "42 s"), (185, "3 min 05 s"),
                                           (3725, "1 h 02 min")])
def test_durations(seconds, text):
    assert duration(seconds) == text
