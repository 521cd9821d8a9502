"""Command line: ``transferlearn fit / evaluate / predict / export / recommend / install-weights``.

    transferlearn fit photos --out runs/pets --weights IMAGENET1K_V1 --epochs 5
    transferlearn predict runs/pets new/cat.jpg --top-k 2
    transferlearn export runs/pets --onnx pets.onnx

A user's error (a missing folder, no classes, an unknown architecture, an unreadable image, a
folder that is not a run directory, bad arguments; see ``USER_ERRORS``) is one line on stderr,
``transferlearn: error: ...``, and exit status 2; never a traceback. Any other exception is a
bug of transferlearn and keeps its traceback (exit status 1). A closed stdout
(``predict ... | head -1``) ends a read-only command quietly with status 0; ``fit`` carries on
training and saving with its output going to /dev/null, and exits 0 when it is saved.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from typing import Any, Iterator, NoReturn

import torch

from ..model.load import MissingWeightsError
from ..ship.format import MAX_SIDE
from . import _runfile
from . import commands as commands
from . import lr_find as lr_find

__all__ = ["USER_ERRORS", "main"]


class _UsageError(Exception):
    """A bad command line, reported like any other error (one line, status 2)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise _UsageError(f"{message} (see '{self.prog} --help')")


def _side(text: str) -> int:
    value = int(text)
    if not 1 <= value <= MAX_SIDE:
        raise argparse.ArgumentTypeError(f"must be an integer in [1, {MAX_SIDE}], got {text}")
    return value


def _fit_parser(sub: Any) -> None:
    fit = sub.add_parser("fit", help="train a classifier on a folder of images and save it")
    fit.add_argument("data_dir", metavar="DATA_DIR", nargs="?",
                     help="DATA_DIR/<class>/<image>, or DATA_DIR/train + DATA_DIR/val (with --config or --resume: "
                     "default the run's)")
    fit.add_argument("--out", required=True, metavar="RUN_DIR", help="new folder for the classifier and its report")
    fit.add_argument("--arch", default="mobilenet_v2", help="load_model architecture (default mobilenet_v2)")
    fit.add_argument("--weights", default="DEFAULT", help="pretrained weights: IMAGENET1K_V1, DEFAULT, ... or none")
    fit.add_argument("--strategy", default="auto", choices=commands.STRATEGIES,
                     help="auto asks recommend_strategy with the smallest class's image count")
    fit.add_argument("--epochs", type=_runfile._positive, default=None, help="total epochs (default: the strategy's)")
    fit.add_argument("--image-size", type=_side, default=None,
                     help=f"input side, at most {MAX_SIDE} (default: the weights')")
    fit.add_argument("--batch-size", type=_runfile._positive, default=32)
    fit.add_argument("--val-fraction", type=float, default=0.2, help="share of each class for validation")
    fit.add_argument("--seed", type=int, default=0)
    fit.add_argument("--workers", type=_runfile.workers, default=None,
                     help="DataLoader worker processes (0 to 4 x the CPU count)")
    fit.add_argument("--force", action="store_true",
                     help="save into a RUN_DIR that is not empty, or that an interrupted fit left")
    fit.add_argument("--tensorboard", metavar="DIR", default=None, help="also log to TensorBoard in DIR (a new folder)")
    fit.set_defaults(run=commands.fit)
    _runfile.add_run_flags(fit)          # the recipe's flags, --config, --resume; settings resolved in commands.fit


def _explain_parser(sub: Any) -> None:
    ex = sub.add_parser("explain", help="where the network looked: one heat-map overlay PNG per image")
    ex.add_argument("run_dir", metavar="RUN_DIR")
    ex.add_argument("images", metavar="IMAGE", nargs="+")
    ex.add_argument("--out", required=True, metavar="DIR", help="folder for IMAGE's <stem>.cam.png (never overwritten)")
    ex.add_argument("--target", metavar="CLASS", default=None, help="explain this class (default: the predicted one)")
    ex.add_argument("--method", default="hirescam", choices=("hirescam", "gradcam"))
    ex.add_argument("--batch-size", type=_runfile._positive, default=32)
    ex.set_defaults(run=commands.explain)


def _evaluate_parser(sub: Any) -> None:
    ev = sub.add_parser("evaluate", help="accuracy, per-class scores and confusion matrix on a labelled folder")
    ev.add_argument("run_dir", metavar="RUN_DIR")
    ev.add_argument("data_dir", metavar="DATA_DIR", help="DATA_DIR/<class>/<image> (its val/ for a train/val layout)")
    ev.add_argument("--json", action="store_true", help="one JSON object instead of the table")
    ev.add_argument("--batch-size", type=_runfile._positive, default=64)
    ev.add_argument("--html", metavar="FILE", default=None,
                    help="also write the report as one self-contained HTML page (a new file; never one of the "
                    "classifier's)")
    ev.add_argument("--force", action="store_true", help="replace the --html FILE if it exists")
    ev.set_defaults(run=commands.evaluate)


def _predict_parser(sub: Any) -> None:
    pr = sub.add_parser("predict", help="classify image files")
    pr.add_argument("run_dir", metavar="RUN_DIR")
    pr.add_argument("images", metavar="IMAGE", nargs="+")
    pr.add_argument("--top-k", type=_runfile._positive, default=1, help="list the K most probable classes")
    pr.add_argument("--json", action="store_true", help="a JSON list instead of one line per image")
    pr.add_argument("--batch-size", type=_runfile._positive, default=32)
    pr.add_argument("--no-progress", action="store_true", help="no progress on stderr")
    pr.add_argument("--tta", action="store_true",
                    help="test-time augmentation: mean over the centre crop, corner crops and mirrors")
    pr.set_defaults(run=commands.predict)


