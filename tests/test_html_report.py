"""report.html: one self-contained page (every picture embedded, no outside reference, no script),
every class and top-loss path in it, user text escaped; `fit` and `evaluate --html` write one."""

from __future__ import annotations

import base64
import io
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from transferlearn import imagenet_transform
from transferlearn.cli import main
from transferlearn.data.imagefiles import ImageFiles
from transferlearn.ship.html_report import write_html
from transferlearn.ship.report import classification_report

from .conftest import TinyNet

NASTY = '<b>&"x'
CLASSES = (NASTY, "cat", "dog")
HISTORY = [{"epoch": 1, "phase": "warmup", "train_loss": 1.0, "train_accuracy": 0.3, "val_loss": 1.1,
            "val_accuracy": 0.3, "seconds": 1.0, "best": False},
           {"epoch": 2, "phase": "finetune", "train_loss": 0.8, "train_accuracy": 0.5, "val_loss": 0.9,
            "val_accuracy": 0.5, "seconds": 1.2, "best": True}]


class Page(HTMLParser):
    """Every tag with its attributes, the text of each table (rows of cells), all text, in order."""

    def __init__(self, source: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict]] = []
        self.tables: list[list[list[str]]] = []
        self.text: list[str] = []
        self._cell: list[str] | None = None
        self.feed(source)
        self.close()

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1][-1].append("".join(self._cell))
            self._cell = None

    def handle_data(self, data):
        self.text.append(data)
        if self._cell is not None:
            self._cell.append(data)


def check_self_contained(source: str) -> Page:
    """The parser check: every <img> a PNG data URI that decodes; nothing refers outside the page."""
    page = Page(source)
    images = [attrs for tag, attrs in page.tags if tag == "img"]
    for attrs in images:
        assert attrs["src"].startswith("data:image/png;base64,"), attrs["src"][:40]
        Image.open(io.BytesIO(base64.b64decode(attrs["src"].split(",", 1)[1]))).verify()
    assert not {tag for tag, _ in page.tags} & {"script", "link", "iframe", "object", "embed", "base", "svg"}
    for tag, attrs in page.tags:
        for name in attrs:
            assert name not in ("href", "srcset", "action") and not name.startswith("on"), (tag, name)
    outside = re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "", source)
    for reference in ("http:", "https:", "//", "url(", "@import"):
        assert reference not in outside, reference
    return page


@pytest.fixture
def files(tmp_path) -> ImageFiles:
    """Four random 40x50 pictures per class, in folders named after the classes (one of them nasty)."""
    rng = np.random.default_rng(0)
    samples = []
    for label, name in enumerate(CLASSES):
        (tmp_path / name).mkdir()
        for k in range(4):
            path = tmp_path / name / f"{k}.png"
            Image.fromarray(rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)).save(path)
            samples.append((str(path), label))
    return ImageFiles(samples, CLASSES, imagenet_transform(size=32))


@pytest.fixture
def net() -> TinyNet:
    torch.manual_seed(0)
    return TinyNet(num_classes=3)


SETTINGS = {"strategy": "fine_tune_all", "image size": 32,
            "images per class": {"train": {c: 4 for c in CLASSES}, "val": {c: 2 for c in CLASSES}},
            "skipped files": [["broken.jpg", "truncated"]], "timings": {"training (s)": 2.2}}


def test_the_page_is_self_contained_and_holds_the_whole_run(files, net, tmp_path):
    report = classification_report(net, files, top_losses=5)
    assert len(report.top_losses) == 5 and all(row["path"] for row in report.top_losses)
    path = report.to_html(tmp_path / "report.html", history=HISTORY, settings=SETTINGS, model=net)
    source = path.read_text(encoding="utf-8")
    page = check_self_contained(source)
    assert sum(1 for tag, _ in page.tags if tag == "img") == 1 + 2 * 5     # curves + (input, overlay) per top loss
    text = "".join(page.text)
    for row in report.top_losses:
        assert row["path"] in text
    cells = [cell for table in page.tables for row in table for cell in row]
    per_class = next(t for t in page.tables if t[0] == ["class", "precision", "recall", "F1", "support"])
    assert [r[0] for r in per_class[1:4]] == [name for name, _ in sorted(
        report.per_class.items(), key=lambda kv: (kv[1]["f1"], kv[1]["recall"], kv[0]))]   # worst first
    assert {r[0] for r in per_class[1:]} >= set(CLASSES)
    counts, shares = [t for t in page.tables if t[0][0] == "true \\ predicted"]
    assert counts[0][1:] == list(CLASSES) and [r[0] for r in counts[1:]] == list(CLASSES)
    assert [[int(v) for v in r[1:]] for r in counts[1:]] == report.confusion_matrix
    assert all(abs(sum(float(v) for v in r[1:]) - 1) < 0.02 for r in shares[1:])
    grid = next(t for t in page.tables if t[0] == ["", "train", "val"])
    assert grid[1:] == [[c, "4", "2"] for c in CLASSES]
    assert ["broken.jpg", "truncated"] in next(t for t in page.tables if ["broken.jpg", "truncated"] in t)
    epochs = next(t for t in page.tables if t[0][:2] == ["epoch", "phase"])
    assert [r[0] for r in epochs[1:]] == ["1", "2"] and "kept" in text and "2.2" in cells


