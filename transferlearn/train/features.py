"""Run a frozen backbone once and keep its features: every later head-only epoch is cheap."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils.data import (
    BatchSampler,
    ConcatDataset,
    DataLoader,
    Dataset,
    Subset,
    TensorDataset,
)
from torchvision import transforms as T
from torchvision.transforms import _presets

from ..base import check_module, describe, eval_mode, run_device
from ..data.batches import split_batch
from ..data.transforms import ImagePreprocess
from ..model.anatomy import Anatomy, model_anatomy
from .evaluation import _split_outputs
from .runtime import Meter, Precision, Progress

__all__ = ["extract_features", "is_deterministic", "NotCacheable"]

# Transforms whose output depends only on their input (no random numbers drawn).
_DETERMINISTIC = (T.Resize, T.CenterCrop, T.ToTensor, T.PILToTensor, T.ConvertImageDtype,
                  T.Normalize, T.Grayscale, _presets.ImageClassification)
try:
    from torchvision.transforms import v2 as _v2
    _DETERMINISTIC += (_v2.Resize, _v2.CenterCrop, _v2.ToImage, _v2.ToDtype, _v2.Normalize,
                       _v2.Grayscale, _v2.ToPureTensor)
    _COMPOSES: tuple[type, ...] = (T.Compose, _v2.Compose)
except ImportError:  # torchvision without transforms.v2
    _COMPOSES = (T.Compose,)


def _transform_ok(transform: Any) -> bool:
    if transform is None:
        return True
    if isinstance(transform, ImagePreprocess):
        return transform.deterministic
    if isinstance(transform, _COMPOSES):
        return all(_transform_ok(t) for t in transform.transforms)
    return isinstance(transform, _DETERMINISTIC)


def is_deterministic(dataset: Dataset) -> bool:
    """True when every item of ``dataset`` is the same each time it is read.

    Known to be: a dataset with a boolean ``deterministic`` attribute says so itself
    (``load_image_folder``'s splits do); ``TensorDataset``; datasets whose ``transform`` (and ``target_transform``)
    is ``None``, an eval ``imagenet_transform`` or a composition of torchvision's
    deterministic transforms (Resize, CenterCrop, ToTensor, Normalize, ...); ``Subset`` and
    ``ConcatDataset`` of those. Anything else is assumed random.
    """
    flag = getattr(dataset, "deterministic", None)
    if isinstance(flag, bool):
        return flag
    if isinstance(dataset, TensorDataset):
        return True
    if isinstance(dataset, Subset):
        return is_deterministic(dataset.dataset)
    if isinstance(dataset, ConcatDataset):
        return all(is_deterministic(d) for d in dataset.datasets)
    if not hasattr(dataset, "transform"):
        return False
    if getattr(dataset, "transforms", None) is not None and not hasattr(dataset.transforms, "transform"):
        return False  # a joint (image, target) transform we cannot inspect
    return _transform_ok(dataset.transform) and _transform_ok(getattr(dataset, "target_transform", None))


class NotCacheable(ValueError):
    """The model's output cannot be reproduced from cached head inputs (raised by
    ``extract_features(check_output=True)``); the Trainer then trains without the cache."""


def _run_and_check(model: nn.Module, inputs: torch.Tensor, calls: list[int], outputs: list[Any],
                   check_output: bool) -> None:
    """One forward pass; the head must run exactly once, and (``check_output``) the model's
    output must be the head's output, or head-only training on features would differ."""
    calls[0], outputs[:] = 0, []
    logits, _ = _split_outputs(model(inputs))
    if calls[0] != 1:
        raise NotCacheable(f"the head ran {calls[0]} times in one forward pass, so its inputs cannot be "
                           "matched to samples; train with cache_features=False")
    if not check_output:
        return
    head_out = outputs[0]
    same = isinstance(head_out, torch.Tensor) and head_out.shape == logits.shape and \
        bool(((head_out == logits) | (head_out.isnan() & logits.isnan())).all())  # NaN inputs: NaN both
    if not same:
        raise NotCacheable("the model's output is not its head's output (a layer runs after the head, "
                           "e.g. log_softmax or a scale), so training the head alone on cached features "
                           "would skip it; train with cache_features=False")


