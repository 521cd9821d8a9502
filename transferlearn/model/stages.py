"""The stages of a model's backbone, by parameter name, input side first (read by ``anatomy``).

First match wins: the model's own declaration (timm's ``group_matcher(coarse=True)``); the
family table of torchvision classes; the generic rule of ``_heuristic`` for anything else.

Most families in the table are split by **output stride**: walking the trunk in registration
order, a stage is everything whose output has the same stride (2, 4, 8, 16, 32), so a stage
starts where the resolution halves. On a ResNet that gives exactly its own stages
(``conv1+bn1``, ``layer1`` ... ``layer4``). MobileNet, EfficientNet and MNASNet are split by
stride **and output width**: the rows of their block tables (torchvision's
``inverted_residual_setting``), the stem and the last 1x1 convolution each a stage, as timm's
``group_matcher`` has them (``conv_stem``, ``blocks.0`` ... ``blocks.6``, ``conv_head``). On
RegNet, DenseNet, ConvNeXt, Swin (its patch merging halves the resolution), MaxViT, VGG and AlexNet (their
pooling layers) it groups the blocks the same way. A Vision Transformer keeps one resolution:
its stem (``class_token``, ``conv_proj``, ``encoder.pos_embedding``) is a stage, then its
encoder layers in four equal groups (the final ``encoder.ln`` with the last). Layers between
the trunk and the head (VGG's ``fc6``/``fc7``, ConvNeXt's last norm) join the last stage.
See docs/anatomy.md for the table.
"""

from __future__ import annotations

import math
import re
from typing import Any, Callable

from torch import nn
from torchvision import models as tvm
from torchvision.models import swin_transformer

from ._heuristic import heuristic_groups

__all__ = ["backbone_stages", "stage_name"]

Stage = tuple[str, tuple[str, ...]]
_STRIDED = (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)
_HALVING = (swin_transformer.PatchMerging, swin_transformer.PatchMergingV2)  # stride 2 by reshaping
_IN_ORDER = (nn.Sequential, nn.ModuleList, nn.ModuleDict)  # children run one after another
_BY_WIDTH = (tvm.MobileNetV2, tvm.MobileNetV3, tvm.EfficientNet, tvm.MNASNet)
_BY_STRIDE = (tvm.ResNet, tvm.RegNet, tvm.ConvNeXt, tvm.DenseNet, tvm.VGG, tvm.AlexNet, tvm.SqueezeNet,
              tvm.ShuffleNetV2, tvm.GoogLeNet, tvm.Inception3, tvm.SwinTransformer, tvm.MaxVit)
_NUMBERED = re.compile(r"^(.*?)(\d+)$")


def stage_name(units: list[str]) -> str:
    """``"+"``-joined unit names; numbered siblings as a range from the first to the last
    (``features.7-13``, ``encoder.layers.encoder_layer_0-2``)."""
    numbered = [_NUMBERED.match(u) for u in units]
    if len(units) > 1 and all(numbered) and len({m[1] for m in numbered}) == 1:
        return f"{numbered[0][1]}{numbered[0][2]}-{numbered[-1][2]}"
    parts: list[list[Any]] = []  # [prefix, first, last] or [name, None, None]
    for unit in units:
        found = _NUMBERED.match(unit)
        if found and parts and parts[-1][1] is not None and parts[-1][0] == found[1] \
                and parts[-1][2] + 1 == int(found[2]):
            parts[-1][2] = int(found[2])
        elif found:
            parts.append([found[1], int(found[2]), int(found[2])])
        else:
            parts.append([unit, None, None])
    return "+".join(p if a is None else f"{p}{a}" if a == b else f"{p}{a}-{b}" for p, a, b in parts)


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _stride(module: nn.Module) -> int:
    """How much ``module`` divides the resolution, read from its layers without running it:
    a sequence multiplies its children's strides, parallel branches (a residual block, an
    Inception module) take the largest."""
    if isinstance(module, _STRIDED):
        stride = module.stride
        return int(stride if isinstance(stride, int) else stride[0])
    if isinstance(module, _HALVING):
        return 2
    strides = [_stride(c) for c in module.children()]
    if not strides:
        return 1
    return math.prod(strides) if isinstance(module, _IN_ORDER) else max(strides)


