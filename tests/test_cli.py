"""The command line: fit / evaluate / predict / export on real photos in fresh processes; every
error is one line on stderr with exit status 2; install-weights and recommend."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from transferlearn import imagenet_transform, load_model, recommend_strategy
from transferlearn.cli import main
from transferlearn.cli.commands import _strategy
from transferlearn.ship.classifier import load_classifier, save_classifier
from transferlearn.train.trainer import Trainer

ROOT = Path(__file__).parents[1]
PHOTOS = {"cat": "chelsea", "cup": "coffee", "rocket": "rocket"}


def _variants(array: np.ndarray, n: int, offset: int) -> list[Image.Image]:
    """``n`` different views of one photo: crops at several places and scales, some mirrored."""
    image = Image.fromarray(array).convert("RGB")
    w, h = image.size
    views = []
    for k in range(offset, offset + n):
        scale = 0.65 + 0.07 * (k % 5)
        cw, ch = int(w * scale), int(h * scale)
        left, top = (k * 37) % (w - cw + 1), (k * 23) % (h - ch + 1)
        view = image.crop((left, top, left + cw, top + ch)).resize((112, int(112 * ch / cw)))
        views.append(view.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if k % 2 else view)
    return views


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """DATA/<class>/*.jpg|png: 6 real photos per class (skimage's cat, espresso cup and rocket),
    and NEW/<class>.jpg: one more view of each, never seen in training."""
    from skimage import data
    root = tmp_path_factory.mktemp("photos")
    for name, source in PHOTOS.items():
        (root / "data" / name).mkdir(parents=True)
        for i, view in enumerate(_variants(getattr(data, source)(), 6, 0)):
            view.save(root / "data" / name / f"{i}.{'jpg' if i % 2 else 'png'}")
        (root / "new").mkdir(exist_ok=True)
        _variants(getattr(data, source)(), 1, 7)[0].save(root / "new" / f"{name}.jpg")
    return root


def _run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    full = {**os.environ, "TORCH_HOME": os.environ["TORCH_HOME"], **(env or {})}
    return subprocess.run([sys.executable, "-m", "transferlearn", *args], capture_output=True, text=True,
                          cwd=ROOT, env=full, timeout=600)


@pytest.mark.slow          # four fresh interpreters and a training run: about 30 s on 2 idle cores
@pytest.mark.pretrained
def test_fit_then_predict_evaluate_and_export_in_other_processes(photos, tmp_path, mobilenet_weights):
    run = tmp_path / "run"
    done = _run("fit", str(photos / "data"), "--out", str(run), "--weights", "IMAGENET1K_V1", "--epochs", "2",
                "--image-size", "64", "--batch-size", "8", "--val-fraction", "0.34", "--workers", "0")
    assert done.returncode == 0, done.stderr
    assert "strategy feature_extraction (2 warm-up + 0 fine-tune epochs)" in done.stdout
    assert {"classifier.json", "history.json", "metrics.json", "curves.png", "confusion_matrix.png"} <= \
        {p.name for p in run.iterdir()}
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["count"] == 6 and metrics["classes"] == sorted(PHOTOS) and metrics["best_epoch"] in (1, 2)
    assert len(json.loads((run / "history.json").read_text())) == 2
    config = json.loads((run / "classifier.json").read_text())
    assert config["weights"] == "MobileNet_V2_Weights.IMAGENET1K_V1" and config["transform"]["size"] == 64

    new = [str(photos / "new" / f"{name}.jpg") for name in PHOTOS]
    done = _run("predict", str(run), *new, "--top-k", "2", "--json", env={"TORCH_HOME": str(tmp_path / "empty")})
    assert done.returncode == 0, done.stderr                     # no pretrained checkpoint needed to predict
    rows = json.loads(done.stdout)
    assert [r["path"] for r in rows] == new and all(len(r["top_k"]) == 2 for r in rows)
    expected = load_classifier(run).predict_proba(new)
    for row, probs in zip(rows, expected):
        assert row["probability"] == pytest.approx(float(probs.max()), abs=1e-6)
    assert [r["class"] for r in rows] == list(PHOTOS)         # a new view of each photo, classified right

    done = _run("evaluate", str(run), str(photos / "data"), "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert {"accuracy", "per_class", "confusion_matrix"} <= set(report)
    assert sum(map(sum, report["confusion_matrix"])) == 18 and set(report["per_class"]) == set(PHOTOS)

    done = _run("export", str(run), "--onnx", str(tmp_path / "clf.onnx"))
    assert done.returncode == 0, done.stderr
    ort = pytest.importorskip("onnxruntime")
    clf = load_classifier(run)
    session = ort.InferenceSession(str(tmp_path / "clf.onnx"), providers=["CPUExecutionProvider"])
    from transferlearn.data.images import load_image
    batch = torch.stack([clf.transform(load_image(p)) for p in new]).numpy()        # the ONNX recipe
    assert np.abs(session.run(None, {"input": batch})[0] - expected.numpy()).max() <= 1e-4


def test_fit_without_pretrained_weights_writes_a_complete_run(photos, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["fit", str(photos / "data"), "--out", str(run), "--weights", "none", "--epochs", "1",
                 "--image-size", "32", "--workers", "0", "--strategy", "fine_tune_all"]) == 0
    out = capsys.readouterr().out
    assert "strategy fine_tune_all (1 warm-up + 0 fine-tune epochs)" in out and "saved the classifier" in out
    assert {"classifier.json", "history.json", "metrics.json", "curves.png", "confusion_matrix.png",
            "top_losses.png"} <= {p.name for p in run.iterdir()}
    assert load_classifier(run).config.weights is None
    assert main(["predict", str(run), str(photos / "new" / "cat.jpg")]) == 0
    line = capsys.readouterr().out.strip()
    path, name, probability = line.split("\t")
    assert path.endswith("cat.jpg") and name in PHOTOS and 0 < float(probability) <= 1


def test_predict_tta_prints_the_classifiers_tta_probabilities(photos, run_dir, capsys, monkeypatch):
    from transferlearn.ship import _tta
    new = sorted(str(p) for p in (photos / "new").iterdir())
    viewed = []
    real = _tta.views
    monkeypatch.setattr(_tta, "views", lambda image, tf: viewed.append(1) or real(image, tf))
    assert main(["predict", str(run_dir), *new, "--json", "--tta", "--top-k", "3"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(viewed) == len(new)                                       # every image, through its views
    clf = load_classifier(run_dir)
    got = torch.tensor([[dict(r["top_k"])[c] for c in clf.classes] for r in rows])
    torch.testing.assert_close(got, clf.predict_proba(new, tta=True), rtol=0, atol=1e-7)
    viewed.clear()
    assert main(["predict", str(run_dir), *new, "--json"]) == 0 and viewed == []   # off by default
    capsys.readouterr()


@pytest.mark.parametrize("name, epochs, expected", [
    ("auto", None, ("feature_extraction", recommend_strategy(6).warmup_epochs, 0)),
    ("auto", 3, ("feature_extraction", 3, 0)),
    ("fine_tune_last", None, ("fine_tune_last", 2, 3)), ("fine_tune_last", 1, ("fine_tune_last", 1, 0)),
    ("fine_tune_all", 2, ("fine_tune_all", 1, 1)), ("fine_tune_all", 10, ("fine_tune_all", 4, 6)),
    ("feature_extraction", 4, ("feature_extraction", 4, 0)),
])
def test_strategy_and_epochs(name, epochs, expected):
    strategy = _strategy(name, 6, epochs)
    assert (strategy.kind, strategy.warmup_epochs, strategy.finetune_epochs) == expected


@pytest.mark.parametrize("name, smallest", [("feature_extraction", 50_000), ("feature_extraction", 300),
                                            ("fine_tune_last", 6), ("fine_tune_all", 6), ("auto", 300)])
def test_a_named_strategy_is_that_row_with_the_data_size_brought_into_it(name, smallest):
    strategy = _strategy(name, smallest, None)
    expected = recommend_strategy(smallest) if name == "auto" else None
    assert strategy.kind == (expected.kind if expected else name)
    if name == "feature_extraction":                   # head epochs follow the size, within the row
        assert strategy == recommend_strategy(min(smallest, 29))


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("run")
    save_classifier(load_model("mobilenet_v2", weights=None, num_classes=3), path, classes=sorted(PHOTOS),
                    transform=imagenet_transform(size=32, resize=36))
    return path


def _error_cases(photos: Path, run_dir: Path, tmp: Path) -> list[tuple[list[str], str]]:
    (tmp / "file.txt").write_text("x")
    (tmp / "empty").mkdir()
    (tmp / "busy").mkdir()
    (tmp / "busy" / "keep.txt").write_text("x")
    (tmp / "other" / "dog").mkdir(parents=True)
    Image.new("RGB", (40, 40)).save(tmp / "other" / "dog" / "a.png")
    (tmp / "broken.jpg").write_bytes(b"\xff\xd8\xff broken")
    data, new = str(photos / "data"), str(photos / "new" / "cat.jpg")
    return [
        (["fit", str(tmp / "nowhere"), "--out", str(tmp / "r1"), "--weights", "none"], r"image folder '.*nowhere' does not exist"),
        (["fit", str(tmp / "file.txt"), "--out", str(tmp / "r2"), "--weights", "none"], r"image folder '.*file.txt' is a file"),
        (["fit", str(tmp / "empty"), "--out", str(tmp / "r3"), "--weights", "none"], r"has no class folders"),
        (["fit", data, "--out", str(tmp / "r4"), "--arch", "resnet9000"], r"arch='resnet9000' is not a torchvision model"),
        (["fit", data, "--out", str(tmp / "busy"), "--weights", "none"], r"--out '.*busy' exists and is not empty"),
        (["fit", data, "--out", str(tmp / "file.txt"), "--weights", "none"], r"--out '.*file.txt' is a file"),
        (["fit", data, "--out", str(tmp / "r5"), "--weights", "IMAGENET9K"], r"weights='IMAGENET9K' is not one of mobilenet_v2's weights"),
        (["fit", data, "--out", str(tmp / "r6"), "--strategy", "magic"], r"argument --strategy: invalid choice: 'magic'.*\(see 'transferlearn fit --help'\)"),
        (["fit", data], r"the following arguments are required: --out"),
        (["fit", data, "--out", str(tmp / "r7"), "--weights", "none", "--val-fraction", "1.5"], r"val_fraction must be >= 0 and < 1 \(some images must train\), got 1.5"),
        (["fit", data, "--out", str(tmp / "r8"), "--epochs", "0"], r"argument --epochs: must be an integer >= 1, got 0"),
        (["evaluate", str(tmp / "empty"), data], r"'.*empty' is not a saved classifier: it has no classifier.json"),
        (["evaluate", str(tmp / "nowhere"), data], r"directory='.*nowhere' does not exist"),
        (["evaluate", str(tmp / "file.txt"), data], r"directory='.*file.txt' exists and is not a directory"),
        (["evaluate", str(run_dir), str(tmp / "other")], r"has class folders the classifier does not know: \['dog'\]"),
        (["predict", str(run_dir), str(tmp / "broken.jpg")], r"cannot read image '.*broken.jpg'"),
        (["predict", str(run_dir), str(tmp / "empty")], r"Is a directory.*empty"),
        (["predict", str(run_dir), str(tmp / "missing.jpg")], r"No such file or directory.*missing.jpg"),
        (["predict", str(run_dir), new, "--top-k", "9"], r"top_k must be an int in \[1, 3\], got 9"),
        (["predict", str(run_dir), new, "--top-k", "zero"], r"argument --top-k: invalid _positive value: 'zero'"),
        (["predict", str(tmp / "empty"), new], r"is not a saved classifier"),
        (["export", str(tmp / "empty"), "--onnx", str(tmp / "x.onnx")], r"is not a saved classifier"),
        ([], r"the following arguments are required: COMMAND"),
        (["recommend", "0"], r"images_per_class must be an int >= 1, got 0"),
    ]


def test_every_error_is_one_line_and_status_2(photos, run_dir, tmp_path, capsys):
    import re
    for argv, pattern in _error_cases(photos, run_dir, tmp_path):
        assert main(argv) == 2, argv
        captured = capsys.readouterr()
        err = captured.err.strip()
        assert "\n" not in err and err.startswith("transferlearn: error: "), (argv, captured.err)
        assert re.search(pattern, err), (argv, err)
        assert "Traceback" not in captured.err + captured.out


def test_errors_in_a_real_process_print_no_traceback(tmp_path):
    (tmp_path / "file.txt").write_text("x")
    done = _run("fit", str(tmp_path / "file.txt"), "--out", str(tmp_path / "r"), "--weights", "none")
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("transferlearn: error: image folder"), done.stderr


def test_missing_pretrained_weights_is_one_line(photos, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))      # an empty cache
    assert main(["fit", str(photos / "data"), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "weights MobileNet_V2_Weights.IMAGENET1K_V2 are not in the torch hub cache" in err
    assert not (tmp_path / "run").exists()


def test_recommend_prints_the_strategy(capsys):
    assert main(["recommend", "20"]) == 0
    out = capsys.readouterr().out
    assert "kind             feature_extraction" in out and "head_lr          0.001" in out
    assert main(["recommend", "300"]) == 0
    assert "kind             fine_tune_all" in capsys.readouterr().out


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


def test_install_weights_says_already_installed_and_refuses_a_different_file_without_force(tmp_path, capsys,
                                                                                          monkeypatch):
    """review finding 2: install-weights replaced a checkpoint already in the cache."""
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))
    (tmp_path / "a.pth").write_bytes(b"first")
    (tmp_path / "b.pth").write_bytes(b"second")
    name, target = "ResNet18_Weights.IMAGENET1K_V1", tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    assert main(["install-weights", str(tmp_path / "a.pth"), name, "--no-check-hash"]) == 0
    assert capsys.readouterr().out.startswith(f"installed {name} -> ")
    assert main(["install-weights", str(tmp_path / "a.pth"), name, "--no-check-hash"]) == 0
    assert capsys.readouterr().out == f"{name} is already installed: {target}\n"
    assert main(["install-weights", str(tmp_path / "b.pth"), name, "--no-check-hash"]) == 2
    err = capsys.readouterr().err
    assert err == (f"transferlearn: error: {target} already holds a different checkpoint of {name}; pass --force "
                   "to replace it\n") and target.read_bytes() == b"first"
    assert main(["install-weights", str(tmp_path / "b.pth"), name, "--no-check-hash", "--force"]) == 0
    assert target.read_bytes() == b"second" and "installed" in capsys.readouterr().out
    assert main(["fit", str(tmp_path / "data"), "--out", str(tmp_path / "run"), "--arch", "resnet18",
                 "--weights", "IMAGENET1K_V1"]) == 2                # b"second" is no checkpoint: named, reinstall
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"the cached checkpoint {target} of {name} cannot be loaded" in err
    assert f"transferlearn install-weights FILE {name} --force" in err


def test_python_dash_m():
    done = subprocess.run([sys.executable, "-m", "transferlearn", "recommend", "5000", "--different-domain"],
                          capture_output=True, text=True, check=True)
    assert "fine_tune_all" in done.stdout and "different domain" in done.stdout


# --- issue 13.5 / 13.9 / 13.15: the run stays out of the data; --seed makes fit reproducible ---------------------

def _tiny_fit(data: Path, out: Path, *extra: str) -> list[str]:
    return ["fit", str(data), "--out", str(out), "--weights", "none", "--arch", "mobilenet_v3_small",
            "--epochs", "2", "--strategy", "fine_tune_all", "--image-size", "32", "--batch-size", "8",
            "--workers", "0", *extra]


def test_fit_refuses_an_out_inside_the_data_folder(photos, tmp_path, capsys):
    """issue 13.5: `fit data --out data/run` worked, and the next `fit data` trained on a class `run`."""
    data = tmp_path / "data"
    for name in PHOTOS:
        (data / name).mkdir(parents=True)
        for image in (photos / "data" / name).iterdir():
            (data / name / image.name).write_bytes(image.read_bytes())
    for out in (data / "run", data, data / "cat" / "deeper" / "run"):
        assert main(_tiny_fit(data, out)) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and re.search(r"--out '.*' is inside DATA_DIR '.*data': the next fit would read "
                                                  r"the run's files as images", err), err
    assert sorted(p.name for p in data.iterdir()) == sorted(PHOTOS)      # nothing was created
    assert not (data / "cat" / "deeper").exists()


def test_a_one_class_folder_is_refused_before_any_training(photos, tmp_path, capsys, monkeypatch):
    """issue 13.15: a one-class folder failed only after training had run."""
    (tmp_path / "data" / "cat").mkdir(parents=True)
    for image in (photos / "data" / "cat").iterdir():
        (tmp_path / "data" / "cat" / image.name).write_bytes(image.read_bytes())
    monkeypatch.setattr(Trainer, "fit", lambda *a, **k: pytest.fail("training started"))
    assert main(_tiny_fit(tmp_path / "data", tmp_path / "run")) == 2
    err = capsys.readouterr().err
    assert "found 1 class folder(s) ('cat': 6 images); a classifier needs at least 2 classes" in err
    assert not (tmp_path / "run").exists()


def test_fit_with_the_same_seed_twice_gives_bitwise_the_same_weights(photos, tmp_path, capsys):
    """issue 13.9: the new head (and, with --weights none, the whole model) was drawn before anything was
    seeded, so `fit --seed 0` twice gave different weights."""
    runs = [tmp_path / "a", tmp_path / "b", tmp_path / "c"]
    for run, seed in zip(runs, ("0", "0", "1")):
        assert main(_tiny_fit(photos / "data", run, "--seed", seed)) == 0, capsys.readouterr().err
    weights = [{p.name: p.read_bytes() for p in run.glob("model-*.safetensors")} for run in runs]
    assert len(weights[0]) == 1 and weights[0] == weights[1]             # same name (its SHA-256) and bytes
    assert weights[2] != weights[0]                                      # the seed is what decides
    histories = [json.loads((run / "history.json").read_text()) for run in runs[:2]]
    assert [[r["phase"] for r in h] for h in histories] == [["warmup", "finetune"]] * 2
    assert [r["train_loss"] for r in histories[0]] == [r["train_loss"] for r in histories[1]]


def test_a_timm_model_gets_its_own_preprocessing_in_the_run_and_the_saved_classifier(photos, tmp_path, capsys):
    """issue 14: the CLI fell back to ImageNet statistics and 256/224 resizing for any timm model.
    timm's test_convnext.r160_in1k declares mean/std 0.5, crop_pct 0.95 and bicubic."""
    timm = pytest.importorskip("timm")
    from timm.data import resolve_data_config

    import transferlearn as tl
    out = tmp_path / "run"
    args = ["fit", str(photos / "data"), "--out", str(out), "--weights", "none", "--arch",
            "timm/test_convnext.r160_in1k", "--epochs", "2", "--strategy", "fine_tune_all", "--image-size", "32",
            "--batch-size", "8", "--workers", "0"]
    assert main(args) == 0, capsys.readouterr().err
    saved = json.loads((out / "classifier.json").read_text())["transform"]
    config = resolve_data_config({}, model=timm.create_model("test_convnext.r160_in1k", pretrained=False))
    assert saved["mean"] == pytest.approx(list(config["mean"])) and saved["mean"] == pytest.approx([0.5] * 3)
    assert saved["std"] == pytest.approx(list(config["std"]))
    assert saved["interpolation"] == config["interpolation"] == "bicubic"
    assert (saved["size"], saved["resize"]) == (32, int(32 / config["crop_pct"]))    # timm's crop, at 32 px
    assert tl.load_classifier(out).transform.mean == saved["mean"]


def test_the_docs_name_exactly_the_files_fit_force_replaces():
    """review finding 3: the list of the run's own files is one constant, the claim's refusal and cli.md say it."""
    from transferlearn.cli._runfile import RUN_FILES, run_files_sentence
    text = " ".join((ROOT / "docs" / "cli.md").read_text().split())
    assert f"replaces exactly the run's own files, RUN_FILES: {run_files_sentence()} (" in text
    assert {"log.csv", "run.json", "checkpoints/", "report.html", "classifier.json"} <= set(RUN_FILES)
