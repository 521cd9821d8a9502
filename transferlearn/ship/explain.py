"""Where the network looked: class-activation maps (HiResCAM and Grad-CAM) and heat-map overlays.

``class_activation_map`` runs the model once with a forward hook on one layer (by default
the backbone's last feature map, chosen in ``default_layer``), takes the gradient of the
target class's logit with respect to that layer's output, and combines the two into one map
per image, upsampled to the input's size and scaled to [0, 1]:

- HiResCAM (Draelos & Carin, 2020; the default): ``relu(sum_k dy/dA_k * A_k)``, the
  element-wise product summed over channels;
- Grad-CAM (Selvaraju et al., 2017): ``relu(sum_k mean(dy/dA_k) * A_k)``, each channel
  weighted by its spatially averaged gradient.

For a head that pools globally and then applies a linear layer (every torchvision and timm
CNN) the gradient is the same at every position, so both equal the original CAM (Zhou et
al., 2016) exactly; where the head sees positions separately (VGG's flattened features),
HiResCAM is the one that shows only the locations that raised the score. The model's modes,
``requires_grad`` flags, gradients and buffers are left exactly as they were. See docs/look.md.
"""

from __future__ import annotations

import os
from typing import Any, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from ..base import check_bool, check_int, check_module, describe, eval_mode, to_model
from ..data.images import load_image
from ..data.transforms import to_rgb
from ..model.anatomy import Anatomy, model_anatomy

__all__ = ["METHODS", "class_activation_map", "default_layer", "explain_images"]

METHODS = ("hirescam", "gradcam")
_GLOBAL_POOLS = (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)


def _stage_owner(found: Anatomy) -> str | None:
    """The module that owns the last stage's parameters: the deepest module above all of them
    (``layer4``, ``features.18``), or, for a stage spread over several top-level parts
    (``stage4+conv5``), the last part."""
    if not found.stages:
        return None
    paths = [name.split(".")[:-1] for name in found.stages[-1][1]]
    common = os.path.commonprefix(paths)  # element-wise on the dotted parts
    if common:
        return ".".join(common)
    return paths[-1][0] if paths[-1] else None


def _feature_maps(model: nn.Module, head: nn.Module, inputs: torch.Tensor,
                  keep: Sequence[str]) -> tuple[list[str], dict[str, Any]]:
    """One hooked forward pass of ``inputs[:1]``: the modules that returned a 4-D map larger than
    1x1 once before the head started (not global pools), in order, and the outputs of ``keep``."""
    calls: dict[str, int] = {}
    finished: list[str] = []
    kept: dict[str, Any] = {}
    state = {"head": False}

    def seen(name: str) -> Any:
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            calls[name] = calls.get(name, 0) + 1
            if name in keep:
                kept[name] = output
            if (not state["head"] and isinstance(output, torch.Tensor) and output.ndim == 4
                    and output.shape[-2] * output.shape[-1] > 1 and not isinstance(module, _GLOBAL_POOLS)):
                finished.append(name)
        return hook

    def head_starts(module: nn.Module, args: Any) -> None:
        state["head"] = True

    handles = [m.register_forward_hook(seen(n)) for n, m in model.named_modules() if n]
    handles.append(head.register_forward_pre_hook(head_starts))
    try:
        with eval_mode(model), torch.inference_mode():
            model(to_model(model, inputs[:1]))
    finally:
        for handle in handles:
            handle.remove()
    return [n for n in finished if calls[n] == 1], kept


def _widest(model: nn.Module, owner: str, parents: list[str], once: list[str], kept: dict[str, Any],
            stage: set[str]) -> str:
    """From the last stage's owner up: the outermost enclosing feature map that is still that
    stage's output: the same tensor (``features.18`` -> ``features``), or a module holding no
    parameter outside the stage (a ReLU after the stage's last convolution)."""
    best = owner
    for parent in parents:
        params = {f"{parent}.{name}" for name, _ in model.get_submodule(parent).named_parameters()}
        if parent not in once or not (kept.get(parent) is kept[best] or params <= stage):
            break
        best = parent
    return best