def _levels(module: nn.Module, prefix: str, heads: list[str], level: int) -> tuple[list[tuple[str, int]], int]:
    """``(unit name, output stride)`` of the parameter-owning units below ``module`` in running
    order, and the stride after it; a container spanning several strides is opened."""
    units = [(_join(prefix, n), level) for n, _ in module.named_parameters(recurse=False)]
    for name, child in module.named_children():
        full = _join(prefix, name)
        if full in heads:
            continue
        holds_head = any(h.startswith(full + ".") for h in heads)
        if holds_head or (isinstance(child, _IN_ORDER) and _spans_levels(child, full, heads, level)):
            inner, level = _levels(child, full, heads, level)
            units += inner
            continue
        level *= _stride(child)
        if any(True for _ in child.parameters()):
            units.append((full, level))
    return units, level


def _spans_levels(module: nn.Module, prefix: str, heads: list[str], level: int) -> bool:
    if _stride(module) <= 2:
        return False
    inner, _ = _levels(module, prefix, heads, level)
    return len({lvl for _, lvl in inner}) > 1


def _owned(model: nn.Module, unit: str, names: dict[int, str], taken: set[str]) -> list[str]:
    """Names of the parameters of a unit (a module or a bare parameter) not yet taken."""
    try:
        params = list(model.get_submodule(unit).parameters())
    except AttributeError:
        params = [model.get_parameter(unit)]
    found = [names[id(p)] for p in params if names[id(p)] not in taken]
    taken.update(found)
    return found


def _group(model: nn.Module, units: list[tuple[str, Any]], names: dict[int, str],
           taken: set[str]) -> list[Stage]:
    """Consecutive units with the same key form one stage."""
    stages: list[tuple[Any, list[str], list[str]]] = []
    for unit, key in units:
        params = _owned(model, unit, names, taken)
        if not params:
            continue
        if stages and stages[-1][0] == key:
            stages[-1][1].append(unit)
            stages[-1][2].extend(params)
        else:
            stages.append((key, [unit], params))
    return [(stage_name(u), tuple(p)) for _, u, p in stages]


def _by_stride(model: nn.Module, heads: list[str], names: dict[int, str], taken: set[str]) -> list[Stage]:
    units, _ = _levels(model, "", heads, 1)
    return _group(model, units, names, taken)


def _width(model: nn.Module, unit: str) -> int | None:
    """Output width of a unit: the channels of its last convolution or norm layer."""
    try:
        module = model.get_submodule(unit)
    except AttributeError:  # a bare parameter
        return None
    widths = [m.out_channels if isinstance(m, nn.Conv2d) else m.num_features for m in module.modules()
              if isinstance(m, (nn.Conv2d, nn.BatchNorm2d))]
    return widths[-1] if widths else None


def _by_width(model: nn.Module, heads: list[str], names: dict[int, str], taken: set[str]) -> list[Stage]:
    """Blocks with the same output stride AND width form a stage: the rows of the architecture's
    block table (MobileNet, EfficientNet, MNASNet), as timm's ``blocks.N`` groups them."""
    units, _ = _levels(model, "", heads, 1)
    keyed: list[tuple[str, Any]] = []
    for unit, level in units:  # a unit without convolution or norm (MobileNetV3's classifier.0) joins the last
        width = _width(model, unit)
        keyed.append((unit, (level, width) if width is not None or not keyed else keyed[-1][1]))
    return _group(model, keyed, names, taken)


