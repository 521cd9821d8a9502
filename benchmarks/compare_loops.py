"""The chapter's loops against transferlearn, same data, batch size and epochs, in one process.

    TORCH_HOME=$PWD/.cache/torch .venv/bin/python benchmarks/compare_loops.py            # full
    TORCH_HOME=$PWD/.cache/torch .venv/bin/python benchmarks/compare_loops.py --quick    # minutes
    bash benchmarks/gpu_check.sh                                                         # CUDA

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
medians. Accuracy is always top-1 on the held-out split. Memory: the peak resident set size
of the process during the case and its growth over the start (CUDA: max allocated).
Two lever rows in (b): ``Trainer(channels_last=False)`` (what the layout gives) and
``fit(freeze_bn=False)`` (BatchNorm statistics adapting, as in the chapter's loop).
``--scaling`` adds time against epochs (5, 20) and data (1x, 4x) for feature extraction,
with a plot.
Results: ``benchmarks/results/compare_loops[_quick|_cuda].{json,md}``.
"""

from __future__ import annotations

import argparse
import inspect
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import benchreport
import textbook as tb
import torch
from benchutil import ROOT, machine, measure, split_folder
from torch.utils.data import DataLoader, Dataset
from torchvision import datasets as tv_datasets
from torchvision import transforms as T

import transferlearn as tl

__all__ = ["Bench", "CASES", "main"]

Case = Callable[["Bench"], tuple[Callable[[], Any], Callable[[Any], dict[str, Any]]]]


@dataclass
class Bench:
    """Everything the cases share: settings, the digits splits, the photo folder."""

    args: argparse.Namespace
    settings: tb.Settings
    train: Dataset
    test: Dataset
    classes: int
    per_class: int
    photos: Path | None
    tmp: Path
    cache: dict[str, Any] = field(default_factory=dict)

    @property
    def weights(self) -> str | None:
        return None if self.args.weights == "none" else self.args.weights

    def loader(self, data: Dataset, shuffle: bool = True) -> DataLoader:
        return DataLoader(data, batch_size=self.args.batch, shuffle=shuffle,
                          generator=torch.Generator().manual_seed(0) if shuffle else None)

    def library_model(self, num_classes: int | None = None) -> torch.nn.Module:
        torch.manual_seed(0)
        model = tl.load_model("mobilenet_v2", weights=self.weights, num_classes=num_classes or self.classes)
        return model.to(memory_format=torch.channels_last) if self.settings.channels_last else model

    def trainer(self, model: torch.nn.Module, **options: Any) -> tl.Trainer:
        return tl.Trainer(model, device=self.settings.device, progress=False, seed=0,
                          amp="bf16" if self.settings.amp else False, **options)

    def score(self, model: torch.nn.Module, data: Dataset | None = None) -> dict[str, Any]:
        return {"accuracy": tb.accuracy(model, self.loader(data or self.test, shuffle=False), self.settings)}


def _transform(size: int, photos: bool = False) -> T.Compose:
    """The chapter's eval preprocessing at ``size`` (photos: resize by 256/224, then crop)."""
    resize = round(size * 256 / 224) if photos else size
    return T.Compose([T.Resize(resize), T.CenterCrop(size), T.ToTensor(),
                      T.Normalize(tl.IMAGENET_MEAN, tl.IMAGENET_STD)])


# ------------------------------------------------------------------- (a) feature extraction
def a_textbook(b: Bench):
    model = tb.chapter_model(b.classes, b.weights, b.settings)
    return (lambda: tb.feature_extraction(model, b.loader(b.train), b.settings, epochs=5)), b.score


def a_library(b: Bench):
    model = b.library_model()
    return (lambda: b.trainer(model).fit(b.loader(b.train), warmup_epochs=5, finetune_epochs=0)), \
        (lambda _: b.score(model))


def a_default(b: Bench):
    model = b.library_model()
    strategy = tl.recommend_strategy(b.per_class)

    def run() -> Any:
        return b.trainer(model).fit(b.loader(b.train), strategy=strategy)
    return run, lambda _: {**b.score(model), "note": f"{strategy.kind}, {strategy.warmup_epochs}+"
                           f"{strategy.finetune_epochs} epochs"}


def a_probe(b: Bench):
    from sklearn.linear_model import LogisticRegression

    model = b.library_model()

    def run() -> Any:
        feats = tl.extract_features(model, b.loader(b.train, shuffle=False))
        return LogisticRegression(C=1.0, max_iter=5000).fit(feats.tensors[0].numpy(), feats.tensors[1].numpy())

    def score(probe: Any) -> dict[str, Any]:
        test = tl.extract_features(model, b.loader(b.test, shuffle=False))
        return {"accuracy": float(probe.score(test.tensors[0].numpy(), test.tensors[1].numpy())),
                "note": "extract features + LogisticRegression(C=1)"}
    return run, score


