"""Loggers: TensorBoard event files and the CSV read back with the expected tags, steps and
values, each step once across a resumed run, and the refusals that keep earlier logs."""

from __future__ import annotations

import csv

import pytest
from torch.utils.data import DataLoader

from transferlearn import CSVLogger, TensorBoardLogger, Trainer
from transferlearn.cli import main
from transferlearn.train.checkpoint import LAST, load_checkpoint
from transferlearn.train.recipe import Phase

from .test_cli import photos  # noqa: F401 (a fixture)
from .test_trainer import model, separable

pytest.importorskip("tensorboard")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

STEPS_PER_EPOCH, EPOCHS = 3, 3
PHASES = [Phase("warmup", 1, trains="head", head_lr=1e-2), Phase("finetune", 2, head_lr=1e-2, backbone_lr=1e-3)]


class Interrupt(Exception):
    pass


class StopAt:
    """Raises at one hook call (after the loggers, which come first): the run dies there."""

    def __init__(self, hook, epoch, batch=None):
        self.hook, self.epoch, self.batch = hook, epoch, batch

    def on_step_end(self, trainer, step):
        if self.hook == "step" and (step.epoch, step.batch) == (self.epoch, self.batch):
            raise Interrupt

    def on_epoch_end(self, trainer, record):
        if self.hook == "epoch" and record["epoch"] == self.epoch:
            raise Interrupt


def run(tmp, loggers, stop=None, resume=False):
    train = DataLoader(separable(48), batch_size=16, shuffle=True)
    val = DataLoader(separable(16, seed=9), batch_size=16)
    trainer = Trainer(model(seed=1), seed=3, progress=False, checkpoint_dir=tmp / "ckpt",
                      callbacks=[*loggers, *([stop] if stop else [])])
    return trainer.fit(train, val, phases=PHASES, resume=resume)


def scalars(log_dir):
    events = EventAccumulator(str(log_dir), size_guidance={"scalars": 0, "tensors": 0})
    events.Reload()
    tags = events.Tags()
    return {t: [(e.step, e.value) for e in events.Scalars(t)] for t in tags["scalars"]}, tags["tensors"]


def rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def without_seconds(table):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in table]


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("full")
    history = run(tmp, [TensorBoardLogger(tmp / "tb"), CSVLogger(tmp / "log.csv")])
    return tmp, history


def test_tensorboard_tags_steps_and_values(full):
    tmp, history = full
    got, texts = scalars(tmp / "tb")
    n = STEPS_PER_EPOCH * EPOCHS
    assert [s for s, _ in got["step/train_loss"]] == list(range(n))  # every step once, in order
    assert [s for s, _ in got["step/lr/fc"]] == list(range(n))
    # a backbone group logs only while it trains (the two fine-tune epochs)
    backbone = [t for t in got if t.startswith("step/lr/") and t != "step/lr/fc"]
    assert backbone and all([s for s, _ in got[t]] == list(range(3, n)) for t in backbone)
    ends = [STEPS_PER_EPOCH * e - 1 for e in (1, 2, 3)]
    for key in ("train_loss", "train_accuracy", "val_loss", "val_accuracy"):
        assert got[f"epoch/{key}"] == [(s, pytest.approx(r[key])) for s, r in zip(ends, history)]
    assert got["epoch/epoch"] == [(s, e) for s, e in zip(ends, (1, 2, 3))]
    assert got["epoch/lr/fc"] == [(s, pytest.approx(r["lr"]["fc"])) for s, r in zip(ends, history)]
    assert got["phase"] == [(0, 1.0), (3, 2.0)]
    assert got["best/epoch"] == [(n, history.best["epoch"])]
    assert got["best/val_loss"] == [(n, pytest.approx(history.best["val_loss"]))]
    assert {"phase/text_summary", "best/text_summary"} <= set(texts)