def _item_count(loader: Any) -> int | None:
    """How many samples ``loader`` yields, when its sampler says so (None: unknown)."""
    if not isinstance(getattr(loader, "batch_sampler", None), BatchSampler):
        return None
    try:
        return len(loader.sampler)
    except TypeError:
        return None


def extract_features(model: nn.Module, loader: DataLoader, *, head: str | None = None,
                     device: torch.device | str | None = None, precision: Precision | None = None,
                     check_output: bool = False, anatomy: Anatomy | None = None,
                     progress: bool | str | Meter = False) -> TensorDataset:
    """Run the model once over ``loader`` and return what its head receives, with labels.

    The model runs in eval mode under ``torch.inference_mode()`` (its previous modes are
    restored afterwards); a forward pre-hook on the head captures the head's input, so this
    works on any architecture. Layers between the backbone and the head (e.g. MobileNet's
    ``Dropout`` in ``classifier.0``) act as in eval mode, i.e. not at all for Dropout (the
    Trainer's cached epochs put such a Dropout back in front of the head:
    ``cached_step_module``).

    Args:
        model: the network (typically with a frozen backbone).
        loader: yields ``(inputs, labels)`` batches, inputs alone, or dicts (see ``batches``).
        head: explicit dotted name of the head (see ``find_head``).
        device: where to run; default: the device of the model's first parameter.
        precision: autocast settings (the Trainer passes its own, so cached features are
            what an uncached pass would compute).
        check_output: also require that the model's output is exactly the head's output
            (``NotCacheable`` otherwise); the Trainer asks for it before caching.
        anatomy: the model's ``anatomy``, when already read (the Trainer passes its own).
        progress: ``False`` (silent), ``True``, ``"bar"`` or ``"line"`` as ``Trainer(progress=)``
            ("extracting features: 640/2000 images, 12 s, ~26 s left"), or a ``Meter`` the
            caller made (the Trainer's "caching features" line); closed when the pass ends.

    Returns:
        ``TensorDataset(features, labels)`` on the CPU, in the loader's order (labels
        omitted when the loader yields none).

    Raises:
        TypeError: ``model`` is not a module, ``loader`` is not iterable, or ``anatomy``
            is not an ``Anatomy``.
        ValueError: no head can be found or the loader is empty; ``NotCacheable`` (a
            ValueError) when the head does not run exactly once per forward pass.

    Example:
        >>> feats = extract_features(model, DataLoader(test_set, batch_size=64))
        >>> head_loader = DataLoader(feats, batch_size=64, shuffle=True)
    """
    check_module("model", model)
    if not hasattr(loader, "__iter__"):
        raise TypeError(f"loader must be an iterable of batches (a DataLoader), got {describe(loader)}")
    head_module = model.get_submodule(model_anatomy(model, head=head, anatomy=anatomy).head)
    device = run_device(model, device)
    cast = precision or Precision(False, device)
    captured: list[torch.Tensor] = []
    labels: list[torch.Tensor] = []
    calls, outputs = [0], []

    def capture(_m: nn.Module, args: tuple) -> None:
        calls[0] += 1
        captured.append(args[0].detach().cpu())
    hooks = [head_module.register_forward_pre_hook(capture),
             head_module.register_forward_hook(lambda _m, _a, out: outputs.append(out))]
    meter = progress if isinstance(progress, Meter) else \
        Progress(progress).meter("extracting features", _item_count(loader))
    try:
        with meter, eval_mode(model), torch.inference_mode(), cast.autocast():
            for batch in loader:
                inputs, targets = split_batch(batch)
                _run_and_check(model, inputs.to(device), calls, outputs, check_output)
                if targets is not None:
                    labels.append(targets.cpu())
                meter.update(len(inputs))
    finally:
        for hook in hooks:
            hook.remove()
    if not captured:
        raise ValueError("loader yielded no batches: nothing to extract")
    features = torch.cat(captured)
    return TensorDataset(features, torch.cat(labels)) if labels else TensorDataset(features)
