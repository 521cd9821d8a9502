"""The decision table from dataset size and domain similarity to a training strategy."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Union

from ..base import check_bool, check_int

__all__ = ["row_strategy", "Strategy", "recommend_strategy"]

BackboneLR = Union[float, tuple[float, float], None]


@dataclass(frozen=True)
class Strategy:
    """A complete training recipe that ``Trainer.fit(strategy=...)`` applies.

    Attributes:
        kind: ``"feature_extraction"``, ``"fine_tune_last"``, ``"fine_tune_all"`` or
            ``"from_scratch"``.
        warmup_epochs: epochs with the backbone frozen (head only).
        finetune_epochs: epochs with the backbone (or its last groups) trainable.
        head_lr: learning rate of the head.
        backbone_lr: backbone rate: a float, a ``(low, high)`` pair spread from the input
            to the head, or ``None`` for ``head_lr / 10``.
        unfreeze: backbone layer groups trained in the fine-tune phase (``None``: all).
        freeze_bn: ``True`` pins all BatchNorm statistics, ``"early"`` pins them in the
            first half of the backbone only (later stages adapt), ``False`` lets all adapt.
        augment: train with random augmentation: build the training data with
            ``imagenet_transform(train=strategy.augment)``; ``fit`` cannot change your data.
        pretrained: start from pretrained weights; ``False`` means load the model with
            ``weights=None`` (``fit`` cannot re-initialise it for you).
        reason: the table row this came from, in words.
    """

    kind: str
    warmup_epochs: int
    finetune_epochs: int
    head_lr: float
    backbone_lr: BackboneLR
    unfreeze: int | None
    freeze_bn: bool | str
    augment: bool
    pretrained: bool
    reason: str

    def fit_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of ``Trainer.fit`` this strategy sets."""
        keys = ("warmup_epochs", "finetune_epochs", "head_lr", "backbone_lr", "unfreeze", "freeze_bn")
        values = asdict(self)
        return {k: values[k] for k in keys}


_FEW, _SMALL, _MEDIUM, _HUGE = 30, 1000, 10000, 1_000_000


# Head-only epochs of feature extraction. The Trainer trains them on cached features, so they
# cost almost nothing. What converges is a number of optimizer steps, and the small datasets
# this strategy is for have few batches per epoch: 5 epochs left the head up to 14 points
# short of a converged logistic probe on the same features, 200 matched it
# (docs/evidence.md, "Head epochs on cached features").
_HEAD_EPOCHS = 200


def recommend_strategy(images_per_class: int, *, similar_domain: bool = True,
                       total_images: int | None = None) -> Strategy:
    """Choose a transfer-learning strategy from dataset size and domain similarity.

    ===========================================  ===================  ===============================
    situation                                    ``kind``             learning rates
    ===========================================  ===================  ===============================
    fewer than 30 images per class, any domain   feature_extraction   head 1e-3 (backbone frozen)
    similar domain, 30 - 1,000 per class         fine_tune_all        backbone 1e-4, head 1e-3
    similar domain, 1,001 - 10,000 per class     fine_tune_last (2)   backbone 1e-4, head 1e-3
    similar domain, > 10,000 per class           fine_tune_all        backbone 1e-4, head 1e-3
    different domain, 30 or more per class       fine_tune_all        backbone 1e-4, head 1e-3
    different domain, >= 1,000,000 images        from_scratch         1e-3 everywhere
    ===========================================  ===================  ===============================

    Fine-tuning runs 2 warm-up + 3 fine-tune epochs with BatchNorm statistics pinned and no
    augmentation. The rows for fewer than 1,000 images per class follow measurements on
    real photographs, solar-cell images and digits (``docs/evidence.md``): below 30 images
    per class a converged linear head matched or beat fine-tuning on all three; from 30
    on, fine-tuning all layers won on the photos and digits (not on the solar cells, where
    feature extraction stayed ahead; it is cheap to try both). The different-domain recipe
    used to add augmentation, backbone rates of 1e-5 to 1e-4 and BatchNorm adapting late;
    each of the three cost accuracy there, so it is now the plain recipe. The rows above
    1,000 per class are the chapter's, not measured here.

    Args:
        images_per_class: training images per class (the smallest class, if unbalanced).
        similar_domain: whether the images look like ImageNet photos (objects, animals,
            scenes) rather than medical scans, satellite tiles or microscopy.
        total_images: total training images; only decides ``"from_scratch"``.

    Returns:
        A frozen ``Strategy``.

    Raises:
        TypeError: wrong argument types.
        ValueError: ``images_per_class < 1`` or ``total_images < images_per_class``.

    Example:
        >>> recommend_strategy(300).kind
        'fine_tune_all'
        >>> recommend_strategy(12, similar_domain=False).kind
        'feature_extraction'
    """
    check_int("images_per_class", images_per_class, minimum=1)
    check_bool("similar_domain", similar_domain)
    if total_images is not None:
        check_int("total_images", total_images, minimum=1)
        if total_images < images_per_class:
            raise ValueError(f"total_images must be >= images_per_class, got total_images="
                             f"{total_images} with images_per_class={images_per_class}")
    if not similar_domain and total_images is not None and total_images >= _HUGE:
        return Strategy("from_scratch", 0, 30, 1e-3, 1e-3, None, False, True, False,
                        "millions of images of a different domain: train from scratch")
    domain = "similar" if similar_domain else "different"
    if images_per_class < _FEW:
        return Strategy("feature_extraction", _HEAD_EPOCHS, 0, 1e-3, None, 0, True, False, True,
                        f"{domain} domain, {images_per_class} < {_FEW} images per class: train the head "
                        "only, on cached features")
    if similar_domain and _SMALL < images_per_class <= _MEDIUM:
        return Strategy("fine_tune_last", 2, 3, 1e-3, 1e-4, 2, True, False, True,
                        f"similar domain, {_SMALL} < {images_per_class} <= {_MEDIUM} images per "
                        "class: fine-tune the last 2 stages")
    return Strategy("fine_tune_all", 2, 3, 1e-3, 1e-4, None, True, False, True,
                    f"{domain} domain, {images_per_class} >= {_FEW} images per class: fine-tune all "
                    "layers, backbone at 1e-4 with BatchNorm statistics pinned")


def row_strategy(kind: str, images_per_class: int) -> Strategy:
    """The similar-domain row ``kind`` of the decision table, for the class size nearest to
    ``images_per_class`` within that row's range (so settings that follow the size still do).

    Args:
        kind: ``"feature_extraction"``, ``"fine_tune_last"`` or ``"fine_tune_all"``.
        images_per_class: training images in the smallest class.

    Returns:
        ``recommend_strategy(n)`` for that ``n``; its ``kind`` is ``kind``.

    Raises:
        ValueError: an unknown ``kind``.
    """
    rows = {"feature_extraction": (1, _FEW - 1), "fine_tune_last": (_SMALL + 1, _MEDIUM),
            "fine_tune_all": (_MEDIUM + 1, None)}
    if kind not in rows:
        raise ValueError(f"kind must be one of {sorted(rows)}, got {kind!r}")
    low, high = rows[kind]
    return recommend_strategy(max(low, images_per_class if high is None else min(high, images_per_class)))