def test_csv_rows_steps_and_values(full):
    tmp, history = full
    table = rows(tmp / "log.csv")
    assert [r["kind"] for r in table] == ["phase", *["step"] * 3, "epoch", "phase", *(["step"] * 3 + ["epoch"]) * 2,
                                          "best"]
    steps = [r for r in table if r["kind"] == "step"]
    assert [int(r["step"]) for r in steps] == list(range(9))
    assert [(int(r["epoch"]), int(r["batch"])) for r in steps] == [(e, b) for e in (1, 2, 3) for b in range(3)]
    assert all(r["lr/backbone"] == "" for r in steps[:3]) and all(float(r["lr/backbone"]) == 1e-3 for r in steps[3:])
    epochs = [r for r in table if r["kind"] == "epoch"]
    for row, record in zip(epochs, history):
        assert float(row["train_loss"]) == record["train_loss"]  # written exactly (repr)
        assert float(row["val_accuracy"]) == record["val_accuracy"] and row["phase"] == record["phase"]
        assert float(row["seconds"]) == record["seconds"]
    assert [int(r["step"]) for r in epochs] == [2, 5, 8]
    best = table[-1]
    assert int(best["epoch"]) == history.best["epoch"] and float(best["val_loss"]) == history.best["val_loss"]
    assert [r["phase"] for r in table if r["kind"] == "phase"] == ["warmup", "finetune"]


@pytest.mark.parametrize("stop", [StopAt("step", epoch=3, batch=1), StopAt("epoch", epoch=3)],
                         ids=["mid-epoch", "at-epoch-end"])
def test_a_resumed_run_logs_every_step_once_with_the_values_of_an_uninterrupted_one(full, tmp_path, stop):
    reference, _ = full
    tb, log = tmp_path / "tb", tmp_path / "log.csv"
    first = [TensorBoardLogger(tb), CSVLogger(log)]
    with pytest.raises(Interrupt):
        run(tmp_path, first, stop=stop)
    for logger in first:
        logger.close()
    assert load_checkpoint(tmp_path / "ckpt" / LAST)["epoch"] == 2  # epoch 3's logs lie past the checkpoint
    assert any(r["epoch"] == "3" for r in rows(log))
    run(tmp_path, [TensorBoardLogger(tb), CSVLogger(log)], resume=True)
    got, _ = scalars(tb)
    want, _ = scalars(reference / "tb")
    assert got == want  # the same tags, each step once, the same values
    assert without_seconds(rows(log)) == without_seconds(rows(reference / "log.csv"))


def test_resuming_a_finished_run_keeps_one_best_row(full, tmp_path):
    tb, log = tmp_path / "tb", tmp_path / "log.csv"
    run(tmp_path, [TensorBoardLogger(tb), CSVLogger(log)])
    before, _ = scalars(tb)
    run(tmp_path, [TensorBoardLogger(tb), CSVLogger(log)], resume=True)
    after, _ = scalars(tb)
    assert after == before and [r["kind"] for r in rows(log)].count("best") == 1


def test_the_checkpoint_holds_the_logger_state(full, tmp_path):
    log = tmp_path / "log.csv"
    run(tmp_path, [CSVLogger(log)])
    saved = load_checkpoint(tmp_path / "ckpt" / LAST)["callbacks"]
    assert saved[0][0] == "CSVLogger" and saved[0][1]["step"] == 9 and saved[0][1]["phases"] == 2
    assert log.read_text().startswith(saved[0][1]["text"]) and log.read_text() != saved[0][1]["text"]  # + best


def test_a_fresh_fit_refuses_logs_of_another_run(tmp_path):
    (tmp_path / "log.csv").write_text("kind,step\nstep,0\n")
    with pytest.raises(ValueError, match=r"log.csv already holds the rows of another run"):
        run(tmp_path, [CSVLogger(tmp_path / "log.csv")])
    assert (tmp_path / "log.csv").read_text() == "kind,step\nstep,0\n"  # untouched
    run(tmp_path / "a", [TensorBoardLogger(tmp_path / "tb")])
    with pytest.raises(ValueError, match=r"already holds TensorBoard event files of another run"):
        run(tmp_path / "b", [TensorBoardLogger(tmp_path / "tb")])


