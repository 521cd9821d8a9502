"""Load pretrained models from the local torch hub cache; install checkpoints there offline."""

from __future__ import annotations

import filecmp
import importlib.util
import os
import pickle
import re
import shutil
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from torch import nn
from torchvision import models as tvm

from ..base import as_weights, atomic_write, check_bool, check_int, describe, sha256_file
from .heads import replace_head
from .rebuild import check_classification, check_timm_name

__all__ = ["MissingWeightsError", "checkpoint_path", "install_weights", "load_model"]

_HASH = re.compile(r"-([a-f0-9]+)\.")

class MissingWeightsError(FileNotFoundError):
    """Pretrained weights are not in the local cache (and ``download`` is False).

    Attributes:
        weights: the torchvision weights' full name (``"MobileNet_V2_Weights.IMAGENET1K_V1"``),
            or ``"timm/<name>"``.
        expected: where the checkpoint was looked for (None for timm).
    """

    def __init__(self, message: str, weights: str, expected: Path | None) -> None:
        super().__init__(message)
        self.weights, self.expected = weights, expected


def _resolve_weights(arch: str, weights: Any) -> tvm.WeightsEnum | None:
    if weights is None or isinstance(weights, tvm.WeightsEnum):
        return weights
    if not isinstance(weights, str):
        raise TypeError(f"weights must be None, a WeightsEnum member or a name such as "
                        f"'DEFAULT' or 'IMAGENET1K_V1', got {describe(weights)}")
    if "." in weights:
        return as_weights(weights)
    enum = tvm.get_model_weights(arch)
    try:
        return enum[weights]
    except KeyError:
        raise ValueError(f"weights={weights!r} is not one of {arch}'s weights: "
                         f"{['DEFAULT'] + [w.name for w in enum]}") from None


def checkpoint_path(weights: tvm.WeightsEnum) -> Path:
    """Where torchvision looks for ``weights`` in the torch hub cache."""
    weights = as_weights(weights)
    name = os.path.basename(urlparse(weights.url).path)
    return Path(torch.hub.get_dir()) / "checkpoints" / name


def _timm_candidates(cfg: Any) -> list[str]:
    """Weight file names timm would try on the Hugging Face hub, in its order of preference."""
    given = cfg.hf_hub_filename
    if given is None or given == "pytorch_model.bin":
        return ["model.safetensors", "pytorch_model.bin"]
    if given.endswith(".bin"):
        return [given[:-4] + ".safetensors", given]
    return [given]


def _timm_cached_file(name: str) -> tuple[str, bool] | None:
    """The local file timm's pretrained weights for ``name`` would load from, without any network.

    Looks in the Hugging Face cache (``huggingface_hub.try_to_load_from_cache``, which only
    reads the disk) and in timm's legacy URL cache (the torch hub ``checkpoints`` folder).
    Nothing process-wide is touched: the caller passes the file to ``timm.create_model``
    through ``pretrained_cfg_overlay={"file": ...}``. Returns ``(path, custom_load)``.
    """
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(name)
    if cfg is None:
        return None
    if cfg.hf_hub_id and importlib.util.find_spec("huggingface_hub") is not None:
        from huggingface_hub import try_to_load_from_cache

        repo, _, revision = cfg.hf_hub_id.partition("@")
        for filename in _timm_candidates(cfg):
            found = try_to_load_from_cache(repo, filename, revision=revision or None)
            if isinstance(found, str):
                return found, bool(cfg.custom_load)
    if cfg.url:
        legacy = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(cfg.url).path)
        if legacy.is_file():
            return str(legacy), bool(cfg.custom_load)
    return None


