"""What each ``transferlearn`` sub-command does; ``cli.py`` parses the arguments and reports errors."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any, Iterator

from ..base import as_weights, check_seed
from ..data.folder import load_image_folder
from ..data.imagefiles import ImageFiles
from ..model.heads import replace_head
from ..model.load import checkpoint_path, install_weights, load_model
from ..ship.claim import CLAIM_NAME, claimed
from ..ship.classifier import load_classifier, save_classifier
from ..ship.format import refuse_own_file
from ..ship.html_report import write_html
from ..ship.onnx_export import export_onnx
from ..ship.report import ClassificationReport, classification_report
from ..train.history import History, plot_history
from ..train.loggers import CSVLogger, TensorBoardLogger
from ..train.runtime import seed_everything
from ..train.strategy import Strategy, recommend_strategy, row_strategy
from ..train.trainer import Trainer
from . import _runfile as runfile
from ._explain import explain

__all__ = ["PROGRESS_EVERY", "STRATEGIES", "evaluate", "explain", "export", "fit", "install", "predict", "recommend"]

STRATEGIES = ("auto", "feature_extraction", "fine_tune_last", "fine_tune_all")
PROGRESS_EVERY = 500          # predict's progress, when stderr is not a terminal: a line per this many files


def _strategy(name: str, smallest_class: int, epochs: int | None, *, similar_domain: bool = True) -> Strategy:
    """The table's row for the smallest class (a named strategy: the data size brought into
    that row's range, so settings that follow the size still do), epochs split across phases;
    ``similar_domain`` is the table's question for ``auto``."""
    strategy = (recommend_strategy(smallest_class, similar_domain=similar_domain) if name == "auto"
                else row_strategy(name, smallest_class))
    if epochs is None:
        return strategy
    warm, fine = strategy.warmup_epochs, strategy.finetune_epochs
    warm = epochs if fine == 0 else min(epochs, max(1, round(epochs * warm / (warm + fine))))
    return Strategy(**{**asdict(strategy), "warmup_epochs": warm, "finetune_epochs": epochs - warm})


def _outside_data(out: str, data_dir: str) -> None:
    """A run inside the data would be read as a class by the next ``fit``: refuse it up front."""
    data = Path(data_dir).resolve()
    if Path(out).resolve() == data or data in Path(out).resolve().parents:
        raise ValueError(f"--out {out!r} is inside DATA_DIR {data_dir!r}: the next fit would read the run's "
                         "files as images; put the run outside the data folder")


@contextlib.contextmanager
def _claimed_run_dir(out: str, force: bool, resume: bool = False) -> Iterator[Path]:
    """Claim ``--out`` for the whole fit (one writer at a time; an interruption stays marked), then
    refuse it if it holds anything and ``--force`` is not given. Nothing is overwritten without it.
    ``resume``: take over the dead claim of the interrupted fit it continues (a live one is refused)."""
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(f"--out {out!r} is a file; give a new folder for the run")
    if resume and not path.is_dir():
        raise FileNotFoundError(f"--resume: --out {out!r} does not exist; it must be the folder of the fit to continue")
    if not (force or resume):
        runfile.refuse_interrupted(path, out)
    only_a_claim = path.is_dir() and all(p.name.startswith(CLAIM_NAME) for p in path.iterdir())
    with claimed(path, "transferlearn fit", take_over=force or only_a_claim or resume):   # nothing else to lose
        if not (force or resume) and any(not p.name.startswith(CLAIM_NAME) for p in path.iterdir()):
            raise ValueError(f"--out {out!r} exists and is not empty; give a new folder for the run, or pass "
                             f"--force to save into it (the run's own files, {runfile.run_files_sentence()}, "
                             "are replaced; every other file is kept)")
        yield path


def _summary(report: ClassificationReport | None, history: Any) -> str:
    if report is None:
        return "no validation images (val_fraction=0 or too few per class): nothing to report"
    best = history.best
    where = f" (best epoch {best['epoch']} of {len(history)})" if best else ""
    return f"validation accuracy {report.accuracy:.4f}, loss {report.loss:.4f}{where}"


