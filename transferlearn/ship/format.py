"""The ``classifier.json`` of a saved classifier: a frozen dataclass, checked field by field.

A saved classifier is data, not code: this file plus one safetensors file of weights. The
JSON carries a ``format`` version; a reader refuses versions it does not know and names the
file and the field of anything missing or of the wrong type.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import MISSING, asdict, dataclass, fields
from pathlib import Path
from typing import Any, Callable

from ..model.rebuild import check_structural_kwargs, check_timm_name

__all__ = ["refuse_own_file"]

FORMAT = 1
CONFIG_NAME = "classifier.json"
SIDECARS = ("history.json", "metrics.json")
MAX_SIDE = 4096               # the largest transform size / resize a classifier may ask for
DTYPES = ("float32", "float64", "float16", "bfloat16")
INTERPOLATIONS = ("nearest", "nearest-exact", "bilinear", "bicubic", "box", "hamming", "lanczos")
_WEIGHTS_FILE = re.compile(r"model-[0-9a-f]{12}\.safetensors")
_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class ClassifierConfig:
    """Everything needed to rebuild a saved classifier without pretrained downloads.

    Attributes:
        format: version of this layout (``FORMAT``).
        arch: the ``load_model`` name, e.g. ``"mobilenet_v2"`` or ``"timm/resnet18"``.
        num_classes: outputs of the head.
        classes: class names, index ``i`` is output ``i``.
        transform: ``size``, ``resize``, ``mean``, ``std``, ``interpolation`` of the
            evaluation preprocessing.
        head: ``name`` (dotted) and ``dropout`` (``None`` for a plain layer) of the head.
        model_kwargs: keyword arguments for ``load_model`` (JSON values only).
        weights: the pretrained weights training started from (information only).
        weights_file: the safetensors file beside ``classifier.json``.
        sha256: SHA-256 of that file.
        dtype: floating-point type of the parameters.
        versions: transferlearn, torch and torchvision versions that wrote it.
        files: the files this save wrote (the weights file, and ``history.json`` /
            ``metrics.json`` when given); optional (None in files saved by 0.1), so a later
            save into the same directory knows exactly which files were its predecessor's.
    """

    format: int
    arch: str
    num_classes: int
    classes: tuple[str, ...]
    transform: dict[str, Any]
    head: dict[str, Any]
    model_kwargs: dict[str, Any]
    weights: str | None
    weights_file: str
    sha256: str
    dtype: str
    versions: dict[str, str]
    files: tuple[str, ...] | None = None

    def to_json(self) -> str:
        """Strict JSON text (no NaN), keys in field order."""
        data = asdict(self)
        data["classes"] = list(self.classes)
        if self.files is None:
            del data["files"]
        else:
            data["files"] = list(self.files)
        return json.dumps(data, indent=2, allow_nan=False) + "\n"

    @classmethod
    def from_json(cls, text: str, source: str) -> ClassifierConfig:
        """Parse and check ``text``; ``source`` (the file) is named in every error."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise ValueError(f"{source} is not valid JSON ({error})") from None
        except (RecursionError, ValueError) as error:   # nested too deep for the parser; a number too long
            reason = "nested too deeply" if isinstance(error, RecursionError) else str(error)
            raise ValueError(f"{source} is not a classifier.json this library reads ({reason})") from None
        if not isinstance(data, dict):
            raise ValueError(f"{source} must hold a JSON object, got {type(data).__name__}")
        return cls.from_dict(data, source)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str) -> ClassifierConfig:
        """Check every field of ``data`` (format first) and build the config."""
        _check_field(data, "format", source)
        if data["format"] != FORMAT:
            raise ValueError(f"{source}: format {data['format']} is not one this version of "
                             f"transferlearn reads (it reads format {FORMAT}); upgrade transferlearn")
        for field in fields(cls):
            if field.default is MISSING or field.name in data:
                _check_field(data, field.name, source)
        if len(data["classes"]) != data["num_classes"]:
            raise ValueError(f"{source}: field 'classes' has {len(data['classes'])} names but "
                             f"'num_classes' is {data['num_classes']}")
        _check_transform(data["transform"], source)
        if data["arch"].startswith("timm/"):
            check_timm_name(data["arch"][5:], f"{source}: field 'arch'")
        check_structural_kwargs(data["arch"], data["model_kwargs"], f"{source}: field 'model_kwargs")
        sized = data["model_kwargs"].get("num_classes", data["num_classes"])
        if sized != data["num_classes"]:
            raise ValueError(f"{source}: field 'model_kwargs.num_classes' is {json.dumps(sized)} but 'num_classes' "
                             f"is {data['num_classes']}; they must be equal (or model_kwargs without num_classes)")
        files = data.get("files")
        if files is not None and (data["weights_file"] not in files
                                  or set(files) - {data["weights_file"], *SIDECARS}):
            raise ValueError(f"{source}: field 'files' must list the weights file {data['weights_file']!r} "
                             f"and nothing but {list(SIDECARS)} besides, got {json.dumps(files)}")
        values = {f.name: data[f.name] for f in fields(cls) if f.name in data}
        values["classes"] = tuple(values["classes"])
        if files is not None:
            values["files"] = tuple(files)
        return cls(**values)