def test_user_text_is_escaped(files, net, tmp_path):
    report = classification_report(net, files)
    source = report.to_html(tmp_path / "r.html", settings={NASTY: NASTY}, title=NASTY).read_text()
    assert NASTY not in source and "&lt;b&gt;&amp;&quot;x" in source
    page = check_self_contained(source)
    assert sum(NASTY == cell for table in page.tables for row in table for cell in row) >= 5  # read back intact
    assert "".join(page.text).count(NASTY) >= 8                              # title, tables, top-loss cards


def test_without_a_model_no_overlays_and_without_a_report_settings_and_curves(files, net, tmp_path):
    report = classification_report(net, files, top_losses=3)
    page = check_self_contained(write_html(report, tmp_path / "a.html").read_text())
    assert sum(1 for tag, _ in page.tags if tag == "img") == 3                # the inputs only
    assert "no model was given to the report" in "".join(page.text)
    page = check_self_contained(write_html(None, tmp_path / "b.html", history=HISTORY, settings=SETTINGS).read_text())
    assert "No evaluation data" in "".join(page.text) and sum(1 for tag, _ in page.tags if tag == "img") == 1


def test_inputs_that_are_not_images_give_tables_and_a_note(tmp_path):
    from torch import nn
    from torch.utils.data import TensorDataset
    data = TensorDataset(torch.eye(3)[[0, 1, 2, 1]] * 3, torch.tensor([0, 1, 2, 0]))
    report = classification_report(nn.Identity(), data, ["a", "b", "c"])
    page = check_self_contained(report.to_html(tmp_path / "r.html", model=nn.Identity()).read_text())
    assert "the inputs are not images" in "".join(page.text) and "sample #3" in "".join(page.text)


def test_errors(files, net, tmp_path):
    report = classification_report(net, files)
    with pytest.raises(TypeError, match=r"report must be a ClassificationReport or None, got \{\}"):
        write_html({}, tmp_path / "r.html")
    with pytest.raises(TypeError, match=r"path must be a str or os.PathLike, got 3"):
        report.to_html(3)
    with pytest.raises(TypeError, match=r"settings must be a mapping of names to values, got \['a'\]"):
        report.to_html(tmp_path / "r.html", settings=["a"])
    with pytest.raises(TypeError, match=r"history must be a History or a list of its records"):
        report.to_html(tmp_path / "r.html", history=[1, 2])
    with pytest.raises(TypeError, match=r"model must be an nn.Module, a Classifier or None, got 'net'"):
        report.to_html(tmp_path / "r.html", model="net")
    with pytest.raises(TypeError, match=r"title must be a str, got 1"):
        report.to_html(tmp_path / "r.html", title=1)
    assert not (tmp_path / "r.html").exists()


# ----------------------------------------------------------------------------- the command line
@pytest.fixture
def folder(tmp_path) -> Path:
    """DATA/<class>/*.png: 5 random pictures per class, one class folder named with HTML in it."""
    rng = np.random.default_rng(1)
    for name in ("a<i>", "b&c"):
        (tmp_path / "data" / name).mkdir(parents=True)
        for k in range(5):
            Image.fromarray(rng.integers(0, 256, (36, 36, 3), dtype=np.uint8)).save(tmp_path / "data" / name / f"{k}.png")
    return tmp_path / "data"


def test_fit_writes_report_html_and_evaluate_html_writes_one(folder, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["fit", str(folder), "--out", str(run), "--weights", "none", "--epochs", "2", "--image-size", "32",
                 "--workers", "0", "--strategy", "fine_tune_all", "--val-fraction", "0.4"]) == 0
    page = check_self_contained((run / "report.html").read_text())
    text = "".join(page.text)
    cells = {cell for table in page.tables for row in table for cell in row}
    assert {"a<i>", "b&c", "fine_tune_all", "mobilenet_v2"} <= cells and "kept" in text
    assert [r[0] for r in next(t for t in page.tables if t[0][:2] == ["epoch", "phase"])[1:]] == ["1", "2"]
    capsys.readouterr()
    assert main(["evaluate", str(run), str(folder), "--html", str(tmp_path / "eval.html")]) == 0
    assert "wrote" in capsys.readouterr().out
    page = check_self_contained((tmp_path / "eval.html").read_text())
    cells = {cell for table in page.tables for row in table for cell in row}
    assert {"a<i>", "b&c", str(folder)} <= cells
    report_rows = [row for table in page.tables for row in table if row[:1] == ["class"]]
    assert report_rows and "10 images" in "".join(page.text)
    text = "".join(page.text)
    wrong = [p for p in (folder / "a<i>").glob("*.png")] + [p for p in (folder / "b&c").glob("*.png")]
    assert any(str(p) in text for p in wrong) or "no misclassified image" in text


def test_a_heat_map_without_evidence_is_said_to_be_zero(files, net, tmp_path):
    from transferlearn.ship.explain import class_activation_map
    for weight, expected in ((None, 6), (0.5, 0)):                # this random net: no class has evidence;
        if weight is not None:                                     # positive weights on ReLU features: all do
            with torch.no_grad():
                net.fc.weight.fill_(weight)
        report = classification_report(net, files, top_losses=6)
        targets = [report.classes.index(row["predicted"]) for row in report.top_losses]
        maps = class_activation_map(net, torch.stack(report.images), target=targets)
        assert sum(float(m.max()) == 0.0 for m in maps) == expected and len(maps) == 6
        text = "".join(Page(report.to_html(tmp_path / "r.html", model=net).read_text()).text)
        assert text.count("the map is 0 everywhere") == expected