def fit(args: argparse.Namespace) -> None:
    """``transferlearn fit DATA_DIR --out RUN_DIR ...``: claim RUN_DIR, train, save, report. Settings:
    ``_runfile.resolve``; ``RUN_DIR/run.json`` and ``RUN_DIR/checkpoints`` make the run resumable."""
    settings = runfile.resolve(args)
    args = argparse.Namespace(**{**vars(args), **settings})
    _outside_data(args.out, args.data_dir)                   # before the claim creates --out
    with _claimed_run_dir(args.out, args.force, args.resume) as out:
        if args.resume:
            runfile.check_resumable(out)
        elif args.force:
            runfile.remove_for_force(out)                    # --force starts again: the old run's log, checkpoints
        _fit(args, out, settings)


def _fit(args: argparse.Namespace, out: Path, settings: dict[str, Any]) -> None:
    seed_everything(check_seed("--seed", args.seed))   # before any weight is drawn: the new head, or weights none
    weights = None if args.weights.lower() == "none" else args.weights
    model = load_model(args.arch, weights=weights)           # unknown arch or missing weights: before any scan
    # the model's own preprocessing (its anatomy's data config: timm's pretrained_cfg, the torchvision
    # weights' transforms, else ImageNet's), at --image-size when given
    data = load_image_folder(args.data_dir, val_fraction=args.val_fraction, seed=args.seed, model=model,
                             size=args.image_size, augment=args.augment,
                             balance=None if args.balance == "none" else args.balance)
    strategy = _strategy(args.strategy, min(data.counts["train"].values()), args.epochs,
                         similar_domain=not args.different_domain)
    options = runfile.fit_options(args, strategy)
    replace_head(model, len(data.classes))
    train_loader, val_loader = data.loaders(args.batch_size, num_workers=args.workers)
    print(f"{len(data.classes)} classes, {len(data.train)} training and "
          f"{len(data.val) if data.val is not None else 0} validation images; strategy {strategy.kind} "
          f"({strategy.warmup_epochs} warm-up + {strategy.finetune_epochs} fine-tune epochs)")
    loggers = [*([TensorBoardLogger(args.tensorboard)] if args.tensorboard else []), CSVLogger(out / runfile.LOG_FILE)]
    trainer = Trainer(model, seed=args.seed, device=args.device, amp=runfile.AMP[args.amp],
                      checkpoint_dir=out / runfile.CHECKPOINTS, callbacks=loggers)  # bad settings: refused here
    runfile.write_run_file(out, settings, {"strategy": asdict(strategy), "classes": data.classes})
    history = trainer.fit(train_loader, val_loader, strategy=strategy, resume=args.resume, **options)
    full = ImageFiles(data.val.samples, data.classes, data.val.transform, draft=False) if data.val else None
    report = classification_report(model, full, data.classes) if full is not None else None  # as evaluate
    metrics = {**(report.to_dict() if report else {}), "best_epoch": history.best["epoch"] if history.best else None,
               "strategy": asdict(strategy), "counts": data.counts, "skipped": [list(s) for s in data.skipped]}
    transform = data.val.transform if data.val is not None else data.train.transform
    save_classifier(model, out, classes=data.classes, transform=transform, history=history, metrics=metrics)
    plot_history(history, out / "curves.png")
    if report is not None:
        report.plot_confusion_matrix(out / "confusion_matrix.png")
        report.plot_top_losses(out / "top_losses.png")
    else:                                                     # a previous run's (--force): replaced by none
        (out / "confusion_matrix.png").unlink(missing_ok=True)
        (out / "top_losses.png").unlink(missing_ok=True)
    _fit_html(out, report, history, model, args, strategy, data)
    runfile.remove_checkpoints(out)                           # the classifier is saved: nothing left to resume
    print(_summary(report, history))
    print(f"saved the classifier to {out}")


