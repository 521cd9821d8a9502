"""A model's anatomy, read once: head, stages, no-decay names, data config, source.

Every function that needs to know "which layers are the head, the stages, the parameters
that take no weight decay, the preprocessing" reads it from this value instead of deriving
it again; the Trainer derives it once per fit and passes it along (``anatomy=``). The value
holds names, not tensors, so it survives ``.to()``, ``copy.deepcopy``, DDP wrapping and a
JSON round trip. See docs/anatomy.md.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from torch import nn
from torchvision import models as tvm

from ..base import check_head_name, check_module, describe
from .data_config import DataConfig, data_config
from .heads import _aux_names, find_head
from .stages import backbone_stages

__all__ = ["Anatomy", "Source", "anatomy", "model_anatomy", "pre_head_names"]

_ELEMENTWISE_DROPOUT = (nn.Dropout, nn.AlphaDropout)
# Declared by torchvision's own recipes (references/classification: transformer_embedding_decay=0)
_TV_NO_DECAY = ("class_token", "pos_embedding", "relative_position_bias_table", "logit_scale")


@dataclass(frozen=True)
class Source:
    """How ``load_model`` built the model: ``arch``, ``weights`` (full name or None) and the
    extra ``kwargs`` as sorted ``(name, value)`` pairs."""

    arch: str
    weights: str | None
    kwargs: tuple[tuple[str, Any], ...] = ()


@dataclass(frozen=True)
class Anatomy:
    """What ``anatomy(model)`` read from a model, by name (see docs/anatomy.md).

    Attributes:
        head: dotted name of the classifier head.
        aux_heads: dotted names of auxiliary classifiers (inception, googlenet, DeiT).
        stages: ``(stage name, parameter names)`` of the backbone, input side first; every
            parameter outside the heads in exactly one stage.
        head_params: parameter names of the head and the auxiliary heads.
        no_decay: parameter names that take no weight decay.
        feature_dim: width of what the head receives (None when unknown).
        num_classes: outputs of the head (None for an ``nn.Identity`` head).
        pre_head: the layers that run on the head's input before it, in order (the Dropout
            that a step on cached features must run).
        data_config: the preprocessing the weights expect.
        source: what ``load_model`` recorded, or None.
        stages_from: the rule that gave the stages.
    """

    head: str
    aux_heads: tuple[str, ...]
    stages: tuple[tuple[str, tuple[str, ...]], ...]
    head_params: tuple[str, ...]
    no_decay: tuple[str, ...]
    feature_dim: int | None
    num_classes: int | None
    pre_head: tuple[str, ...]
    data_config: DataConfig
    source: Source | None
    stages_from: str

    def bind(self, model: nn.Module) -> tuple[list[tuple[str, list[nn.Parameter]]], list[nn.Parameter]]:
        """The stages as ``(name, [parameters])`` and the head parameters of ``model``.

        Raises:
            ValueError: ``model``'s parameters are not the ones this anatomy names (it was
                read from another model, or before the model changed).
        """
        by_name = self._check(model)
        return ([(name, [by_name[n] for n in params]) for name, params in self.stages],
                [by_name[n] for n in self.head_params])

    def _check(self, model: nn.Module) -> dict[str, nn.Parameter]:
        by_name = dict(model.named_parameters())
        ours = [n for _, ps in self.stages for n in ps] + list(self.head_params)
        if set(ours) != set(by_name) or len(ours) != len(by_name):
            missing = sorted(set(by_name) - set(ours))[:3]
            unknown = sorted(set(ours) - set(by_name))[:3]
            raise ValueError(f"anatomy does not match this {type(model).__name__}: parameters not in it "
                             f"{missing}, names it has that the model lacks {unknown}; derive it again with "
                             "anatomy(model) after changing the model")
        return by_name

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready values (lists for tuples)."""
        source = None if self.source is None else {"arch": self.source.arch, "weights": self.source.weights,
                                                   "kwargs": dict(self.source.kwargs)}
        return {"head": self.head, "aux_heads": list(self.aux_heads),
                "stages": [[name, list(ps)] for name, ps in self.stages], "head_params": list(self.head_params),
                "no_decay": list(self.no_decay), "feature_dim": self.feature_dim, "num_classes": self.num_classes,
                "pre_head": list(self.pre_head), "data_config": self.data_config.to_dict(), "source": source,
                "stages_from": self.stages_from}

    @classmethod
    def from_dict(cls, data: Any) -> "Anatomy":
        """The inverse of ``to_dict``; ``ValueError`` naming missing or unknown fields."""
        if not isinstance(data, dict):
            raise TypeError(f"anatomy must be a dict, got {describe(data)}")
        if set(data) != {f.name for f in fields(cls)}:
            raise ValueError(f"anatomy fields must be {sorted(f.name for f in fields(cls))}, got {sorted(data)}")
        src = data["source"]
        return cls(data["head"], tuple(data["aux_heads"]),
                   tuple((name, tuple(ps)) for name, ps in data["stages"]), tuple(data["head_params"]),
                   tuple(data["no_decay"]), data["feature_dim"], data["num_classes"], tuple(data["pre_head"]),
                   DataConfig.from_dict(data["data_config"]),
                   None if src is None else Source(src["arch"], src["weights"], tuple(sorted(src["kwargs"].items()))),
                   data["stages_from"])


