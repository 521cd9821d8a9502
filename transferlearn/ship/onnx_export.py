"""Export a saved classifier to ONNX: probabilities out, a dynamic batch dimension in.

The graph takes the *preprocessed* images (``float32``, ``(batch, 3, size, size)``, normalised
with the classifier's mean and std) and returns class probabilities (softmax included).
The preprocessing itself (decode, resize, crop, normalise) is not in the graph; it is
written into the file's metadata (``metadata_props``) together with the class names, so the
file describes itself.

Exporter: ``torch.onnx.export(..., dynamo=True)``, the ``torch.export``-based exporter that
is the default and the maintained path since torch 2.9 (the TorchScript exporter is
deprecated and warns). It needs ``onnxscript``; on a torch without it (< 2.5) the
TorchScript exporter with ``dynamic_axes`` is used instead.
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import io
import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..base import atomic_write, check_bool, check_int, check_path, describe
from .classifier import Classifier
from .format import refuse_own_file

__all__ = ["export_onnx"]

INPUT_NAME, OUTPUT_NAME = "input", "probabilities"


class _Probabilities(nn.Module):
    """The classifier's model followed by a softmax over classes."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x).softmax(dim=1)


def _metadata(classifier: Classifier) -> dict[str, str]:
    tf = classifier.transform
    preprocessing = {"size": tf.size, "resize": tf.resize, "mean": list(tf.mean), "std": list(tf.std),
                     "interpolation": tf.interpolation.value, "input": "RGB, scaled to [0, 1], shorter side "
                     "resized to 'resize', centre crop 'size', then (x - mean) / std; layout NCHW float32"}
    meta = {"classes": json.dumps(list(classifier.classes)), "preprocessing": json.dumps(preprocessing),
            "output": "class probabilities (softmax), shape (batch, num_classes)"}
    if classifier.config is not None:
        meta["arch"] = classifier.config.arch
    return meta


def _export_bytes(module: nn.Module, example: torch.Tensor, opset: int | None) -> Any:
    """The ONNX ModelProto of ``module`` with a dynamic first dimension."""
    common = {"input_names": [INPUT_NAME], "output_names": [OUTPUT_NAME], "opset_version": opset}
    if "dynamo" in inspect.signature(torch.onnx.export).parameters:
        with contextlib.redirect_stdout(io.StringIO()):      # the exporter prints its progress
            program = torch.onnx.export(module, (example,), dynamo=True, verbose=False, **common,
                                        dynamic_shapes={"x": {0: torch.export.Dim("batch", min=1)}})
        return program.model_proto
    import onnx

    buffer = io.BytesIO()
    torch.onnx.export(module, (example,), buffer, dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
                      **{k: v for k, v in common.items() if v is not None})
    return onnx.load_from_string(buffer.getvalue())


def _check_target(classifier: Classifier, path: Path, overwrite: bool) -> None:
    """Refuse a directory, an existing file (unless ``overwrite``) and any file of the classifier itself."""
    if path.is_dir():
        raise IsADirectoryError(f"path={str(path)!r} is a directory; give the .onnx file to write")
    config = classifier.config
    refuse_own_file(path, classifier.directory, config.weights_file if config is not None else None,
                    argument="path", verb="exported", writer="the ONNX file")
    if not overwrite and os.path.lexists(path):
        raise FileExistsError(f"path={str(path)!r} exists; pass overwrite=True to replace it")


def export_onnx(classifier: Classifier, path: str | os.PathLike, *, opset_version: int | None = None,
                overwrite: bool = False) -> Path:
    """Write ``classifier`` as an ONNX file with a dynamic batch dimension.

    Input ``"input"``: float32 ``(batch, 3, size, size)``, preprocessed as
    ``classifier.transform`` does (the file's metadata ``"preprocessing"`` says how). Output
    ``"probabilities"``: ``(batch, num_classes)``, softmax included; metadata ``"classes"``
    (a JSON list) names the columns. The model is exported from a float32 CPU copy in eval
    mode; the classifier itself is not changed. The file is written atomically and never
    over an existing file unless ``overwrite=True``, and never over a file of the classifier
    itself (its ``classifier.json``, weights, history or metrics), whatever ``overwrite`` says.

    Args:
        classifier: a ``Classifier`` (from ``load_classifier``, or built by hand).
        path: the ``.onnx`` file to write.
        opset_version: ONNX opset (default: the exporter's).
        overwrite: replace an existing file at ``path``.

    Returns:
        The path written.

    Raises:
        TypeError: ``classifier`` is not a ``Classifier``, ``path`` not a path.
        FileExistsError: ``path`` exists and ``overwrite`` is False.
        IsADirectoryError: ``path`` is a directory.
        ValueError: ``path`` is one of the classifier's own files.
        ImportError: ``onnx`` / ``onnxscript`` are not installed (``pip install 'transferlearn[onnx]'``).

    Example:
        >>> export_onnx(load_classifier("runs/pets"), "pets.onnx")
        >>> session = onnxruntime.InferenceSession("pets.onnx")
        >>> session.run(None, {"input": clf.transform(img)[None].numpy()})[0].sum()
        1.0
    """
    if not isinstance(classifier, Classifier):
        raise TypeError(f"classifier must be a Classifier (see load_classifier), got {describe(classifier)}")
    check_path("path", path)
    if opset_version is not None:
        check_int("opset_version", opset_version, minimum=7)
    check_bool("overwrite", overwrite)
    _check_target(classifier, Path(path), overwrite)
    try:
        import onnx
    except ImportError:
        raise ImportError("export_onnx needs onnx and onnxscript: pip install 'transferlearn[onnx]'") from None
    module = _Probabilities(copy.deepcopy(classifier.model).float().cpu().eval()).eval()
    size = classifier.transform.size
    proto = _export_bytes(module, torch.zeros(2, 3, size, size), opset_version)
    for key, value in _metadata(classifier).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(proto)
    _check_target(classifier, Path(path), overwrite)        # again: the export took a while
    return atomic_write(path, lambda f: f.write(proto.SerializeToString()), overwrite=overwrite)