def _fit_html(out: Path, report: ClassificationReport | None, history: Any, model: Any, args: argparse.Namespace,
              strategy: Strategy, data: Any) -> Path:
    """``RUN_DIR/report.html``: the run's settings, data, curves and validation report on one page."""
    transform = data.val.transform if data.val is not None else data.train.transform
    seconds = [r.get("seconds") for r in history if isinstance(r.get("seconds"), (int, float))]
    settings = {"data": str(args.data_dir), "architecture": args.arch, "weights": model.transferlearn_weights,
                "strategy": strategy.kind, "epochs": f"{strategy.warmup_epochs} warm-up + "
                f"{strategy.finetune_epochs} fine-tune", "image size": transform.size, "resize": transform.resize,
                "batch size": args.batch_size, "seed": args.seed, "validation fraction": args.val_fraction,
                "images per class": data.counts, "skipped files": [list(s) for s in data.skipped],
                "timings": {"training (s)": round(sum(seconds), 2), "epochs": len(history)},
                "strategy settings": asdict(strategy)}
    return write_html(report, out / "report.html", history=history, settings=settings, model=model,
                      title=f"transferlearn fit: {out.name}")


def _labelled_files(data_dir: str, classes: tuple[str, ...], transform: Any) -> ImageFiles:
    """Every image of DATA_DIR (its ``val`` folder for a train/val layout), labelled by name."""
    found = load_image_folder(data_dir, val_fraction=0.0, check="header", cache_bytes=0, max_imbalance=None,
                              min_classes=1)
    part = found.val if found.layout == "train/val" else found.train
    unknown = sorted(set(found.classes) - set(classes))
    if unknown:
        raise ValueError(f"{data_dir!r} has class folders the classifier does not know: {unknown}; "
                         f"it knows {list(classes)}")
    samples = [(path, classes.index(found.classes[label])) for path, label in part.samples]
    return ImageFiles(samples, classes, transform, draft=False)      # full decode, as predict


def evaluate(args: argparse.Namespace) -> None:
    """``transferlearn evaluate RUN_DIR DATA_DIR [--json] [--html FILE [--force]]``: the report on a labelled folder."""
    clf = load_classifier(args.run_dir)
    if args.html is not None:
        _html_target(args, clf)                               # before the report's work
    report = classification_report(clf, _labelled_files(args.data_dir, clf.classes, clf.transform),
                                   batch_size=args.batch_size)
    if args.html is not None:
        _evaluate_html(args, clf, report)
    if args.json:
        print(json.dumps(report.to_dict(), allow_nan=False))
        return
    print(report)
    for row in report.top_losses:
        where = row["path"] if row["path"] is not None else f"#{row['index']}"
        print(f"wrong: {where}  {row['true']} -> {row['predicted']}  (p {row['probability']:.3f}, "
              f"loss {row['loss']:.3f})")


def _html_target(args: argparse.Namespace, clf: Any) -> None:
    """``--html FILE``: never a file of the classifier (even with ``--force``), never an existing file without it."""
    path = Path(args.html)
    if path.is_dir():
        raise IsADirectoryError(f"--html {args.html!r} is a directory; give the .html file to write")
    config = clf.config
    refuse_own_file(path, clf.directory, config.weights_file if config is not None else None,
                    argument="--html", verb="evaluated", writer="the HTML report")
    if not args.force and os.path.lexists(path):
        raise FileExistsError(f"--html {args.html!r} exists; pass --force to replace it")


def _evaluate_html(args: argparse.Namespace, clf: Any, report: ClassificationReport) -> None:
    """``evaluate --html FILE``: the report on one page, with the run's curves when it has a history."""
    history = Path(args.run_dir) / "history.json"
    config = clf.config
    settings = {"classifier": str(args.run_dir), "data": str(args.data_dir), "images": report.count,
                "architecture": config.arch if config else None, "weights": config.weights if config else None,
                "image size": clf.transform.size, "resize": clf.transform.resize,
                "saved with": dict(config.versions) if config else None}
    _html_target(args, clf)                                   # again: the report took a while
    try:
        path = write_html(report, args.html, history=History.from_json(history) if history.is_file() else None,
                          settings=settings, model=clf, overwrite=args.force,
                          title=f"transferlearn evaluate: {args.run_dir} on {args.data_dir}")
    except FileExistsError:
        raise FileExistsError(f"--html {args.html!r} exists; pass --force to replace it") from None
    print(f"wrote {path}", file=sys.stderr if args.json else sys.stdout)


