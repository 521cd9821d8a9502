"""The data levers of ``python -m benchmarks.levers``: DataLoader workers on real JPEGs, the
converged head, and a saved classifier's ``predict`` against the raw forward.

The workers lever reads the chess photos through ``ImageFolder`` (and ``load_image_folder``)
with a MobileNetV2 forward per batch; the head lever trains heads on cached pretrained
features (digits, chess) with Adam for more epochs, full-batch L-BFGS, and scikit-learn's
logistic regression as the converged reference.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn
from torch.utils.data import DataLoader
from torchvision import datasets

import transferlearn as tl

from . import textbook as tb
from .benchutil import interleaved, median
from .models import PRETRAINED, chapter_transform, mobilenet
from .sources import chess, split_folder
from .util import ROOT, atomic_write

__all__ = ["lever_workers", "lever_head", "lever_predict"]


# ------------------------------------------------------------------------------ workers
def lever_workers(size: int, settings: list[tuple[int, bool]], epochs: int,
                  save: Callable[[Any], None] = lambda rows: None) -> list[dict[str, Any]]:
    """Seconds for ``epochs`` passes over the real chess photos (decode + resize + crop
    through ImageFolder) with a MobileNetV2 forward, per DataLoader setting."""
    root = chess()
    transform = tl.imagenet_transform(size=size, resize=round(size * 256 / 224))
    data = datasets.ImageFolder(str(root), transform=transform)
    model = mobilenet(len(data.classes), weights=None, seed=0).eval()
    rows = []
    for workers, persistent in settings:
        loader = DataLoader(data, batch_size=32, shuffle=True, num_workers=workers,
                            persistent_workers=persistent and workers > 0)
        began = time.perf_counter()
        per_epoch = _timed_epochs(loader, model, epochs)
        rows.append({"size": size, "num_workers": workers, "persistent_workers": persistent,
                     "epochs": epochs, "seconds": time.perf_counter() - began, "epoch_seconds": per_epoch,
                     "images": len(data)})
        print(f"  {size}px workers={workers} persistent={persistent}: {rows[-1]['seconds']:.1f}s "
              f"for {epochs} epochs ({', '.join(f'{s:.1f}' for s in per_epoch)})", flush=True)
        save(rows)
        del loader
    if hasattr(tl, "load_image_folder"):
        rows.append(_library_folder_epochs(root, size, epochs, model))
        save(rows)
    return rows


def _timed_epochs(loader: Any, model: nn.Module, epochs: int) -> list[float]:
    """Seconds of each inference pass of ``model`` over ``loader``."""
    seconds = []
    for _ in range(epochs):
        t0 = time.perf_counter()
        with torch.inference_mode():
            for xb, _ in loader:
                model(xb)
        seconds.append(time.perf_counter() - t0)
    return seconds


def _library_folder_epochs(root: Path, size: int, epochs: int, model: nn.Module) -> dict[str, Any]:
    """The same passes through ``load_image_folder`` (JPEG draft mode, decoded-image cache)
    and its ``loaders()`` defaults; the folder scan and check are inside the time."""
    began = time.perf_counter()
    data = tl.load_image_folder(root, size=size, val_fraction=0.0)
    loader, _ = data.loaders(batch_size=32)
    per_epoch = _timed_epochs(loader, model, epochs)
    row = {"size": size, "num_workers": loader.num_workers, "persistent_workers": loader.persistent_workers,
           "variant": "load_image_folder + loaders() defaults", "epochs": epochs,
           "seconds": time.perf_counter() - began, "epoch_seconds": per_epoch, "images": len(data.train)}
    print(f"  {size}px load_image_folder (draft, cache; workers={loader.num_workers}): {row['seconds']:.1f}s "
          f"for {epochs} epochs ({', '.join(f'{s:.1f}' for s in per_epoch)})", flush=True)
    return row


# --------------------------------------------------------------------------------- head
def _head_features(which: str, size: int) -> tuple[Any, Any, int]:
    """Pretrained MobileNetV2 features of a train and a test split (cached on disk)."""
    cache = ROOT / ".cache" / "bench" / f"features_{which}_{size}.pt"
    if cache.exists():
        saved = torch.load(cache, weights_only=True)
        return saved["train"], saved["test"], saved["classes"]
    train_dir, test_dir = split_folder(which, test_fraction=0.3 if which == "digits" else 0.5)
    transform = tl.imagenet_transform(size=size, resize=round(size * 256 / 224))
    train = datasets.ImageFolder(str(train_dir), transform=transform)
    test = datasets.ImageFolder(str(test_dir), transform=transform)
    model = mobilenet(len(train.classes), weights=PRETRAINED)
    feats = [tl.extract_features(model, DataLoader(d, batch_size=64)).tensors for d in (train, test)]
    atomic_write(cache, lambda f: torch.save({"train": feats[0], "test": feats[1], "classes": len(train.classes)}, f))
    return feats[0], feats[1], len(train.classes)


def _adam_head(train: Any, classes: int, epochs: int, seed: int) -> nn.Linear:
    torch.manual_seed(seed)
    x, y = train
    head = nn.Linear(x.shape[1], classes)
    opt = torch.optim.AdamW(head.parameters(), lr=1e-3, weight_decay=0.0)
    g = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        for idx in torch.randperm(len(x), generator=g).split(32):
            loss = nn.functional.cross_entropy(head(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return head


def _lbfgs_head(train: Any, classes: int, l2: float, max_iter: int) -> nn.Linear:
    torch.manual_seed(0)
    x, y = train
    head = nn.Linear(x.shape[1], classes)
    opt = torch.optim.LBFGS(head.parameters(), lr=1, max_iter=max_iter, history_size=20,
                            line_search_fn="strong_wolfe", tolerance_grad=1e-6, tolerance_change=1e-9)

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = nn.functional.cross_entropy(head(x), y) + 0.5 * l2 * head.weight.pow(2).sum()
        loss.backward()
        return loss
    opt.step(closure)
    return head


def _accuracy(head: nn.Module, test: Any) -> float:
    with torch.no_grad():
        return float((head(test[0]).argmax(1) == test[1]).float().mean())


def lever_head(which: str, size: int, seeds: int) -> list[dict[str, Any]]:
    """Adam for 5/10/20/50 cached epochs vs full-batch L-BFGS vs scikit-learn's converged
    logistic probe, on the same cached features: test accuracy and seconds."""
    from sklearn.linear_model import LogisticRegression

    train, test, classes = _head_features(which, size)
    n = len(train[0])
    variants: dict[str, Callable[[int], nn.Module]] = {
        f"adam {e} epochs": (lambda s, e=e: _adam_head(train, classes, e, s)) for e in (5, 10, 20, 50)}
    for l2 in (0.0, 1.0 / n, 10.0 / n):
        variants[f"lbfgs l2={l2:.1e}"] = lambda s, l2=l2: _lbfgs_head(train, classes, l2, 500)
    for iters in (50, 100, 200):  # l2 = 1/n is scikit-learn's C=1
        variants[f"lbfgs l2=1/n, max_iter={iters}"] = lambda s, i=iters: _lbfgs_head(train, classes, 1.0 / n, i)
    rows = []
    for name, make in variants.items():
        accs, secs = [], []
        for seed in range(seeds if name.startswith("adam") else 1):
            began = time.perf_counter()
            head = make(seed)
            secs.append(time.perf_counter() - began)
            accs.append(_accuracy(head, test))
        rows.append({"data": which, "size": size, "variant": name, "test_accuracy": sum(accs) / len(accs),
                     "accuracies": accs, "seconds": median(secs)})
    began = time.perf_counter()
    probe = LogisticRegression(C=1.0, max_iter=5000).fit(train[0].numpy(), train[1].numpy())
    rows.append({"data": which, "size": size, "variant": "sklearn LogisticRegression(C=1) probe",
                 "test_accuracy": float(probe.score(test[0].numpy(), test[1].numpy())),
                 "seconds": time.perf_counter() - began})
    for r in rows:
        print(f"  {which} {size}px {r['variant']:38s} acc {r['test_accuracy']:.4f}  {r['seconds']:.2f}s", flush=True)
    return rows


def lever_predict(size: int, images: int, rounds: int, out: Path) -> dict[str, Any]:
    """A loaded classifier's ``predict`` on image files against the raw forward over an
    ``ImageFolder`` of the same files (interleaved), and a cProfile of ``predict``."""
    import tempfile

    _, test_dir = split_folder("digits", test_fraction=0.3)
    test = datasets.ImageFolder(str(test_dir), transform=chapter_transform(size))
    test.samples = test.samples[:images]
    paths = [p for p, _ in test.samples]
    model = mobilenet(10, weights=PRETRAINED, seed=0).eval()
    with tempfile.TemporaryDirectory() as tmp:
        tl.save_classifier(model, Path(tmp) / "clf", classes=[str(i) for i in range(10)],
                           transform=tl.imagenet_transform(size=size, resize=size), arch="mobilenet_v2")
        clf = tl.load_classifier(Path(tmp) / "clf")
    settings = tb.Settings(torch.device("cpu"))
    timed = interleaved({"raw": lambda: tb.raw_predict(model, DataLoader(test, batch_size=32), settings),
                         "classifier": lambda: clf.predict(paths)}, rounds)
    file = f"profile_classifier_predict_{size}px.txt"
    (out / file).write_text(f"load_classifier(...).predict({images} digit files) at {size}px, "
                            f"{torch.get_num_threads()} thread(s); raw forward {timed['raw']:.3f}s, "
                            f"predict {timed['classifier']:.3f}s (medians)\n{_cprofile(lambda: clf.predict(paths))}")
    result = {"size": size, "images": images, "raw_s": timed["raw"], "classifier_s": timed["classifier"],
              "throughput_vs_raw": timed["raw"] / timed["classifier"], "file": file}
    print(f"  {size}px: raw {timed['raw']:.2f}s, classifier.predict {timed['classifier']:.2f}s "
          f"({result['throughput_vs_raw']:.2f}x raw throughput)", flush=True)
    return result


def _cprofile(run: Callable[[], Any]) -> str:
    """cProfile's 25 largest cumulative entries of one call of ``run()``."""
    import cProfile
    import io
    import pstats

    prof = cProfile.Profile()
    prof.enable()
    run()
    prof.disable()
    text = io.StringIO()
    pstats.Stats(prof, stream=text).sort_stats("cumulative").print_stats(25)
    return text.getvalue()
