"""Command line: ``transferlearn install-weights`` and ``transferlearn recommend``.

    transferlearn install-weights mobilenet_v2-b0353104.pth MobileNet_V2_Weights.IMAGENET1K_V1
    transferlearn recommend 300 --different-domain
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict

from .models import install_weights
from .strategy import recommend_strategy

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="transferlearn", description="transfer-learning helpers")
    sub = parser.add_subparsers(dest="command", required=True)
    inst = sub.add_parser("install-weights", help="copy a checkpoint into the torch hub cache (hash checked)")
    inst.add_argument("file", help="the .pth checkpoint")
    inst.add_argument("weights", help="torchvision weights name, e.g. MobileNet_V2_Weights.IMAGENET1K_V1")
    inst.add_argument("--no-check-hash", action="store_true", help="skip the SHA-256 prefix check")
    rec = sub.add_parser("recommend", help="which strategy fits your data (the decision table)")
    rec.add_argument("images_per_class", type=int)
    rec.add_argument("--different-domain", action="store_true", help="not ImageNet-like photos")
    rec.add_argument("--total-images", type=int, default=None)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status (2 with a message on bad input)."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "install-weights":
            path = install_weights(args.file, args.weights, check_hash=not args.no_check_hash)
            print(f"installed {args.weights} -> {path}")
        else:
            strategy = recommend_strategy(args.images_per_class, similar_domain=not args.different_domain,
                                          total_images=args.total_images)
            for key, value in asdict(strategy).items():
                print(f"{key:16s} {value}")
    except (TypeError, ValueError, FileNotFoundError) as error:
        print(f"transferlearn: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
