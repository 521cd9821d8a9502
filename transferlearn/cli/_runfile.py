"""``transferlearn fit``'s settings: the recipe flags, ``RUN_DIR/run.json``, ``--config`` and ``--resume``.

Every setting of a fit is one flag whose parser default is None ("not given"); ``resolve``
fills it from, in order, the command line, the run being continued (``--resume``: its
``run.json``) or re-run (``--config``), then the flag's own default. ``run.json`` records the
resolved settings before training starts, so an interrupted run can be continued from its
checkpoints (``RUN_DIR/checkpoints``) and a finished one re-run with the same weights.
"""

from __future__ import annotations

import argparse
import json
import math
import os
from pathlib import Path
from typing import Any, Callable

import torch

from ..base import __version__, atomic_write
from ..data.augment import AUGMENTS
from ..ship.claim import read_claim
from ..ship.format import MAX_SIDE
from ..train import checkpoint as ckpt

__all__: list[str] = []

RUN_FILE = "run.json"
CHECKPOINTS = "checkpoints"
FORMAT = 1
SETTINGS = ("data_dir", "arch", "weights", "strategy", "epochs", "image_size", "batch_size", "val_fraction",
            "seed", "workers", "lr", "backbone_lr", "augment", "balance", "patience", "amp", "device",
            "different_domain")
AMP = {"off": False, "bf16": "bf16", "fp16": "fp16"}
# The files a fit writes into RUN_DIR: what ``--force`` replaces (every other file is kept), what a
# killed fit leaves, and the sentence of docs/cli.md (``run_files_sentence``; a test keeps them equal).
RUN_FILES = ("classifier.json", "model-*.safetensors", "history.json", "metrics.json", "curves.png",
             "confusion_matrix.png", "top_losses.png", "report.html", "log.csv", RUN_FILE, CHECKPOINTS + "/")
LOG_FILE = "log.csv"
MAX_WORKERS = 4 * (os.cpu_count() or 1)       # --workers above this is a typo, not a plan: refused