def _load_timm(name: str, weights: Any, download: bool, kwargs: dict[str, Any]) -> nn.Module:
    try:
        import timm
    except ImportError:
        raise ImportError("load_model('timm/...') needs timm: pip install 'transferlearn[timm]'") from None
    from timm.models import is_model, split_model_name_tag

    if not is_model(split_model_name_tag(name)[0]):
        raise ValueError(f"arch={'timm/' + name!r} is not a timm model: timm {timm.__version__} has no "
                         f"{split_model_name_tag(name)[0]!r}; see timm.list_models() (e.g. 'timm/resnet18')")
    if weights not in (None, "DEFAULT"):
        raise ValueError(f"for timm models weights must be None or 'DEFAULT', got {weights!r}")
    if weights is None:
        return timm.create_model(name, pretrained=False, **kwargs)
    if download:
        return timm.create_model(name, pretrained=True, **kwargs)
    local = _timm_cached_file(name)
    if local is None:
        raise MissingWeightsError(
            f"pretrained weights for timm model {name!r} are not in the local Hugging Face cache; "
            "pass download=True to fetch them", f"timm/{name}", None)
    overlay = dict(kwargs.pop("pretrained_cfg_overlay", None) or {})
    overlay.update(file=local[0], custom_load=local[1])
    return timm.create_model(name, pretrained=True, pretrained_cfg_overlay=overlay, **kwargs)


def _get_model(arch: str, weights: tvm.WeightsEnum | None, kwargs: dict[str, Any]) -> nn.Module:
    """``torchvision.models.get_model``; a cached checkpoint that cannot be read is named, with how to
    reinstall it (a truncated download, a file copied over it, another model's file)."""
    try:
        return tvm.get_model(arch, weights=weights, **kwargs)
    except (pickle.UnpicklingError, EOFError, RuntimeError) as error:
        if weights is None or not checkpoint_path(weights).is_file():
            raise
        name = f"{type(weights).__name__}.{weights.name}"
        first = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise ValueError(f"the cached checkpoint {checkpoint_path(weights)} of {name} cannot be loaded "
                         f"({type(error).__name__}: {first}); it is damaged or not these weights: reinstall it "
                         f"with install_weights(file, {name!r}, force=True) "
                         f"(transferlearn install-weights FILE {name} --force)") from error


def _weights_name(weights: Any) -> str | None:
    """``"MobileNet_V2_Weights.IMAGENET1K_V1"`` for an enum member; strings as given."""
    if isinstance(weights, tvm.WeightsEnum):
        return f"{type(weights).__name__}.{weights.name}"
    return weights if isinstance(weights, str) else None


def load_model(arch: str, *, weights: Any = "DEFAULT", num_classes: int | None = None,
               download: bool = False, **kwargs: Any) -> nn.Module:
    """Build a torchvision (or timm) model with pretrained weights and, optionally, a new head.

    ``arch`` is an image-classification model of torchvision
    (``torchvision.models.list_models(module=torchvision.models)``; detection, segmentation,
    video and quantized models are refused) or ``"timm/<name>"``. The
    weights come from the torch hub cache (``torch.hub.get_dir()/checkpoints``; for timm,
    the local Hugging Face cache); a missing checkpoint raises instead of downloading unless
    ``download=True``. Use ``install_weights`` to put a checkpoint there on an offline
    machine. timm weights are looked up in the local caches first and handed to timm as a
    file, so nothing process-wide (such as ``HF_HUB_OFFLINE``) is changed.

    The model records how it was built in three plain attributes (not in its
    ``state_dict``; they survive ``copy.deepcopy`` and pickling): ``transferlearn_arch``
    (``arch``), ``transferlearn_weights`` (the weights' full name, or None) and
    ``transferlearn_kwargs`` (``kwargs``). ``save_classifier`` reads them.

    Args:
        arch: model name, e.g. ``"mobilenet_v2"`` or ``"timm/resnet18"``.
        weights: ``"DEFAULT"``, a weights name (``"IMAGENET1K_V1"``), an enum member, or
            ``None`` for random initialisation (nothing is downloaded or read from disk).
        num_classes: when given, ``replace_head(model, num_classes)`` is applied.
        download: allow torchvision to download a checkpoint that is not in the cache.
        **kwargs: passed on to ``torchvision.models.get_model`` / ``timm.create_model``.

    Returns:
        The model, in eval mode as torchvision builds it.

    Raises:
        TypeError, ValueError: unknown or non-classification architecture, a timm name with
            a model source (``"timm/hf-hub:..."``, ``"timm/local-dir:..."``: nothing is fetched
            or read), unknown weights, bad ``num_classes``.
        MissingWeightsError: (a ``FileNotFoundError``) the checkpoint is not cached and
            ``download`` is False.

    Example:
        >>> model = load_model("mobilenet_v2", weights="IMAGENET1K_V1", num_classes=5)
    """
    if not isinstance(arch, str):
        raise TypeError(f"arch must be a model name string, got {describe(arch)}")
    if num_classes is not None:
        check_int("num_classes", num_classes, minimum=0)
    if arch.startswith("timm/"):
        check_timm_name(arch[5:])
        model = _load_timm(arch[5:], weights, download, dict(kwargs))
        resolved = weights
    else:
        check_classification(arch)
        resolved = _resolve_weights(arch, weights)
        if resolved is not None and not download and not checkpoint_path(resolved).is_file():
            raise MissingWeightsError(
                f"weights {resolved} are not in the torch hub cache (expected "
                f"{checkpoint_path(resolved)}); put them there with install_weights(file, "
                f"{type(resolved).__name__}.{resolved.name}) or pass download=True",
                f"{type(resolved).__name__}.{resolved.name}", checkpoint_path(resolved))
        model = _get_model(arch, resolved, kwargs)
    if num_classes is not None:
        replace_head(model, num_classes)
    model.transferlearn_arch = arch
    model.transferlearn_weights = _weights_name(resolved)
    model.transferlearn_kwargs = dict(kwargs)
    return model


