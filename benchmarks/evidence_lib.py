"""The building blocks of ``python -m benchmarks.evidence``: tasks, seeded splits, one training run, probes.

A *task* is a dataset decoded once to uint8 tensors (``benchmarks.tensors.decoded``), with a fixed
test set per seed: for each class, a seeded permutation gives ``test_per_class`` test images
first and the training images after them, so every condition of a comparison (and every
size of the decision table) is judged on the same test images for the same seed.

One *run* is what a user of transferlearn would write: ``load_model`` with the real
MobileNetV2 IMAGENET1K_V1 weights (or ``weights=None``), ``imagenet_transform``,
``Trainer(model, seed=...).fit(...)`` without validation (fixed epochs, no model
selection), then ``Trainer.evaluate`` on the test set. Only the factor under test changes.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2

import transferlearn as tl

from .models import PRETRAINED, mobilenet

__all__ = ["NORMS", "Task", "TensorImages", "Run", "run", "probe", "train_mode_accuracy", "grey_stem"]

GREY_MEAN = float(np.mean(tl.IMAGENET_MEAN))
GREY_STD = float(np.mean(tl.IMAGENET_STD))


@dataclass
class Task:
    """A decoded dataset with its evaluation protocol."""

    name: str
    images: torch.Tensor          # uint8 (N, C, S, S)
    labels: torch.Tensor          # int64 (N,)
    classes: list[str]
    test_per_class: int
    similar_domain: bool

    @property
    def size(self) -> int:
        return int(self.images.shape[-1])

    def split(self, seed: int, n_per_class: int | None) -> tuple[np.ndarray, np.ndarray]:
        """Seeded stratified (train, test) indices; ``n_per_class=None`` takes all the rest."""
        rng = np.random.default_rng(seed)
        train, test = [], []
        for c in range(len(self.classes)):
            idx = rng.permutation(np.flatnonzero(self.labels.numpy() == c))
            if len(idx) < self.test_per_class + (n_per_class or 1):
                raise ValueError(f"{self.name}: class {self.classes[c]!r} has {len(idx)} images, fewer than "
                                 f"{self.test_per_class} test + {n_per_class} train")
            test.append(idx[:self.test_per_class])
            rest = idx[self.test_per_class:]
            train.append(rest if n_per_class is None else rest[:n_per_class])
        return np.concatenate(train), np.concatenate(test)


class TensorImages(Dataset):
    """uint8 images kept in memory, passed through ``transform`` when read.

    With an eval ``imagenet_transform`` (or torchvision's deterministic v2 transforms) the
    Trainer sees a deterministic dataset and caches the warm-up features.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform: Callable) -> None:
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.transform(self.images[i]), self.labels[i]


NORMS: dict[str, tuple[Sequence[float], Sequence[float]]] = {
    "imagenet": (tl.IMAGENET_MEAN, tl.IMAGENET_STD),
    "none": ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)),            # just [0, 1]
    "minus1to1": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),       # the [-1, 1] convention of other models
}


def transform_for(size: int, *, train: bool, norm: str = "imagenet", stem: str = "replicate") -> Callable:
    """The preprocessing of a run: the library's ``imagenet_transform``, or for a 1-channel
    stem torchvision's v2 scaling and a single-channel normalisation."""
    if stem != "replicate":
        steps: list[Any] = [v2.RandomResizedCrop(size), v2.RandomHorizontalFlip()] if train else []
        return v2.Compose(steps + [v2.ToDtype(torch.float32, scale=True), v2.Normalize([GREY_MEAN], [GREY_STD])])
    mean, std = NORMS[norm]
    return tl.imagenet_transform(train=train, size=size, resize=size, mean=mean, std=std)


def grey_stem(model: nn.Module, stem: str) -> nn.Module:
    """Make MobileNetV2 take 1-channel input: ``"summed"`` folds the pretrained first conv
    over its 3 input channels; ``"fresh"`` puts a newly initialised 1-channel conv there."""
    if stem == "replicate":
        return model
    parent = model.get_submodule("features.0")
    old = parent[0]
    new = nn.Conv2d(1, old.out_channels, old.kernel_size, old.stride, old.padding, bias=False)
    if stem == "summed":
        with torch.no_grad():
            new.weight.copy_(old.weight.sum(dim=1, keepdim=True))
    elif stem != "fresh":
        raise ValueError(f"stem must be 'replicate', 'summed' or 'fresh', got {stem!r}")
    parent[0] = new
    return model