def _passes_over(layer: nn.Module, flattened: bool) -> tuple[bool, bool]:
    """Whether a layer between the capture point and the head can run on cached features
    (any Dropout; after a Flatten only an element-wise one, whose mask does not depend on
    the shape; a Flatten of all but the batch dimension; an Identity), and whether a
    Flatten has been passed once it has."""
    if isinstance(layer, nn.Flatten):
        return layer.start_dim == 1 and layer.end_dim == -1, True
    if isinstance(layer, nn.Identity):
        return True, flattened
    if flattened:
        return type(layer) in _ELEMENTWISE_DROPOUT, flattened
    return isinstance(layer, nn.modules.dropout._DropoutNd), flattened


def _leaves(parent: str, modules: dict[str, nn.Module]) -> list[tuple[str, nn.Module]]:
    """``(name, layer)`` in the order they run, nested ``nn.Sequential``s opened (not
    ``children()``: a layer registered twice runs twice)."""
    out: list[tuple[str, nn.Module]] = []
    for key, module in modules.items():
        name = f"{parent}.{key}" if parent else key
        out += _leaves(name, module._modules) if isinstance(module, nn.Sequential) else [(name, module)]
    return out


def pre_head_names(model: nn.Module, head: str) -> tuple[str, ...]:
    """The layers that run on the head's input just before it and have no parameters:
    Dropout, a full Flatten, Identity (MobileNet's ``classifier.0``, VGG's last Dropout),
    found through nested ``nn.Sequential`` containers. A dropout applied in ``forward`` code
    or held outside a Sequential (timm's ``head_drop``) cannot be found."""
    before: list[str] = []
    flattened, name = False, head
    while name:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        if not isinstance(parent, nn.Sequential):
            break
        keys = list(parent._modules)
        preceding = _leaves(parent_name, {k: parent._modules[k] for k in keys[:keys.index(child)]})
        while preceding:
            ok, flattened = _passes_over(preceding[-1][1], flattened)
            if not ok:
                break
            before.insert(0, preceding.pop()[0])
        if preceding:  # something else runs before: the capture point is inside this container
            break
        name = parent_name
    return tuple(before)