class _Progress:
    """Files done, on stderr: a tqdm bar on a terminal, else a line every ``PROGRESS_EVERY`` files."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.total, self.done, self.bar = total, 0, None
        self.lines = enabled and not sys.stderr.isatty() and total >= PROGRESS_EVERY
        if enabled and sys.stderr.isatty():
            from tqdm.auto import tqdm
            self.bar = tqdm(total=total, desc="predict", unit="file", file=sys.stderr, leave=False)

    def update(self, n: int) -> None:
        before, self.done = self.done, self.done + n
        if self.bar is not None:
            self.bar.update(n)
        elif self.lines and (self.done // PROGRESS_EVERY > before // PROGRESS_EVERY or self.done == self.total):
            print(f"predict: {self.done}/{self.total} files", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _line(row: dict[str, Any]) -> str:
    others = "".join(f"  {name} {p:.4f}" for name, p in row["top_k"][1:])
    return f"{row['path']}\t{row['class']}\t{row['probability']:.4f}{others}"


def predict(args: argparse.Namespace) -> None:
    """``transferlearn predict RUN_DIR IMAGE... [--top-k K] [--json] [--no-progress] [--tta]``: results
    are printed batch by batch as they are computed (``--json``: one JSON list, streamed)."""
    clf = load_classifier(args.run_dir)
    images, step = list(args.images), args.batch_size
    progress = _Progress(len(images), not args.no_progress)
    try:
        for start in range(0, len(images), step):
            chunk = images[start:start + step]
            results = clf.predict(chunk, top_k=args.top_k, batch_size=step, tta=args.tta)
            rows = [{"path": p, **r} for p, r in zip(chunk, results)]
            if args.json:
                text = ", ".join(json.dumps(r, allow_nan=False) for r in rows)
                print(("[" if start == 0 else ", ") + text, end="")
            else:
                print("\n".join(map(_line, rows)))
            sys.stdout.flush()
            progress.update(len(chunk))
    finally:
        progress.close()
    if args.json:
        print("[]" if not images else "]", flush=True)


def export(args: argparse.Namespace) -> None:
    """``transferlearn export RUN_DIR --onnx FILE [--force]``."""
    clf = load_classifier(args.run_dir)
    try:
        path = export_onnx(clf, args.onnx, overwrite=args.force)
    except FileExistsError:
        raise FileExistsError(f"--onnx {args.onnx!r} exists; pass --force to replace it") from None
    print(f"wrote {path}")


def install(args: argparse.Namespace) -> None:
    """``transferlearn install-weights FILE WEIGHTS [--no-check-hash] [--force]``: a different checkpoint
    already in the cache is replaced only with ``--force``; the same bytes there are "already installed"."""
    target = checkpoint_path(as_weights(args.weights))
    existed = target.is_file()
    try:
        path = install_weights(args.file, args.weights, check_hash=not args.no_check_hash, force=args.force)
    except FileExistsError:
        raise FileExistsError(f"{target} already holds a different checkpoint of {args.weights}; pass --force "
                              "to replace it") from None
    if existed and not args.force:                           # refused unless the bytes were the same
        print(f"{args.weights} is already installed: {path}")
    else:
        print(f"installed {args.weights} -> {path}")


def recommend(args: argparse.Namespace) -> None:
    """``transferlearn recommend IMAGES_PER_CLASS [--different-domain] [--total-images N]``."""
    strategy = recommend_strategy(args.images_per_class, similar_domain=not args.different_domain,
                                  total_images=args.total_images)
    for key, value in asdict(strategy).items():
        print(f"{key:16s} {value}")
