"""Every claim of the transfer-learning chapter, measured on real images with transferlearn.

One command (from the repository root, offline once the data and weights are cached)::

    TORCH_HOME=.cache/torch .venv/bin/python -m benchmarks.evidence            # full, ~35 min idle
    TORCH_HOME=.cache/torch .venv/bin/python -m benchmarks.evidence --quick    # a few minutes

Real pretrained MobileNetV2 IMAGENET1K_V1; chess-piece photographs (similar domain),
electroluminescence images of solar cells (far domain) and scikit-learn's digits, fetched on
first use by ``benchmarks/sources.py``. Each claim is a controlled comparison: one factor
changes, everything else (data, split, seeds, epochs) stays; mean and standard deviation
over seeds. Results go to ``benchmarks/evidence_results/<name>.json`` (written after every
experiment, so a partial run keeps what it measured), and
``python -m benchmarks.evidence_report`` turns them into the tables of ``docs/evidence.md`` and a plot.
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

import transferlearn as tl

from .evidence_config import BASE, CONFIGS, RECIPES, SIMILAR, claims
from .evidence_lib import Run, Task, probe, run
from .evidence_report import current_pick
from .tensors import decoded
from .util import ROOT, write_json

__all__ = ["CONFIGS", "main", "run_all", "meta"]

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
             for name, size in cfg["sizes"].items() for d in [decoded(name, size=size)]}
    results, clock = _start(cfg, out, add)

    def done(what: str) -> None:
        clock["wall_seconds"] = round(time.perf_counter() - began, 1)
        write_json(out, results, indent=1)
        log(f"[{clock['wall_seconds']:7.0f} s] {what}")

    for claim, (task, n, conditions) in claims(cfg).items():
        if only and claim not in only:
            continue
        rows = {cond: _seeded(tasks[task], spec, cfg["seeds"], n) for cond, spec in conditions.items()}
        results["claims"][claim] = {"task": task, "n_per_class": n, "size": tasks[task].size, "rows": rows}
        done(f"claim {claim}")
    if not only or "table" in only:
        _decision_table(cfg, tasks, results, done)
    if not only or "probe" in only:
        _probes(cfg, tasks, results, done)
    return results


def _start(cfg: dict[str, Any], out: Path, add: bool) -> tuple[dict[str, Any], dict[str, Any]]:
    """The results to fill (new, or those in ``out`` when adding) and the record whose
    ``wall_seconds`` this run updates."""
    if not (add and out.is_file()):
        results = {"meta": meta(cfg), "claims": {}, "table": {}, "probe": {}, "resolution": {}}
        return results, results["meta"]
    results = json.loads(out.read_text())
    old, new = results["meta"]["config"], json.loads(json.dumps(cfg))
    if any(old[k] != new.get(k) for k in old):  # new keys (new experiments) are fine
        raise ValueError(f"--add: {out} was written with another configuration")
    old.update(new)
    clock = {k: v for k, v in meta(cfg).items() if k in ("command", "commit", "threads", "started")}
    results["meta"].setdefault("additions", []).append(clock)
    return results, clock


def _decision_table(cfg: dict[str, Any], tasks: dict[str, Task], results: dict[str, Any],
                    done: Callable[[str], None]) -> None:
    """Every recipe of the decision table at every size of ``cfg["table"]``, and which one the
    library recommends there."""
    for name, sizes in cfg["table"].items():
        t = tasks[name]
        for n in sizes:
            rows = {kind: _seeded(t, Run(fit={"strategy": make(), **cfg.get("epochs", {})}, augment=make().augment),
                                  cfg["seeds"], n)
                    for kind, make in RECIPES.items()}
            kind = current_pick(n, t.similar_domain, results["meta"]["recipes"])
            results["table"].setdefault(name, {})[str(n)] = {"recommended": kind, "size": t.size, "rows": rows,
                                                             "similar_domain": t.similar_domain}
            done(f"table {name} n={n}")


def _probes(cfg: dict[str, Any], tasks: dict[str, Task], results: dict[str, Any],
            done: Callable[[str], None]) -> None:
    """Cached head epochs against the converged probe, then feature extraction per input size."""
    for name, n in cfg["probe"].items():
        outs = [probe(tasks[name], s, n, cfg["head_epochs"]) for s in cfg["seeds"]]
        results["probe"][name] = {"n_per_class": n, "size": tasks[name].size,
                                  "rows": {k: [o[k] for o in outs] for k in outs[0]}}
        done(f"probe {name}")
    for px in cfg["resolutions"]:
        d = decoded("chess", size=px)
        t = Task("chess", d.images, d.labels, d.classes, cfg["test_per_class"]["chess"], True)
        results["resolution"][str(px)] = _seeded(t, Run(fit={"strategy": RECIPES["feature_extraction"]()}),
                                                 cfg["seeds"], cfg["claim_n"])
        done(f"resolution {px}")


def meta(cfg: dict[str, Any]) -> dict[str, Any]:
    """What ran where: the command, the commit, versions, threads, the processor."""
    try:
        commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True,
                                text=True).stdout.strip()
    except OSError:
        commit = ""
    commit = commit or os.environ.get("GIT_COMMIT", "")  # a run from an exported tree (git archive)
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() \
        else platform.processor()
    return {"command": " ".join(["python -m benchmarks.evidence", *sys.argv[1:]]), "commit": commit,
            "torch": torch.__version__, "transferlearn": tl.__version__, "python": platform.python_version(),
            "cpu": cpu, "threads": torch.get_num_threads(),
            "load_average_at_start": os.getloadavg()[0], "started": time.strftime("%Y-%m-%d %H:%M:%S"),
            "recipes": {k: make().fit_kwargs() | {"augment": make().augment} for k, make in RECIPES.items()},
            "base": {k: v for k, v in BASE.items()}, "config": cfg}


def main(argv: list[str] | None = None) -> int:
    """Parse the command line, run, write the JSON (and the plot/tables with ``--report``)."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.evidence", description=__doc__.split("\n\n")[0])
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
    out = args.out or ROOT / "benchmarks" / "evidence_results" / f"{name}.json"
    run_all(CONFIGS[name], out, only=set(args.only) if args.only else None, add=args.add)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