def test_a_resume_refuses_a_csv_that_is_not_the_checkpoints_and_rewrites_a_missing_one(tmp_path):
    log = tmp_path / "log.csv"
    first = CSVLogger(log)
    with pytest.raises(Interrupt):
        run(tmp_path, [first], stop=StopAt("epoch", epoch=3))
    first.close()
    kept = log.read_text()
    log.write_text("something else\n")
    with pytest.raises(ValueError, match=r"log.csv does not begin with the 10 rows the checkpoint's logger state"):
        run(tmp_path, [CSVLogger(log)], resume=True)
    assert log.read_text() == "something else\n"
    log.unlink()  # moved away: the checkpoint's rows are written anew, then the run's
    run(tmp_path, [CSVLogger(log)], resume=True)
    lines = kept.splitlines(keepends=True)
    covered = "".join(lines[:next(i for i, line in enumerate(lines) if line.startswith("epoch,5,2,")) + 1])
    assert log.read_text().startswith(covered) and len(covered.splitlines()) == 11  # header + 10 rows
    assert [int(r["step"]) for r in rows(log) if r["kind"] == "step"] == list(range(9))


def test_the_same_logger_continues_over_two_fits(tmp_path):
    log = CSVLogger(tmp_path / "log.csv")
    train = DataLoader(separable(32), batch_size=16)
    trainer = Trainer(model(), progress=False, callbacks=[log])
    trainer.fit(train, warmup_epochs=1, finetune_epochs=0)
    trainer.fit(train, warmup_epochs=1, finetune_epochs=0)
    assert [int(r["step"]) for r in rows(tmp_path / "log.csv") if r["kind"] == "step"] == [0, 1, 2, 3]


@pytest.mark.parametrize("make, value, match", [
    (TensorBoardLogger, 3, r"log_dir must be a path \(str or os.PathLike\), got 3 \(int\)"),
    (CSVLogger, None, r"path must be a path \(str or os.PathLike\), got None"),
])
def test_bad_paths(make, value, match):
    with pytest.raises(TypeError, match=match):
        make(value)


@pytest.mark.parametrize("state, match", [
    ({"step": 1}, r"CSVLogger state must be a dict with integer 'step' and 'phases'"),
    ({"step": 1, "phases": 1, "text": 5}, r"CSVLogger state must hold the file's 'text' \(a str\), got 5 \(int\)"),
])
def test_bad_states(tmp_path, state, match):
    with pytest.raises(ValueError, match=match):
        CSVLogger(tmp_path / "log.csv").load_state_dict(state)


def test_cli_fit_writes_log_csv_and_tensorboard(photos, tmp_path, capsys):  # noqa: F811
    run_dir, tb = tmp_path / "run", tmp_path / "tb"
    args = ["fit", str(photos / "data"), "--out", str(run_dir), "--weights", "none", "--epochs", "2", "--image-size",
            "32", "--workers", "0", "--strategy", "fine_tune_all", "--batch-size", "8"]
    assert main([*args, "--tensorboard", str(tb)]) == 0
    table = rows(run_dir / "log.csv")
    steps = [int(r["step"]) for r in table if r["kind"] == "step"]
    assert steps == list(range(len(steps))) and len(steps) > 2
    assert [r["kind"] for r in table].count("epoch") == 2 and table[-1]["kind"] == "best"
    got, _ = scalars(tb)
    assert [s for s, _ in got["step/train_loss"]] == steps
    assert main([*args[:3], str(tmp_path / "again"), *args[4:], "--tensorboard", str(tb)]) == 2  # one line, exit 2
    assert "already holds TensorBoard event files of another run" in capsys.readouterr().err
    assert not (tmp_path / "again" / "log.csv").exists()  # refused before anything was written