def _widths(module: nn.Module) -> tuple[int | None, int | None]:
    layers = [m for m in module.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    if not layers:
        return None, None
    first, last = layers[0], layers[-1]
    return (first.in_features if isinstance(first, nn.Linear) else first.in_channels,
            last.out_features if isinstance(last, nn.Linear) else last.out_channels)


def _no_decay(model: nn.Module, names: list[str]) -> tuple[str, ...]:
    """1-D parameters (biases, norm weights) and what the model declares: timm's
    ``no_weight_decay()``; for torchvision ViT/Swin/MaxViT their class token, position
    embeddings, relative position bias tables and Swin V2's logit scales."""
    declared: set[str] = set()
    getter = getattr(model, "no_weight_decay", None)
    if callable(getter):
        declared = set(getter())
    elif isinstance(model, (tvm.VisionTransformer, tvm.SwinTransformer, tvm.MaxVit)):
        declared = {n for n in names if n.rpartition(".")[2] in _TV_NO_DECAY}
    by_name = dict(model.named_parameters())
    return tuple(n for n in names if by_name[n].ndim <= 1 or n in declared
                 or any(n.startswith(d + ".") for d in declared))


def _source(model: nn.Module) -> Source | None:
    arch = getattr(model, "transferlearn_arch", None)
    if not isinstance(arch, str):
        return None
    kwargs = getattr(model, "transferlearn_kwargs", None) or {}
    return Source(arch, getattr(model, "transferlearn_weights", None), tuple(sorted(dict(kwargs).items())))


def anatomy(model: nn.Module, *, head: str | None = None) -> Anatomy:
    """Read a model's structure once: head, stages, no-decay names, data config, source.

    Per field, first match wins: the explicit ``head=``; the model's own declaration (timm's
    ``get_classifier``, ``group_matcher(coarse=True)``, ``no_weight_decay``,
    ``pretrained_cfg``); torchvision's weights recorded by ``load_model`` and the family
    table of stages (docs/anatomy.md); the generic rule as the fallback.

    Args:
        model: the network.
        head: explicit dotted name of the head (see ``find_head``).

    Returns:
        A frozen ``Anatomy``.

    Raises:
        TypeError: ``model`` is not a module or ``head`` is not a string.
        ValueError: no head can be found.

    Example:
        >>> [name for name, _ in anatomy(torchvision.models.resnet50()).stages]
        ['conv1+bn1', 'layer1', 'layer2', 'layer3', 'layer4']
    """
    check_module("model", model)
    name, module = find_head(model, head=head)
    heads = [name] + (_aux_names(model) if head is None else [])
    names = {id(p): n for n, p in model.named_parameters()}
    head_params = tuple(dict.fromkeys(names[id(p)] for h in heads for p in model.get_submodule(h).parameters()))
    stages, rule = backbone_stages(model, heads, set(head_params), names)
    feature_dim, num_classes = _widths(module)
    if feature_dim is None and isinstance(getattr(model, "num_features", None), int):
        feature_dim = model.num_features  # timm, after reset_classifier(0)
    return Anatomy(name, tuple(heads[1:]), stages, head_params, _no_decay(model, list(names.values())),
                   feature_dim, num_classes, pre_head_names(model, name), data_config(model), _source(model), rule)


_derive = anatomy  # ``model_anatomy``'s argument ``anatomy`` hides the function's name


def model_anatomy(model: nn.Module, *, head: str | None = None, anatomy: Anatomy | None = None) -> Anatomy:
    """What every consumer calls: the given ``anatomy`` (checked), or ``anatomy(model, head=head)``.

    Raises:
        TypeError: ``anatomy`` is not an ``Anatomy``, or ``head`` is not a string.
        ValueError: ``head`` disagrees with ``anatomy.head``.
    """
    check_head_name(head)
    if anatomy is None:
        return _derive(model, head=head)
    if not isinstance(anatomy, Anatomy):
        raise TypeError(f"anatomy must be an Anatomy from transferlearn.anatomy(model), got {describe(anatomy)}")
    if head is not None and head != anatomy.head:
        raise ValueError(f"head={head!r} disagrees with anatomy.head={anatomy.head!r}; pass one of them")
    return anatomy