def _tool_parsers(sub: Any) -> None:
    """export, install-weights, recommend."""
    ex = sub.add_parser("export", help="write the classifier as ONNX (dynamic batch, probabilities out)")
    ex.add_argument("run_dir", metavar="RUN_DIR")
    ex.add_argument("--onnx", required=True, metavar="FILE")
    ex.add_argument("--force", action="store_true", help="replace FILE if it exists")
    ex.set_defaults(run=commands.export)
    inst = sub.add_parser("install-weights", help="copy a checkpoint into the torch hub cache (hash checked)")
    inst.add_argument("file", help="the .pth checkpoint")
    inst.add_argument("weights", help="torchvision weights name, e.g. MobileNet_V2_Weights.IMAGENET1K_V1")
    inst.add_argument("--no-check-hash", action="store_true", help="skip the SHA-256 prefix check")
    inst.add_argument("--force", action="store_true", help="replace a different checkpoint already in the cache")
    inst.set_defaults(run=commands.install)
    rec = sub.add_parser("recommend", help="which strategy fits your data (the decision table)")
    rec.add_argument("images_per_class", type=int)
    rec.add_argument("--different-domain", action="store_true", help="not ImageNet-like photos")
    rec.add_argument("--total-images", type=int, default=None)
    rec.set_defaults(run=commands.recommend)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="transferlearn", description="transfer learning with pretrained CNNs")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _fit_parser(sub)
    _evaluate_parser(sub)
    _predict_parser(sub)
    _explain_parser(sub)
    _tool_parsers(sub)
    lr_find.add_parser(sub)
    return parser


# What a user can cause and fix: reported in one line, exit status 2 (see docs/cli.md). Anything else
# (TypeError, KeyError, RuntimeError, AssertionError, ...) is a bug of transferlearn: a traceback.
USER_ERRORS: tuple[type[BaseException], ...] = (
    _UsageError, ValueError, OSError, ImportError, MemoryError, FloatingPointError,
    getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError))


def _one_line(error: BaseException) -> str:
    if isinstance(error, MissingWeightsError):
        return _missing_weights(error)
    if isinstance(error, MemoryError) or "OutOfMemoryError" in type(error).__name__:
        first = str(error).split(".")[0].strip()
        return (f"out of memory ({type(error).__name__}{': ' + first if first else ''}); try a smaller "
                "--batch-size or --image-size")
    text = " ".join(str(error).split()) or type(error).__name__
    return text if not isinstance(error, OSError) or error.filename is None or str(error.filename) in text \
        else f"{text}: {error.filename}"


def _missing_weights(error: MissingWeightsError) -> str:
    """The command line's wording: its own commands, not the Python API's options."""
    if error.weights.startswith("timm/"):
        return (f"pretrained weights for {error.weights!r} are not in the local Hugging Face cache and the "
                "command line never downloads: fetch them once on a connected machine (timm.create_model("
                f"{error.weights[5:]!r}, pretrained=True)) or pass --weights none")
    from torchvision.models import get_weight
    url = get_weight(error.weights).url
    return (f"weights {error.weights} are not in the torch hub cache (expected {error.expected}); download "
            f"{url} and run: transferlearn install-weights FILE {error.weights}")


def _quiet_stdout() -> None:
    """After a closed pipe: send what is still buffered for stdout to /dev/null (Python's docs on SIGPIPE)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass


class _StdoutOrNothing:
    """``sys.stdout`` for a command that must finish even when nobody reads it (``fit ... | head -1``):
    on the first ``BrokenPipeError`` what is buffered and everything later goes to /dev/null."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def _closed(self) -> None:
        _quiet_stdout()                                   # the fd: so the interpreter's last flush succeeds
        self._stream = open(os.devnull, "w")              # noqa: SIM115 (lives as long as the process)

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except BrokenPipeError:
            self._closed()
            return len(text)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except BrokenPipeError:
            self._closed()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


@contextlib.contextmanager
def _stdout_may_close(enabled: bool) -> Iterator[None]:
    """While a command that writes files runs (``fit``): a closed stdout does not stop it."""
    if not enabled:
        yield
        return
    before, sys.stdout = sys.stdout, _StdoutOrNothing(sys.stdout)
    try:
        yield
    finally:
        sys.stdout = before


def main(argv: list[str] | None = None) -> int:
    """Run the command line and return the exit status.

    Args:
        argv: the arguments after the program name (default: ``sys.argv[1:]``).

    Returns:
        0 on success (also when stdout is closed early, as by ``| head``: ``predict`` and the other
        read-only commands stop quietly, ``fit`` trains and saves on, its output going nowhere); 2 with one line on
        stderr for a user's error (``USER_ERRORS``); 130 when interrupted. Other exceptions
        (bugs) propagate with their traceback.

    Example:
        >>> main(["recommend", "300"])
        0
    """
    try:
        args = _parser().parse_args(argv)
        with _stdout_may_close(args.run is commands.fit):
            args.run(args)
    except KeyboardInterrupt:
        print("transferlearn: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        _quiet_stdout()
        return 0
    except USER_ERRORS as error:
        print(f"transferlearn: error: {_one_line(error)}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
