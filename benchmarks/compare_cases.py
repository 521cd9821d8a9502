"""The cases of ``python -m benchmarks.compare``: each builds its model untimed and returns ``(run, score)``.

``run()`` is what the benchmark times; ``score(result)`` (untimed) gives the test accuracy
or the agreement with the raw forward. ``CASES`` lists them as ``(part, role, label, case)``;
role ``textbook`` is the chapter's loop a part is compared against, ``floor`` one plain
inference pass, ``reference`` an accuracy reference, ``lever`` a library setting flipped.
"""

from __future__ import annotations

import argparse
import inspect
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch.utils.data import DataLoader, Dataset
from torchvision import datasets as tv_datasets

import transferlearn as tl

from . import textbook as tb
from .models import chapter_transform, mobilenet

__all__ = ["Bench", "CASES", "Case", "Made", "a_textbook_n", "a_library_n"]

# what a case returns: (the call to time, the untimed scoring of its result)
Made = tuple[Callable[[], Any], Callable[[Any], dict[str, Any]]]
Case = Callable[["Bench"], "Made | None"]


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
    seed: int = 0  # of this repeat: both sides' head init, shuffling and Dropout

    @property
    def weights(self) -> str | None:
        return None if self.args.weights == "none" else self.args.weights

    def loader(self, data: Dataset, shuffle: bool = True) -> DataLoader:
        return DataLoader(data, batch_size=self.args.batch, shuffle=shuffle,
                          generator=torch.Generator().manual_seed(self.seed) if shuffle else None)

    def library_model(self, num_classes: int | None = None) -> torch.nn.Module:
        return mobilenet(num_classes or self.classes, weights=self.weights, seed=self.seed,
                         channels_last=self.settings.channels_last)

    def trainer(self, model: torch.nn.Module, **options: Any) -> tl.Trainer:
        return tl.Trainer(model, device=self.settings.device, progress=False, seed=self.seed,
                          amp="bf16" if self.settings.amp else False, **options)

    def score(self, model: torch.nn.Module, data: Dataset | None = None) -> dict[str, Any]:
        return {"accuracy": tb.accuracy(model, self.loader(data or self.test, shuffle=False), self.settings)}


# ------------------------------------------------------------------- (a) feature extraction
def a_textbook(b: Bench) -> Made:
    model = tb.chapter_model(b.classes, b.weights, b.settings, b.seed)
    return (lambda: tb.feature_extraction(model, b.loader(b.train), b.settings, epochs=5)), b.score


def a_library(b: Bench) -> Made:
    model = b.library_model()
    return (lambda: b.trainer(model).fit(b.loader(b.train), warmup_epochs=5, finetune_epochs=0)), \
        (lambda _: b.score(model))


def a_default(b: Bench) -> Made:
    model = b.library_model()
    # The feature-extraction row of the decision table (it starts fine-tuning from 30 images
    # per class): the default a user who picks feature extraction gets, head epochs included.
    strategy = tl.recommend_strategy(min(b.per_class, 29))

    def run() -> Any:
        return b.trainer(model).fit(b.loader(b.train), strategy=strategy)
    return run, lambda _: {**b.score(model), "note": f"{strategy.kind}, {strategy.warmup_epochs}+"
                           f"{strategy.finetune_epochs} epochs"}


def a_probe(b: Bench) -> Made:
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
def b_textbook(b: Bench) -> Made:
    model = tb.chapter_model(b.classes, b.weights, b.settings, b.seed)
    return (lambda: tb.fine_tuning(model, b.loader(b.train), b.settings, warmup=2, finetune=3)), b.score


def b_library(b: Bench, fit_options: dict[str, Any] | None = None, **trainer_options: Any) -> Made:
    model = b.library_model()

    def run() -> Any:
        trainer = b.trainer(model, **trainer_options)
        return trainer.fit(b.loader(b.train), warmup_epochs=2, finetune_epochs=3, backbone_lr=1e-4,
                           **(fit_options or {}))
    return run, lambda _: b.score(model)


def b_library_bn(b: Bench) -> Made:
    """BatchNorm statistics adapting in the fine-tune phase, as they do in the chapter's loop."""
    return b_library(b, {"freeze_bn": False})


def b_library_no_cl(b: Bench) -> Made:
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


def c_raw(b: Bench) -> Made:
    model = _predict_model(b)

    def score(probs: torch.Tensor) -> dict[str, Any]:
        b.cache["raw_probs"] = probs
        return {"note": f"{len(probs)} test images"}
    return (lambda: tb.raw_predict(model, b.loader(b.test, shuffle=False), b.settings)), score


def c_trainer_predict(b: Bench) -> Made:
    trainer = b.trainer(_predict_model(b))
    return (lambda: trainer.predict(b.loader(b.test, shuffle=False))), lambda p: _agreement(b, p)


def c_classifier(b: Bench) -> Made | None:
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
def d_floor(b: Bench) -> Made:
    model = b.library_model().to(b.settings.device)
    return (lambda: tb.floor_pass(model, b.loader(b.train, shuffle=False), b.settings)), \
        (lambda n: {"note": f"{n} training images"})


# ------------------------------------------------------------------ (e) photos end to end
def _photo_sets(b: Bench) -> tuple[Dataset, Dataset, int]:
    size = b.args.photo_size
    train = tv_datasets.ImageFolder(str(b.photos / "train"), transform=chapter_transform(size, photos=True))
    val = tv_datasets.ImageFolder(str(b.photos / "val"), transform=chapter_transform(size, photos=True))
    return train, val, len(train.classes)


def e_textbook(b: Bench) -> Made:
    holder: dict[str, Any] = {}

    def run() -> Any:
        train, val, n = _photo_sets(b)
        holder.update(val=val, model=tb.chapter_model(n, b.weights, b.settings, b.seed))
        return tb.fine_tuning(holder["model"], b.loader(train), b.settings, warmup=2, finetune=3)
    return run, lambda _: b.score(holder["model"], holder["val"])


def e_library(b: Bench) -> Made | None:
    if not hasattr(tl, "load_image_folder"):
        return None
    holder: dict[str, Any] = {}

    def run() -> Any:
        data = tl.load_image_folder(b.photos, size=b.args.photo_size)
        train_loader, _ = data.loaders(batch_size=b.args.batch, generator=torch.Generator().manual_seed(b.seed))
        model = b.library_model(len(data.classes))
        holder.update(val=data.val, model=model)
        return b.trainer(model).fit(train_loader, warmup_epochs=2, finetune_epochs=3, backbone_lr=1e-4)
    return run, lambda _: b.score(holder["model"], holder["val"])


def e_floor(b: Bench) -> Made:
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


def a_textbook_n(b: Bench, data: Dataset, epochs: int) -> Callable[[], Any]:
    """The chapter's feature-extraction loop on ``data`` for ``epochs`` (for the scaling grid)."""
    model = tb.chapter_model(b.classes, b.weights, b.settings, b.seed)
    return lambda: tb.feature_extraction(model, b.loader(data), b.settings, epochs=epochs)


def a_library_n(b: Bench, data: Dataset, epochs: int) -> Callable[[], Any]:
    """``Trainer.fit(warmup_epochs=epochs, finetune_epochs=0)`` on ``data`` (scaling grid)."""
    model = b.library_model()
    return lambda: b.trainer(model).fit(b.loader(data), warmup_epochs=epochs, finetune_epochs=0)
