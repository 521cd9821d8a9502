"""What a model may be rebuilt from: torchvision classifiers or timm models, structural options only.

A saved classifier names its architecture and keyword arguments in a file; rebuilding it must
never download weights or read other files. Two facts make sure of that, kept here in one
place: which torchvision architectures ``load_model`` builds (image classifiers, none of
which fetches a backbone when ``weights=None``) and which keyword arguments only shape the
structure.
"""

from __future__ import annotations

import re
from typing import Any

from torchvision import models as tvm

from ..base import describe

__all__ = ["STRUCTURAL_KWARGS", "check_classification", "check_structural_kwargs", "check_timm_name",
           "classification_archs"]

# A timm model name, optionally with its pretrained tag ("vit_small_patch16_224.augreg_in21k"):
# letters, digits, '_', '-' and '.', no ':' (timm reads "hf-hub:", "hf_hub:" and "local-dir:" as a
# place to load the model from) and no path separator.
_TIMM_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]*")

# Keyword arguments that only shape a classifier's structure (read from the builders: the
# torchvision model classes' __init__ and timm's common model arguments), per source. Options
# that read files or fetch weights (timm's checkpoint_path, pretrained_cfg(_overlay),
# cache_dir; detection builders' weights_backbone) are not among them.
STRUCTURAL_KWARGS: dict[str, frozenset[str]] = {
    "torchvision": frozenset({
        "num_classes", "dropout", "attention_dropout", "dropout_aux", "mlp_dropout", "aux_logits",
        "transform_input", "init_weights", "width_mult", "round_nearest", "zero_init_residual", "groups",
        "width_per_group", "replace_stride_with_dilation", "stochastic_depth_prob", "layer_scale",
        "last_channel", "growth_rate", "block_config", "num_init_features", "bn_size", "drop_rate",
        "memory_efficient", "image_size", "representation_size", "input_size"}),
    "timm": frozenset({
        "num_classes", "in_chans", "global_pool", "drop_rate", "drop_path_rate", "drop_block_rate",
        "proj_drop_rate", "attn_drop_rate", "pos_drop_rate", "img_size", "output_stride", "class_token",
        "fc_norm", "init_values", "qkv_bias", "dynamic_img_size"}),
}


def classification_archs() -> list[str]:
    """The torchvision names ``load_model`` builds: its image-classification models."""
    return tvm.list_models(module=tvm)


def check_classification(arch: str) -> None:
    """Refuse a torchvision name that is not an image classifier (``ValueError`` listing what is)."""
    if arch in tvm.list_models(module=tvm):
        return
    accepted = classification_archs()
    shown = f"{', '.join(accepted[:4])}, ..., {accepted[-1]}"
    if arch in tvm.list_models():
        raise ValueError(f"arch={arch!r} is a torchvision model but not an image classifier (detection, "
                         f"segmentation, video, optical flow or quantized); load_model builds the "
                         f"{len(accepted)} classification models of torchvision.models.list_models("
                         f"module=torchvision.models) ({shown}) or 'timm/<name>'")
    raise ValueError(f"arch={arch!r} is not a torchvision model; see torchvision.models.list_models("
                     f"module=torchvision.models) ({shown}) or use 'timm/<name>'")


def check_timm_name(name: str, what: str = "arch") -> None:
    """Refuse a timm name that names a place to load from rather than a model.

    ``timm.create_model`` reads ``"hf-hub:org/repo"`` / ``"hf_hub:..."`` as a Hugging Face
    repository to contact and ``"local-dir:/path"`` as a folder whose config it reads, so
    any ':' or path separator is refused: a saved classifier or ``--arch`` never makes
    ``load_model`` reach the network or a file outside the run.

    Args:
        name: the part after ``"timm/"``.
        what: the argument or field to name in the error.

    Raises:
        ValueError: ``name`` is not a plain timm model name.

    Example:
        >>> check_timm_name("resnet18")
    """
    if not _TIMM_NAME.fullmatch(name):
        raise ValueError(f"{what}={'timm/' + name!r} is not a timm model name: 'timm/' must be followed "
                         "by a name of timm.list_models() (letters, digits, '_', '-', '.', e.g. "
                         "'timm/resnet18' or 'timm/vit_small_patch16_224.augreg_in21k'); model sources "
                         "such as 'hf-hub:', 'hf_hub:' or 'local-dir:' and paths are not accepted")


def check_structural_kwargs(arch: str, kwargs: Any, source: str) -> dict[str, Any]:
    """Refuse ``load_model`` keyword arguments that are not structural options of ``arch``'s source.

    Used for kwargs read from a file (a saved classifier's ``model_kwargs``), which must not
    make the builder read files or fetch weights. Values must be JSON scalars or lists.

    Args:
        arch: the ``load_model`` name.
        kwargs: the keyword arguments.
        source: what to name in an error (e.g. ``"runs/pets/classifier.json: field 'model_kwargs"``).

    Returns:
        ``kwargs`` as a dict.

    Raises:
        ValueError: a key outside ``STRUCTURAL_KWARGS`` of the source, or a value that is an object.

    Example:
        >>> check_structural_kwargs("googlenet", {"aux_logits": False}, "classifier.json")
        {'aux_logits': False}
    """
    kind = "timm" if arch.startswith("timm/") else "torchvision"
    accepted = STRUCTURAL_KWARGS[kind]
    for key, value in kwargs.items():
        if key not in accepted:
            raise ValueError(f"{source}.{key}' is not accepted: {kind} models may only be rebuilt with "
                             f"the structural options {sorted(accepted)}")
        if isinstance(value, dict) or (isinstance(value, list) and any(isinstance(v, (dict, list)) for v in value)):
            raise ValueError(f"{source}.{key}' must be a number, string, bool, null or a flat list, got "
                             f"{describe(value)}")
    return dict(kwargs)
