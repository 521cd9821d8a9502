"""Tables, targets, the scaling grid and its plot for ``python -m benchmarks.compare``.

    python -m benchmarks.benchreport benchmarks/results/compare_loops   # re-render a saved run
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable

import torch
from torch.utils.data import Subset

from .benchutil import measure, median
from .util import module_command, write_json

__all__ = ["TARGETS", "summarise", "markdown", "write", "scaling", "plot_scaling", "load", "rerender", "main"]

# label -> (minimum speed-up over the part's textbook row, accuracy rule, the words)
TARGETS: dict[str, tuple[float, str, str]] = {
    "Trainer.fit(warmup_epochs=5, finetune_epochs=0)": (5.0, "", ">= 5x"),
    "Trainer.fit(strategy=recommend_strategy(n))": (5.0, "probe-0.005", ">= 5x, within 0.5 pt of the probe"),
    "Trainer.fit(warmup_epochs=2, finetune_epochs=3, backbone_lr=1e-4)": (1.4, "textbook", ">= 1.4x, acc >= textbook"),
    "Trainer.predict(test_loader)": (0.95, "", ">= 0.95x raw"),
    "load_classifier(dir).predict(files)": (0.95, "", ">= 0.95x raw"),
    "load_image_folder + Trainer.fit (2+3)": (2.0, "textbook-0.01", ">= 2x, acc within 1 pt"),
}


def _summary(row: dict[str, Any]) -> dict[str, Any]:
    runs = row["runs"]
    accs = [r["accuracy"] for r in runs if r.get("accuracy") is not None]
    cuda = [r["cuda_peak_mb"] for r in runs if r.get("cuda_peak_mb") is not None]
    return {**{k: v for k, v in row.items() if k != "runs"}, "runs": runs,
            "seconds": median([r["seconds"] for r in runs]), "accuracy": median(accs) if accs else None,
            "peak_rss_mb": max((r["peak_rss_mb"] for r in runs), default=None),
            "rss_growth_mb": max((r["rss_growth_mb"] for r in runs), default=None),
            "cuda_peak_mb": max(cuda) if cuda else None, "note": runs[-1].get("note", "") if runs else ""}


def _target(row: dict[str, Any], textbook: dict[str, Any] | None, probe: dict[str, Any] | None) -> str:
    spec = TARGETS.get(row["case"])
    if spec is None or row.get("speedup") is None:
        return ""
    need, rule, words = spec
    ok = row["speedup"] >= need
    if rule.startswith("probe") and probe and row["accuracy"] is not None:
        ok = ok and row["accuracy"] >= probe["accuracy"] + float(rule[5:])
    if rule.startswith("textbook") and textbook and row["accuracy"] is not None:
        slack = float(rule[8:]) if len(rule) > 8 else 0.0
        ok = ok and row["accuracy"] >= textbook["accuracy"] + slack
    return f"{'met' if ok else 'MISSED'} ({words})"


def summarise(rows: list[dict[str, Any]], args: Any, machine: dict[str, Any], scaling: Any,
              argv: list[str]) -> dict[str, Any]:
    """Medians per case, speed-up over the part's textbook row, ratio to the part's floor, targets."""
    rows = [_summary(r) for r in rows]
    by_part: dict[str, dict[str, dict[str, Any]]] = {}
    for r in rows:
        by_part.setdefault(r["part"], {}).setdefault(r["role"], r)
    floor_d = by_part.get("d", {}).get("floor")
    for r in rows:
        part = by_part[r["part"]]
        textbook = part.get("textbook")
        floor = part.get("floor") if r["part"] == "e" else floor_d
        ok = r["runs"] and textbook and textbook["runs"]
        r["speedup"] = textbook["seconds"] / r["seconds"] if ok and r["role"] != "floor" else None
        # the same ratio within each repeat (both sides ran minutes apart, under the same load)
        r["speedup_per_repeat"] = [t["seconds"] / x["seconds"] for t, x in zip(textbook["runs"], r["runs"])] \
            if r["speedup"] is not None else []
        r["x_floor"] = r["seconds"] / floor["seconds"] if r["runs"] and floor and floor["runs"] else None
        r["target"] = _target(r, textbook, part.get("reference"))
    return {"command": "python -m benchmarks.compare " + " ".join(argv), "machine": machine,
            "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "when": time.strftime("%Y-%m-%d %H:%M"), "rows": rows, "scaling": scaling}


def _num(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def markdown(report: dict[str, Any]) -> str:
    """The results table (and the scaling grid) as Markdown."""
    lines = [f"`{module_command(report['command'])}` ({report['when']}; {report['machine']['cpu']}, "
             f"{report['machine']['cpus']} cpus, torch {report['machine']['torch']}, "
             f"device {report['machine']['device']})", "",
             "| part | case | seconds | x textbook | x floor | test acc (seeds) | peak RSS MB (+growth) "
             "| target / note |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | --- |"]
    for r in report["rows"]:
        if not r["runs"]:
            lines.append(f"| {r['part']} | {r['case']} | skipped: {r.get('skipped', '')} | | | | | |")
            continue
        mem = f"{r['peak_rss_mb']:.0f} (+{r['rss_growth_mb']:.0f})"
        if r["cuda_peak_mb"] is not None:
            mem += f", CUDA {r['cuda_peak_mb']:.0f}"
        note = "; ".join(x for x in (r["target"], r["note"]) if x)
        speedup = _num(r["speedup"], ".2f")
        if len(r.get("speedup_per_repeat", [])) > 1 and r["role"] != "textbook":
            speedup += f" ({min(r['speedup_per_repeat']):.2f}-{max(r['speedup_per_repeat']):.2f})"
        accuracy = _num(r["accuracy"], ".3f")
        accs = [x["accuracy"] for x in r["runs"] if x.get("accuracy") is not None]
        if len(accs) > 1:  # one seed per repeat: the spread over seeds
            accuracy += f" ({min(accs):.3f}-{max(accs):.3f})"
        lines.append(f"| {r['part']} | {r['case']} | {r['seconds']:.2f} | {speedup} | "
                     f"{_num(r['x_floor'], '.2f')} | {accuracy} | {mem} | {note} |")
    if report.get("scaling"):
        lines += ["", "Scaling (feature extraction; seconds):", "",
                  "| side | epochs | images | seconds |", "| --- | ---: | ---: | ---: |"]
        for s in report["scaling"]["rows"]:
            lines.append(f"| {s['side']} | {s['epochs']} | {s['images']} | {s['seconds']:.2f} |")
    return "\n".join(lines)


def write(report: dict[str, Any], stem: Path) -> None:
    """``<stem>.json`` (everything, every run) and ``<stem>.md`` (the table)."""
    write_json(stem.with_suffix(".json"), report)
    stem.with_suffix(".md").write_text(markdown(report) + "\n")


def scaling(bench: Any, textbook: Callable, library: Callable) -> dict[str, Any]:
    """Feature extraction, both sides, epochs (5, 20) x data (1x, 4x), interleaved; one run each."""
    n1 = min(bench.args.scaling_n, len(bench.train) // 4)
    order = torch.randperm(len(bench.train), generator=torch.Generator().manual_seed(1)).tolist()
    rows = []
    for images in (n1, 4 * n1):
        data = Subset(bench.train, order[:images])
        for epochs in (5, 20):
            for side, make in (("textbook", textbook), ("library", library)):
                run = make(bench, data, epochs)
                m = measure(run, bench.settings.device)
                rows.append({"side": side, "epochs": epochs, "images": images, "seconds": m["seconds"],
                             "peak_rss_mb": m["peak_rss_mb"]})
                print(f"  scaling {side} {epochs} epochs x {images} images: {m['seconds']:.2f}s", flush=True)
    result = {"rows": rows, "plot": None}
    result["plot"] = str(plot_scaling(rows, bench.args.out.with_name(bench.args.out.name + "_scaling.png")))
    return result


def plot_scaling(rows: list[dict[str, Any]], path: Path) -> Path:
    """Seconds against epochs, one line per side and data size (log scale)."""
    import matplotlib

    matplotlib.use("Agg")  # a script, not library code: no display needed
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for side, style in (("textbook", "o-"), ("library", "s--")):
        for images in sorted({r["images"] for r in rows}):
            pts = sorted((r["epochs"], r["seconds"]) for r in rows if r["side"] == side and r["images"] == images)
            ax.plot([p[0] for p in pts], [p[1] for p in pts], style,
                    label=f"{'chapter loop' if side == 'textbook' else 'Trainer (cached)'}, {images} images")
    ax.set(xlabel="epochs (head only, backbone frozen)", ylabel="seconds", yscale="log",
           title="Feature extraction: time against epochs and data")
    ax.set_xticks(sorted({r["epochs"] for r in rows}))
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def load(path: Path) -> dict[str, Any]:
    """A report written by ``write``."""
    return json.loads(path.with_suffix(".json").read_text())


def rerender(stem: Path) -> str:
    """Recompute the summary of a saved run from its raw runs and rewrite ``<stem>.md``."""
    saved = load(stem)
    keep = ("part", "role", "case", "runs", "skipped")
    rows = [{k: r[k] for k in keep if k in r} for r in saved["rows"]]

    class Args:
        pass
    for key, value in saved["settings"].items():
        setattr(Args, key, value)
    report = summarise(rows, Args(), saved["machine"], saved["scaling"], [])
    report.update(command=saved["command"], when=saved["when"], settings=saved["settings"])
    write(report, stem)
    return markdown(report)


def main(argv: list[str] | None = None) -> None:
    """Re-render each saved run named on the command line (a results stem, without suffix)."""
    import argparse

    p = argparse.ArgumentParser(prog="python -m benchmarks.benchreport",
                                description="re-render saved runs of python -m benchmarks.compare")
    p.add_argument("stems", nargs="+", type=Path, help="e.g. benchmarks/results/compare_loops")
    for stem in p.parse_args(argv).stems:
        print(rerender(stem))


if __name__ == "__main__":
    main()
