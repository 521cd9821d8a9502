"""Every claim of the transfer-learning chapter, measured on real images with transferlearn.

One command (from the repository root, offline once the data and weights are cached)::

    TORCH_HOME=.cache/torch .venv/bin/python benchmarks/evidence.py            # full, ~35 min idle
    TORCH_HOME=.cache/torch .venv/bin/python benchmarks/evidence.py --quick    # a few minutes

Real pretrained MobileNetV2 IMAGENET1K_V1; chess-piece photographs (similar domain),
electroluminescence images of solar cells (far domain) and scikit-learn's digits, fetched on
first use by ``benchmarks/datasets.py``. Each claim is a controlled comparison: one factor
changes, everything else (data, split, seeds, epochs) stays; mean and standard deviation
over seeds. Results go to ``benchmarks/evidence_results/<name>.json`` (written after every
experiment, so a partial run keeps what it measured), and
``benchmarks/evidence_report.py`` turns them into the tables of ``docs/evidence.md`` and a plot.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import transferlearn as tl  # noqa: E402
from benchmarks import datasets  # noqa: E402
from benchmarks.evidence_lib import NORMS, Run, Task, probe, run  # noqa: E402
from benchmarks.evidence_report import current_pick  # noqa: E402
from transferlearn.base import atomic_write  # noqa: E402

__all__ = ["CONFIGS", "main", "run_all"]

# The library's recipes, named by the table row they come from.
RECIPES: dict[str, Callable[[], tl.Strategy]] = {
    "feature_extraction": lambda: tl.recommend_strategy(10),
    "fine_tune_last": lambda: tl.recommend_strategy(5000),
    "fine_tune_all": lambda: tl.recommend_strategy(20000),
    # the chapter's different-domain recipe (the library's until this evidence changed it)
    "fine_tune_all_far": lambda: tl.Strategy("fine_tune_all", 2, 5, 1e-3, (1e-5, 1e-4), None, "early", True, True,
                                             "the chapter's different-domain recipe"),
}

# full: 5 seeds, ~40 min with 1 thread on a shared 2-core machine; quick: a few minutes; smoke: digits only, for CI.
CONFIGS: dict[str, dict[str, Any]] = {
    "full": {"seeds": [0, 1, 2, 3, 4], "sizes": {"chess": 128, "elpv": 128, "digits": 64},
             "test_per_class": {"chess": 25, "elpv": 150, "digits": 50},
             "claim_task": "chess", "claim_n": 30, "grey_task": "elpv", "grey_n": 100,
             "table": {"chess": [10, 30, 50], "elpv": [10, 30, 100], "digits": [10, 30, 100]},
             "far_tasks": {"elpv": 100, "digits": 100}, "probe": {"chess": 30, "digits": 100},
             "head_epochs": [5, 20, 50, 200],
             "resolutions": [96, 128, 160, 224]},
    "quick": {"seeds": [0, 1, 2], "sizes": {"chess": 64, "elpv": 64, "digits": 32},
              "test_per_class": {"chess": 20, "elpv": 50, "digits": 20},
              "claim_task": "chess", "claim_n": 15, "grey_task": "elpv", "grey_n": 20,
              "table": {"chess": [10, 30], "elpv": [10, 30], "digits": [10]},
              "far_tasks": {"elpv": 30, "digits": 30}, "probe": {"chess": 15, "digits": 30},
              "head_epochs": [5, 50, 200], "resolutions": []},
    "smoke": {"seeds": [0], "sizes": {"digits": 32}, "test_per_class": {"digits": 5},
              "claim_task": "digits", "claim_n": 3, "grey_task": "digits", "grey_n": 3,
              "table": {"digits": [3]}, "far_tasks": {"digits": 3}, "probe": {"digits": 3}, "head_epochs": [2],
              "resolutions": [],
              "epochs": {"warmup_epochs": 1, "finetune_epochs": 1}},
}
SIMILAR = {"chess": True, "elpv": False, "digits": False}
BASE = {"warmup_epochs": 2, "finetune_epochs": 3, "head_lr": 1e-3, "backbone_lr": 1e-4, "freeze_bn": True}


def claims(cfg: dict[str, Any]) -> dict[str, tuple[str, int, dict[str, Run]]]:
    """Each claim: (task, images per class, {condition: run})."""
    c, n, g, gn = cfg["claim_task"], cfg["claim_n"], cfg["grey_task"], cfg["grey_n"]
    recipe = {**BASE, **cfg.get("epochs", {})}
    fe = {"strategy": RECIPES["feature_extraction"](), **cfg.get("epochs", {}), "finetune_epochs": 0}
    epochs = recipe["warmup_epochs"] + recipe["finetune_epochs"]

    def base(**changes: Any) -> dict[str, Any]:
        """The chapter's fine-tuning recipe (the library's ``fine_tune_all``) with one change."""
        return {**recipe, **changes}

    far = {"strategy": RECIPES["fine_tune_all_far"](), **cfg.get("epochs", {})}
    far_claims = {f"far_recipe_{t}": (t, tn, {
        "far recipe (the chapter's)": Run(fit=far, augment=True),
        "without augmentation": Run(fit=far, augment=False),
        "flat backbone lr 1e-4": Run(fit={**far, "backbone_lr": 1e-4}, augment=True),
        "BN pinned everywhere": Run(fit={**far, "freeze_bn": True}, augment=True),
        "similar-domain recipe (fine_tune_all)": Run(fit={"strategy": RECIPES["fine_tune_all"](),
                                                          **cfg.get("epochs", {})})})
        for t, tn in cfg["far_tasks"].items()}
    return {
        "strategies": (c, n, {
            "random init (1e-3 everywhere, BN adapting)": Run(
                fit=base(warmup_epochs=0, finetune_epochs=epochs, backbone_lr=1e-3, freeze_bn=False),
                pretrained=False),
            "feature extraction (library default)": Run(fit=fe, train_mode_eval=True),
            "fine-tune last 2 groups": Run(fit=base(unfreeze=2)),
            "fine-tune all (baseline)": Run(fit=base(), train_mode_eval=True)}),
        "batchnorm": (c, n, {f"BN {'pinned' if pin else 'adapting'}, batch {bs}": Run(fit=base(freeze_bn=pin),
                                                                                      batch_size=bs)
                             for bs in (8, 32) for pin in (True, False)}),
        "warmup": (c, n, {f"{w} warm-up epochs": Run(fit=base(warmup_epochs=w)) for w in (0, 2, 10)}),
        "backbone_lr": (c, n, {f"backbone lr {lr}": Run(fit=base(backbone_lr=lr))
                               for lr in (1e-2, 1e-3, 1e-4, (1e-5, 1e-3))}),
        "backbone_lr_low": (c, n, {f"backbone lr {lr}": Run(fit=base(backbone_lr=lr))
                                   for lr in (1e-4, 1e-5, (1e-5, 1e-4))}),
        "backbone_lr_bn_adapting": (c, n, {f"backbone lr {lr}, BN adapting": Run(fit=base(backbone_lr=lr,
                                                                                           freeze_bn=False))
                                           for lr in (1e-2, 1e-3, 1e-4)}),
        "normalisation_fe": (c, n, {norm: Run(fit=fe, norm=norm) for norm in NORMS}),
        "normalisation_ft": (c, n, {norm: Run(fit=base(), norm=norm) for norm in NORMS}),
        "greyscale_fe": (g, gn, {stem: Run(fit=fe, stem=stem) for stem in ("replicate", "summed", "fresh")}),
        "greyscale_ft": (g, gn, {stem: Run(fit=base(), stem=stem) for stem in ("replicate", "summed", "fresh")}),
    } | far_claims


def _save(results: dict[str, Any], path: Path) -> None:
    atomic_write(path, lambda f: f.write(json.dumps(results, indent=1).encode()))


_DONE: dict[str, dict[str, Any]] = {}


def _seeded(task: Task, spec: Run, seeds: list[int], n: int | None) -> dict[str, list]:
    """``run`` for each seed; a run identical to one already done (the baseline appears in
    several comparisons) is measured once and reused."""
    outs = []
    for seed in seeds:
        fit = dict(spec.fit)
        strategy = fit.pop("strategy", None)
        settings = {"unfreeze": None, "weight_decay": 0.0, **(strategy.fit_kwargs() if strategy else {}), **fit}
        key = repr((task.name, task.size, task.test_per_class, n, seed, sorted(settings.items()),
                    spec.pretrained, spec.batch_size, spec.augment, spec.norm, spec.stem))
        if key not in _DONE or (spec.train_mode_eval and "train_mode_pinned_bs8" not in _DONE[key]):
            _DONE[key] = run(task, spec, seed, n)
        outs.append(_DONE[key])
    return {k: [o[k] for o in outs] for k in outs[0]}


def run_all(cfg: dict[str, Any], out: Path, *, only: set[str] | None = None, add: bool = False,
            log: Callable = print) -> dict:
    """Run every experiment of ``cfg`` (or ``only`` those) and write ``out`` (JSON) after each
    one; ``add=True`` adds them to the results already in ``out``, noting the run in
    ``meta["additions"]``."""
    began = time.perf_counter()
    tasks = {name: Task(name, d.images, d.labels, d.classes, cfg["test_per_class"][name], SIMILAR[name])
             for name, size in cfg["sizes"].items() for d in [datasets.decoded(name, size=size)]}
    if add and out.is_file():
        results = json.loads(out.read_text())
        old, new = results["meta"]["config"], json.loads(json.dumps(cfg))
        if any(old[k] != new.get(k) for k in old):  # new keys (new experiments) are fine
            raise ValueError(f"--add: {out} was written with another configuration")
        old.update(new)
        clock = {k: v for k, v in meta(cfg).items() if k in ("command", "commit", "threads", "started")}
        results["meta"].setdefault("additions", []).append(clock)
    else:
        results = {"meta": meta(cfg), "claims": {}, "table": {}, "probe": {}, "resolution": {}}
        clock = results["meta"]

    def done(what: str) -> None:
        clock["wall_seconds"] = round(time.perf_counter() - began, 1)
        _save(results, out)
        log(f"[{clock['wall_seconds']:7.0f} s] {what}")

    for claim, (task, n, conditions) in claims(cfg).items():
        if only and claim not in only:
            continue
        rows = {cond: _seeded(tasks[task], spec, cfg["seeds"], n) for cond, spec in conditions.items()}
        results["claims"][claim] = {"task": task, "n_per_class": n, "size": tasks[task].size, "rows": rows}
        done(f"claim {claim}")
    if not only or "table" in only:
        for name, sizes in cfg["table"].items():
            t = tasks[name]
            for n in sizes:
                rows = {kind: _seeded(t, Run(fit={"strategy": make(), **cfg.get("epochs", {})},
                                             augment=make().augment), cfg["seeds"], n)
                        for kind, make in RECIPES.items()}
                kind = current_pick(n, t.similar_domain, results["meta"]["recipes"])
                results["table"].setdefault(name, {})[str(n)] = {"recommended": kind, "size": t.size, "rows": rows,
                                                                 "similar_domain": t.similar_domain}
                done(f"table {name} n={n}")
    if not only or "probe" in only:
        for name, n in cfg["probe"].items():
            outs = [probe(tasks[name], s, n, cfg["head_epochs"]) for s in cfg["seeds"]]
            results["probe"][name] = {"n_per_class": n, "size": tasks[name].size,
                                      "rows": {k: [o[k] for o in outs] for k in outs[0]}}
            done(f"probe {name}")
        for px in cfg["resolutions"]:
            d = datasets.decoded("chess", size=px)
            t = Task("chess", d.images, d.labels, d.classes, cfg["test_per_class"]["chess"], True)
            results["resolution"][str(px)] = _seeded(t, Run(fit={"strategy": RECIPES["feature_extraction"]()}),
                                                     cfg["seeds"], cfg["claim_n"])
            done(f"resolution {px}")
    return results


def meta(cfg: dict[str, Any]) -> dict[str, Any]:
    """What ran where: the command, the commit, versions, threads, the processor."""
    try:
        commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True,
                                text=True).stdout.strip()
    except OSError:
        commit = ""
    commit = commit or os.environ.get("GIT_COMMIT", "")  # a run from an exported tree (git archive)
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() \
        else platform.processor()
    return {"command": " ".join(["python"] + sys.argv), "commit": commit, "torch": torch.__version__,
            "transferlearn": tl.__version__, "python": platform.python_version(), "cpu": cpu,
            "threads": torch.get_num_threads(),
            "load_average_at_start": os.getloadavg()[0], "started": time.strftime("%Y-%m-%d %H:%M:%S"),
            "recipes": {k: make().fit_kwargs() | {"augment": make().augment} for k, make in RECIPES.items()},
            "base": {k: v for k, v in BASE.items()}, "config": cfg}


def main(argv: list[str] | None = None) -> int:
    """Parse the command line, run, write the JSON (and the plot/tables with ``--report``)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="the few-minute version")
    p.add_argument("--smoke", action="store_true", help="a tiny digits-only run (CI)")
    p.add_argument("--only", nargs="*", help="claim names, 'table' or 'probe'")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads (default: all cores on an idle machine, 1 on a busy one: "
                        "oversubscribed OpenMP threads made a training step 3-40x slower here)")
    p.add_argument("--out", type=Path, default=None, help="JSON file to write")
    p.add_argument("--add", action="store_true", help="add the experiments to those already in --out")
    args = p.parse_args(argv)
    name = "smoke" if args.smoke else "quick" if args.quick else "full"
    from threadpoolctl import threadpool_limits

    busy = os.getloadavg()[0] >= 1.0
    torch.set_num_threads(args.threads or (1 if busy else torch.get_num_threads()))
    threadpool_limits(torch.get_num_threads())  # numpy/scikit-learn BLAS too (40x slower oversubscribed)
    out = args.out or REPO / "benchmarks" / "evidence_results" / f"{name}.json"
    run_all(CONFIGS[name], out, only=set(args.only) if args.only else None, add=args.add)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
