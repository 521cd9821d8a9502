"""Load pretrained models from the local torch hub cache; install checkpoints there offline."""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import urlparse

import torch
from torch import nn
from torchvision import models as tvm

from ._checks import as_weights, check_int, describe
from ._io import atomic_write
from .heads import replace_head

__all__ = ["load_model", "install_weights", "checkpoint_path"]

_HASH = re.compile(r"-([a-f0-9]+)\.")


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


@contextlib.contextmanager
def _hf_offline(offline: bool) -> Iterator[None]:
    """While active, huggingface_hub (which timm downloads through) uses its local cache only."""
    try:
        from huggingface_hub import constants
    except ImportError:
        yield
        return
    saved = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = saved or offline
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = saved


def _load_timm(name: str, weights: Any, download: bool, kwargs: dict[str, Any]) -> nn.Module:
    try:
        import timm
    except ImportError:
        raise ImportError("load_model('timm/...') needs timm: pip install 'transferlearn[timm]'") from None
    if weights not in (None, "DEFAULT"):
        raise ValueError(f"for timm models weights must be None or 'DEFAULT', got {weights!r}")
    if weights is None:
        return timm.create_model(name, pretrained=False, **kwargs)
    try:
        with _hf_offline(not download):
            return timm.create_model(name, pretrained=True, **kwargs)
    except (OSError, ValueError, RuntimeError) as error:
        if download:
            raise
        raise FileNotFoundError(
            f"pretrained weights for timm model {name!r} are not in the local Hugging Face cache; "
            "pass download=True to fetch them") from error


def load_model(arch: str, *, weights: Any = "DEFAULT", num_classes: int | None = None,
               download: bool = False, **kwargs: Any) -> nn.Module:
    """Build a torchvision (or timm) model with pretrained weights and, optionally, a new head.

    ``arch`` is a name from ``torchvision.models.list_models()`` or ``"timm/<name>"``. The
    weights come from the torch hub cache (``torch.hub.get_dir()/checkpoints``; for timm,
    the local Hugging Face cache); a missing checkpoint raises instead of downloading unless
    ``download=True``. Use
    ``install_weights`` to put a checkpoint there on an offline machine.

    Args:
        arch: model name, e.g. ``"mobilenet_v2"`` or ``"timm/resnet18"``.
        weights: ``"DEFAULT"``, a weights name (``"IMAGENET1K_V1"``), an enum member, or
            ``None`` for random initialisation.
        num_classes: when given, ``replace_head(model, num_classes)`` is applied.
        download: allow torchvision to download a checkpoint that is not in the cache.
        **kwargs: passed on to ``torchvision.models.get_model`` / ``timm.create_model``.

    Returns:
        The model, in eval mode as torchvision builds it.

    Raises:
        TypeError, ValueError: unknown architecture or weights, bad ``num_classes``.
        FileNotFoundError: the checkpoint is not cached and ``download`` is False.

    Example:
        >>> model = load_model("mobilenet_v2", weights="IMAGENET1K_V1", num_classes=5)
    """
    if not isinstance(arch, str):
        raise TypeError(f"arch must be a model name string, got {describe(arch)}")
    if num_classes is not None:
        check_int("num_classes", num_classes, minimum=0)
    if arch.startswith("timm/"):
        model = _load_timm(arch[5:], weights, download, kwargs)
    else:
        if arch not in tvm.list_models():
            raise ValueError(f"arch={arch!r} is not a torchvision model; see "
                             "torchvision.models.list_models() or use 'timm/<name>'")
        resolved = _resolve_weights(arch, weights)
        if resolved is not None and not download and not checkpoint_path(resolved).is_file():
            raise FileNotFoundError(
                f"weights {resolved} are not in the torch hub cache (expected "
                f"{checkpoint_path(resolved)}); put them there with install_weights(file, "
                f"{type(resolved).__name__}.{resolved.name}) or pass download=True")
        model = tvm.get_model(arch, weights=resolved, **kwargs)
    if num_classes is not None:
        replace_head(model, num_classes)
    return model


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def install_weights(file: str | os.PathLike, weights: Any, *, check_hash: bool = True) -> Path:
    """Copy a local checkpoint into the torch hub cache under the name torchvision expects.

    The SHA-256 of the file must start with the prefix torchvision encodes in the
    checkpoint's file name (``mobilenet_v2-b0353104.pth`` -> ``b0353104``). The copy is
    atomic: a temporary file in the cache folder, then ``os.replace``.

    Args:
        file: path of the checkpoint (``.pth``).
        weights: the torchvision weights enum member (or its full name) it belongs to.
        check_hash: verify the hash prefix; turn off only for weights whose file name has none.

    Returns:
        The path of the installed checkpoint.

    Raises:
        TypeError: ``weights`` is not a weights enum or name.
        FileNotFoundError: ``file`` does not exist.
        ValueError: the hash does not match, or the name has no hash and ``check_hash`` is on.

    Example:
        >>> install_weights("mobilenet_v2-b0353104.pth", MobileNet_V2_Weights.IMAGENET1K_V1)
    """
    target = checkpoint_path(as_weights(weights))
    source = Path(file)
    if not source.is_file():
        raise FileNotFoundError(f"file={str(file)!r} does not exist or is not a file")
    match = _HASH.search(target.name)
    if check_hash:
        if match is None:
            raise ValueError(f"{target.name} carries no hash prefix to check; pass check_hash=False")
        actual = _sha256(source)
        if not actual.startswith(match.group(1)):
            raise ValueError(f"file={str(file)!r} has SHA-256 {actual[:16]}..., but {weights} "
                             f"expects a hash starting with {match.group(1)!r}")
    with open(source, "rb") as src:
        atomic_write(target, lambda dst: shutil.copyfileobj(src, dst, 1 << 20))
    return target
