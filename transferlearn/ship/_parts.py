"""Helpers of ``save_classifier`` / ``load_classifier``: checks, the head's structure, rebuilding."""

from __future__ import annotations

import contextlib
import json
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from torch import nn

from ..base import check_path, describe, sha256_file, state_differences
from ..data.transforms import ImagePreprocess
from ..model.anatomy import anatomy
from ..model.heads import DropoutHead, replace_head
from ..model.load import load_model
from .format import CONFIG_NAME, SIDECARS, ClassifierConfig

__all__: list[str] = []

_DTYPES = {torch.float32: "float32", torch.float64: "float64", torch.float16: "float16",
           torch.bfloat16: "bfloat16"}


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module inside DataParallel / DistributedDataParallel / torch.compile."""
    while isinstance(getattr(model, "module", None), nn.Module) and \
            isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
        model = model.module
    return getattr(model, "_orig_mod", model)


def check_classes(classes: Any) -> tuple[str, ...]:
    if isinstance(classes, (str, bytes)) or not isinstance(classes, Sequence):
        raise TypeError(f"classes must be a list of class-name strings, got {describe(classes)}")
    bad = [c for c in classes if not isinstance(c, str) or not c]
    if bad:
        raise TypeError(f"classes must be non-empty strings, got {describe(bad[0])}")
    repeated = sorted({c for c in classes if list(classes).count(c) > 1})
    if repeated or len(classes) < 2:
        raise ValueError(f"classes must be at least 2 unique names, got {describe(list(classes))}"
                         + (f" (repeated: {repeated})" if repeated else ""))
    return tuple(classes)


def transform_params(transform: Any) -> dict[str, Any]:
    """The evaluation counterpart's parameters (a training transform is saved as its eval twin)."""
    if not isinstance(transform, ImagePreprocess):
        raise TypeError(f"transform must be an ImagePreprocess from imagenet_transform(), got "
                        f"{describe(transform)}")
    return {"size": transform.size, "resize": transform.resize, "mean": [float(v) for v in transform.mean],
            "std": [float(v) for v in transform.std], "interpolation": transform.interpolation.value}


def head_structure(model: nn.Module, num_classes: int) -> dict[str, Any]:
    """Name and structure of the head; its width must match ``num_classes``."""
    name = anatomy(model).head
    module = model.get_submodule(name)
    dropout = None
    if isinstance(module, DropoutHead) and len(module) == 2 and isinstance(module[0], nn.Dropout):
        dropout, module = float(module[0].p), module[1]
    width = getattr(module, "out_features", getattr(module, "out_channels", None))
    if not isinstance(module, (nn.Linear, nn.Conv2d)):
        raise ValueError(f"the model's head {name!r} is {type(module).__name__}; a saved classifier "
                         "rebuilds a Linear or Conv2d head, or replace_head(dropout=p)'s Dropout + Linear")
    if width != num_classes:
        raise ValueError(f"classes has {num_classes} names but the model's head {name!r} has {width} "
                         "outputs; they must match")
    return {"name": name, "dropout": dropout}


def resolve_arch(model: nn.Module, arch: Any) -> str:
    recorded = getattr(model, "transferlearn_arch", None)
    if arch is None:
        if recorded is None:
            raise ValueError("arch is required: the model was not built by load_model, so its "
                             "architecture name is unknown; pass e.g. arch='resnet18'")
        return recorded
    if not isinstance(arch, str) or not arch:
        raise TypeError(f"arch must be a load_model architecture name, got {describe(arch)}")
    if recorded is not None and recorded != arch:
        raise ValueError(f"arch={arch!r} but the model was built by load_model({recorded!r})")
    return arch


def model_kwargs_for(model: nn.Module, given: Any) -> dict[str, Any]:
    """``load_model`` kwargs that rebuild the same structure, including what pretrained
    weights switch on behind the scenes (googlenet/inception ``transform_input``, aux heads)."""
    kwargs = dict(getattr(model, "transferlearn_kwargs", {}) if given is None else given)
    if isinstance(getattr(model, "transform_input", None), bool):
        kwargs["transform_input"] = model.transform_input
    for aux in ("aux1", "AuxLogits"):
        if hasattr(model, aux):
            kwargs["aux_logits"] = getattr(model, aux) is not None
    try:
        json.dumps(kwargs, allow_nan=False)
    except (TypeError, ValueError):
        raise ValueError(f"model_kwargs must be JSON values to be saved, got {describe(kwargs)}; "
                         "pass model_kwargs= with plain values") from None
    return kwargs


def dtype_name(model: nn.Module) -> str:
    first = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
    if first not in _DTYPES:
        raise ValueError(f"model parameters of dtype {first} cannot be saved; use one of {list(_DTYPES)}")
    return _DTYPES[first]


