"""The evidence benchmark: the data fetcher's cache rules, the report generator, and a tiny
end-to-end run (digits only, offline) that must write sane JSON."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmarks import sources
from benchmarks.evidence_report import _verdict, current_pick, fill, fmt, render_all
from benchmarks.tensors import decoded

ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------- sources
def test_digits_layout_is_written_once_and_reused(tmp_path):
    folder = sources.digits(tmp_path)
    counts = {p.name: len(list(p.iterdir())) for p in folder.iterdir() if p.is_dir()}
    assert sorted(counts) == [str(d) for d in range(10)] and sum(counts.values()) == 1797
    marker = folder / "0" / "marker.txt"
    marker.write_text("kept")                           # a second call must not rebuild
    assert sources.digits(tmp_path) == folder and marker.read_text() == "kept"


def test_a_folder_without_the_stamp_is_rebuilt(tmp_path):
    stale = tmp_path / "digits" / "junk"
    stale.mkdir(parents=True)                           # e.g. an interrupted or foreign build
    folder = sources.digits(tmp_path)
    assert not (folder / "junk").exists() and (folder / "9").is_dir()


def test_decoded_matches_the_files_and_is_cached(tmp_path):
    from PIL import Image

    data = decoded("digits", size=16, root=tmp_path)
    assert data.images.shape == (1797, 1, 16, 16) and data.images.dtype == torch.uint8
    assert data.classes == [str(d) for d in range(10)] and data.labels.bincount().sum() == 1797
    first = Image.open(tmp_path / "digits" / data.files[0]).convert("L").resize((16, 16), Image.Resampling.BILINEAR)
    torch.testing.assert_close(data.images[0, 0], torch.from_numpy(np.array(first)))
    assert (tmp_path / "tensors" / "digits-16.pt").is_file()
    again = decoded("digits", size=16, root=tmp_path)
    assert torch.equal(again.images, data.images) and again.files == data.files


@pytest.mark.parametrize("call, exc, pattern", [
    (lambda: decoded("cifar", size=32), ValueError, r"name must be one of \['chess', 'digits', 'elpv'\], got 'cifar'"),
    (lambda: decoded("digits", size=4), ValueError, r"size must be an int >= 8, got 4"),
    (lambda: decoded("digits", size=32.0), TypeError, r"size must be an int >= 8, got 32.0 \(float\)"),
    (lambda: sources.elpv(threshold=0), ValueError, r"threshold must be a finite number > 0.0 and <= 1.0, got 0"),
    (lambda: sources.elpv(threshold="half"), TypeError, r"threshold must be a real number, got 'half'"),
    (lambda: sources.chess(root=3), TypeError, r"root must be a path \(str or os.PathLike\) or None, got 3 \(int\)"),
])
def test_errors(call, exc, pattern):
    with pytest.raises(exc, match=pattern):
        call()


# -------------------------------------------------------------------------- report
def _entry(rec, **acc):
    return {"recommended": rec, "rows": {k: {"accuracy": v, "seconds": [1.0] * len(v)} for k, v in acc.items()}}


def test_verdict_names_winner_spread_and_miss():
    assert _verdict(_entry("a", a=[0.9, 0.8], b=[0.7, 0.6])) == ("a", "**yes**")
    winner, text = _verdict(_entry("b", a=[0.90, 0.80], b=[0.84, 0.80]))   # gap 3 pt, std 7.1 pt
    assert winner == "a" and text == "within the spread (−3.0 pt)"
    winner, text = _verdict(_entry("b", a=[0.90, 0.80], b=[0.70, 0.80]))   # gap 10 pt, std 7.1 pt
    assert winner == "a" and text == "**no** (−10.0 pt)"


def test_current_pick_maps_todays_table_onto_the_measured_recipes():
    import transferlearn as tl

    all_, fe = tl.recommend_strategy(300), tl.recommend_strategy(10)
    recipes = {"fine_tune_all": {**all_.fit_kwargs(), "augment": all_.augment},
               "other": {**all_.fit_kwargs(), "augment": True},
               "feature_extraction": {**fe.fit_kwargs(), "augment": False, "warmup_epochs": 7}}
    recipes = json.loads(json.dumps(recipes))                       # as read back from the JSON
    assert current_pick(10, True, recipes) == "feature_extraction"
    assert current_pick(300, True, recipes) == "fine_tune_all"
    assert current_pick(5000, True, recipes) == "fine_tune_last (not measured)"
    del recipes["feature_extraction"]
    assert current_pick(10, True, recipes) == "feature_extraction (not measured)"
    assert _verdict(_entry("a", a=[0.9], b=[0.5]), "fine_tune_last (not measured)") == ("a", "not measured")


def test_fmt_and_fill():
    assert fmt([0.5, 0.7]) == "60.0 ± 14.1" and fmt([0.25]) == "25.0"
    assert fmt([0.01, 0.03], signed=True) == "+2.0 ± 1.4" and fmt([-0.02], signed=True) == "−2.0"
    doc = "intro\n<!-- table:x -->\nold\n<!-- /table -->\nmiddle\n<!-- table:y -->\n<!-- /table -->\nend"
    out = fill(doc, {"x": "| new |"})
    assert out == ("intro\n<!-- table:x -->\n| new |\n<!-- /table -->\nmiddle\n<!-- table:y -->\n"
                   "*(no results for 'y' in this run)*\n<!-- /table -->\nend")
    assert fill(out, {"x": "| new |"}) == out               # idempotent


# --------------------------------------------------------------------- end to end
def test_smoke_run_writes_sane_json(tmp_path, mobilenet_weights):
    out = tmp_path / "smoke.json"
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)  # -m from another folder
    env = {**os.environ, "TORCH_HOME": os.environ["TORCH_HOME"], "TRANSFERLEARN_DATA": str(tmp_path / "data"),
           "PYTHONPATH": path}
    proc = subprocess.run([sys.executable, "-m", "benchmarks.evidence", "--smoke", "--threads", "1",
                           "--out", str(out)], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = json.loads(out.read_text())
    assert results["meta"]["command"] == f"python -m benchmarks.evidence --smoke --threads 1 --out {out}"
    seeds = results["meta"]["config"]["seeds"]
    assert set(results["claims"]) == {"strategies", "batchnorm", "warmup", "backbone_lr", "backbone_lr_low",
                                      "backbone_lr_bn_adapting", "normalisation_fe", "normalisation_ft",
                                      "greyscale_fe", "greyscale_ft", "far_recipe_digits"}
    accuracies = []
    for claim in results["claims"].values():
        for row in claim["rows"].values():
            assert len(row["accuracy"]) == len(seeds) and row["train_images"] == [30] * len(seeds), claim
            accuracies += row["accuracy"]
    for entry in results["table"]["digits"].values():
        assert entry["recommended"] in entry["rows"]        # the recommendation is one of those measured
        accuracies += [a for r in entry["rows"].values() for a in r["accuracy"]]
    probe = results["probe"]["digits"]["rows"]
    assert set(probe) == {"head_2", "probe"}
    assert all(0.0 <= a <= 1.0 for a in accuracies + probe["probe"])
    assert max(accuracies) > 0.1                            # better than chance somewhere: it learned
    blocks = render_all(results)
    assert "decision-digits" in blocks and "| 3 |" in blocks["decision-digits"]
    assert (tmp_path / "data" / "tensors" / "digits-32.pt").is_file()    # the data went where we said


def test_add_keeps_earlier_results_and_refuses_another_configuration(tmp_path, monkeypatch, mobilenet_weights):
    from benchmarks.evidence import CONFIGS, run_all

    monkeypatch.setenv("TRANSFERLEARN_DATA", str(tmp_path / "data"))
    out = tmp_path / "r.json"
    first = run_all(CONFIGS["smoke"], out, only={"greyscale_fe"}, log=lambda _: None)
    run_all(CONFIGS["smoke"], out, only={"normalisation_fe"}, add=True, log=lambda _: None)
    merged = json.loads(out.read_text())
    assert set(merged["claims"]) == {"greyscale_fe", "normalisation_fe"}
    assert merged["claims"]["greyscale_fe"] == json.loads(json.dumps(first["claims"]["greyscale_fe"]))
    assert len(merged["meta"]["additions"]) == 1 and merged["meta"]["additions"][0]["wall_seconds"] >= 0
    other = {**CONFIGS["smoke"], "seeds": [0, 1]}
    with pytest.raises(ValueError, match=r"--add: .*r.json was written with another configuration"):
        run_all(other, out, only={"warmup"}, add=True, log=lambda _: None)