def _positive(text: str) -> int:
    """An argparse type: an integer >= 1 (batch sizes, steps, top-k); argparse names it in errors
    ("invalid _positive value"), for every sub-command alike."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text}")
    return value


def workers(text: str) -> int:
    """``--workers N``: DataLoader worker processes, 0 to ``MAX_WORKERS``."""
    value = int(text)
    if not 0 <= value <= MAX_WORKERS:
        raise argparse.ArgumentTypeError(f"must be an integer in [0, {MAX_WORKERS}] (4 x this machine's "
                                         f"{os.cpu_count() or 1} CPUs), got {text}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


def _at_least_one(text: str) -> int:
    if not text.lstrip("-").isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text}")
    return int(text)


def _device(text: str) -> str:
    """A device this machine has: ``cpu``, ``cuda``, ``cuda:1``, ``mps``."""
    try:
        device = torch.device(text)
    except (RuntimeError, TypeError):
        raise argparse.ArgumentTypeError(f"must be a device name such as cpu, cuda or cuda:1, got {text}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise argparse.ArgumentTypeError(f"{text}: CUDA is not available on this machine")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise argparse.ArgumentTypeError(f"{text}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    mps = getattr(torch.backends, "mps", None)
    if device.type == "mps" and not (mps is not None and mps.is_available()):
        raise argparse.ArgumentTypeError(f"{text}: MPS is not available on this machine")
    if device.type not in ("cpu", "cuda", "mps"):
        raise argparse.ArgumentTypeError(f"must be cpu, cuda[:N] or mps, got {text}")
    return text


def add_run_flags(fit: argparse.ArgumentParser) -> None:
    """The recipe's flags, ``--config`` and ``--resume``; every setting's parser default becomes None."""
    fit.add_argument("--lr", type=_positive_float, default=None,
                     help="learning rate of the head (default: the strategy's)")
    fit.add_argument("--backbone-lr", type=_positive_float, default=None,
                     help="learning rate of the backbone (default: the strategy's)")
    fit.add_argument("--augment", choices=AUGMENTS, default="none", help="training augmentation preset (default none)")
    fit.add_argument("--balance", choices=("none", "sampler"), default="none",
                     help="sampler: class-balanced training batches (default none)")
    fit.add_argument("--patience", type=_at_least_one, default=None,
                     help="end a phase after N epochs without a better validation loss")
    fit.add_argument("--amp", choices=tuple(AMP), default="off", help="mixed precision (fp16 needs CUDA)")
    fit.add_argument("--device", type=_device, default=None, help="cpu, cuda, cuda:1, mps (default: the best there is)")
    fit.add_argument("--different-domain", action="store_true", default=False,
                     help="with --strategy auto: the images are not ImageNet-like photos")
    fit.add_argument("--resume", action="store_true",
                     help="continue the interrupted fit in RUN_DIR from its checkpoint, with its run.json settings")
    fit.add_argument("--config", metavar="RUN_JSON", default=None,
                     help="re-run the settings of a run.json (flags given here win)")
    defaults = {name: fit.get_default(name) for name in SETTINGS}
    fit.set_defaults(**{name: None for name in SETTINGS}, setting_defaults=defaults)


def _is_int(value: Any, low: int, high: float = math.inf) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def _number(value: Any, positive: bool = False) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
            and (value > 0 or not positive))


_CHECKS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "data_dir": (lambda v: isinstance(v, str) and bool(v), "a folder path"),
    "arch": (lambda v: isinstance(v, str) and bool(v), "a load_model name"),
    "weights": (lambda v: isinstance(v, str) and bool(v), "a weights name or 'none'"),
    "strategy": (lambda v: v in ("auto", "feature_extraction", "fine_tune_last", "fine_tune_all"), "a --strategy"),
    "epochs": (lambda v: v is None or _is_int(v, 1), "null or an int >= 1"),
    "image_size": (lambda v: v is None or _is_int(v, 1, MAX_SIDE), f"null or an int in [1, {MAX_SIDE}]"),
    "batch_size": (lambda v: _is_int(v, 1), "an int >= 1"),
    "val_fraction": (lambda v: _number(v), "a number"),
    "seed": (lambda v: _is_int(v, 0), "an int >= 0"),
    "workers": (lambda v: v is None or _is_int(v, 0, MAX_WORKERS), f"null or an int in [0, {MAX_WORKERS}]"),
    "lr": (lambda v: v is None or _number(v, positive=True), "null or a number > 0"),
    "backbone_lr": (lambda v: v is None or _number(v, positive=True), "null or a number > 0"),
    "augment": (lambda v: v in AUGMENTS, f"one of {list(AUGMENTS)}"),
    "balance": (lambda v: v in ("none", "sampler"), "'none' or 'sampler'"),
    "patience": (lambda v: v is None or _is_int(v, 1), "null or an int >= 1"),
    "amp": (lambda v: v in AMP, f"one of {list(AMP)}"),
    "device": (lambda v: v is None or isinstance(v, str), "null or a device name"),
    "different_domain": (lambda v: isinstance(v, bool), "true or false"),
}


def read_run_file(path: Path, flag: str) -> dict[str, Any]:
    """The settings a ``run.json`` records, checked key by key (unknown keys are refused)."""
    if not path.is_file():
        raise FileNotFoundError(f"{flag}: {str(path)!r} does not exist (a run directory's run.json is written "
                                "when its fit starts training)")
    try:
        data = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{flag}: {str(path)!r} is not JSON ({error})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("settings"), dict):
        raise ValueError(f"{flag}: {str(path)!r} is not a transferlearn run.json (format {FORMAT} with 'settings')")
    settings = data["settings"]
    unknown = sorted(set(settings) - set(SETTINGS))
    if unknown:
        raise ValueError(f"{flag}: {str(path)!r} has unknown settings {unknown}; known: {list(SETTINGS)}")
    for key, value in settings.items():
        ok, accepted = _CHECKS[key]
        if not ok(value):
            raise ValueError(f"{flag}: {str(path)!r} field 'settings.{key}' must be {accepted}, got {value!r}")
    return settings


def _flag(key: str) -> str:
    return "DATA_DIR" if key == "data_dir" else "--" + key.replace("_", "-")


def resolve(args: argparse.Namespace) -> dict[str, Any]:
    """The fit's settings: given flags, then the resumed / re-run ``run.json``, then the defaults.

    Raises:
        ValueError: ``--resume`` with ``--force`` or ``--config``, a flag that differs from the
            run being resumed, no DATA_DIR, ``--different-domain`` without ``--strategy auto``.
        FileNotFoundError: the ``run.json`` to read is missing.
    """
    given = {key: getattr(args, key) for key in SETTINGS if getattr(args, key) is not None}
    if "data_dir" in given:
        given["data_dir"] = str(Path(given["data_dir"]).resolve())
    recorded: dict[str, Any] = {}
    if args.resume:
        if args.force or args.config:
            raise ValueError(f"--resume continues the run in --out with its own settings; "
                             f"{'--force' if args.force else '--config'} does not go with it")
        recorded = {**args.setting_defaults, **read_run_file(Path(args.out) / RUN_FILE, "--resume")}
        differ = [key for key, value in given.items() if recorded[key] != value]
        if differ:
            key = differ[0]
            raise ValueError(f"{_flag(key)} {given[key]!r} differs from the run being resumed ({recorded[key]!r} in "
                             f"{Path(args.out) / RUN_FILE}); leave it out, or start a new run with --config")
    elif args.config:
        recorded = read_run_file(Path(args.config), "--config")
    settings = {**args.setting_defaults, **recorded, **given}
    if settings["data_dir"] is None:
        raise ValueError("DATA_DIR is required (or --config RUN_DIR/run.json, or --resume)")
    if settings["different_domain"] and settings["strategy"] != "auto":
        raise ValueError(f"--different-domain applies to --strategy auto (the decision table), not to "
                         f"--strategy {settings['strategy']}")
    return settings


def write_run_file(out: Path, settings: dict[str, Any], resolved: dict[str, Any]) -> Path:
    """``RUN_DIR/run.json``: the settings (what ``--config`` / ``--resume`` read) and, for reading
    only, what they resolved to (the strategy, the versions)."""
    data = {"format": FORMAT, "command": "transferlearn fit", "settings": settings, "resolved": resolved,
            "versions": {"transferlearn": __version__, "torch": torch.__version__}}
    text = json.dumps(data, indent=1, allow_nan=False)
    return atomic_write(out / RUN_FILE, lambda f: f.write(text.encode()))


def checkpoint_files(out: Path) -> list[Path]:
    """The Trainer's checkpoint files in ``RUN_DIR/checkpoints`` (``last.pt``, ``best.pt``, ...)."""
    folder = out / CHECKPOINTS
    return [folder / name for name in (ckpt.LAST, ckpt.BEST, ckpt.BEST + ".next") if (folder / name).is_file()]