def build_model(config: ClassifierConfig, *, device: Any = None, source: str = "model_kwargs") -> nn.Module:
    """The architecture described by ``config``, randomly initialised (no download), eval mode.

    A builder that refuses the saved keyword arguments (``TypeError``: one it does not take)
    is reported as a ``ValueError`` naming ``source``.
    """
    with torch.device(device or "cpu"):
        try:
            model = load_model(config.arch, weights=None, **config.model_kwargs)
        except TypeError as error:
            raise ValueError(f"{source}: field 'model_kwargs' {json.dumps(config.model_kwargs)} does not "
                             f"build {config.arch!r} ({error})") from None
        replace_head(model, config.num_classes, dropout=config.head["dropout"])
    rebuilt = anatomy(model).head
    if rebuilt != config.head["name"]:
        raise ValueError(f"rebuilding {config.arch!r} puts its head at {rebuilt!r}, not "
                         f"{config.head['name']!r} as saved")
    return model.to(getattr(torch, config.dtype)).eval()


def check_rebuilds(model: nn.Module, config: ClassifierConfig) -> None:
    """Refuse to save what ``load_classifier`` could not rebuild: same keys, same shapes."""
    try:
        skeleton = build_model(config, device="meta")
    except NotImplementedError:  # an initialiser that cannot run on the meta device
        skeleton = build_model(config)
    missing, unexpected, differ = state_differences(model.state_dict(), skeleton.state_dict())
    if missing or unexpected or differ:
        diff = sorted(missing + unexpected) or [k for k, _, _ in differ]
        raise ValueError(f"load_model({config.arch!r}, **{config.model_kwargs}) does not rebuild this "
                         f"model (first differences in its state_dict: {diff[:4]}); pass the arch and "
                         "model_kwargs it was built with")


def check_finite(tensors: Mapping[str, torch.Tensor], what: str) -> None:
    """Refuse NaN or inf in any floating tensor, and a negative BatchNorm ``running_var`` (whose
    square root is NaN), naming the first such tensor."""
    for key, value in tensors.items():
        if key.rsplit(".", 1)[-1] == "running_var" and value.is_floating_point():
            negative = int((value < 0).sum())
            if negative:
                raise ValueError(f"{what}: tensor {key!r} (a BatchNorm running variance) holds {negative} negative "
                                 f"value(s) of {value.numel()}; a variance is never negative, and the model would "
                                 "compute NaN")
        if value.is_floating_point() or value.is_complex():
            bad = int((~torch.isfinite(value)).sum())
            if bad:
                raise ValueError(f"{what}: tensor {key!r} holds {bad} non-finite value(s) (NaN or inf) of "
                                 f"{value.numel()}; a classifier with non-finite weights predicts nothing "
                                 "meaningful")


def cpu_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """The state dict on the CPU, contiguous, with tensors that share storage copied apart."""
    out, seen = {}, set()
    for key, value in model.state_dict().items():
        value = value.detach().cpu().contiguous()
        ptr = value.untyped_storage().data_ptr()
        out[key] = value.clone() if ptr in seen else value
        seen.add(ptr)
    return out


def json_text(value: Any, name: str) -> str:
    """Strict JSON text; non-finite floats become null."""
    def clean(v: Any) -> Any:
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, Mapping):
            return {str(k): clean(x) for k, x in v.items()}
        return [clean(x) for x in v] if isinstance(v, (list, tuple)) else v
    try:
        return json.dumps(clean(list(value) if name == "history" else value), indent=1, allow_nan=False)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must hold JSON values (numbers, strings, lists, dicts), got "
                        f"{describe(value)}") from None


def previous_config(path: Path) -> ClassifierConfig | None:
    """The classifier already saved in ``path``, None if there is none (or it does not parse)."""
    try:
        return ClassifierConfig.from_json((path / CONFIG_NAME).read_text(), str(path / CONFIG_NAME))
    except (OSError, ValueError):
        return None


def check_sidecars(path: Path, previous: ClassifierConfig | None, writing: Sequence[str]) -> list[str]:
    """The history/metrics files of ``path`` that the previous classifier wrote and this save does
    not replace (to be removed once it is saved); refuse any such file of unknown origin."""
    stale = []
    for name in SIDECARS:
        if name in writing or not (path / name).exists():
            continue
        if previous is not None and previous.files is not None and name in previous.files:
            stale.append(name)
            continue
        owner = ("beside a classifier saved without a list of its files (transferlearn 0.1)"
                 if previous is not None and previous.files is None else "that no classifier saved here wrote")
        raise ValueError(f"directory={str(path)!r} holds a {name} {owner}; saving without "
                         f"{name.split('.')[0]}= would leave it beside the new classifier as if it were its own. "
                         f"Pass {name.split('.')[0]}=, or move {name} away first")
    return stale


def remove_previous(path: Path, previous: ClassifierConfig | None, config: ClassifierConfig,
                    stale: Sequence[str]) -> None:
    """Delete the previous classifier's files that the new one does not use: its weights file only if
    it still holds the bytes it recorded (this library wrote it), and its stale history/metrics."""
    if previous is not None and previous.weights_file != config.weights_file:
        old = path / previous.weights_file
        with contextlib.suppress(OSError):
            if old.is_file() and not old.is_symlink() and sha256_file(old) == previous.sha256:
                old.unlink()
    for name in stale:
        with contextlib.suppress(OSError):
            (path / name).unlink()


def as_directory(directory: Any) -> Path:
    path = check_path("directory", directory)
    if path.exists() and not path.is_dir():
        raise ValueError(f"directory={str(directory)!r} exists and is not a directory")
    return path


def library_version() -> str:
    from ..base import __version__
    return __version__
