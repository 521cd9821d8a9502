"""Turn ``python -m benchmarks.evidence``'s JSON into Markdown tables (in place in
``docs/evidence.md``) and a plot.

    .venv/bin/python -m benchmarks.evidence_report benchmarks/evidence_results/full.json \\
        --doc docs/evidence.md --plot docs/evidence_decision.png

The page keeps its prose; every generated block sits between ``<!-- table:NAME -->`` and
``<!-- /table -->`` and is replaced on each run (``NAME``: a claim, ``decision-<task>``,
``probe``, ``resolution``, ``train-mode``, ``meta``). Without ``--doc`` all tables are
printed. Accuracies are test accuracies in percent, mean ± sample standard deviation over
seeds; "Δ" is the per-seed (paired: same split, same head initialisation) difference to the
reference row, mean ± std.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
from pathlib import Path
from typing import Any

from .util import module_command

__all__ = ["fmt", "claim_table", "decision_table", "probe_table", "render_all", "fill", "plot_decision"]

# Whether each task's images look like ImageNet photos (older results files do not say).
SIMILAR = {"chess": True, "elpv": False, "digits": False}
# The row each claim is compared with (default: its first row).
REFERENCE = {"strategies": "fine-tune all (baseline)", "batchnorm": None, "warmup": "2 warm-up epochs",
             "backbone_lr": "backbone lr 0.0001", "backbone_lr_low": "backbone lr 0.0001",
             "backbone_lr_bn_adapting": "backbone lr 0.0001, BN adapting", "normalisation_fe": "imagenet",
             "normalisation_ft": "imagenet", "greyscale_fe": "replicate", "greyscale_ft": "replicate"}


def fmt(values: list[float], scale: float = 100.0, *, signed: bool = False) -> str:
    """``mean ± std`` of ``values`` (percent by default); a single value has no std.
    ``signed`` writes the mean with ``+`` or ``−`` (for differences)."""
    mean = statistics.fmean(values) * scale
    text = f"{mean:+.1f}".replace("-", "−") if signed else f"{mean:.1f}"
    if len(values) < 2:
        return text
    return f"{text} ± {statistics.stdev(values) * scale:.1f}"


def _paired(values: list[float], ref: list[float]) -> str:
    return fmt([a - b for a, b in zip(values, ref)], signed=True)


def _seconds(row: dict[str, Any]) -> str:
    return f"{statistics.fmean(row['seconds']):.0f}"


def claim_table(name: str, claim: dict[str, Any]) -> str:
    """One claim: condition, accuracy, Δ to the reference row (batchnorm: pinned vs adapting per batch)."""
    rows = claim["rows"]
    ref = REFERENCE.get(name)
    ref = ref if ref in rows else next(iter(rows))        # default: the first row
    lines = [f"*{claim['task']}, {claim['n_per_class']} training images per class, {claim['size']} px*", "",
             "| condition | test accuracy % | Δ vs reference (paired) | seconds per run |", "| --- | --- | --- | --- |"]
    for cond, row in rows.items():
        if name == "batchnorm":
            bs = cond.rsplit(" ", 1)[-1]
            other = rows[f"BN pinned, batch {bs}"]
            delta = "reference" if "pinned" in cond else _paired(row["accuracy"], other["accuracy"])
        else:
            delta = "reference" if cond == ref else _paired(row["accuracy"], rows[ref]["accuracy"]) \
                if ref in rows else ""
        lines.append(f"| {cond} | {fmt(row['accuracy'])} | {delta} | {_seconds(row)} |")
    return "\n".join(lines)


def train_mode_table(claims: dict[str, Any]) -> str:
    """Accuracy in eval() vs left in train(), from the runs that recorded both."""
    lines = ["| model | eval() | train(), batch 32 | train(), batch 8 "
             "| train() with BN pinned by transferlearn, batch 32 |",
             "| --- | --- | --- | --- | --- |"]
    for cond, row in claims.get("strategies", {}).get("rows", {}).items():
        if "train_mode_unpinned_bs32" in row:
            lines.append(f"| {cond} | {fmt(row['accuracy'])} | {fmt(row['train_mode_unpinned_bs32'])} | "
                         f"{fmt(row['train_mode_unpinned_bs8'])} | {fmt(row['train_mode_pinned_bs32'])} |")
    return "\n".join(lines)


def _verdict(entry: dict[str, Any], rec: str | None = None) -> tuple[str, str]:
    """(winner, whether ``rec`` — default: the strategy recommended at run time — is the winner,
    within the spread, or not).

    "Within the spread": the recommended strategy's mean is behind the winner's by no more
    than one seed-to-seed standard deviation (the larger of the two).
    """
    rows = entry["rows"]
    mean = {k: statistics.fmean(r["accuracy"]) for k, r in rows.items()}
    std = {k: statistics.stdev(r["accuracy"]) if len(r["accuracy"]) > 1 else 0.0 for k, r in rows.items()}
    winner = max(mean, key=mean.get)
    rec = entry["recommended"] if rec is None else rec
    if rec not in rows:
        return winner, "not measured"
    gap = mean[winner] - mean[rec]
    if rec == winner:
        return winner, "**yes**"
    if gap <= max(std[rec], std[winner]):
        return winner, f"within the spread (−{100 * gap:.1f} pt)"
    return winner, f"**no** (−{100 * gap:.1f} pt)"


def current_pick(n: int, similar: bool, recipes: dict[str, dict[str, Any]]) -> str:
    """The measured recipe that today's ``recommend_strategy`` returns, or ``"not measured"``.

    Every training setting and the augmentation flag must match, except feature extraction's
    head epochs (a detail the probe table covers).
    """
    import transferlearn as tl

    s = tl.recommend_strategy(n, similar_domain=similar)
    now = json.loads(json.dumps({**s.fit_kwargs(), "augment": s.augment}))
    drop = {"warmup_epochs"} if s.kind == "feature_extraction" else set()
    same = [name for name, r in recipes.items() if {k: v for k, v in r.items() if k not in drop} ==
            {k: v for k, v in now.items() if k not in drop}]
    return same[0] if same else f"{s.kind} (not measured)"


def decision_table(task: str, sizes: dict[str, Any], recipes: dict[str, dict[str, Any]] | None = None) -> str:
    """Accuracy per strategy for each size of one task; the recommendation at run time judged,
    and (given the run's ``recipes``) today's recommendation judged on the same numbers."""
    kinds = list(next(iter(sizes.values()))["rows"])
    now_cols = " | recommended now | picks the winner? |" if recipes else " |"
    lines = ["| images per class | " + " | ".join(kinds) + " | recommended at run time | picks the winner?" + now_cols,
             "| --- | " + " | ".join("---" for _ in kinds) + " | --- | ---" + (" | --- | --- |" if recipes else " |")]
    for n, entry in sizes.items():
        winner, verdict = _verdict(entry)
        cells = [(f"**{fmt(entry['rows'][k]['accuracy'])}**" if k == winner else fmt(entry["rows"][k]["accuracy"]))
                 for k in kinds]
        line = f"| {n} | " + " | ".join(cells) + f" | {entry['recommended']} | {verdict} |"
        if recipes:
            pick = current_pick(int(n), entry.get("similar_domain", SIMILAR.get(task, True)), recipes)
            line += f" {pick} | {_verdict(entry, pick)[1]} |"
        lines.append(line)
    return "\n".join(lines)


def probe_table(probe: dict[str, Any]) -> str:
    """Head-only epochs on cached features against the converged logistic probe."""
    cols = list(next(iter(probe.values()))["rows"])
    names = {"probe": "logistic probe (L-BFGS)", "head_default": "library default"}
    lines = ["| task | " + " | ".join(names.get(c, c.replace("head_", "head, ") + " epochs") for c in cols) + " |",
             "| --- | " + " | ".join("---" for _ in cols) + " |"]
    for task, entry in probe.items():
        lines.append(f"| {task} ({entry['n_per_class']}/class, {entry['size']} px) | "
                     + " | ".join(fmt(entry["rows"][c]) for c in cols) + " |")
    return "\n".join(lines)


def resolution_table(res: dict[str, Any]) -> str:
    """Feature-extraction accuracy and time against the input size."""
    lines = ["| input px | test accuracy % | seconds per run |", "| --- | --- | --- |"]
    lines += [f"| {px} | {fmt(row['accuracy'])} | {_seconds(row)} |" for px, row in res.items()]
    return "\n".join(lines)


def meta_table(meta: dict[str, Any]) -> str:
    """Command, machine, versions and the wall time."""
    return "\n".join([
        "| | |", "| --- | --- |", f"| command | `{module_command(meta['command'])}` |",
        f"| commit | `{meta['commit'][:10]}` |",
        f"| processor | {meta['cpu']}, {meta['threads']} torch thread(s), load average "
        f"{meta.get('load_average_at_start', float('nan')):.1f} at the start |",
        f"| versions | torch {meta['torch']}, Python {meta['python']} |", f"| started | {meta['started']} |",
        f"| wall time | {meta.get('wall_seconds', 0) / 60:.1f} min |", f"| seeds | {meta['config']['seeds']} |"]
        + [f"| added later | `{module_command(a['command'])}` ({a['started']}, "
           f"{a.get('wall_seconds', 0) / 60:.1f} min) |" for a in meta.get("additions", [])])


def render_all(results: dict[str, Any]) -> dict[str, str]:
    """Every table, by block name."""
    blocks = {"meta": meta_table(results["meta"])}
    blocks.update({name: claim_table(name, c) for name, c in results["claims"].items()})
    if "strategies" in results["claims"]:
        blocks["train-mode"] = train_mode_table(results["claims"])
    recipes = results["meta"].get("recipes")
    blocks.update({f"decision-{t}": decision_table(t, sizes, recipes) for t, sizes in results["table"].items()})
    if results.get("probe"):
        blocks["probe"] = probe_table(results["probe"])
    if results.get("resolution"):
        blocks["resolution"] = resolution_table(results["resolution"])
    return blocks


def fill(doc: str, blocks: dict[str, str]) -> str:
    """Replace every ``<!-- table:NAME -->...<!-- /table -->`` block of ``doc`` with ``blocks[NAME]``."""
    def sub(m: re.Match) -> str:
        name = m.group(1)
        body = blocks.get(name, f"*(no results for {name!r} in this run)*")
        return f"<!-- table:{name} -->\n{body}\n<!-- /table -->"
    return re.sub(r"<!-- table:([\w-]+) -->.*?<!-- /table -->", sub, doc, flags=re.S)


def plot_decision(results: dict[str, Any], path: Path) -> None:
    """Accuracy against images per class, one line per strategy, one panel per task."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = results["table"]
    fig, axes = plt.subplots(1, len(table), figsize=(4.2 * len(table), 3.4), squeeze=False)
    for ax, (task, sizes) in zip(axes[0], table.items()):
        ns = [int(n) for n in sizes]
        for kind in next(iter(sizes.values()))["rows"]:
            acc = [sizes[str(n)]["rows"][kind]["accuracy"] for n in ns]
            ax.errorbar(ns, [100 * statistics.fmean(a) for a in acc],
                        yerr=[100 * statistics.stdev(a) if len(a) > 1 else 0 for a in acc],
                        marker="o", capsize=3, label=kind)
        ax.set(xscale="log", title=task, xlabel="training images per class", ylabel="test accuracy %")
        ax.minorticks_off()
        ax.set_xticks(ns, [str(n) for n in ns])
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.evidence_report",
                                description="Markdown tables and a plot from python -m benchmarks.evidence's JSON")
    p.add_argument("results", type=Path)
    p.add_argument("--doc", type=Path, help="fill the table blocks of this Markdown file in place")
    p.add_argument("--plot", type=Path, help="write the decision-table plot here (PNG)")
    args = p.parse_args(argv)
    results = json.loads(args.results.read_text())
    blocks = render_all(results)
    if args.doc:
        args.doc.write_text(fill(args.doc.read_text(), blocks))
    else:
        for name, body in blocks.items():
            print(f"### {name}\n\n{body}\n")
    if args.plot and results["table"]:
        plot_decision(results, args.plot)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