def _vit(model: nn.Module, heads: list[str], names: dict[int, str], taken: set[str]) -> list[Stage]:
    """Stem (class token, patch projection, position embedding), then the encoder layers in
    four equal groups, the final norm with the last."""
    layers = [f"encoder.layers.{n}" for n, _ in model.encoder.layers.named_children()]
    chunks = min(4, len(layers))
    keys = {layer: 1 + i * chunks // len(layers) for i, layer in enumerate(layers)}
    stem = [n for n, _ in model.named_parameters(recurse=False)] + ["conv_proj"] + \
        [f"encoder.{n}" for n, _ in model.encoder.named_parameters(recurse=False)]
    rest = [f"encoder.{n}" for n, _ in model.encoder.named_children() if n != "layers"]
    units = [(u, 0) for u in stem] + [(u, keys[u]) for u in layers] + [(u, chunks) for u in rest]
    for name, child in model.named_children():  # e.g. heads.pre_logits: between encoder and head
        if name not in ("conv_proj", "encoder", *heads):
            units += [(u, chunks) for u, _ in _levels(child, name, heads, 1)[0]]
    return _group(model, units, names, taken)


_TABLE: tuple[tuple[tuple[type, ...], str, Callable[..., list[Stage]]], ...] = (
    ((tvm.VisionTransformer,), "vision transformer: stem, encoder layers in 4 groups", _vit),
    (_BY_WIDTH, "output stride and width (block rows)", _by_width),
    (_BY_STRIDE, "output stride", _by_stride),
)


def _timm(model: nn.Module, heads: list[str], names: dict[int, str], taken: set[str]) -> list[Stage] | None:
    """timm's own coarse grouping; the layers it leaves unmatched next to the head (a neck,
    e.g. ConvNeXt's ``head.norm``) join the last stage."""
    matcher = getattr(model, "group_matcher", None)
    if not callable(matcher):
        return None
    try:
        from timm.models import group_parameters
        spec = matcher(coarse=True)
    except (ImportError, NotImplementedError, TypeError):
        return None
    stages: list[tuple[list[str], list[str]]] = []
    groups = [grouped for _, grouped in sorted(group_parameters(model, spec).items())]
    for i, group in enumerate(groups):
        params = [n for n in group if n not in taken]
        with_head = len(params) < len(group)
        taken.update(params)
        units = _timm_units(params)
        if params and with_head and i == len(groups) - 1 and stages:  # the unmatched rest: a neck
            stages[-1][0].extend(u for u in units if u not in stages[-1][0])
            stages[-1][1].extend(params)
        elif params:
            stages.append((units, params))
    return [(stage_name(u), tuple(p)) for u, p in stages]


def _timm_units(params: list[str]) -> list[str]:
    """Readable units of a timm group: each top-level name, with the block number when all
    its parameters here share one (``conv1``, ``layer1``, ``blocks.3``, ``stages.0``)."""
    seconds: dict[str, set[str]] = {}
    for name in params:
        top, _, rest = name.partition(".")
        seconds.setdefault(top, set()).add(rest.partition(".")[0] if "." in rest else "")
    return [f"{top}.{next(iter(s))}" if len(s) == 1 and next(iter(s)).isdigit() else top
            for top, s in seconds.items()]


def _partition(stages: list[Stage], backbone: list[str], ordered: bool = True) -> bool:
    """Every backbone parameter in exactly one stage (in registration order when ``ordered``;
    timm's own grouping is taken in its own order)."""
    flat = [n for _, params in stages for n in params]
    return flat == backbone if ordered else len(flat) == len(backbone) and set(flat) == set(backbone)


def backbone_stages(model: nn.Module, heads: list[str], head_params: set[str],
                    names: dict[int, str]) -> tuple[tuple[Stage, ...], str]:
    """The backbone's stages (every parameter outside ``head_params`` exactly once) and the
    rule that gave them: ``"timm group_matcher"``, a family-table rule, or ``"heuristic"``.

    Args:
        model: the network.
        heads: dotted names of the head and auxiliary heads (left out).
        head_params: parameter names of those heads.
        names: parameter name by ``id`` (``named_parameters``, shared parameters once).
    """
    backbone = [n for n in names.values() if n not in head_params]
    found = _timm(model, heads, names, set(head_params))
    if found and _partition(found, backbone, ordered=False):
        return tuple(found), "timm group_matcher"
    for classes, rule_name, rule in _TABLE:
        if isinstance(model, classes):
            try:
                found = rule(model, heads, names, set(head_params))
            except AttributeError:  # a subclass laid out differently: the generic rule below
                break
            if _partition(found, backbone):
                return tuple(found), rule_name
            break
    taken = set(head_params)
    stages = []
    for name, params in heuristic_groups(model, heads):
        own = [names[id(p)] for p in params if names[id(p)] not in taken]
        taken.update(own)
        if own:
            stages.append((name, tuple(own)))
    return tuple(stages), "heuristic"