def default_layer(model: nn.Module, inputs: torch.Tensor, *, anatomy: Anatomy | None = None) -> str:
    """The dotted name of the layer whose output ``class_activation_map`` explains by default.

    The module that owns the model's last ``anatomy`` stage, when it is a CNN stage: in one
    forward pass of ``inputs[:1]`` (hooks, eval mode, no gradients) it runs once before the
    head starts and returns a 4-D map larger than 1x1. Otherwise (VGG's last stage is its
    classifier) the last module that does so, global pools passed over. For a MobileNetV2
    that is ``"features"``, for a ResNet ``"layer4"`` (docs/look.md, "Which layer").

    Args:
        model: a classification network whose head ``find_head`` finds.
        inputs: a preprocessed batch ``(N, C, H, W)`` (only the first image is run).
        anatomy: the model's ``anatomy``, when already read.

    Returns:
        The module's dotted name.

    Raises:
        ValueError: no such layer (not a CNN, or an input so small that every feature map is 1x1).

    Example:
        >>> default_layer(torchvision.models.resnet18(), torch.rand(1, 3, 64, 64))
        'layer4'
    """
    found = model_anatomy(model, anatomy=anatomy)
    owner = _stage_owner(found)
    above = [] if owner is None else [".".join(owner.split(".")[:i]) for i in range(owner.count(".") + 1, 0, -1)]
    once, kept = _feature_maps(model, model.get_submodule(found.head), inputs, above)
    if owner in once:
        return _widest(model, owner, above[1:], once, kept, set(found.stages[-1][1]))
    if not once:
        raise ValueError(f"{type(model).__name__} has no layer with a 4-D feature map larger than 1x1 "
                         "before its head; pass layer= with the name of a convolutional stage")
    return once[-1]


def _check_inputs(inputs: Any) -> torch.Tensor:
    if not isinstance(inputs, torch.Tensor) or not inputs.is_floating_point():
        raise TypeError(f"inputs must be a float tensor of preprocessed images, got {describe(inputs)}")
    if inputs.ndim not in (3, 4) or inputs.numel() == 0:
        raise ValueError(f"inputs must be shaped (C, H, W) or (N, C, H, W) with N >= 1, got shape "
                         f"{tuple(inputs.shape)}")
    return inputs if inputs.ndim == 4 else inputs[None]


def _targets(target: Any, logits: torch.Tensor) -> torch.Tensor:
    """One class index per image: the predicted one (None), one for all (int), or one each
    (a sequence of indices, None entries meaning that image's predicted class)."""
    n, classes = logits.shape
    if target is None or (isinstance(target, int) and not isinstance(target, bool)):
        target = [target] * n
    if not isinstance(target, Sequence) or isinstance(target, str) or len(target) != n or not all(
            t is None or (isinstance(t, int) and not isinstance(t, bool)) for t in target):
        raise TypeError(f"target must be None, a class index or one class index per image ({n}), got "
                        f"{describe(target)}")
    if any(t is not None and not 0 <= t < classes for t in target):
        raise ValueError(f"target must hold class indices in [0, {classes - 1}], got {list(target)}")
    predicted = logits.argmax(1).tolist()
    return torch.tensor([p if t is None else t for t, p in zip(target, predicted)], device=logits.device)


def _capture(model: nn.Module, name: str) -> tuple[Any, list[torch.Tensor]]:
    try:
        layer = model.get_submodule(name)
    except AttributeError:
        raise ValueError(f"layer={name!r} is not a submodule of {type(model).__name__}") from None
    outputs: list[torch.Tensor] = []
    return layer.register_forward_hook(lambda m, a, out: outputs.append(out)), outputs


def _combine(activation: torch.Tensor, gradient: torch.Tensor, method: str) -> torch.Tensor:
    weights = gradient.mean((2, 3), keepdim=True) if method == "gradcam" else gradient
    return F.relu((weights * activation).sum(1, keepdim=True))


