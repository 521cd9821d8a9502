"""History: a sequence of JSON-able records with JSON / CSV round trips and a plot."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image
from torch.utils.data import DataLoader

from transferlearn import History, Trainer, plot_history

from .test_trainer import model, separable


@pytest.fixture(scope="module")
def history() -> History:
    train, val = DataLoader(separable(32), batch_size=16), DataLoader(separable(16, 3), batch_size=8)
    return Trainer(model(), progress=False).fit(train, val, warmup_epochs=1, finetune_epochs=2)


def test_records_have_the_documented_fields(history):
    assert len(history) == 3 and history[0]["epoch"] == 1 and history[-1]["phase"] == "finetune"
    assert [r["epoch"] for r in history] == [1, 2, 3]
    assert set(history[0]) == {"epoch", "phase", "train_loss", "train_accuracy", "val_loss", "val_accuracy",
                               "val_macro_f1", "lr", "seconds", "best"}
    assert [r["best"] for r in history].count(True) == 1 and history.best["best"] is True
    assert history.best["val_loss"] == min(r["val_loss"] for r in history)
    json.dumps(history.records())                    # plain values only
    assert isinstance(history[1:], list) and repr(history) == "History(3 epochs)"


def test_json_is_strict_with_non_finite_numbers_as_null():
    h = History([{"epoch": 1, "phase": "warmup", "train_loss": float("nan"), "val_loss": float("inf"),
                  "lr": {"fc": 1e-3}}])
    text = h.to_json()
    assert "NaN" not in text and "Infinity" not in text
    back = json.loads(text, parse_constant=lambda c: pytest.fail(f"non-strict JSON constant {c}"))
    assert back[0]["train_loss"] is None and back[0]["val_loss"] is None


def test_plotting_leaves_the_matplotlib_backend_alone(history, tmp_path):
    import matplotlib
    before = matplotlib.get_backend()
    matplotlib.use("pdf")                     # a user's choice (a notebook's inline backend, say)
    try:
        plot_history(history, tmp_path / "h.png")
        assert matplotlib.get_backend() == "pdf"
    finally:
        matplotlib.use(before)
    assert (tmp_path / "h.png").read_bytes()[:4] == b"\x89PNG"


def test_json_round_trip(history, tmp_path):
    assert History.from_json(history.to_json()) == history
    history.to_json(tmp_path / "h.json")
    assert History.from_json(tmp_path / "h.json") == history


def test_csv_round_trip(history, tmp_path):
    text = history.to_csv(tmp_path / "h.csv")
    assert text.splitlines()[0].startswith("epoch,phase,train_loss")
    assert "lr:backbone" in text.splitlines()[0]
    for source in (text, tmp_path / "h.csv"):
        back = History.from_csv(source)
        assert back == history


record = st.fixed_dictionaries({
    "epoch": st.integers(1, 100), "phase": st.sampled_from(["warmup", "finetune"]),
    "train_loss": st.floats(0, 10), "train_accuracy": st.one_of(st.none(), st.floats(0, 1)),
    "lr": st.dictionaries(st.sampled_from(["fc", "backbone", "layer4.1"]), st.floats(1e-6, 1.0)),
    "seconds": st.floats(0, 1e4)})


@given(st.lists(record, max_size=5))
def test_round_trips_for_any_records(records):
    h = History(records)
    assert History.from_json(h.to_json()) == h
    assert History.from_csv(h.to_csv()) == h if records else True


def test_plot_history_writes_a_png(history, tmp_path):
    path = plot_history(history, tmp_path / "curves.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_empty_history_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="history is empty: nothing to plot"):
        plot_history(History(), tmp_path / "x.png")


def test_plot_compares_several_runs(history, tmp_path):
    path = plot_history({"random init": history, "fine-tuning": history}, tmp_path / "compare.png")
    assert path.stat().st_size > 1000
    with pytest.raises(ValueError, match="history is empty"):
        plot_history({"a": History()}, tmp_path / "x.png")


@pytest.mark.parametrize("content, pattern", [
    ("[1, 2]", r"record 1 must be an object, got int"),
    ('{"a": 1}', r"is not a history this library reads: it must hold a JSON list of per-epoch records, got dict"),
    ('[{"epoch": "x", "val_loss": 1}]', r"record 1 field 'epoch' must be an int >= 1, got \"x\""),
    ('[{"epoch": 1e400}]', r"record 1 field 'epoch' must be an int >= 1, got Infinity"),
    ('[{"epoch": 1, "val_loss": 1}, {"epoch": 2, "val_loss": "low"}]', r"record 2 field 'val_loss' must be a finite "
                                                                       r"number or null"),
    ('[{"epoch": 1, "lr": {"head": "fast"}}]', r"record 1 field 'lr' must be an object of learning rates"),
    ("nan", r"is not a history this library reads: not valid JSON \(Expecting value"),
    ("[" * 100_000, r"is not a history this library reads: not valid JSON \(nested too deeply\)"),
])
def test_a_damaged_history_json_is_a_value_error_naming_the_file_record_and_field(tmp_path, content, pattern):
    (tmp_path / "history.json").write_text(content)
    with pytest.raises(ValueError, match=r".*history.json:? " + pattern):
        History.from_json(tmp_path / "history.json")


def test_evaluate_html_with_a_damaged_history_json_is_one_line_naming_it(tmp_path, capsys):
    from tests.test_ship_safety import CLASSES, TF, _informative, _one_error
    from transferlearn.cli import main
    from transferlearn.ship.classifier import save_classifier
    save_classifier(_informative(), tmp_path / "run", classes=CLASSES, transform=TF)
    for name in CLASSES:
        (tmp_path / "data" / name).mkdir(parents=True)
        Image.new("RGB", (40, 40), (len(name) * 30, 90, 10)).save(tmp_path / "data" / name / "0.png")
    (tmp_path / "run" / "history.json").write_text('[{"epoch": "x", "val_loss": 1}]')
    assert main(["evaluate", str(tmp_path / "run"), str(tmp_path / "data"), "--html", str(tmp_path / "e.html")]) == 2
    assert "run/history.json: record 1 field 'epoch' must be an int >= 1" in _one_error(capsys)
