"""classification_report: scikit-learn as the oracle, top losses, eval mode, the user's loader, plots."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from sklearn import metrics as skm
from torch import nn
from torch.utils.data import DataLoader, Dataset, SubsetRandomSampler, TensorDataset

from transferlearn import imagenet_transform
from transferlearn.ship.classifier import Classifier
from transferlearn.ship.report import ClassificationReport, classification_report

from .conftest import TinyNet


def _logits_for(predicted: list[int], n: int, confidence: list[float] | None = None) -> torch.Tensor:
    logits = torch.zeros(len(predicted), n)
    for i, p in enumerate(predicted):
        logits[i, p] = 3.0 if confidence is None else confidence[i]
    return logits


def _sklearn(y_true, y_pred, n):
    labels = list(range(n))
    return (skm.classification_report(y_true, y_pred, labels=labels, output_dict=True, zero_division=0),
            skm.confusion_matrix(y_true, y_pred, labels=labels))


@given(st.integers(2, 5).flatmap(lambda n: st.tuples(
    st.just(n), st.lists(st.tuples(st.integers(0, n - 1), st.integers(0, n - 1)), min_size=1, max_size=40))))
def test_numbers_match_scikit_learn(case):
    n, pairs = case
    y_true, y_pred = [t for t, _ in pairs], [p for _, p in pairs]
    data = TensorDataset(_logits_for(y_pred, n), torch.tensor(y_true))
    report = classification_report(nn.Identity(), data, batch_size=7)    # the "model" returns its input
    expected, cm = _sklearn(y_true, y_pred, n)
    assert report.confusion_matrix == cm.tolist()
    assert report.accuracy == pytest.approx(skm.accuracy_score(y_true, y_pred))
    for i, name in enumerate(report.classes):
        for key in ("precision", "recall", "f1-score", "support"):
            got = report.per_class[name]["f1" if key == "f1-score" else key]
            assert got == pytest.approx(expected[str(i)][key]), (name, key)
    for ours, theirs in ((report.macro_avg, expected["macro avg"]), (report.weighted_avg, expected["weighted avg"])):
        assert [ours["precision"], ours["recall"], ours["f1"]] == pytest.approx(
            [theirs["precision"], theirs["recall"], theirs["f1-score"]])


def test_loss_and_top_losses():
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    logits = _logits_for([0, 2, 2, 1, 0, 2], 3, [5.0, 4.0, 1.0, 1.0, 2.0, 3.0])
    report = classification_report(nn.Identity(), TensorDataset(logits, labels), ["a", "b", "c"], top_losses=2)
    per_sample = nn.functional.cross_entropy(logits, labels, reduction="none")
    assert report.loss == pytest.approx(float(per_sample.mean()))
    wrong = [1, 3, 4]                                                  # samples whose argmax is not the label
    expected = sorted(wrong, key=lambda i: -float(per_sample[i]))[:2]
    assert [t["index"] for t in report.top_losses] == expected
    first = report.top_losses[0]
    assert first["loss"] == pytest.approx(float(per_sample[expected[0]]))
    assert (first["true"], first["predicted"]) == ("b", "c") and first["path"] is None
    assert first["probability"] == pytest.approx(float(logits[1].softmax(0)[2]))
    assert torch.equal(report.images[0], logits[1])
    json.dumps(report.to_dict(), allow_nan=False)
    assert "weighted avg" in str(report) and "accuracy 0.5000" in str(report)


class _Files(Dataset):
    """An ImageFolder-like dataset: ``samples`` of (path, label), logits as the "images"."""

    classes = ["a", "b", "c"]

    def __init__(self, logits: torch.Tensor, labels: list[int]) -> None:
        self.logits, self.samples = logits, [(f"/data/{i}.png", y) for i, y in enumerate(labels)]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        return self.logits[i], self.samples[i][1]


def test_paths_follow_the_dataset_order_and_subsets():
    labels = [0, 1, 2, 0, 1, 2]
    data = _Files(_logits_for([1, 1, 2, 0, 0, 2], 3), labels)
    report = classification_report(nn.Identity(), data)
    assert report.classes == ("a", "b", "c")
    assert {t["path"] for t in report.top_losses} == {"/data/0.png", "/data/4.png"}
    subset = torch.utils.data.Subset(data, [4, 5, 0])
    report = classification_report(nn.Identity(), DataLoader(subset, batch_size=2))
    assert [(t["index"], t["path"]) for t in report.top_losses] == [(0, "/data/4.png"), (2, "/data/0.png")]
    shuffled = DataLoader(data, batch_size=2, shuffle=True)             # order unknown: no paths are guessed
    assert all(t["path"] is None for t in classification_report(nn.Identity(), shuffled).top_losses)


def test_the_users_sampler_is_honoured():
    labels = torch.tensor([0, 1] * 10)
    data = TensorDataset(_logits_for(labels.tolist(), 2), labels)
    loader = DataLoader(data, batch_size=3, sampler=SubsetRandomSampler([0, 1, 2, 3]))
    report = classification_report(nn.Identity(), loader)
    assert report.count == 4 and report.per_class["0"]["support"] == 2


def test_runs_in_eval_mode_and_restores_modes():
    torch.manual_seed(0)
    model = nn.Sequential(TinyNet(), nn.Dropout(0.9)).train()
    model[0].stage1.eval()
    images, labels = torch.rand(10, 3, 16, 16), torch.randint(0, 3, (10,))
    report = classification_report(model, TensorDataset(images, labels), batch_size=4)
    assert model.training and model[0].stem.training and not model[0].stage1.training
    with torch.inference_mode():
        expected = model.eval()(images).argmax(1)
    assert report.accuracy == pytest.approx(float((expected == labels).float().mean()))


def test_a_classifier_brings_its_classes_and_must_agree_with_the_data():
    torch.manual_seed(0)
    clf = Classifier(TinyNet(), ["a", "b", "c"], imagenet_transform(size=16, resize=16))
    data = TensorDataset(torch.rand(6, 3, 16, 16), torch.tensor([0, 1, 2, 0, 1, 2]))
    assert classification_report(clf, data).classes == ("a", "b", "c")
    with pytest.raises(ValueError, match=r"classes=\['x', 'y', 'z'\] .* differ from the classifier's own \['a', 'b', 'c'\]"):
        classification_report(clf, data, ["x", "y", "z"])
    other = _Files(torch.rand(3, 3), [0, 1, 2])
    other.classes = ["c", "b", "a"]
    with pytest.raises(ValueError, match=r"the data's classes \['c', 'b', 'a'\] are not the model's \['a', 'b', 'c'\]"):
        classification_report(nn.Identity(), other, ["a", "b", "c"])


@pytest.mark.parametrize("args, kwargs, exc, pattern", [
    (("model", TensorDataset(torch.zeros(2, 2), torch.zeros(2))), {}, TypeError, r"model_or_classifier must be an nn.Module or a Classifier"),
    ((nn.Identity(), [1, 2]), {}, TypeError, r"data must be a torch Dataset or DataLoader yielding \(image, label\), got \[1, 2\]"),
    ((nn.Identity(), TensorDataset(torch.zeros(2, 2))), {}, ValueError, r"data must yield \(image, label\) pairs"),
    ((nn.Identity(), TensorDataset(torch.zeros(2, 2), torch.tensor([0, 2]))), {}, ValueError, r"data, batch 1: target 2 \(row 1\) is not a class index; expected class indices as an int64 tensor of shape \(N,\), each in \[0, 2\) \(the model has 2 outputs\)$"),
    ((nn.Identity(), TensorDataset(torch.zeros(0, 2), torch.zeros(0).long())), {}, ValueError, r"data is empty"),
    ((nn.Identity(), TensorDataset(torch.zeros(2, 2), torch.tensor([0, 1])), ["a", "b", "c"]), {}, ValueError, r"the model gives 2 outputs but classes has 3 names"),
    ((nn.Identity(), TensorDataset(torch.zeros(2, 2), torch.tensor([0, 1])), ["a", "a"]), {}, ValueError, r"classes must be unique class-name strings"),
    ((nn.Identity(), TensorDataset(torch.zeros(2, 2), torch.tensor([0, 1]))), {"top_losses": -1}, ValueError, r"top_losses must be an int >= 0, got -1"),
])
def test_errors(args, kwargs, exc, pattern):
    with pytest.raises(exc, match=pattern):
        classification_report(*args, **kwargs)


@pytest.mark.parametrize("labels, exc, pattern", [
    (torch.tensor([0.0, 1.0, 2.0, 0.5, 1.7, 2.9]), TypeError, r"batch 1: targets of dtype torch.float32"),
    (torch.tensor([0, 1, 2, 0, 1, 2], dtype=torch.int32), TypeError, r"batch 1: targets of dtype torch.int32"),
    (torch.tensor([0, 1, 2, 0, 1, -100]), ValueError, r"batch 2: labels of -100 \(an ignore_index\) cannot be scored"),
])
def test_labels_that_are_not_class_indices_are_refused_naming_the_batch_not_truncated(labels, exc, pattern):
    data = torch.utils.data.DataLoader(TensorDataset(torch.rand(6, 3, 16, 16), labels), batch_size=4)
    with pytest.raises(exc, match=r"data, " + pattern):
        classification_report(TinyNet(), data, ["a", "b", "c"])


def _report() -> ClassificationReport:
    torch.manual_seed(1)
    images, labels = torch.randn(8, 3, 16, 16), torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    return classification_report(TinyNet(), TensorDataset(images, labels), ["cat", "cup", "rocket"])


def test_plots_are_pngs(tmp_path):
    import matplotlib.image
    report = _report()
    for path in (report.plot_confusion_matrix(tmp_path / "cm.png"),
                 report.plot_confusion_matrix(tmp_path / "cmn.png", normalize=True),
                 report.plot_top_losses(tmp_path / "top.png", columns=2)):
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert matplotlib.image.imread(path).ndim == 3
    with pytest.raises(TypeError, match=r"normalize must be True or False, got 1 \(int\)"):
        report.plot_confusion_matrix(tmp_path / "x.png", normalize=1)
    with pytest.raises(ValueError, match=r"columns must be an int >= 1, got 0"):
        report.plot_top_losses(tmp_path / "x.png", columns=0)


def test_plots_never_touch_the_process_wide_backend(tmp_path):
    script = textwrap.dedent(f"""
        import sys, matplotlib
        matplotlib.use("svg")
        import torch
        from torch import nn
        from torch.utils.data import TensorDataset
        from transferlearn.ship.report import classification_report
        data = TensorDataset(torch.eye(3), torch.tensor([1, 2, 0]))
        report = classification_report(nn.Identity(), data)
        report.plot_confusion_matrix({str(tmp_path / 'cm.png')!r})
        report.plot_top_losses({str(tmp_path / 'top.png')!r})
        print(matplotlib.get_backend(), "matplotlib.pyplot" in sys.modules)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          cwd=Path(__file__).parents[1], timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["svg", "False"]
    assert (tmp_path / "top.png").read_bytes()[:4] == b"\x89PNG"


def test_top_losses_plot_reads_the_files_when_known(tmp_path):
    from PIL import Image
    path = tmp_path / "wrong.png"
    Image.fromarray(np.full((20, 30, 3), 200, np.uint8)).save(path)
    data = _Files(_logits_for([1], 3), [0])
    data.samples = [(str(path), 0)]
    report = classification_report(nn.Identity(), data)
    assert report.top_losses[0]["path"] == str(path)
    assert report.plot_top_losses(tmp_path / "top.png").exists()
