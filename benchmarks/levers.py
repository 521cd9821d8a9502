"""Each speed lever of issue 8 measured in isolation, one sub-command per lever.

    python -m benchmarks.levers channels_last [--sizes 64 128 224]   # fp32 and bf16 autocast
    python -m benchmarks.levers compile [--size 64]                  # torch.compile break-even
    python -m benchmarks.levers backward [--size 128]                # does backward stop early?
    python -m benchmarks.levers workers                              # DataLoader on real JPEGs
    python -m benchmarks.levers head                                 # converged head on features
    python -m benchmarks.levers profile [--size 64]                  # where a fine-tune epoch goes
    python -m benchmarks.levers profile_head [--size 64]             # where default feature extraction goes
    python -m benchmarks.levers predict [--size 64]                  # saved classifier vs raw forward
    python -m benchmarks.levers all
    python -m benchmarks.levers report                               # the saved results as Markdown

Every lever runs its variants interleaved (round-robin, after one untimed call each) and
reports medians, so slow drifts of a shared machine hit all variants alike. Results go to
``benchmarks/results/levers_<lever>.json`` and a table on stdout. MobileNetV2 at batch 32;
timing does not depend on the weights, so only ``head`` and ``predict`` load the pretrained ones.

``LEVERS`` is the one registry: each lever's run function (it takes the parsed command line
and a ``save(rows)`` callback and returns the rows), its report table and its description.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from . import levers_report as rep
from .benchutil import machine
from .levers_compute import lever_backward, lever_channels_last, lever_compile, lever_profile, lever_profile_head
from .levers_data import lever_head, lever_predict, lever_workers
from .util import ROOT, write_json

__all__ = ["LEVERS", "ALL", "Lever", "report", "main"]

RESULTS = ROOT / "benchmarks" / "results"
Save = Callable[[Any], None]


@dataclass(frozen=True)
class Lever:
    """One lever: ``run(args, save) -> rows``, ``table(rows) -> Markdown`` and what it measures."""

    run: Callable[[argparse.Namespace, Save], list[dict[str, Any]]]
    table: Callable[[list[dict[str, Any]]], str]
    help: str


def _head_rows(args: argparse.Namespace) -> list[dict[str, Any]]:
    specs = [spec.split(":") for spec in args.head_data]
    return [r for which, size in specs for r in lever_head(which, int(size), args.seeds)]


# The order is the report's; ``all`` runs ALL (compile last: it takes minutes).
LEVERS: dict[str, Lever] = {
    "channels_last": Lever(
        lambda a, save: lever_channels_last(a.sizes, a.rounds, bf16=not a.no_bf16, save=save),
        rep.channels_last_table, "contiguous vs channels_last, fp32 and bf16 autocast, inference and a train step"),
    "backward": Lever(
        lambda a, save: lever_backward(a.size or 128, a.rounds, [1, 2, 4]),
        rep.backward_table, "a train step with the head, unfreeze(last=N) or everything trainable"),
    "compile": Lever(
        lambda a, save: [lever_compile(a.size or 64, a.rounds, cl) for cl in (False, True)],
        rep.compile_table, "torch.compile: the first step's cost against the per-step gain"),
    "workers": Lever(
        lambda a, save: lever_workers(a.size or 128, [(0, False), (1, False), (2, False), (2, True)], 2, save=save),
        rep.workers_table, "DataLoader workers on the real chess JPEGs, and load_image_folder"),
    "head": Lever(lambda a, save: _head_rows(a), rep.head_table,
                  "heads on cached features: Adam epochs, L-BFGS, the logistic probe"),
    "profile": Lever(lambda a, save: lever_profile(a.size or 64, 128, a.out), rep.profile_table,
                     "torch.profiler over one fine-tuning epoch, both layouts"),
    "profile_head": Lever(lambda a, save: lever_profile_head(a.size or 64, 600, a.out), rep.profile_head_table,
                          "torch.profiler over the default feature extraction"),
    "predict": Lever(lambda a, save: [lever_predict(a.size or 64, 256, a.rounds, a.out)], rep.predict_table,
                     "a saved classifier's predict on files against the raw forward"),
}
ALL = ("channels_last", "backward", "head", "workers", "profile", "compile")


def report(results: Path) -> str:
    """The saved lever results in ``results`` as Markdown tables (what docs/performance.md quotes)."""
    out = []
    for name, lever in LEVERS.items():
        path = results / f"levers_{name}.json"
        if path.exists():
            saved = json.loads(path.read_text())
            out += [rep.header(name, saved), lever.table(saved["rows"]), ""]
    return "\n".join(out)


def parse(argv: list[str] | None) -> argparse.Namespace:
    """The command line: a lever (or ``all`` / ``report``) and its sizes, rounds and output folder."""
    levers = "\n".join(f"  {name:14s}{lever.help}" for name, lever in LEVERS.items())
    parser = argparse.ArgumentParser(prog="python -m benchmarks.levers", description=__doc__.splitlines()[0],
                                     epilog=f"levers:\n{levers}", formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("lever", choices=[*LEVERS, "all", "report"])
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 224])
    parser.add_argument("--size", type=int, default=None)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--no-bf16", action="store_true", help="skip bf16 autocast variants")
    parser.add_argument("--head-data", nargs="+", default=["digits:64"], help="e.g. digits:64 chess:224")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Run the lever(s) named on the command line, writing ``<out>/levers_<lever>.json`` as they go."""
    args = parse(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.lever == "report":
        print(report(args.out))
        return
    command = "python -m benchmarks.levers " + " ".join(argv if argv is not None else sys.argv[1:])
    for name in ALL if args.lever == "all" else [args.lever]:
        print(f"== {name}", flush=True)
        path = args.out / f"levers_{name}.json"

        def save(rows: Any, name: str = name, path: Path = path) -> None:
            write_json(path, {"machine": machine(torch.device("cpu")), "command": command, "lever": name,
                              "rows": rows})
        save(LEVERS[name].run(args, save))


if __name__ == "__main__":
    main()
