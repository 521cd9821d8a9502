"""The shipping layer and the command line under hostile inputs (issue 13): nothing lost, nothing
downloaded, nothing misread. Each test failed on 0.2.0 before its fix (see docs/reliability.md)."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import transferlearn.cli.commands as commands
from transferlearn import imagenet_transform, load_model
from transferlearn.base import _host_id, atomic_write
from transferlearn.cli import main
from transferlearn.data.images import ImageReadError, load_image
from transferlearn.ship import _inputs
from transferlearn.ship.claim import CLAIM_NAME
from transferlearn.ship.classifier import load_classifier, save_classifier

ROOT = Path(__file__).parents[1]
CLASSES = ["cat", "cup", "rocket"]
TF = imagenet_transform(size=32, resize=36)


def _photos(n: int, size=(60, 48)) -> list[Image.Image]:
    """Real photos (skimage), cropped and turned so that each differs."""
    from skimage import data
    sources = [data.chelsea(), data.coffee(), data.astronaut(), data.rocket()]
    return [Image.fromarray(sources[i % 4]).rotate(17 * i).resize(size) for i in range(n)]


def _informative(num_classes: int = 3) -> torch.nn.Module:
    """MobileNetV2 (random init) whose outputs depend on the image: BatchNorm statistics of real
    photos and a scaled-up head, so probabilities are far from uniform and differ per image."""
    torch.manual_seed(0)
    model = load_model("mobilenet_v2", weights=None, num_classes=num_classes)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.momentum = None
    with torch.no_grad():
        model.train()(torch.stack([TF(im) for im in _photos(8)]))
        model.classifier[1].weight.mul_(20)
    return model.eval()


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("clf") / "run"
    save_classifier(_informative(), path, classes=CLASSES, transform=TF)
    return path


@pytest.fixture
def run(saved, tmp_path) -> Path:
    """A private copy of the saved classifier."""
    return Path(shutil.copytree(saved, tmp_path / "run"))


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """DATA/<class>/*.png: 4 small photos per class."""
    root = tmp_path_factory.mktemp("data")
    for c, name in enumerate(CLASSES):
        (root / name).mkdir()
        for k, image in enumerate(_photos(4 * c + 4)[4 * c:]):
            image.save(root / name / f"{k}.png")
    return root


def _fit(data: Path, out: Path, *extra: str) -> list[str]:
    return ["fit", str(data), "--out", str(out), "--weights", "none", "--epochs", "1", "--image-size", "32",
            "--workers", "0", "--val-fraction", "0.25", "--strategy", "fine_tune_all", *extra]


def _edit(directory: Path, **changes) -> None:
    path = directory / "classifier.json"
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


def _one_error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("transferlearn: error: ") and "Traceback" not in err, err
    return err


def _dead_pid() -> int:
    """The pid of a process that has ended."""
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True)
    return int(done.stdout)


def _python(script: str, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(script)], cwd=ROOT, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kwargs)


# --- 1. export never overwrites a file without being told, never the classifier's own -------

def test_export_refuses_an_existing_file_and_the_classifiers_own_files(run, tmp_path, capsys):
    pytest.importorskip("onnx")
    from transferlearn.ship.onnx_export import export_onnx
    clf = load_classifier(run)
    config_bytes = (run / "classifier.json").read_bytes()
    other = tmp_path / "other.onnx"
    other.write_bytes(b"someone's model")
    with pytest.raises(FileExistsError, match=r"path='.*other.onnx' exists; pass overwrite=True to replace it"):
        export_onnx(clf, other)
    (tmp_path / "alias.json").symlink_to(run / "classifier.json")
    os.link(run / clf.config.weights_file, tmp_path / "hardlink.bin")
    for target, name in [(run / "classifier.json", "classifier.json"), (run / clf.config.weights_file, "model-"),
                         (tmp_path / "alias.json", "classifier.json"), (tmp_path / "hardlink.bin", "model-"),
                         (run / "metrics.json", "metrics.json")]:
        with pytest.raises(ValueError, match=rf"path='.*' is the {name}.* of the classifier being exported"):
            export_onnx(clf, target, overwrite=True)
    with pytest.raises(IsADirectoryError, match=r"is a directory"):
        export_onnx(clf, tmp_path, overwrite=True)
    assert main(["export", str(run), "--onnx", str(run / "classifier.json"), "--force"]) == 2
    assert "is the classifier.json of the classifier being exported" in _one_error(capsys)
    assert main(["export", str(run), "--onnx", str(other)]) == 2
    assert f"--onnx '{other}' exists; pass --force to replace it" in _one_error(capsys)
    assert (run / "classifier.json").read_bytes() == config_bytes and other.read_bytes() == b"someone's model"
    load_classifier(run)                                       # the run is alive


def test_evaluate_html_refuses_an_existing_file_and_never_writes_a_file_of_the_classifier(run, folder, tmp_path,
                                                                                          capsys):
    """review finding 1: `evaluate --html FILE` replaced any file, the run's classifier.json too."""
    own = {name: (run / name).read_bytes() for name in os.listdir(run)}
    notes, image = tmp_path / "notes.txt", folder / "cat" / "0.png"
    notes.write_text("my notes")
    image_bytes = image.read_bytes()
    (tmp_path / "alias.json").symlink_to(run / "classifier.json")
    for target in (notes, image):
        assert main(["evaluate", str(run), str(folder), "--html", str(target)]) == 2
        assert f"--html '{target}' exists; pass --force to replace it" in _one_error(capsys)
    weights = load_classifier(run).config.weights_file
    for target, name in [(run / "classifier.json", "classifier.json"), (run / weights, "model-"),
                         (tmp_path / "alias.json", "classifier.json")]:
        assert main(["evaluate", str(run), str(folder), "--html", str(target), "--force"]) == 2
        assert re.search(rf"--html='.*' is the {name}.* of the classifier being evaluated", _one_error(capsys))
    assert {name: (run / name).read_bytes() for name in os.listdir(run)} == own
    assert notes.read_text() == "my notes" and image.read_bytes() == image_bytes
    assert main(["evaluate", str(run), str(folder), "--html", str(notes), "--force"]) == 0   # told to: replaced
    assert notes.read_text().startswith("<!DOCTYPE html>")
    capsys.readouterr()
    load_classifier(run)                                       # the run is alive


def test_overwrite_true_replaces_the_file_atomically(run, tmp_path, monkeypatch):
    onnx = pytest.importorskip("onnx")
    import transferlearn.ship.onnx_export as module
    proto = onnx.helper.make_model(onnx.helper.make_graph([], "g", [], []))
    monkeypatch.setattr(module, "_export_bytes", lambda *a: proto)          # the exporter is tested elsewhere
    monkeypatch.setattr(onnx.checker, "check_model", lambda p: None)
    target = tmp_path / "clf.onnx"
    target.write_bytes(b"old")
    module.export_onnx(load_classifier(run), target, overwrite=True)
    assert onnx.load(str(target)).graph.name == "g"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clf.onnx", "run"]             # no temporary file left


# --- 2. one writer per directory; the temp-file sweep never deletes a live writer's file -------

def test_a_second_fit_is_refused_while_the_first_holds_out_and_force_takes_over_a_dead_one(folder, tmp_path,
                                                                                          capsys):
    from transferlearn.ship.claim import claimed
    out = tmp_path / "run"
    held, release = threading.Event(), threading.Event()

    def first_fit():                          # holds --out, writes a file, then dies mid-save
        with pytest.raises(KeyboardInterrupt), claimed(out, "transferlearn fit"):
            held.set()
            release.wait(60)
            (out / "model-0123456789ab.safetensors").write_bytes(b"half")
            raise KeyboardInterrupt
    thread = threading.Thread(target=first_fit)
    thread.start()
    try:
        assert held.wait(30)
        assert main(_fit(folder, out)) == 2
        err = _one_error(capsys)
        assert f"'{out}' is being written by transferlearn fit, started " in err and f"pid {os.getpid()}" in err
        assert main(_fit(folder, out, "--force")) == 2              # never over a live writer
        assert "is being written by transferlearn fit" in _one_error(capsys)
    finally:
        release.set()
        thread.join(60)
    assert main(_fit(folder, out)) == 2                             # it died: an interrupted save
    err = _one_error(capsys)
    assert "holds an interrupted save (transferlearn fit, started " in err and "no longer running" in err
    assert "rerun with --force" in err
    assert main(_fit(folder, out, "--force")) == 0
    assert "saved the classifier" in capsys.readouterr().out
    assert not (out / CLAIM_NAME).exists() and load_classifier(out).classes == tuple(CLASSES)


def test_a_fit_killed_before_it_wrote_anything_is_taken_over_without_force(folder, tmp_path, capsys):
    from transferlearn.ship.claim import _create
    out = tmp_path / "run"
    out.mkdir()
    assert _create(out, "transferlearn fit") is not None       # what a fit killed while training leaves
    assert main(_fit(folder, out)) == 0, capsys.readouterr().err
    assert not (out / CLAIM_NAME).exists() and load_classifier(out).classes == tuple(CLASSES)


def test_only_one_of_two_racing_writers_gets_the_claim(tmp_path):
    from transferlearn.ship.claim import ClaimedError, _acquire
    out = tmp_path / "run"
    out.mkdir()
    barrier, results = threading.Barrier(8), []

    def race():
        barrier.wait()
        try:
            results.append(_acquire(out, "w", False))
        except ClaimedError:
            results.append(None)
    threads = [threading.Thread(target=race) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sum(r is not None for r in results) == 1


def test_a_finished_run_is_refused_without_force_and_force_replaces_only_its_files(folder, tmp_path, capsys):
    """review findings 3, 20: every run holds log.csv, and CSVLogger refused the old one, so --force was refused;
    --force replaces exactly the run's own files (``RUN_FILES``: a picture the new run does not draw goes too)."""
    from transferlearn.cli._runfile import run_files_sentence
    out = tmp_path / "run"
    assert main(_fit(folder, out)) == 0
    (out / "notes.txt").write_text("mine")
    (out / "model-00001-of-00002.safetensors").write_bytes(b"someone's shard")
    first = json.loads((out / "classifier.json").read_text())["weights_file"]
    old_log = (out / "log.csv").read_text()
    capsys.readouterr()
    assert main(_fit(folder, out, "--seed", "1")) == 2
    assert (f"exists and is not empty; give a new folder for the run, or pass --force to save into it (the run's "
            f"own files, {run_files_sentence()}, are replaced; every other file is kept)") in _one_error(capsys)
    assert main(_fit(folder, out, "--seed", "1", "--force", "--val-fraction", "0")) == 0, capsys.readouterr().err
    names = {p.name for p in out.iterdir()}
    second = json.loads((out / "classifier.json").read_text())["weights_file"]
    assert second != first and second in names and first not in names and "notes.txt" in names
    assert (out / "model-00001-of-00002.safetensors").read_bytes() == b"someone's shard"
    assert "confusion_matrix.png" not in names and "top_losses.png" not in names     # no validation this time
    log = (out / "log.csv").read_text()
    assert log != old_log and log.count("\nbest,") <= 1 and log.startswith("kind,step,epoch")   # this run's rows only
    assert not [n for n in names if n.endswith(".tmp") or n.startswith(CLAIM_NAME)]


def _killed_fit(out: Path, *, checkpoint: bool) -> int:
    """What a fit killed in training leaves: its dead claim, log.csv, run.json (and its checkpoint)."""
    pid = _dead_pid()
    out.mkdir()
    (out / CLAIM_NAME).write_text(json.dumps({"pid": pid, "host": socket.gethostname(), "started": "2026-01-01 "
                                              "10:00:00", "what": "transferlearn fit", "token": "0123"}))
    (out / "log.csv").write_text("kind,step\nstep,1\n")
    (out / "run.json").write_text("{}")
    if checkpoint:
        (out / "checkpoints").mkdir()
        (out / "checkpoints" / "last.pt").write_bytes(b"checkpoint")
    return pid


@pytest.mark.parametrize("checkpoint", [True, False])
def test_a_fit_killed_in_training_is_named_with_resume_and_force(folder, tmp_path, capsys, checkpoint):
    """review finding 19: a fit killed in training (marker, log.csv, run.json, checkpoints) was reported as
    "an interrupted save ... rerun with --force"; cli.md promised that the next fit takes it over."""
    out = tmp_path / "run"
    pid = _killed_fit(out, checkpoint=checkpoint)
    before = sorted(p.name for p in out.iterdir())
    assert main(_fit(folder, out)) == 2
    err = _one_error(capsys)
    if checkpoint:
        assert f"--out '{out}' holds an interrupted fit (killed in training, pid {pid}): continue it with --resume, " \
               "or start again with --force" in err, err
    else:
        assert f"--out '{out}' holds an interrupted fit (killed in training, pid {pid}, before its first checkpoint)" \
               ": start again with --force" in err, err
    assert sorted(p.name for p in out.iterdir()) == before                   # nothing touched
    assert main(_fit(folder, out, "--force")) == 0, capsys.readouterr().err
    assert load_classifier(out).classes == tuple(CLASSES) and not (out / "checkpoints").exists()
    assert not (out / CLAIM_NAME).exists() and "step,1\n" not in (out / "log.csv").read_text()


def test_a_refused_fit_leaves_no_folder_behind(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["fit", str(tmp_path / "nowhere"), "--out", str(out), "--weights", "none"]) == 2
    assert "does not exist" in _one_error(capsys) and not out.exists()
    deep = tmp_path / "new" / "deeper" / "run"             # review (minor): the parents it created stayed
    assert main(["fit", str(tmp_path / "nowhere"), "--out", str(deep), "--weights", "none"]) == 2
    assert "does not exist" in _one_error(capsys) and sorted(p.name for p in tmp_path.iterdir()) == []


def test_a_claim_released_empty_removes_the_parents_it_created(tmp_path):
    from transferlearn.ship.claim import claimed
    deep = tmp_path / "a" / "b" / "run"
    with pytest.raises(ValueError, match="boom"), claimed(deep, "test"):
        raise ValueError("boom")
    assert not (tmp_path / "a").exists()
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "keep.txt").write_text("x")
    with pytest.raises(ValueError, match="boom"), claimed(deep, "test"):
        raise ValueError("boom")
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["keep.txt"]   # only what it created goes


def test_workers_beyond_four_times_the_cpus_are_refused(folder, tmp_path, capsys):
    """review (minor): --workers had no upper bound (--workers 100000 forked until the machine gave up)."""
    limit = 4 * (os.cpu_count() or 1)
    for argv in (_fit(folder, tmp_path / "run", "--workers", str(limit + 1)),
                 ["lr-find", str(folder), "--weights", "none", "--workers", str(limit + 1)]):
        assert main(argv) == 2
        assert f"argument --workers: must be an integer in [0, {limit}]" in _one_error(capsys)
    assert main(_fit(folder, tmp_path / "run", "--workers", "-1")) == 2
    assert f"must be an integer in [0, {limit}]" in _one_error(capsys) and not (tmp_path / "run").exists()


def test_the_temp_sweep_never_deletes_a_live_writers_file(tmp_path, monkeypatch):
    target = tmp_path / "weights.bin"
    started, release = threading.Event(), threading.Event()
    errors = []

    def slow_write(f):
        f.write(b"first writer")
        started.set()
        release.wait(60)

    def first():
        try:
            atomic_write(target, slow_write)
        except Exception as error:            # noqa: BLE001 - reported below
            errors.append(error)
    thread = threading.Thread(target=first)
    thread.start()
    assert started.wait(30)
    dead = tmp_path / f".weights.bin.{_host_id()}-{_dead_pid()}.0123456789ab.tmp"
    dead.write_bytes(b"left by a killed writer")
    with monkeypatch.context() as m:          # a second process (another pid) writes the same file
        m.setattr(os, "getpid", lambda: 4_000_000)
        atomic_write(target, lambda f: f.write(b"second writer"))
    release.set()
    thread.join(60)
    assert errors == [] and target.read_bytes() == b"first writer"          # both finished; last one wins
    assert not dead.exists() and not list(tmp_path.glob(".*.tmp"))


# --- 3. a re-save deletes only what the previous classifier wrote -------------------------------

def test_a_resave_deletes_only_the_previous_classifiers_weights(tmp_path):
    keep = {"model-00001-of-00002.safetensors": b"a sharded model of someone else",
            "model-0123456789ab.safetensors": b"not written by this library"}
    for name, data in keep.items():
        (tmp_path / name).write_bytes(data)
    save_classifier(_informative(), tmp_path, classes=CLASSES, transform=TF)
    first = load_classifier(tmp_path).config.weights_file
    model = _informative()
    with torch.no_grad():
        model.classifier[1].bias.add_(1)
    save_classifier(model, tmp_path, classes=CLASSES, transform=TF)
    names = {p.name for p in tmp_path.iterdir()}
    assert first not in names and load_classifier(tmp_path).config.weights_file in names
    for name, data in keep.items():
        assert (tmp_path / name).read_bytes() == data


def test_a_resave_without_history_or_metrics_removes_the_previous_ones(tmp_path):
    save_classifier(_informative(), tmp_path, classes=CLASSES, transform=TF, history=[{"epoch": 1}],
                    metrics={"accuracy": 0.9})
    config = json.loads((tmp_path / "classifier.json").read_text())
    assert config["files"] == [config["weights_file"], "history.json", "metrics.json"]
    save_classifier(_informative(), tmp_path, classes=CLASSES, transform=TF, metrics={"accuracy": 0.5})
    assert not (tmp_path / "history.json").exists()
    assert json.loads((tmp_path / "metrics.json").read_text()) == {"accuracy": 0.5}
    save_classifier(_informative(), tmp_path, classes=CLASSES, transform=TF)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["classifier.json", config["weights_file"]]


def test_a_history_or_metrics_file_of_unknown_origin_is_refused_not_kept(tmp_path):
    (tmp_path / "metrics.json").write_text('{"accuracy": 0.99}')
    with pytest.raises(ValueError, match=r"holds a metrics.json that no classifier saved here wrote; saving "
                                         r"without metrics= would leave it beside the new classifier"):
        save_classifier(_informative(), tmp_path, classes=CLASSES, transform=TF)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]


def test_a_0_1_classifier_still_loads_and_a_resave_replaces_only_its_weights(tmp_path):
    old = Path(shutil.copytree(ROOT / "tests" / "fixtures" / "classifier_v0_1", tmp_path / "old"))
    expected = json.loads((old / "expected.json").read_text())
    clf = load_classifier(old)
    assert clf.config.files is None
    probs = clf.predict_proba([old / "images" / name for name in expected["images"]])
    np.testing.assert_allclose(probs.numpy(), expected["probabilities"], rtol=1e-5, atol=1e-6)
    with torch.no_grad():
        clf.model.fc.bias.add_(1)
    save_classifier(clf.model, old, classes=clf.classes, transform=clf.transform)
    assert not (old / "model-76c60abda154.safetensors").exists()         # its bytes matched: ours
    assert (old / "expected.json").is_file() and len(list((old / "images").iterdir())) == 3


# --- 6. non-finite weights are refused at save and at load -----------------------------------

def test_non_finite_weights_are_refused_at_save_and_at_load(run, tmp_path):
    from safetensors.torch import load, save
    model = _informative()
    with torch.no_grad():
        model.classifier[1].weight[1, 7] = float("nan")
    with pytest.raises(ValueError, match=r"save_classifier refuses the model: tensor 'classifier.1.weight' holds "
                                         r"1 non-finite value\(s\) \(NaN or inf\) of 3840"):
        save_classifier(model, tmp_path / "out", classes=CLASSES, transform=TF)
    assert not (tmp_path / "out").exists()
    config = json.loads((run / "classifier.json").read_text())
    tensors = load((run / config["weights_file"]).read_bytes())
    tensors["features.0.1.running_var"][0] = float("inf")
    blob = save(tensors)
    (run / config["weights_file"]).write_bytes(blob)
    import hashlib
    _edit(run, sha256=hashlib.sha256(blob).hexdigest())            # a consistent, tampered file
    with pytest.raises(ValueError, match=r"model-[0-9a-f]{12}.safetensors is refused: tensor "
                                         r"'features.0.1.running_var' holds 1 non-finite"):
        load_classifier(run)


# --- 10. nothing in a classifier.json or a CLI call makes anything download --------------------

@pytest.fixture
def offline(monkeypatch, tmp_path):
    """An empty torch hub cache, and every way to the network raising."""
    def refuse(*args, **kwargs):
        raise AssertionError(f"a download was attempted: {args[:1]}")
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)


def test_non_classification_architectures_are_refused_before_anything_downloads(offline, run, capsys, folder,
                                                                                 tmp_path):
    import torchvision.models as tvm
    others = sorted(set(tvm.list_models()) - set(tvm.list_models(module=tvm)))
    assert {"fcn_resnet50", "fasterrcnn_resnet50_fpn", "raft_small", "r3d_18", "quantized_resnet18"} <= set(others)
    for arch in others:
        with pytest.raises(ValueError, match=rf"arch='{arch}' is a torchvision model but not an image classifier.*"
                                             r"load_model builds the 80 classification models"):
            load_model(arch, weights=None)
    _edit(run, arch="fcn_resnet50")
    with pytest.raises(ValueError, match=r"arch='fcn_resnet50' is a torchvision model but not an image classifier"):
        load_classifier(run)
    assert main(["fit", str(folder), "--out", str(tmp_path / "r"), "--arch", "fasterrcnn_resnet50_fpn",
                 "--weights", "none"]) == 2
    assert "arch='fasterrcnn_resnet50_fpn' is a torchvision model but not an image classifier" in _one_error(capsys)


def test_classification_builders_have_no_pretrained_backbone_to_fetch(offline):
    import inspect

    import torchvision.models as tvm
    for arch in tvm.list_models(module=tvm):
        names = set(inspect.signature(tvm.get_model_builder(arch)).parameters)
        assert names <= {"weights", "progress", "kwargs"}, (arch, names)
    for arch in ("mobilenet_v2", "resnet18", "squeezenet1_1"):
        load_model(arch, weights=None, num_classes=2)
    pytest.importorskip("timm")
    load_model("timm/resnet18", weights=None, num_classes=2)


# --- 11. model_kwargs from a file: structural options only --------------------------------------

@pytest.mark.parametrize("arch, kwargs, pattern", [
    ("timm/resnet18", {"checkpoint_path": "/etc/passwd"}, r"field 'model_kwargs.checkpoint_path' is not accepted: "
                                                          r"timm models may only be rebuilt with the structural options \["),
    ("timm/resnet18", {"pretrained_cfg_overlay": {"file": "/etc/passwd"}}, r"field 'model_kwargs.pretrained_cfg_overlay' is not accepted"),
    ("mobilenet_v2", {"weights_backbone": "DEFAULT"}, r"field 'model_kwargs.weights_backbone' is not accepted: torchvision models"),
    ("mobilenet_v2", {"dropout": {"p": 1}}, r"field 'model_kwargs.dropout' must be a number, string, bool, null or a flat list"),
    ("mobilenet_v2", {"aux_logits": True}, r"field 'model_kwargs' \{\"aux_logits\": true\} does not build 'mobilenet_v2' \("),
])
def test_model_kwargs_of_a_file_are_structural_options_only(run, arch, kwargs, pattern, offline):
    _edit(run, arch=arch, model_kwargs=kwargs)
    with pytest.raises(ValueError, match=r".*run/classifier.json: " + pattern):
        load_classifier(run)


def test_save_refuses_model_kwargs_that_would_not_load(tmp_path):
    model = _informative()
    with pytest.raises(ValueError, match=r"field 'model_kwargs.progress' is not accepted"):
        save_classifier(model, tmp_path / "out", classes=CLASSES, transform=TF, model_kwargs={"progress": False})
    assert not (tmp_path / "out").exists()


def test_a_tampered_model_kwargs_is_one_line_in_the_cli(run, capsys, offline):
    _edit(run, arch="timm/resnet18", model_kwargs={"checkpoint_path": "/etc/passwd"})
    assert main(["predict", str(run), "x.png"]) == 2
    assert "field 'model_kwargs.checkpoint_path' is not accepted" in _one_error(capsys)


# --- 12. sizes from a file and from an image are bounded ---------------------------------------

@pytest.mark.parametrize("key", ["size", "resize"])
def test_a_transform_size_beyond_4096_is_refused_naming_the_field(run, key):
    config = json.loads((run / "classifier.json").read_text())
    _edit(run, transform={**config["transform"], key: 10**6})
    with pytest.raises(ValueError, match=rf"classifier.json: field 'transform.{key}' must be an int in \[1, 4096\], "
                                         r"got 1000000"):
        load_classifier(run)
    with pytest.raises(ValueError, match=rf"field 'transform.{key}' must be an int in \[1, 4096\]"):
        save_classifier(_informative(), run.parent / "big", classes=CLASSES,
                        transform=imagenet_transform(size=5000 if key == "size" else 32, resize=5000))


def test_an_image_whose_resize_would_explode_is_refused_naming_it(saved, tmp_path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10**6)       # the bound load_image applies, made small
    Image.new("RGB", (5000, 1)).save(tmp_path / "strip.png")   # 36 x 180000 after the resize
    clf = load_classifier(saved)
    with pytest.raises(ImageReadError, match=r"cannot read image '.*strip.png': resizing its 5000 x 1 pixels to a "
                                             r"shorter side of 36 would make 6480000 pixels, over the limit of 1000000"):
        clf.predict([tmp_path / "strip.png"])
    with pytest.raises(ValueError, match=r"items\[1\]: resizing its 5000 x 1 pixels"):
        clf.predict([torch.rand(3, 40, 40), torch.zeros(3, 1, 5000, dtype=torch.uint8)])
    assert len(clf.predict([Image.new("RGB", (300, 100))])) == 1     # an ordinary ratio is fine


def test_an_image_size_beyond_4096_is_refused_by_the_cli(folder, tmp_path, capsys):
    assert main(["fit", str(folder), "--out", str(tmp_path / "r"), "--image-size", "100000"]) == 2
    assert "argument --image-size: must be an integer in [1, 4096], got 100000" in _one_error(capsys)


# --- 13. predict in the saved dtype --------------------------------------------------------------

@pytest.mark.parametrize("dtype, atol", [(torch.float64, 1e-5), (torch.float16, 2e-3), (torch.bfloat16, 1e-2)])
def test_a_classifier_predicts_in_its_saved_dtype(dtype, atol, tmp_path):
    torch.manual_seed(0)
    model = load_model("resnet18", weights=None, num_classes=3).eval()   # outputs differ per photo
    images = _photos(6)
    with torch.inference_mode():
        expected = model(torch.stack([TF(im) for im in images])).softmax(1)
    assert float(expected.max(1).values.std()) > 0.01 and float(expected.max()) > 0.4
    save_classifier(model.to(dtype), tmp_path, classes=CLASSES, transform=TF)
    clf = load_classifier(tmp_path)
    assert clf.config.dtype == str(dtype).split(".")[1] and next(clf.model.parameters()).dtype == dtype
    got = clf.predict_proba(images)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, expected, rtol=0, atol=atol)
    assert len(clf.predict(images, top_k=3)) == 6


# --- 14. user errors are one line; bugs keep their traceback ---------------------------------------

def test_out_of_memory_is_one_line_and_a_bug_keeps_its_traceback(folder, tmp_path, capsys, monkeypatch):
    def oom(*args, **kwargs):
        raise MemoryError
    monkeypatch.setattr(commands, "load_image_folder", oom)
    assert main(_fit(folder, tmp_path / "r")) == 2
    assert "out of memory (MemoryError); try a smaller --batch-size or --image-size" in _one_error(capsys)

    def bug(*args, **kwargs):
        raise TypeError("unsupported operand type(s) for +: 'int' and 'str'")
    monkeypatch.setattr(commands, "recommend_strategy", bug)
    with pytest.raises(TypeError, match=r"unsupported operand"):
        main(["recommend", "30"])


# --- 15. files and fields named; an interrupted save says so ------------------------------------

def test_a_binary_classifier_json_is_named(run):
    (run / "classifier.json").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)))
    with pytest.raises(ValueError, match=r".*run/classifier.json is not a UTF-8 text \(JSON\) file: byte 0 is b'\\x89'"):
        load_classifier(run)


def test_an_interrupted_save_is_named_by_later_commands(tmp_path, capsys, folder):
    out = tmp_path / "run"
    killed = _python(f"""
        import os
        import transferlearn.ship.classifier as c
        from transferlearn import imagenet_transform, load_model
        real = c.atomic_write
        def crash(path, write, **kw):
            if path.name == "classifier.json":
                os._exit(9)                                   # killed before the last file
            return real(path, write, **kw)
        c.atomic_write = crash
        c.save_classifier(load_model("mobilenet_v2", weights=None, num_classes=3), {str(out)!r},
                          classes=["a", "b", "c"], transform=imagenet_transform(size=32), metrics={{"a": 1}})
    """)
    assert killed.wait(120) == 9, killed.stderr.read()
    assert (out / CLAIM_NAME).is_file() and not (out / "classifier.json").exists()
    pattern = rf"holds an interrupted save \(save_classifier, started .*, pid {killed.pid}, no longer running\)"
    with pytest.raises(ValueError, match=pattern + r" and no classifier.json; rerun the save"):
        load_classifier(out)
    assert main(["predict", str(out), "x.png"]) == 2
    assert "holds an interrupted save (save_classifier" in _one_error(capsys)
    assert main(_fit(folder, out)) == 2
    assert "holds an interrupted save (save_classifier" in _one_error(capsys)
    save_classifier(_informative(), out, classes=CLASSES, transform=TF, metrics={"a": 2})   # takes it over
    assert load_classifier(out).classes == tuple(CLASSES) and not (out / CLAIM_NAME).exists()


# --- 16. the CLI names its own command for missing weights ----------------------------------------

def test_missing_weights_in_the_cli_names_install_weights(folder, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))
    assert main(["fit", str(folder), "--out", str(tmp_path / "r")]) == 2
    err = _one_error(capsys)
    assert "run: transferlearn install-weights FILE MobileNet_V2_Weights.IMAGENET1K_V2" in err
    assert "https://download.pytorch.org/models/mobilenet_v2-7ebf99e0.pth" in err
    assert "install_weights(" not in err and "download=True" not in err
    with pytest.raises(FileNotFoundError, match=r"install_weights\(file, MobileNet_V2_Weights.IMAGENET1K_V2\) or "
                                                r"pass download=True"):
        load_model("mobilenet_v2")                                # Python keeps the Python wording


# --- 17. predict decodes files in full by default, as every other reader -----------------------

def test_predict_and_evaluate_decode_in_full_by_default(saved, tmp_path, monkeypatch, capsys):
    from transferlearn import load_image_folder
    for c, name in enumerate(CLASSES):
        (tmp_path / name).mkdir()
        for k, image in enumerate(_photos(2, size=(400, 300))):
            image.rotate(40 * c).save(tmp_path / name / f"{k}.jpg", quality=90)
    paths = sorted(str(p) for p in tmp_path.rglob("*.jpg"))
    seen = []
    real = _inputs.predict                                       # predict_proba's loop
    monkeypatch.setattr(_inputs, "predict", lambda m, b, **k: seen.append(b) or real(m, b, **k))
    clf = load_classifier(saved)
    clf.predict_proba(paths)
    full = torch.stack([TF(load_image(p)) for p in paths])
    torch.testing.assert_close(seen.pop(), full, rtol=0, atol=0)
    clf.predict_proba(paths, draft=True)                       # opt-in: as load_image_folder decodes
    drafted = load_image_folder(tmp_path, val_fraction=0, size=32, resize=36, max_imbalance=None).train
    torch.testing.assert_close(seen.pop(), torch.stack([drafted[i][0] for i in range(len(paths))]), rtol=0, atol=0)
    assert main(["evaluate", str(saved), str(tmp_path), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    probs = clf.predict_proba(paths)
    labels = torch.tensor([CLASSES.index(Path(p).parent.name) for p in paths])
    loss = float(-probs[torch.arange(len(paths)), labels].log().mean())
    assert report["loss"] == pytest.approx(loss, rel=1e-5)


# --- 18. predict streams, shows progress, and stops quietly at a closed pipe ---------------------

def test_predict_streams_and_a_closed_stdout_ends_quietly(saved, tmp_path):
    deep = tmp_path / ("d" * 200)
    deep.mkdir()
    _photos(1)[0].save(deep / "photo.png")
    args = [str(deep / "photo.png")] * 400                   # ~100 KB of output: more than a pipe holds
    proc = subprocess.Popen([sys.executable, "-m", "transferlearn", "predict", str(saved), *args,
                             "--batch-size", "8"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"})
    first = proc.stdout.readline()                           # as `| head -1` reads
    running = proc.poll() is None
    proc.stdout.close()
    assert proc.wait(120) == 0
    err = proc.stderr.read()
    assert first.startswith(str(deep / "photo.png") + "\t") and running       # streamed: the rest still to come
    assert "Broken pipe" not in err and "Traceback" not in err and "Exception ignored" not in err, err


def test_fit_with_a_stdout_closed_after_the_first_line_trains_on_and_saves(folder, tmp_path):
    """review finding 7: `fit ... | head -1` abandoned the training at the first BrokenPipeError, exit 0."""
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "transferlearn", *_fit(folder, out, "--epochs", "3")], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"})
    first = proc.stdout.readline()                           # as `| head -1` reads
    proc.stdout.close()
    assert proc.wait(300) == 0
    err = proc.stderr.read()
    assert first.startswith("3 classes, ") and "Traceback" not in err and "Exception ignored" not in err, err
    assert load_classifier(out).classes == tuple(CLASSES) and len(json.loads((out / "history.json").read_text())) \
        == 3 and (out / "report.html").is_file() and not (out / CLAIM_NAME).exists()


def test_class_names_with_dollar_signs_are_drawn_as_written(tmp_path, capsys):
    """review finding 18: `under_$5` and `over_$10` crashed fit after it saved (matplotlib read mathtext)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.text import Text

    from transferlearn.train.history import plot_history
    data = tmp_path / "data"
    for c, name in enumerate(["under_$5", "over_$10", "$x$"]):
        (data / name).mkdir(parents=True)
        for k, image in enumerate(_photos(4 * c + 4)[4 * c:]):
            image.save(data / name / f"{k}.png")
    out = tmp_path / "run"
    assert main(_fit(data, out, "--epochs", "2")) == 0, capsys.readouterr().err
    assert load_classifier(out).classes == ("$x$", "over_$10", "under_$5")
    for name in ("curves.png", "confusion_matrix.png", "top_losses.png", "report.html"):
        assert (out / name).stat().st_size > 0, name
    history = json.loads((out / "history.json").read_text())
    records = history["records"] if isinstance(history, dict) else history
    runs_png = plot_history({"lr $1e-3$ _a": records, "under_$5": records}, tmp_path / "runs.png")
    report = load_classifier(out)
    from transferlearn.ship import _plots
    drawn = _plots.confusion_figure([[1, 0, 0], [0, 1, 1], [0, 0, 2]], report.classes, False)
    FigureCanvasAgg(drawn).draw()
    labels = [t.get_text() for t in drawn.findobj(Text) if "$" in t.get_text()]
    assert sorted(set(labels)) == ["$x$", "over_$10", "under_$5"]            # as written, not as math
    assert all(not t.get_parse_math() for t in drawn.findobj(Text))
    assert runs_png.stat().st_size > 0


def test_predict_progress_on_stderr_and_no_progress(saved, tmp_path, capsys, monkeypatch):
    _photos(1)[0].save(tmp_path / "a.png")
    images = [str(tmp_path / "a.png")] * 5
    monkeypatch.setattr(commands, "PROGRESS_EVERY", 2)
    assert main(["predict", str(saved), *images, "--batch-size", "2", "--json"]) == 0
    captured = capsys.readouterr()
    assert captured.err.splitlines() == ["predict: 2/5 files", "predict: 4/5 files", "predict: 5/5 files"]
    rows = json.loads(captured.out)
    assert len(rows) == 5 and all(r["path"] == images[0] for r in rows)
    assert main(["predict", str(saved), *images, "--batch-size", "2", "--no-progress"]) == 0
    captured = capsys.readouterr()
    assert captured.err == "" and len(captured.out.splitlines()) == 5


# ------------------------------------------------- a run directory's files are read only as regular files
def test_a_run_directorys_files_are_never_read_through_links_or_without_bound(run, tmp_path):
    """Second adversarial pass: classifier.json or history.json linked outside the run were read there,
    and a claim marker linked to /dev/zero was read until memory ran out."""
    from transferlearn import History
    outside = tmp_path / "outside.json"
    shutil.copy(run / "classifier.json", outside)
    (run / "classifier.json").unlink()
    (run / "classifier.json").symlink_to(outside)
    with pytest.raises(ValueError, match=r"classifier.json is a symbolic link; a classifier.json .* is read only "
                                         r"as a regular file inside its folder"):
        load_classifier(run)
    zero = tmp_path / "zero"
    zero.mkdir()
    (zero / CLAIM_NAME).symlink_to("/dev/zero")
    with pytest.raises(ValueError, match=r"is not a saved classifier yet: it is being written by a write, started "
                                         r"at an unknown time"):          # an unreadable claim, not read on
        load_classifier(zero)
    (tmp_path / "history.json").symlink_to(outside)
    with pytest.raises(ValueError, match=r"history.json is a symbolic link"):
        History.from_json(tmp_path / "history.json")
    big = tmp_path / "big" / "history.json"
    big.parent.mkdir()
    with open(big, "wb") as f:                                            # sparse: 100 MB on paper
        f.truncate(100 << 20)
    with pytest.raises(ValueError, match=r"history.json is 104857600 bytes; a history.json is at most 67108864"):
        History.from_json(big)


def test_lr_find_never_writes_over_a_file_or_into_the_data(folder, tmp_path, capsys):
    """Second adversarial pass: `lr-find --out data/cat/000.png` replaced a photo, and --out data/coffee/plot.png
    planted the plot in a class the next fit trained on."""
    target = next((folder / "cat").iterdir()) if (folder / "cat").is_dir() else next(next(folder.iterdir()).iterdir())
    before = target.read_bytes()
    args = ["lr-find", str(folder), "--weights", "none", "--arch", "mobilenet_v3_small", "--steps", "5"]
    assert main(args + ["--out", str(target)]) == 2
    assert "is inside DATA_DIR" in capsys.readouterr().err and target.read_bytes() == before
    mine = tmp_path / "notes.png"
    mine.write_bytes(b"mine")
    assert main(args + ["--out", str(mine)]) == 2
    assert "exists; pass --force to replace it" in capsys.readouterr().err and mine.read_bytes() == b"mine"