def run_files_sentence() -> str:
    """The run's own files, as docs/cli.md and the refusal of a non-empty RUN_DIR name them."""
    return ", ".join(f"`{name}`" for name in RUN_FILES)


def refuse_interrupted(path: Path, out: str) -> None:
    """A fit without ``--resume`` / ``--force`` into a RUN_DIR whose fit was interrupted (its checkpoint,
    or its dead fit's claim beside its log and run.json): say how to continue it. A live writer is
    ``claimed``'s to refuse; a folder holding the claim alone is taken over."""
    if not path.is_dir():
        return
    other = read_claim(path)
    if other is not None and other.running:
        return
    killed = other is not None and other.what == "transferlearn fit" and (
        (path / LOG_FILE).exists() or (path / RUN_FILE).exists())
    if not (checkpoint_files(path) or killed):
        return
    pid = f", pid {other.pid}" if other is not None and other.pid >= 0 else ""
    if (path / CHECKPOINTS / ckpt.LAST).is_file():
        raise ValueError(f"--out {out!r} holds an interrupted fit (killed in training{pid}): continue it with "
                         "--resume, or start again with --force")
    raise ValueError(f"--out {out!r} holds an interrupted fit (killed in training{pid}, before its first checkpoint): "
                     "start again with --force")


def remove_for_force(out: Path) -> None:
    """``--force``: the previous run's log and checkpoints go before training (the new run writes its own);
    its classifier, history, metrics and pictures are replaced when the new one is saved."""
    remove_checkpoints(out)
    if (out / LOG_FILE).is_file():
        (out / LOG_FILE).unlink()


def check_resumable(out: Path) -> None:
    """``--resume``: RUN_DIR holds a checkpoint to continue (and its run.json, read by ``resolve``)."""
    if not (out / CHECKPOINTS / ckpt.LAST).is_file():
        done = (out / "classifier.json").is_file()
        raise ValueError(f"--resume: {str(out)!r} has no checkpoint to continue ({CHECKPOINTS}/{ckpt.LAST})"
                         + ("; its fit finished and saved its classifier" if done else
                            "; the fit was interrupted before its first epoch ended: start it again with --force"))


def remove_checkpoints(out: Path) -> None:
    """Delete the Trainer's checkpoint files (and the folder, when that leaves it empty)."""
    for path in checkpoint_files(out):
        path.unlink()
    if (out / CHECKPOINTS).is_dir() and not any((out / CHECKPOINTS).iterdir()):
        (out / CHECKPOINTS).rmdir()


def fit_options(args: argparse.Namespace, strategy: Any) -> dict[str, Any]:
    """``Trainer.fit`` options the flags set (explicit ones win over the strategy's)."""
    if args.backbone_lr is not None and strategy.finetune_epochs == 0:
        raise ValueError(f"--backbone-lr has no effect: strategy {strategy.kind} ({strategy.warmup_epochs} warm-up + "
                         "0 fine-tune epochs) never trains the backbone")
    given = {"head_lr": args.lr, "backbone_lr": args.backbone_lr, "patience": args.patience}
    return {key: value for key, value in given.items() if value is not None}