def _is_int(value: Any, minimum: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _transform_ok(value: Any) -> bool:
    return (isinstance(value, dict) and _is_int(value.get("size"), 1) and _is_int(value.get("resize"), 1)
            and all(isinstance(value.get(k), list) and len(value[k]) == 3 and all(map(_is_number, value[k]))
                    for k in ("mean", "std"))
            and all(s > 0 for s in value["std"]) and value.get("interpolation") in INTERPOLATIONS)


def _check_transform(value: dict[str, Any], source: str) -> None:
    """Sizes a machine can afford: an image is resized to ``resize`` (and cropped to ``size``)."""
    for key in ("size", "resize"):
        if value[key] > MAX_SIDE:
            raise ValueError(f"{source}: field 'transform.{key}' must be an int in [1, {MAX_SIDE}], got "
                             f"{value[key]}")


def _files_ok(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value) and len(set(value)) == len(value)


def _head_ok(value: Any) -> bool:
    if not isinstance(value, dict) or not isinstance(value.get("name"), str) or not value["name"]:
        return False
    p = value.get("dropout", "missing")
    return p is None or (_is_number(p) and 0 <= p < 1)


def _classes_ok(value: Any) -> bool:
    return (isinstance(value, list) and all(isinstance(c, str) and c for c in value)
            and len(set(value)) == len(value))


_SPEC: dict[str, tuple[Callable[[Any], bool], str]] = {
    "format": (lambda v: _is_int(v, 1), "an int >= 1"),
    "arch": (lambda v: isinstance(v, str) and bool(v), "a non-empty string"),
    "num_classes": (lambda v: _is_int(v, 1), "an int >= 1"),
    "classes": (_classes_ok, "a list of unique, non-empty strings"),
    "transform": (_transform_ok, "an object with 'size' and 'resize' (ints >= 1), 'mean' and 'std' "
                                 f"(3 finite numbers, std > 0) and 'interpolation' (one of {list(INTERPOLATIONS)})"),
    "head": (_head_ok, "an object with 'name' (a dotted module name) and 'dropout' (null or a number in [0, 1))"),
    "model_kwargs": (lambda v: isinstance(v, dict), "an object"),
    "weights": (lambda v: v is None or isinstance(v, str), "a string or null"),
    "weights_file": (lambda v: isinstance(v, str) and bool(_WEIGHTS_FILE.fullmatch(v)),
                     "a file name like 'model-0123456789ab.safetensors'"),
    "sha256": (lambda v: isinstance(v, str) and bool(_SHA256.fullmatch(v)), "64 lowercase hex digits"),
    "dtype": (lambda v: v in DTYPES, f"one of {list(DTYPES)}"),
    "versions": (lambda v: isinstance(v, dict) and all(isinstance(x, str) for x in v.values()),
                 "an object of version strings"),
    "files": (_files_ok, "a list of unique file names"),
}


def _check_field(data: dict[str, Any], name: str, source: str) -> None:
    if name not in data:
        raise ValueError(f"{source}: missing field {name!r}")
    check, accepted = _SPEC[name]
    if not check(data[name]):
        shown = json.dumps(data[name])
        shown = shown if len(shown) <= 60 else shown[:57] + "..."
        raise ValueError(f"{source}: field {name!r} must be {accepted}, got {shown}")


def refuse_own_file(path: Path, directory: Path | None, weights_file: str | None, *, argument: str,
                    verb: str, writer: str) -> None:
    """Refuse to write ``path`` when it is a file of the classifier saved in ``directory`` (its
    ``classifier.json``, weights, history or metrics), by name or as the same file (a link), whatever
    any overwrite option says. The one guard ``export_onnx`` and ``evaluate --html`` share.

    Args:
        path: the file about to be written.
        directory: the classifier's directory (None: a classifier built in memory, nothing to guard).
        weights_file: its weights file's name (None when unknown).
        argument: how the caller names ``path`` in messages (``"path"``, ``"--html"``).
        verb: what is done to the classifier (``"exported"``, ``"evaluated"``), for the message.
        writer: what is being written, for the message (``"the ONNX file"``, ``"the HTML report"``).

    Raises:
        ValueError: ``path`` is one of the classifier's own files.

    Example:
        >>> refuse_own_file(Path("run/classifier.json"), Path("run"), None, argument="--html",
        ...                 verb="evaluated", writer="the HTML report")
        Traceback (most recent call last):
        ValueError: --html='run/classifier.json' is the classifier.json of the classifier being evaluated ...
    """
    if directory is None:
        return
    for name in (CONFIG_NAME, *SIDECARS, *([weights_file] if weights_file else [])):
        mine = directory / name
        same = path.exists() and mine.exists() and os.path.samefile(path, mine)
        if same or path.resolve() == mine.resolve():
            raise ValueError(f"{argument}={str(path)!r} is the {name} of the classifier being {verb} "
                             f"({directory}); write {writer} elsewhere")