# ------------------------------------------------------------------------ (b) fine-tuning
def b_textbook(b: Bench):
    model = tb.chapter_model(b.classes, b.weights, b.settings)
    return (lambda: tb.fine_tuning(model, b.loader(b.train), b.settings, warmup=2, finetune=3)), b.score


def b_library(b: Bench, fit_options: dict[str, Any] | None = None, **trainer_options: Any):
    model = b.library_model()

    def run() -> Any:
        trainer = b.trainer(model, **trainer_options)
        return trainer.fit(b.loader(b.train), warmup_epochs=2, finetune_epochs=3, backbone_lr=1e-4,
                           **(fit_options or {}))
    return run, lambda _: b.score(model)


def b_library_bn(b: Bench):
    """BatchNorm statistics adapting in the fine-tune phase, as they do in the chapter's loop."""
    return b_library(b, {"freeze_bn": False})


def b_library_no_cl(b: Bench):
    """The layout lever off (a library without the option runs its only layout)."""
    options = {"channels_last": False} if "channels_last" in inspect.signature(tl.Trainer).parameters else {}
    return b_library(b, **options)


# ------------------------------------------------------------------------- (c) prediction
def _predict_model(b: Bench) -> torch.nn.Module:
    if "predict_model" not in b.cache:  # one model for every (c) case, so outputs compare
        b.cache["predict_model"] = b.library_model().to(b.settings.device).eval()
    return b.cache["predict_model"]


def _agreement(b: Bench, probs: torch.Tensor) -> dict[str, Any]:
    ref = b.cache.get("raw_probs")
    if ref is None or ref.shape != probs.shape:
        return {}
    diff = float((probs - ref).abs().max())
    return {"max_abs_diff": diff, "note": f"max |p - p_raw| = {diff:.1e}"}


def c_raw(b: Bench):
    model = _predict_model(b)

    def score(probs: torch.Tensor) -> dict[str, Any]:
        b.cache["raw_probs"] = probs
        return {"note": f"{len(probs)} test images"}
    return (lambda: tb.raw_predict(model, b.loader(b.test, shuffle=False), b.settings)), score


def c_trainer_predict(b: Bench):
    trainer = b.trainer(_predict_model(b))
    return (lambda: trainer.predict(b.loader(b.test, shuffle=False))), lambda p: _agreement(b, p)


def c_classifier(b: Bench):
    if not hasattr(tl, "load_classifier"):
        return None
    directory = b.tmp / "classifier"
    if not directory.exists():
        tl.save_classifier(_predict_model(b), directory, classes=[str(i) for i in range(b.classes)],
                           transform=tl.imagenet_transform(size=b.args.size, resize=b.args.size),
                           arch="mobilenet_v2")
    clf = tl.load_classifier(directory)
    paths = [p for p, _ in b.test.samples] if hasattr(b.test, "samples") else None
    if paths is None:
        return None

    def run() -> Any:
        return clf.predict(paths)

    def score(out: list[dict[str, Any]]) -> dict[str, Any]:
        top = torch.tensor([o["probability"] for o in out])
        ref = b.cache.get("raw_probs")
        if ref is None or len(ref) != len(top):
            return {"note": "from the image files"}
        diff = float((top - ref.max(1).values).abs().max())
        return {"max_abs_diff": diff, "note": f"from the image files; max |p_top - p_raw_top| = {diff:.1e}"}
    return run, score


# ---------------------------------------------------------------------------- (d) floor
def d_floor(b: Bench):
    model = b.library_model().to(b.settings.device)
    return (lambda: tb.floor_pass(model, b.loader(b.train, shuffle=False), b.settings)), \
        (lambda n: {"note": f"{n} training images"})


# ------------------------------------------------------------------ (e) photos end to end
def _photo_sets(b: Bench) -> tuple[Dataset, Dataset, int]:
    size = b.args.photo_size
    train = tv_datasets.ImageFolder(str(b.photos / "train"), transform=_transform(size, photos=True))
    val = tv_datasets.ImageFolder(str(b.photos / "val"), transform=_transform(size, photos=True))
    return train, val, len(train.classes)


def e_textbook(b: Bench):
    holder: dict[str, Any] = {}

    def run() -> Any:
        train, val, n = _photo_sets(b)
        holder.update(val=val, model=tb.chapter_model(n, b.weights, b.settings))
        return tb.fine_tuning(holder["model"], b.loader(train), b.settings, warmup=2, finetune=3)
    return run, lambda _: b.score(holder["model"], holder["val"])