def _scale(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear to ``size``, then each map divided by its maximum (an all-zero map stays zero)."""
    maps = F.interpolate(maps.double(), size=size, mode="bilinear", align_corners=False).clamp(min=0)[:, 0]
    peak = maps.flatten(1).max(1).values.view(-1, 1, 1)
    return torch.where(peak > 0, maps / peak.clamp(min=1e-300), torch.zeros_like(maps)).float()


def class_activation_map(model: nn.Module, inputs: torch.Tensor, *, target: Any = None,
                         layer: str | None = None, method: str = "hirescam") -> torch.Tensor:
    """Where the network looked: one map in [0, 1] per image, at the input's size.

    Runs one forward pass in eval mode with gradients enabled (also inside ``no_grad`` or
    ``inference_mode``), then ``torch.autograd.grad`` of the target logits with respect to
    ``layer``'s output. Parameters get no ``.grad``; modes, ``requires_grad`` flags and
    BatchNorm buffers are unchanged afterwards.

    Args:
        model: a network returning logits (or an object with ``.logits``).
        inputs: preprocessed images, ``(N, C, H, W)`` or one ``(C, H, W)``.
        target: the class to explain: None for each image's predicted class, an index for all
            images, or one per image (an index, or None for that image's predicted class).
        layer: dotted name of the module whose output is explained (a 4-D feature map, run
            once per forward); default ``default_layer(model, inputs)``.
        method: ``"hirescam"`` or ``"gradcam"`` (see the module's description).

    Returns:
        A float tensor on the CPU, ``(N, H, W)`` (``(H, W)`` for one ``(C, H, W)`` image); 1 at
        each map's peak, all zeros where no position raised the target's score.

    Raises:
        TypeError: ``model`` is not a module, ``inputs`` not a float tensor, a bad ``target``.
        ValueError: a bad shape, ``target`` out of range, ``layer`` that names no module, does
            not return a 4-D tensor or runs more than once, an unknown ``method``.

    Example:
        >>> maps = class_activation_map(model, batch)          # batch: (8, 3, 224, 224)
        >>> maps.shape, float(maps.max())
        (torch.Size([8, 224, 224]), 1.0)
    """
    check_module("model", model)
    batch = _check_inputs(inputs)
    if method not in METHODS:
        raise ValueError(f"method must be one of {list(METHODS)}, got {method!r}")
    name = default_layer(model, batch) if layer is None else layer
    if not isinstance(name, str):
        raise TypeError(f"layer must be None or a dotted module name, got {describe(layer)}")
    handle, outputs = _capture(model, name)
    try:
        with eval_mode(model), torch.inference_mode(False), torch.enable_grad():
            x = to_model(model, batch.detach().clone()).requires_grad_(True)
            out = model(x)
            logits = out.logits if hasattr(out, "logits") else out
            classes = _targets(target, logits.detach())
            if len(outputs) != 1 or not isinstance(outputs[0], torch.Tensor) or outputs[0].ndim != 4:
                raise ValueError(f"layer={name!r} must return one 4-D feature map per forward; it ran "
                                 f"{len(outputs)} times" + (f" and returned {describe(outputs[0])}" if outputs else ""))
            score = logits.gather(1, classes[:, None]).sum()
            gradient, = torch.autograd.grad(score, outputs[0])
            maps = _combine(outputs[0].detach(), gradient, method)
    finally:
        handle.remove()
    maps = _scale(maps.cpu(), tuple(batch.shape[-2:]))
    return maps if inputs.ndim == 4 else maps[0]


def _class_index(value: Any, classes: Sequence[str]) -> Any:
    if isinstance(value, str):
        if value not in classes:
            raise ValueError(f"target={value!r} is not one of the classes {list(classes)}")
        return classes.index(value)
    return value


def _uncrop(cam: torch.Tensor, prepared: tuple[int, int], size: int, shape: tuple[int, int]) -> torch.Tensor:
    """A centre-crop map put back where the crop was in the resized image, then scaled to ``shape``.

    Outside the crop (what the network did not see) the map is 0.
    """
    canvas = torch.zeros(prepared, dtype=torch.float64)
    top, left = int(round((prepared[0] - size) / 2.0)), int(round((prepared[1] - size) / 2.0))
    rows = slice(max(top, 0), min(top + size, prepared[0]))
    cols = slice(max(left, 0), min(left + size, prepared[1]))
    canvas[rows, cols] = cam[rows.start - top:rows.stop - top, cols.start - left:cols.stop - left].double()
    out = F.interpolate(canvas[None, None], size=shape, mode="bilinear", align_corners=False)[0, 0]
    return out.clamp(0, 1).float()


def explain_images(classifier: Any, images: Sequence[Any], *, target: Any = None, draft: bool = False,
                   method: str = "hirescam", batch_size: int = 16) -> list[torch.Tensor]:
    """``Classifier.explain``'s work: maps in each image's own geometry (see there).

    Args:
        classifier: a ``Classifier``.
        images: checked items (``Path``, PIL images or unnormalised tensors).
        target: None, a class name or index for all, or one per image.
        draft: decode JPEG files reduced, as ``predict`` does by default.
        method: ``"hirescam"`` or ``"gradcam"``.
        batch_size: images run together.

    Returns:
        One ``(H, W)`` float map in [0, 1] per image, ``(H, W)`` the image's size as read.

    Raises:
        TypeError, ValueError: as ``class_activation_map``; an unknown class name.

    Example:
        >>> [m.shape for m in explain_images(clf, [Path("cat.jpg")])]
        [torch.Size([300, 451])]
    """
    check_bool("draft", draft)
    check_int("batch_size", batch_size, minimum=1)
    each = target if isinstance(target, (list, tuple)) else [target] * len(images)
    if len(each) != len(images):
        raise ValueError(f"target has {len(each)} entries for {len(images)} images")
    each = [_class_index(t, classes=classifier.classes) for t in each]
    tf, side, maps = classifier.transform, classifier.transform.resize, []
    for start in range(0, len(images), batch_size):
        chunk = [to_rgb(load_image(x, draft=(side, side) if draft else None) if isinstance(x, os.PathLike) else x)
                 for x in images[start:start + batch_size]]
        prepared = [tf.prepare(x) for x in chunk]
        batch = torch.stack([tf.finish(p) for p in prepared])
        cams = class_activation_map(classifier.model, batch, target=each[start:start + batch_size], method=method)
        for cam, image, ready in zip(cams, chunk, prepared):
            shape = tuple(image.shape[-2:]) if isinstance(image, torch.Tensor) else image.size[::-1]
            maps.append(_uncrop(cam, tuple(ready.shape[-2:]), tf.size, shape))
    return maps
