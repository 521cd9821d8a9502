"""Command line: ``transferlearn fit / evaluate / predict / export / recommend / install-weights``.

    transferlearn fit photos --out runs/pets --weights IMAGENET1K_V1 --epochs 5
    transferlearn predict runs/pets new/cat.jpg --top-k 2
    transferlearn export runs/pets --onnx pets.onnx

Every error (a missing folder, no classes, an unknown architecture, an unreadable image, a
folder that is not a run directory, bad arguments) is one line on stderr,
``transferlearn: error: ...``, and exit status 2; never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, NoReturn

from . import commands as commands

__all__ = ["main"]


class _UsageError(Exception):
    """A bad command line, reported like any other error (one line, status 2)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise _UsageError(f"{message} (see '{self.prog} --help')")


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text}")
    return value


def _fit_parser(sub: Any) -> None:
    fit = sub.add_parser("fit", help="train a classifier on a folder of images and save it")
    fit.add_argument("data_dir", metavar="DATA_DIR", help="DATA_DIR/<class>/<image>, or DATA_DIR/train + DATA_DIR/val")
    fit.add_argument("--out", required=True, metavar="RUN_DIR", help="new folder for the classifier and its report")
    fit.add_argument("--arch", default="mobilenet_v2", help="load_model architecture (default mobilenet_v2)")
    fit.add_argument("--weights", default="DEFAULT", help="pretrained weights: IMAGENET1K_V1, DEFAULT, ... or none")
    fit.add_argument("--strategy", default="auto", choices=commands.STRATEGIES,
                     help="auto asks recommend_strategy with the smallest class's image count")
    fit.add_argument("--epochs", type=_positive, default=None, help="total epochs (default: the strategy's)")
    fit.add_argument("--image-size", type=_positive, default=None, help="input side (default: the weights')")
    fit.add_argument("--batch-size", type=_positive, default=32)
    fit.add_argument("--val-fraction", type=float, default=0.2, help="share of each class for validation")
    fit.add_argument("--seed", type=int, default=0)
    fit.add_argument("--workers", type=int, default=None, help="DataLoader worker processes")
    fit.add_argument("--tensorboard", metavar="DIR", default=None, help="also log to TensorBoard in DIR (a new folder)")
    fit.set_defaults(run=commands.fit)


def _explain_parser(sub: Any) -> None:
    ex = sub.add_parser("explain", help="where the network looked: one heat-map overlay PNG per image")
    ex.add_argument("run_dir", metavar="RUN_DIR")
    ex.add_argument("images", metavar="IMAGE", nargs="+")
    ex.add_argument("--out", required=True, metavar="DIR", help="folder for IMAGE's <stem>.cam.png (never overwritten)")
    ex.add_argument("--target", metavar="CLASS", default=None, help="explain this class (default: the predicted one)")
    ex.add_argument("--method", default="hirescam", choices=("hirescam", "gradcam"))
    ex.add_argument("--batch-size", type=_positive, default=32)
    ex.set_defaults(run=commands.explain)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="transferlearn", description="transfer learning with pretrained CNNs")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _fit_parser(sub)
    ev = sub.add_parser("evaluate", help="accuracy, per-class scores and confusion matrix on a labelled folder")
    ev.add_argument("run_dir", metavar="RUN_DIR")
    ev.add_argument("data_dir", metavar="DATA_DIR", help="DATA_DIR/<class>/<image> (its val/ for a train/val layout)")
    ev.add_argument("--json", action="store_true", help="one JSON object instead of the table")
    ev.add_argument("--batch-size", type=_positive, default=64)
    ev.add_argument("--html", metavar="FILE", default=None,
                    help="also write the report as one self-contained HTML page")
    ev.set_defaults(run=commands.evaluate)
    pr = sub.add_parser("predict", help="classify image files")
    pr.add_argument("run_dir", metavar="RUN_DIR")
    pr.add_argument("images", metavar="IMAGE", nargs="+")
    pr.add_argument("--top-k", type=_positive, default=1, help="list the K most probable classes")
    pr.add_argument("--json", action="store_true", help="a JSON list instead of one line per image")
    pr.add_argument("--batch-size", type=_positive, default=32)
    pr.set_defaults(run=commands.predict)
    _explain_parser(sub)
    ex = sub.add_parser("export", help="write the classifier as ONNX (dynamic batch, probabilities out)")
    ex.add_argument("run_dir", metavar="RUN_DIR")
    ex.add_argument("--onnx", required=True, metavar="FILE")
    ex.set_defaults(run=commands.export)
    inst = sub.add_parser("install-weights", help="copy a checkpoint into the torch hub cache (hash checked)")
    inst.add_argument("file", help="the .pth checkpoint")
    inst.add_argument("weights", help="torchvision weights name, e.g. MobileNet_V2_Weights.IMAGENET1K_V1")
    inst.add_argument("--no-check-hash", action="store_true", help="skip the SHA-256 prefix check")
    inst.set_defaults(run=commands.install)
    rec = sub.add_parser("recommend", help="which strategy fits your data (the decision table)")
    rec.add_argument("images_per_class", type=int)
    rec.add_argument("--different-domain", action="store_true", help="not ImageNet-like photos")
    rec.add_argument("--total-images", type=int, default=None)
    rec.set_defaults(run=commands.recommend)
    return parser


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text if not isinstance(error, OSError) or error.filename is None or str(error.filename) in text \
        else f"{text}: {error.filename}"


def main(argv: list[str] | None = None) -> int:
    """Run the command line and return the exit status.

    Args:
        argv: the arguments after the program name (default: ``sys.argv[1:]``).

    Returns:
        0 on success; 2 with one line on stderr for any error; 130 when interrupted.

    Example:
        >>> main(["recommend", "300"])
        0
    """
    try:
        args = _parser().parse_args(argv)
        args.run(args)
    except KeyboardInterrupt:
        print("transferlearn: interrupted", file=sys.stderr)
        return 130
    except (_UsageError, ValueError, TypeError, OSError, ImportError, ArithmeticError, RuntimeError) as error:
        print(f"transferlearn: error: {_one_line(error)}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
