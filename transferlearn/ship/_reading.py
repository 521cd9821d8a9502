"""Reading a saved classifier: its ``classifier.json`` and weights, checked before anything is built."""

from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..base import read_regular_file, state_differences
from ._parts import check_finite
from .claim import read_claim
from .format import CONFIG_NAME, ClassifierConfig

__all__: list[str] = []

_MAX_CONFIG_BYTES = 16 << 20
_MAX_HEADER_BYTES = 100 << 20    # safetensors' own limit on its JSON header


def _expected_size(handle: Any, file: Path, size: int) -> int:
    """The size a safetensors file's header implies: 8 + header length + the last tensor's end."""
    head = handle.read(8)
    length = int.from_bytes(head, "little") if len(head) == 8 else -1
    if not 0 < length <= min(_MAX_HEADER_BYTES, size - 8):
        raise ValueError(f"{file} is not a safetensors file: its header length {length} does not fit its "
                         f"{size} bytes")
    try:
        header = json.loads(handle.read(length))
        ends = [int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"]
    except (ValueError, TypeError, KeyError, IndexError, AttributeError, RecursionError):
        raise ValueError(f"{file} is not a safetensors file: its header does not parse") from None
    return 8 + length + max(ends, default=0)


def read_weights(path: Path, config: ClassifierConfig) -> dict[str, torch.Tensor]:
    """The weights file's tensors: a regular file inside the run (never a link), whose size is
    what its safetensors header says, read once and checked against the recorded SHA-256."""
    from safetensors.torch import load as from_bytes

    file = path / config.weights_file
    try:
        info = file.lstat()
    except FileNotFoundError:
        raise ValueError(f"{path / CONFIG_NAME} names the weights file {config.weights_file!r}, which "
                         "is missing; the classifier directory is incomplete") from None
    if not stat.S_ISREG(info.st_mode):
        kind = "a symbolic link" if stat.S_ISLNK(info.st_mode) else "not a regular file"
        raise ValueError(f"{file} is {kind}; a classifier's weights file must be a regular file inside its "
                         "directory (copy the file there instead of linking it)")
    with open(file, "rb", opener=lambda p, flags: os.open(p, flags | getattr(os, "O_NOFOLLOW", 0))) as handle:
        expected = _expected_size(handle, file, info.st_size)
        if expected != info.st_size:
            raise ValueError(f"{file} is {info.st_size} bytes but its safetensors header describes "
                             f"{expected}: the file is damaged or was replaced")
        handle.seek(0)
        blob = handle.read(info.st_size + 1)
    if len(blob) != info.st_size or hashlib.sha256(blob).hexdigest() != config.sha256:
        raise ValueError(f"{file} does not match the SHA-256 recorded in {CONFIG_NAME}: the file is "
                         "damaged or was replaced")
    try:
        tensors = from_bytes(blob)
    except Exception as error:  # safetensors' own error type: not a safetensors file
        raise ValueError(f"{file} is not a readable safetensors file ({error})") from None
    check_finite(tensors, f"{file} is refused")
    return tensors


def read_config(path: Path) -> ClassifierConfig:
    """``classifier.json`` parsed and checked; a binary or oversized file is named as such."""
    file = path / CONFIG_NAME
    data = read_regular_file(file, limit=_MAX_CONFIG_BYTES, what="a classifier.json (class names and a few numbers)")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ValueError(f"{file} is not a UTF-8 text (JSON) file: byte {error.start} is "
                         f"{error.object[error.start:error.start + 1]!r}") from None
    return ClassifierConfig.from_json(text, str(file))


def not_a_classifier(path: Path, directory: Any) -> ValueError:
    """Why ``path`` has no ``classifier.json``: never saved, being written, or an interrupted save."""
    claim = read_claim(path)
    if claim is None:
        return ValueError(f"{str(directory)!r} is not a saved classifier: it has no {CONFIG_NAME} "
                          "(save_classifier or 'transferlearn fit' writes one)")
    if claim.running:
        return ValueError(f"{str(directory)!r} is not a saved classifier yet: it is being written by "
                          f"{claim.describe()}; wait for it to finish")
    return ValueError(f"{str(directory)!r} holds an interrupted save ({claim.describe()}, no longer "
                      f"running) and no {CONFIG_NAME}; rerun the save (transferlearn fit ... --force)")


def check_bounded(skeleton: nn.Module, tensors: dict[str, torch.Tensor], what: str) -> None:
    """Refuse a rebuilt (meta) model holding a tensor outside its ``state_dict`` (a non-persistent
    buffer) larger than all the file's weights together: ``model_kwargs`` cannot size one either."""
    budget = sum(t.numel() for t in tensors.values())
    for key, buffer in skeleton.named_buffers():
        if buffer.numel() > budget:
            raise ValueError(f"{what}: its buffer {key!r} would hold {buffer.numel()} values, more than the "
                             f"{budget} of the whole weights file; field 'model_kwargs' sizes it")


def check_fits(model: nn.Module, tensors: dict[str, torch.Tensor], what: str) -> None:
    """Same names and shapes as the rebuilt model, or a ValueError naming the first differences."""
    missing, unexpected, differ = state_differences(model.state_dict(), tensors)
    if missing or unexpected:
        raise ValueError(f"{what}: missing {sorted(missing)[:4]}, unexpected {sorted(unexpected)[:4]}")
    shapes = [f"{k} is {theirs} in the file, {ours} in the model" for k, theirs, ours in differ]
    if shapes:
        raise ValueError(f"{what}: {'; '.join(shapes[:2])}")
