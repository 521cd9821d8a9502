"""The scoring pass of ``classification_report``: where the data comes from (dataset, order,
file paths), the checks of model, classes and preprocessing, one eval-mode pass collecting
targets, probabilities and losses, the worst mistakes, and per-class scores."""

from __future__ import annotations

import os
from typing import Any, Sequence

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import BatchSampler, DataLoader, Dataset, SequentialSampler, Subset

from ..base import describe, eval_mode, to_model
from ..data.batches import check_targets, split_batch
from ..data.transforms import ImagePreprocess
from ..model.data_config import data_config
from .classifier import Classifier

__all__: list[str] = []


def dataset_of(data: Any) -> Any:
    return data.dataset if isinstance(data, DataLoader) else data


def known_order(data: Any) -> bool:
    """Position in the iteration is the dataset index: a Dataset, or a loader read in order."""
    if not isinstance(data, DataLoader):
        return True
    batches = data.batch_sampler
    return isinstance(data.sampler, SequentialSampler) and (
        batches is None or (type(batches) is BatchSampler and batches.sampler is data.sampler))


def sample_path(dataset: Any, index: int) -> str | None:
    while isinstance(dataset, Subset):
        dataset, index = dataset.dataset, int(dataset.indices[index])
    samples = getattr(dataset, "samples", None)
    if not isinstance(samples, Sequence) or index >= len(samples):
        return None
    sample = samples[index]
    path = sample[0] if isinstance(sample, (tuple, list)) else sample
    return str(path) if isinstance(path, (str, os.PathLike)) else None


def _dataset_attr(dataset: Any, name: str) -> Any:
    while isinstance(dataset, Subset):
        dataset = dataset.dataset
    return getattr(dataset, name, None)


def setup(model_or_classifier: Any, data: Any, classes: Any) -> tuple[nn.Module, Any, tuple[list, list]]:
    """The model, the class names (or None: numbered later) and the normalisation statistics."""
    dataset = dataset_of(data)
    transform = _dataset_attr(dataset, "transform")
    if isinstance(model_or_classifier, Classifier):
        model, own, transform = model_or_classifier.model, model_or_classifier.classes, model_or_classifier.transform
        if classes is not None and tuple(classes) != own:
            raise ValueError(f"classes={describe(classes)} differ from the classifier's own {list(own)}")
        classes = own
    elif isinstance(model_or_classifier, nn.Module):
        model = model_or_classifier
    else:
        raise TypeError(f"model_or_classifier must be an nn.Module or a Classifier, got "
                        f"{describe(model_or_classifier)}")
    if not isinstance(data, (Dataset, DataLoader)):
        raise TypeError(f"data must be a torch Dataset or DataLoader yielding (image, label), got {describe(data)}")
    data_classes = _dataset_attr(dataset, "classes")
    if classes is None:
        classes = data_classes
    elif data_classes is not None and list(data_classes) != list(classes):
        raise ValueError(f"the data's classes {list(data_classes)} are not the model's {list(classes)} "
                         "(same names in the same order); its labels would be read as the wrong classes")
    if classes is not None and (isinstance(classes, str) or len(set(classes)) != len(classes)
                                or not all(isinstance(c, str) for c in classes)):
        raise ValueError(f"classes must be unique class-name strings, got {describe(classes)}")
    if isinstance(transform, ImagePreprocess):
        stats = (transform.mean, transform.std)
    else:  # the statistics the model's own weights expect (its anatomy's data config)
        config = data_config(model)
        stats = (list(config.mean), list(config.std))
    return model, (tuple(classes) if classes is not None else None), stats


class Worst:
    """The ``k`` highest-loss wrong samples seen so far, with their inputs."""

    def __init__(self, k: int) -> None:
        self.k, self.rows = k, []

    def add(self, offset: int, inputs: torch.Tensor, losses: torch.Tensor, wrong: torch.Tensor) -> None:
        for i in wrong.nonzero().flatten().tolist():
            self.rows.append((float(losses[i]), offset + i, inputs[i].detach().cpu().clone()))
        self.rows = sorted(self.rows, key=lambda r: (-r[0], r[1]))[:self.k]


def _labels(y: torch.Tensor, logits: torch.Tensor, where: str) -> torch.Tensor:
    """The batch's labels as int64 class indices, checked by the Trainer's rule (``check_targets``:
    no float, bool or int32 labels, no value outside ``[0, C)``); ``-100`` cannot be scored either."""
    try:
        counted = check_targets(y, logits, criterion=nn.NLLLoss(), where=where)
    except (TypeError, ValueError) as error:   # the Trainer's message, without the loss's ignore_index
        raise type(error)(str(error).replace(" or -100 (the criterion's ignore_index)", "")) from None
    if counted != y.numel():
        raise ValueError(f"{where}: labels of -100 (an ignore_index) cannot be scored; a report needs the class "
                         f"index of every item, in [0, {logits.shape[1]})")
    return y.long()


def run_model(model: nn.Module, loader: Any, device: torch.device, worst: Worst) -> tuple[torch.Tensor, ...]:
    """Targets, probabilities and per-sample losses over the whole data, in order."""
    targets, probs, losses, offset = [], [], [], 0
    with eval_mode(model), torch.inference_mode():
        for batch_number, batch in enumerate(loader, 1):
            inputs, y = split_batch(batch, source="data")
            if y is None:
                raise ValueError("data must yield (image, label) pairs; it yielded images without labels")
            out = model(to_model(model, inputs, device))
            logits = (out.logits if hasattr(out, "logits") else out).float().cpu()
            y = _labels(y.cpu(), logits, f"data, batch {batch_number}")
            loss = F.cross_entropy(logits, y, reduction="none")
            worst.add(offset, inputs, loss, logits.argmax(1) != y)
            targets.append(y), probs.append(logits.softmax(1)), losses.append(loss)
            offset += len(y)
    if offset == 0:
        raise ValueError("data is empty: nothing to report on")
    return torch.cat(targets), torch.cat(probs), torch.cat(losses)


def scores(cm: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Precision, recall, F1 per class from a confusion matrix (0 where undefined)."""
    tp = cm.diag().double()
    precision = torch.where(cm.sum(0) > 0, tp / cm.sum(0).clamp(min=1), torch.zeros_like(tp))
    recall = torch.where(cm.sum(1) > 0, tp / cm.sum(1).clamp(min=1), torch.zeros_like(tp))
    total = precision + recall
    f1 = torch.where(total > 0, 2 * precision * recall / total.clamp(min=1e-300), torch.zeros_like(tp))
    return precision, recall, f1
