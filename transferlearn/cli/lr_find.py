"""``transferlearn lr-find DATA_DIR``: the learning-rate range test on a folder of images.

    transferlearn lr-find photos --weights IMAGENET1K_V1 --phase head --out lr.png

Prints the suggested head rate (and where the curve went); ``--out`` writes the curve as a
PNG. Registered in the parser by ``add_parser`` (one line in ``cli/__init__.py``).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..data.folder import load_image_folder
from ..model.heads import replace_head
from ..model.load import load_model
from ..train.trainer import Trainer
from ._runfile import _positive, workers

__all__ = ["add_parser", "run"]


def add_parser(sub: Any) -> None:
    """Add the ``lr-find`` sub-command to ``sub`` (the parser's sub-parsers)."""
    p = sub.add_parser("lr-find", help="the learning-rate range test: loss against rate, and a suggested rate")
    p.add_argument("data_dir", metavar="DATA_DIR", help="DATA_DIR/<class>/<image>, or DATA_DIR/train + DATA_DIR/val")
    p.add_argument("--arch", default="mobilenet_v2", help="load_model architecture (default mobilenet_v2)")
    p.add_argument("--weights", default="DEFAULT", help="pretrained weights: IMAGENET1K_V1, DEFAULT, ... or none")
    p.add_argument("--image-size", type=_positive, default=None, help="input side (default: the weights')")
    p.add_argument("--phase", default="head", choices=("head", "finetune"),
                   help="head: the warm-up (on cached features); finetune: the whole model")
    p.add_argument("--steps", type=_positive, default=100, help="optimizer steps (default 100)")
    p.add_argument("--start-lr", type=float, default=1e-7)
    p.add_argument("--end-lr", type=float, default=1.0)
    p.add_argument("--batch-size", type=_positive, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=workers, default=None, help="DataLoader worker processes (0 to 4 x the CPU count)")
    p.add_argument("--out", default=None, metavar="PNG", help="write the curve to this PNG file (a new file)")
    p.add_argument("--force", action="store_true", help="replace the --out file if it exists")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> None:
    """Load the model and the folder's training split as ``fit`` does, run ``Trainer.lr_find``, report."""
    out = _plot_path(args)                                   # before anything is loaded
    weights = None if args.weights.lower() == "none" else args.weights
    model = load_model(args.arch, weights=weights)
    data = load_image_folder(args.data_dir, seed=args.seed, size=args.image_size, model=model)  # its own preprocessing
    replace_head(model, len(data.classes))
    train_loader, _ = data.loaders(args.batch_size, num_workers=args.workers)
    result = Trainer(model, seed=args.seed, progress=False).lr_find(
        train_loader, phase=args.phase, start_lr=args.start_lr, end_lr=args.end_lr, num_steps=args.steps)
    where = "diverged and stopped" if result.diverged else "ran"
    print(f"{args.phase}: {where} after {len(result.lrs)} steps from {result.lrs[0]:.1e} to {result.lrs[-1]:.1e}"
          f"{' on cached features' if result.cached else ''}")
    print("suggested head_lr: " + ("none (the curve is too short)" if result.suggestion is None
                                   else f"{result.suggestion:.2e}"))
    if out is not None:
        print(f"wrote {result.plot(out)}")


def _plot_path(args: argparse.Namespace) -> Path | None:
    """``--out``: a new file (``--force`` replaces one), never inside DATA_DIR, where the next
    ``fit`` would read the plot as a training image."""
    if args.out is None:
        return None
    out, data = Path(args.out), Path(args.data_dir).resolve()
    if data == out.resolve() or data in out.resolve().parents:
        raise ValueError(f"--out {args.out!r} is inside DATA_DIR {args.data_dir!r}: the next fit would read the "
                         "plot as an image; write it outside the data folder")
    if (out.exists() or out.is_symlink()) and not args.force:
        raise ValueError(f"--out {args.out!r} exists; pass --force to replace it")
    return out
