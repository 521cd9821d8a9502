"""The views of test-time augmentation: ``Classifier.predict(..., tta=True)`` averages over them.

The views are crops of the image after the transform's resize (``ImagePreprocess.prepare``),
each scaled and normalised as the eval pipeline does:

- the centre crop and its horizontal mirror, always;
- when the resize leaves room (``resize > size``, e.g. 256 -> 224), also the four corner
  crops and their mirrors: the ten-crop evaluation of Krizhevsky et al. (2012), 10 views.
  Each mirror is the mirror of a crop the eval pipeline would cut (torchvision's
  ``TenCrop`` crops the mirrored image instead, which for an odd margin puts its mirrored
  centre one pixel off), so a flip-invariant model's answer is exactly its plain one.

Only label-preserving views of what the eval pipeline already sees (no random policy): the
answer is deterministic, and a flip- and crop-invariant model answers as without TTA. fastai's
``tta`` instead averages four passes of the random training transforms with the plain one;
timm's validation script has no TTA beyond a pooling trick. The prediction is the mean of the
softmax over the views (fastai's and torchvision's references average probabilities too).
"""

from __future__ import annotations

import torch
from torchvision.transforms import functional as F

from ..data.transforms import ImagePreprocess

__all__: list[str] = []


def view_count(transform: ImagePreprocess) -> int:
    """How many views ``views`` makes for ``transform``: 10 with room for corner crops, else 2."""
    return 10 if transform.resize > transform.size else 2


def views(prepared: torch.Tensor, transform: ImagePreprocess) -> torch.Tensor:
    """The ``(view_count, 3, size, size)`` normalised views of one prepared (resized) image.

    Args:
        prepared: ``transform.prepare(image)``: a (3, H, W) tensor, min(H, W) == ``resize``.
        transform: the eval ``ImagePreprocess``.

    Returns:
        Centre, mirrored centre, then (with room) the corners top-left, top-right, bottom-left,
        bottom-right and their mirrors. The first view is bitwise ``transform(image)``.
    """
    size = transform.size
    centre = F.center_crop(prepared, [size, size])
    crops = [centre, F.hflip(centre)]
    if view_count(transform) == 10:
        corners = list(F.five_crop(prepared, [size, size]))[:4]
        crops += corners + [F.hflip(c) for c in corners]
    batch = torch.stack(crops)
    if not batch.is_floating_point():
        batch = F.convert_image_dtype(batch, torch.float)
    return F.normalize(batch, mean=transform.mean, std=transform.std)