def install_weights(file: str | os.PathLike, weights: Any, *, check_hash: bool = True, force: bool = False) -> Path:
    """Copy a local checkpoint into the torch hub cache under the name torchvision expects.

    The SHA-256 of the file must start with the prefix torchvision encodes in the
    checkpoint's file name (``mobilenet_v2-b0353104.pth`` -> ``b0353104``). The copy is
    atomic: a temporary file in the cache folder, then ``os.replace``.

    Args:
        file: path of the checkpoint (``.pth``).
        weights: the torchvision weights enum member (or its full name) it belongs to.
        check_hash: verify the hash prefix; turn off only for weights whose file name has none.
        force: replace a different checkpoint already in the cache (without it that is refused;
            the same bytes already there are left as they are).

    Returns:
        The path of the installed checkpoint.

    Raises:
        TypeError: ``weights`` is not a weights enum or name, ``force`` not a bool.
        FileNotFoundError: ``file`` does not exist.
        FileExistsError: a different checkpoint is already installed and ``force`` is False.
        ValueError: the hash does not match, or the name has no hash and ``check_hash`` is on.

    Example:
        >>> install_weights("mobilenet_v2-b0353104.pth", MobileNet_V2_Weights.IMAGENET1K_V1)
    """
    check_bool("force", force)
    target = checkpoint_path(as_weights(weights))
    source = Path(file)
    if not source.is_file():
        raise FileNotFoundError(f"file={str(file)!r} does not exist or is not a file")
    match = _HASH.search(target.name)
    if check_hash:
        if match is None:
            raise ValueError(f"{target.name} carries no hash prefix to check; pass check_hash=False")
        actual = sha256_file(source)
        if not actual.startswith(match.group(1)):
            raise ValueError(f"file={str(file)!r} has SHA-256 {actual[:16]}..., but {weights} "
                             f"expects a hash starting with {match.group(1)!r}")
    if target.is_file() and not force:
        if filecmp.cmp(source, target, shallow=False):
            return target                                   # already installed: nothing to write
        raise FileExistsError(f"{target} already holds a different checkpoint of {weights}; pass force=True "
                              "to replace it")
    with open(source, "rb") as src:
        atomic_write(target, lambda dst: shutil.copyfileobj(src, dst, 1 << 20))
    return target