def e_library(b: Bench):
    if not hasattr(tl, "load_image_folder"):
        return None
    holder: dict[str, Any] = {}

    def run() -> Any:
        data = tl.load_image_folder(b.photos, size=b.args.photo_size)
        train_loader, _ = data.loaders(batch_size=b.args.batch, generator=torch.Generator().manual_seed(0))
        model = b.library_model(len(data.classes))
        holder.update(val=data.val, model=model)
        return b.trainer(model).fit(train_loader, warmup_epochs=2, finetune_epochs=3, backbone_lr=1e-4)
    return run, lambda _: b.score(holder["model"], holder["val"])


def e_floor(b: Bench):
    model = b.library_model().to(b.settings.device)
    return (lambda: tb.floor_pass(model, b.loader(_photo_sets(b)[0], shuffle=False), b.settings)), \
        (lambda n: {"note": f"{n} photos, decoded by ImageFolder"})


# part, role, label, case
CASES: list[tuple[str, str, str, Case]] = [
    ("a", "textbook", "chapter loop: frozen backbone, 5 epochs", a_textbook),
    ("a", "library", "Trainer.fit(warmup_epochs=5, finetune_epochs=0)", a_library),
    ("a", "library", "Trainer.fit(strategy=recommend_strategy(n))", a_default),
    ("a", "reference", "converged linear probe on the same features", a_probe),
    ("b", "textbook", "chapter loop: 2 frozen + 3 unfrozen epochs", b_textbook),
    ("b", "library", "Trainer.fit(warmup_epochs=2, finetune_epochs=3, backbone_lr=1e-4)", b_library),
    ("b", "lever", "the same with Trainer(channels_last=False)", b_library_no_cl),
    ("b", "lever", "the same with fit(freeze_bn=False)", b_library_bn),
    ("c", "textbook", "raw inference_mode forward", c_raw),
    ("c", "library", "Trainer.predict(test_loader)", c_trainer_predict),
    ("c", "library", "load_classifier(dir).predict(files)", c_classifier),
    ("d", "floor", "one inference pass of the backbone over the training set", d_floor),
    ("e", "textbook", "ImageFolder + chapter fine-tuning loop (2+3)", e_textbook),
    ("e", "library", "load_image_folder + Trainer.fit (2+3)", e_library),
    ("e", "floor", "one inference pass over the photos (ImageFolder)", e_floor),
]


def run_cases(b: Bench, parts: list[str], repeats: int) -> list[dict[str, Any]]:
    """Every selected case once per repeat, interleaved, the order rotating each repeat."""
    selected = [c for c in CASES if c[0] in parts and not (c[1] == "lever" and b.args.no_levers)]
    rows = {label: {"part": part, "role": role, "case": label, "runs": []} for part, role, label, _ in selected}
    for r in range(repeats):
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
    transform = _transform(args.size)
    train = tv_datasets.ImageFolder(str(train_dir), transform=transform)
    test = tv_datasets.ImageFolder(str(test_dir), transform=transform)
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
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
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
        print(f"compare_loops: {machine(device)['cpu']}, {len(train)} train / {len(test)} test digits at "
              f"{args.size}px, batch {args.batch}, {args.repeats} repeat(s), device {device}", flush=True)
        tb.raw_predict(bench.library_model().to(device), [next(iter(bench.loader(test)))], settings)  # warm-up
        rows = run_cases(bench, args.parts, args.repeats)
        scaling = benchreport.scaling(bench, a_textbook_n, a_library_n) if args.scaling else None
    report = benchreport.summarise(rows, args, machine(device), scaling, argv if argv is not None else sys.argv[1:])
    benchreport.write(report, args.out)
    print(benchreport.markdown(report))
    return report


def a_textbook_n(b: Bench, data: Dataset, epochs: int) -> Callable[[], Any]:
    """The chapter's feature-extraction loop on ``data`` for ``epochs`` (for the scaling grid)."""
    model = tb.chapter_model(b.classes, b.weights, b.settings)
    return lambda: tb.feature_extraction(model, b.loader(data), b.settings, epochs=epochs)


def a_library_n(b: Bench, data: Dataset, epochs: int) -> Callable[[], Any]:
    """``Trainer.fit(warmup_epochs=epochs, finetune_epochs=0)`` on ``data`` (scaling grid)."""
    model = b.library_model()
    return lambda: b.trainer(model).fit(b.loader(data), warmup_epochs=epochs, finetune_epochs=0)


if __name__ == "__main__":
    main()