@dataclass
class Run:
    """One training run's settings: ``fit`` keyword arguments plus the data-side factors."""

    fit: dict[str, Any]
    pretrained: bool = True
    batch_size: int = 32
    augment: bool = False
    norm: str = "imagenet"
    stem: str = "replicate"
    train_mode_eval: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


def _loader(task: Task, idx: np.ndarray, transform: Callable, batch_size: int, seed: int | None) -> DataLoader:
    data = TensorImages(task.images[idx], task.labels[idx], transform)
    if seed is None:
        return DataLoader(data, batch_size=128)
    # a last batch of one sample cannot be normalised by batch statistics
    return DataLoader(data, batch_size=batch_size, shuffle=True, drop_last=len(idx) % batch_size == 1,
                      generator=torch.Generator().manual_seed(seed))


def build_model(task: Task, spec: Run, seed: int) -> nn.Module:
    """MobileNetV2 (pretrained unless ``spec.pretrained`` is False) for ``task``, head seeded with ``seed``."""
    model = mobilenet(len(task.classes), weights=PRETRAINED if spec.pretrained else None, seed=seed)
    return grey_stem(model, spec.stem)


def run(task: Task, spec: Run, seed: int, n_per_class: int | None) -> dict[str, Any]:
    """Train once as specified and return test accuracy (and the train()-mode accuracies)."""
    train_idx, test_idx = task.split(seed, n_per_class)
    model = build_model(task, spec, seed)
    began = time.perf_counter()
    train = _loader(task, train_idx, transform_for(task.size, train=spec.augment, norm=spec.norm, stem=spec.stem),
                    spec.batch_size, seed)
    test = _loader(task, test_idx, transform_for(task.size, train=False, norm=spec.norm, stem=spec.stem), 128, None)
    trainer = tl.Trainer(model, seed=seed, progress=False)
    trainer.fit(train, **spec.fit)
    out: dict[str, Any] = {"accuracy": trainer.evaluate(test)["accuracy"], "train_images": len(train_idx),
                           "seconds": time.perf_counter() - began}  # training and one test pass
    if spec.train_mode_eval:
        out.update(train_mode_accuracy(model, test.dataset, seed))
    return out


def train_mode_accuracy(model: nn.Module, test: Dataset, seed: int) -> dict[str, float]:
    """Test accuracy of a copy left in ``train()`` mode (the classic forgotten ``eval()``), in
    shuffled batches of 32 and 8: once with BatchNorm unpinned as in a plain PyTorch model,
    once with the statistics transferlearn pinned (only Dropout then acts)."""
    out = {}
    for label, pinned in (("unpinned", False), ("pinned", True)):
        for bs in (32, 8):
            m = copy.deepcopy(model)
            (tl.freeze_bn_running_stats if pinned else tl.unfreeze_bn_running_stats)(m)
            m.train()
            loader = DataLoader(test, batch_size=bs, shuffle=True, generator=torch.Generator().manual_seed(seed))
            hits = total = 0
            with torch.no_grad():
                for x, y in loader:
                    hits += int((m(x).argmax(1) == y).sum())
                    total += len(y)
            out[f"train_mode_{label}_bs{bs}"] = hits / total
    return out


def probe(task: Task, seed: int, n_per_class: int, epochs: Sequence[int]) -> dict[str, Any]:
    """Head-only training for each of ``epochs`` (cached features) against a converged
    logistic-regression probe (scikit-learn, L-BFGS) on the same frozen features."""
    from sklearn.linear_model import LogisticRegression

    train_idx, test_idx = task.split(seed, n_per_class)
    tf = transform_for(task.size, train=False)
    out: dict[str, Any] = {}
    for e in epochs:
        fit = {"warmup_epochs": e, "finetune_epochs": 0}
        out[f"head_{e}"] = run(task, Run(fit=fit), seed, n_per_class)["accuracy"]
    model = build_model(task, Run(fit={}), seed)
    feats = [tl.extract_features(model, _loader(task, idx, tf, 128, None)).tensors for idx in (train_idx, test_idx)]
    clf = LogisticRegression(max_iter=5000).fit(feats[0][0].numpy(), feats[0][1].numpy())
    out["probe"] = float(clf.score(feats[1][0].numpy(), feats[1][1].numpy()))
    return out
