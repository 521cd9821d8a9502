"""The chapter's loops against transferlearn, same data, batch size and epochs, in one process.

    .venv/bin/python -m benchmarks.compare            # full (TORCH_HOME defaults to .cache/torch)
    .venv/bin/python -m benchmarks.compare --quick    # minutes
    bash benchmarks/gpu_check.sh                      # CUDA

Real pretrained MobileNetV2 (IMAGENET1K_V1), batch 32. Parts, as in issue 8:

(a) feature extraction: the chapter's loop (everything frozen, new head, ``model.train()``,
    Adam 1e-3, 5 epochs) vs ``Trainer.fit(warmup_epochs=5, finetune_epochs=0)`` vs the
    default ``fit(strategy=recommend_strategy(n))``; a converged logistic probe on the same
    features is the accuracy reference.
(b) fine-tuning: the chapter's loop (backbone 1e-4 / head 1e-3, 2 epochs frozen, 3 unfrozen)
    vs ``Trainer.fit(warmup_epochs=2, finetune_epochs=3, backbone_lr=1e-4)``.
(c) prediction over the test set: a raw ``inference_mode`` forward vs ``Trainer.predict`` vs
    a saved and reloaded classifier's ``predict`` on the image files.
(d) the floor: one inference pass of the backbone over the training set.
(e) a folder of real photos (the chess pieces) end to end, files to trained model: the
    chapter's fine-tuning loop on torchvision's ``ImageFolder`` vs ``load_image_folder`` +
    ``Trainer.fit``; its own floor is one inference pass over the photos.

(a)-(d) use the scikit-learn handwritten digits (real, 8x8, upscaled to ``--size``). Every
case runs once per repeat, all cases interleaved (the order rotates each repeat); seconds are
medians. Repeat r seeds every side with r (head init, shuffling, Dropout), so the accuracy is
a median over seeds, paired across sides: one seed's accuracy moves by 2-5 points on these
539 test digits. Accuracy is always top-1 on the held-out split. Memory: the peak resident set size
of the process during the case and its growth over the start (CUDA: max allocated).
Two lever rows in (b): ``Trainer(channels_last=False)`` (what the layout gives) and
``fit(freeze_bn=False)`` (BatchNorm statistics adapting, as in the chapter's loop).
``--scaling`` adds time against epochs (5, 20) and data (1x, 4x) for feature extraction,
with a plot.
Results: ``benchmarks/results/compare_loops[_quick|_cuda].{json,md}``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset
from torchvision import datasets as tv_datasets

from . import benchreport
from . import textbook as tb
from .benchutil import machine, measure
from .compare_cases import CASES, Bench, a_library_n, a_textbook_n
from .models import chapter_transform
from .sources import split_folder
from .util import ROOT

__all__ = ["CASES", "run_cases", "parse", "main"]


def run_cases(b: Bench, parts: list[str], repeats: int) -> list[dict[str, Any]]:
    """Every selected case once per repeat, interleaved, the order rotating each repeat."""
    selected = [c for c in CASES if c[0] in parts and not (c[1] == "lever" and b.args.no_levers)]
    rows = {label: {"part": part, "role": role, "case": label, "runs": []} for part, role, label, _ in selected}
    for r in range(repeats):
        b.seed = r  # a different seed per repeat, the same on both sides: accuracy is a median over seeds
        order = selected[r % len(selected):] + selected[:r % len(selected)]
        if r == 0:  # (c) compares its outputs with the raw forward's
            order.sort(key=lambda c: c[2] != "raw inference_mode forward")
        for part, role, label, case in order:
            if role == "reference" and r > 0:  # an accuracy reference: timed once is enough
                continue
            made = case(b)
            if made is None:
                rows[label]["skipped"] = "needs a transferlearn module not in this tree yet"
                continue
            run, score = made
            m = measure(run, b.settings.device)
            result = score(m.pop("value"))
            rows[label]["runs"].append({**m, **result})
            print(f"  [{r + 1}/{repeats}] ({part}) {label}: {m['seconds']:.2f}s "
                  f"{result.get('accuracy', '')} {result.get('note', '')}", flush=True)
    return list(rows.values())


def _balanced(targets: list[int], limit: int, seed: int) -> list[int]:
    """About ``limit`` indices, the same number from every class, drawn with ``seed``."""
    g = torch.Generator().manual_seed(seed)
    classes = sorted(set(targets))
    per = max(1, limit // len(classes))
    keep = []
    for c in classes:
        members = [i for i, t in enumerate(targets) if t == c]
        keep += [members[j] for j in torch.randperm(len(members), generator=g)[:per].tolist()]
    return sorted(keep)


def _digits(args: argparse.Namespace) -> tuple[Dataset, Dataset, int, int]:
    train_dir, test_dir = split_folder("digits", test_fraction=0.3)
    preprocess = chapter_transform(args.size)
    train = tv_datasets.ImageFolder(str(train_dir), transform=preprocess)
    test = tv_datasets.ImageFolder(str(test_dir), transform=preprocess)
    if args.limit:
        for data, seed in ((train, 0), (test, 1)):  # ImageFolder subsets keep .samples (files) in step
            keep = _balanced(data.targets, args.limit, seed)
            data.samples = data.imgs = [data.samples[i] for i in keep]
            data.targets = [data.targets[i] for i in keep]
    return train, test, 10, min(train.targets.count(c) for c in range(10))


def _photos(args: argparse.Namespace) -> Path | None:
    if args.photos == "none":
        return None
    try:
        train, _ = split_folder(args.photos, test_fraction=0.5)
    except RuntimeError as exc:  # no registry on this machine and no cached wheel
        print(f"part (e) skipped: {exc}", file=sys.stderr)
        return None
    root = train.parent
    if not args.photo_limit:
        return root
    limited = Path(tempfile.mkdtemp(prefix="photos-", dir=ROOT / ".cache" / "bench"))
    for split in ("train", "val"):
        for cls in sorted((root / split).iterdir()):
            (limited / split / cls.name).mkdir(parents=True)
            for f in sorted(cls.iterdir())[: max(1, args.photo_limit // 12)]:
                (limited / split / cls.name / f.name).symlink_to(f.resolve())
    return limited


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.compare", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="a few minutes: fewer images, one repeat")
    p.add_argument("--device", default="cpu")
    p.add_argument("--amp", action="store_true", help="bf16 autocast on both sides")
    p.add_argument("--channels-last", action="store_true", help="channels_last on both sides")
    p.add_argument("--weights", default="IMAGENET1K_V1", help="IMAGENET1K_V1, or none (smoke test)")
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--repeats", type=int, default=None)
    p.add_argument("--limit", type=int, default=None, help="training and test images of the digits")
    p.add_argument("--parts", nargs="+", default=["a", "b", "c", "d", "e"])
    p.add_argument("--photos", default="chess", help="chess, digits or none (the folder of part e)")
    p.add_argument("--photo-size", type=int, default=None)
    p.add_argument("--photo-limit", type=int, default=None, help="photos per split (all classes)")
    p.add_argument("--scaling", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--scaling-n", type=int, default=None, help="training images at 1x")
    p.add_argument("--no-levers", action="store_true", help="skip the (b) lever rows")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    p.add_argument("--out", type=Path, default=None, help="results stem (default benchmarks/results/...)")
    args = p.parse_args(argv)
    quick = args.quick
    args.repeats = args.repeats or (1 if quick else 3)
    args.limit = args.limit if args.limit is not None else (256 if quick else None)
    args.photo_size = args.photo_size or (96 if quick else 128)
    args.photo_limit = args.photo_limit if args.photo_limit is not None else (120 if quick else None)
    args.scaling_n = args.scaling_n or (64 if quick else 300)
    suffix = "_cuda" if args.device.startswith("cuda") else ("_quick" if quick else "")
    args.out = args.out or ROOT / "benchmarks" / "results" / f"compare_loops{suffix}"
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    settings = tb.Settings(device, amp=args.amp, channels_last=args.channels_last)
    train, test, classes, per_class = _digits(args)
    photos = _photos(args) if "e" in args.parts else None
    (ROOT / ".cache" / "bench").mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=ROOT / ".cache" / "bench") as tmp:
        bench = Bench(args, settings, train, test, classes, per_class, photos, Path(tmp))
        print(f"benchmarks.compare: {machine(device)['cpu']}, {len(train)} train / {len(test)} test digits at "
              f"{args.size}px, batch {args.batch}, {args.repeats} repeat(s), device {device}", flush=True)
        tb.raw_predict(bench.library_model().to(device), [next(iter(bench.loader(test)))], settings)  # warm-up
        rows = run_cases(bench, args.parts, args.repeats)
        scaling = benchreport.scaling(bench, a_textbook_n, a_library_n) if args.scaling else None
    report = benchreport.summarise(rows, args, machine(device), scaling, argv if argv is not None else sys.argv[1:])
    benchreport.write(report, args.out)
    print(benchreport.markdown(report))
    return report


if __name__ == "__main__":
    main()
