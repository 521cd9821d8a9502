"""Save a trained model with its class names and preprocessing; load it anywhere, offline.

A saved classifier is a directory holding ``classifier.json`` (architecture, classes, the
evaluation transform's parameters, the head's structure, versions) and one safetensors
file of weights. Nothing is pickled: loading rebuilds the architecture with
``load_model(arch, weights=None)`` (no download) and loads the tensors strictly.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import replace
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
import torchvision
from torch import nn
from torchvision.transforms import InterpolationMode

from ..base import atomic_write, check_bool, check_int, check_module
from ..data.transforms import ImagePreprocess, imagenet_transform
from . import _inputs as inputs
from . import _parts as parts
from . import _reading as reading
from .claim import claimed
from .format import CONFIG_NAME, FORMAT, ClassifierConfig

__all__ = ["Classifier", "ClassifierConfig", "load_classifier", "save_classifier"]


def save_classifier(model: nn.Module, directory: str | os.PathLike, *, classes: Sequence[str],
                    transform: ImagePreprocess, arch: str | None = None, weights: Any = None,
                    history: Any = None, metrics: Mapping[str, Any] | None = None,
                    model_kwargs: Mapping[str, Any] | None = None) -> Path:
    """Write a model, its class names and its preprocessing to ``directory``; no pickled code.

    Files: ``classifier.json`` (a ``ClassifierConfig``), ``model-<sha>.safetensors`` (the
    state dict), and ``history.json`` / ``metrics.json`` when given. Each file is written
    atomically and ``classifier.json`` last, naming the weights file by its hash, so a crash
    at any point leaves the previous classifier (or none) loadable, never a mix. The
    directory is claimed for the write (``claim.claimed``: a second writer is refused, a
    killed save stays marked). Saving again into it deletes only the previous classifier's
    own weights file and its history/metrics that this save does not replace.

    Args:
        model: the trained network (DataParallel/DDP/compiled wrappers are unwrapped).
        directory: where to write; created if needed.
        classes: class names, one per output of the head, unique.
        transform: the ``ImagePreprocess`` the model was trained with; a training transform
            is saved as its evaluation counterpart (same size, resize, statistics).
        arch: the ``load_model`` name; may be left out when ``load_model`` built the model.
        weights: the pretrained weights training started from (recorded, never loaded);
            default: what ``load_model`` recorded.
        history: the ``History`` of ``fit`` (or its records), written as ``history.json``.
        metrics: JSON-able numbers (e.g. a report's ``to_dict()``), written as ``metrics.json``.
        model_kwargs: ``load_model`` keyword arguments that rebuild the structure; default:
            what ``load_model`` recorded.

    Returns:
        The directory.

    Raises:
        TypeError: wrong argument types.
        ValueError: classes not unique or not matching the head, unknown ``arch``, a model
            that ``load_model(arch, **model_kwargs)`` would not rebuild, non-structural
            ``model_kwargs``, a transform size above 4096, NaN or inf weights, a
            ``history.json`` / ``metrics.json`` of unknown origin left in ``directory`` that
            this save would not replace, ``directory`` is a file.
        ClaimedError: another process is writing ``directory`` (a ``FileExistsError``).

    Example:
        >>> save_classifier(model, "runs/pets", classes=data.classes,
        ...                 transform=imagenet_transform(size=160))
    """
    check_module("model", model)
    model, path = parts.unwrap(model), parts.as_directory(directory)
    names = parts.check_classes(classes)
    config = ClassifierConfig(
        format=FORMAT, arch=parts.resolve_arch(model, arch), num_classes=len(names), classes=names,
        transform=parts.transform_params(transform), head=parts.head_structure(model, len(names)),
        model_kwargs=parts.model_kwargs_for(model, model_kwargs),
        weights=str(weights) if weights is not None else getattr(model, "transferlearn_weights", None),
        weights_file="model-000000000000.safetensors", sha256="0" * 64, dtype=parts.dtype_name(model),
        versions={"transferlearn": parts.library_version(), "torch": torch.__version__,
                  "torchvision": torchvision.__version__})
    ClassifierConfig.from_dict(json.loads(config.to_json()), "the classifier to save")  # what load reads
    parts.check_rebuilds(model, config)
    extras = {f"{n}.json": parts.json_text(v, n) for n, v in (("history", history), ("metrics", metrics))
              if v is not None}
    tensors = parts.cpu_tensors(model)
    parts.check_finite(tensors, "save_classifier refuses the model")
    from safetensors.torch import save as to_bytes
    blob = to_bytes(tensors, metadata={"format": "pt"})
    digest = hashlib.sha256(blob).hexdigest()
    config = replace(config, weights_file=f"model-{digest[:12]}.safetensors", sha256=digest,
                     files=(f"model-{digest[:12]}.safetensors", *sorted(extras)))
    previous = parts.previous_config(path) if path.is_dir() else None
    stale = parts.check_sidecars(path, previous, list(extras)) if path.is_dir() else []
    with claimed(path, "save_classifier", take_over=True):
        for name, text in extras.items():
            atomic_write(path / name, lambda f, t=text: f.write(t.encode()))
        atomic_write(path / config.weights_file, lambda f: f.write(blob))
        atomic_write(path / CONFIG_NAME, lambda f: f.write(config.to_json().encode()))
        parts.remove_previous(path, previous, config, stale)
    return path


class Classifier:
    """A model together with its class names and preprocessing; what ``load_classifier`` returns.

    Attributes:
        model: the network, in eval mode.
        classes: class names, index ``i`` is output ``i``.
        transform: the evaluation ``ImagePreprocess`` applied to every image.
        config: the ``ClassifierConfig`` read from ``classifier.json`` (None if built by hand).
        directory: the directory it was loaded from (None if built by hand); ``export_onnx``
            never writes over its files.
    """

    def __init__(self, model: nn.Module, classes: Sequence[str], transform: ImagePreprocess, *,
                 config: ClassifierConfig | None = None, directory: str | os.PathLike | None = None) -> None:
        check_module("model", model)
        self.classes = parts.check_classes(classes)
        params = parts.transform_params(transform)
        self.transform = transform if not transform.train else imagenet_transform(
            size=params["size"], resize=params["resize"], mean=params["mean"], std=params["std"],
            interpolation=transform.interpolation)
        self.model, self.config = model.eval(), config
        self.directory = None if directory is None else Path(directory)

    def __repr__(self) -> str:
        arch = self.config.arch if self.config else type(self.model).__name__
        return f"Classifier({arch}, {len(self.classes)} classes, {self.transform!r})"

    def predict_proba(self, items: Any, *, batch_size: int = 32, draft: bool = False,
                      tta: bool = False) -> torch.Tensor:
        """Class probabilities, shape ``(N, num_classes)``, for the images in ``items``.

        Args:
            items: see ``predict``.
            batch_size: images transformed and run together.
            draft: see ``predict``.
            tta: see ``predict``.

        Returns:
            A float32 tensor on the CPU; row ``i`` belongs to the ``i``-th image. The model
            runs in its own dtype (a float16, bfloat16 or float64 classifier gets its inputs
            in that dtype).

        Raises:
            TypeError, ValueError: as ``predict``.

        Example:
            >>> clf.predict_proba(["a.jpg", "b.jpg"], tta=True).shape
            torch.Size([2, 3])
        """
        check_int("batch_size", batch_size, minimum=1)
        check_bool("draft", draft)
        check_bool("tta", tta)
        return inputs.probabilities(self.model, inputs.items(items), self.transform, len(self.classes),
                                    batch_size=batch_size, draft=draft, tta=tta)

    def explain(self, items: Any, *, target: Any = None, draft: bool = False,
                method: str = "hirescam") -> list[torch.Tensor]:
        """Where the network looked: one class-activation map per image, in the image's geometry.

        The map of the backbone's last feature map for the centre crop the network saw, put
        back where that crop lies in the image (0 outside it) and scaled to the image's size;
        ``save_overlay(image, map, path)`` draws it (see ``transferlearn.ship.explain``).

        Args:
            items: as ``predict``.
            target: the class to explain: None (each image's predicted class), a class name or
                index for all images, or one per image.
            draft: as ``predict``; False (the default) reads files at full size, so each map
                has the size of ``load_image(path)``.
            method: ``"hirescam"`` or ``"gradcam"``.

        Returns:
            One ``(H, W)`` float tensor in [0, 1] per image (1 at its peak).

        Raises:
            TypeError, ValueError: as ``predict``; an unknown class or ``method``.

        Example:
            >>> cam = clf.explain(["cat.jpg"])[0]
            >>> save_overlay("cat.jpg", cam, "cat.cam.png")
        """
        from .explain import explain_images

        return explain_images(self, [item for item, _ in inputs.items(items)], target=target, draft=draft,
                              method=method)

    def predict(self, items: Any, top_k: int = 1, *, batch_size: int = 32, draft: bool = False,
                tta: bool = False) -> list[dict[str, Any]]:
        """Classify one or many images.

        Args:
            items: one or a list of: file paths (read with ``load_image``: EXIF orientation,
                16-bit kept), PIL images, or unnormalised image tensors / arrays (uint8, or
                float in [0, 1]; ``(C, H, W)``, an ``(N, C, H, W)`` batch is N images).
            top_k: how many of the most probable classes to list, 1 to ``len(classes)``.
            batch_size: images transformed and run together.
            draft: False (default): decode files at full size, the pixels any other reader
                (``load_image``, the ONNX recipe in docs/shipping.md) sees. True: decode JPEGs
                at the smallest power-of-two reduction still at least the transform's
                ``resize`` (as ``load_image_folder`` does by default for training), faster
                on large photos; the pixels then differ slightly (docs/shipping.md).
            tta: test-time augmentation: the mean of the softmax over the centre crop and its
                mirror, and, when the resize leaves room (``resize > size``), the four corner
                crops and their mirrors too (10 views, the classic ten-crop); that many times
                the compute (docs/augmentation.md). False: bitwise the plain prediction.

        Returns:
            One dict per image, in order: ``{"class": name, "probability": p,
            "top_k": [[name, p], ...]}`` (``top_k`` sorted by probability, highest first).

        Raises:
            TypeError: an item of another type, a tensor of another dtype.
            ValueError: ``top_k`` out of range, a tensor of the wrong shape or with values
                outside [0, 1], an unreadable image file (the error names the path), or an
                image whose resize would exceed ``PIL.Image.MAX_IMAGE_PIXELS``, or NaN / inf
                probabilities (finite weights can compute them; the error names the items).

        Example:
            >>> clf = load_classifier("runs/pets")
            >>> clf.predict("cat.jpg", top_k=2)
            [{'class': 'cat', 'probability': 0.93, 'top_k': [['cat', 0.93], ['dog', 0.07]]}]
            >>> clf.predict("cat.jpg", tta=True)[0]["class"]
            'cat'
        """
        check_int("top_k", top_k, minimum=1, maximum=len(self.classes))
        probs = self.predict_proba(items, batch_size=batch_size, draft=draft, tta=tta)
        values, indices = probs.topk(top_k, dim=1)
        out = []
        for row_values, row_indices in zip(values.tolist(), indices.tolist()):
            pairs = [[self.classes[i], p] for p, i in zip(row_values, row_indices)]
            out.append({"class": pairs[0][0], "probability": pairs[0][1], "top_k": pairs})
        return out


def load_classifier(directory: str | os.PathLike, *, device: Any = None) -> Classifier:
    """Load what ``save_classifier`` wrote: rebuilt offline, weights loaded strictly, eval mode.

    The architecture comes from ``load_model(arch, weights=None, **model_kwargs)``, so no
    pretrained checkpoint is needed (nor downloaded); ``classifier.json`` is checked field by
    field and the weights file against its SHA-256 before anything is built.

    Args:
        directory: a directory written by ``save_classifier``.
        device: where to put the model (default: the CPU).

    Returns:
        A ``Classifier`` with ``.model`` (eval mode), ``.classes``, ``.transform``, ``.config``.

    Raises:
        TypeError: ``directory`` is not a path.
        FileNotFoundError: ``directory`` does not exist.
        ValueError: it is not a saved classifier (no ``classifier.json``; the message says
            when it is being written or was left by an interrupted save), a field is missing,
            of the wrong type, out of bounds or of an unknown format version, a binary file,
            or the weights do not fit or are not finite.

    Example:
        >>> clf = load_classifier("runs/pets")
        >>> clf.classes
        ('cat', 'dog')
    """
    path = parts.as_directory(directory)
    if not path.exists():
        raise FileNotFoundError(f"directory={str(directory)!r} does not exist")
    if not (path / CONFIG_NAME).is_file():
        raise reading.not_a_classifier(path, directory)
    config = reading.read_config(path)
    tensors = reading.read_weights(path, config)
    source = str(path / CONFIG_NAME)
    try:            # names and shapes first, on the meta device: nothing allocated for a bad file
        skeleton = parts.build_model(config, device="meta", source=source)
    except NotImplementedError:
        skeleton = None
    what = f"{path / config.weights_file} does not fit {config.arch!r}"
    if skeleton is not None:
        reading.check_fits(skeleton, tensors, what)
        reading.check_bounded(skeleton, tensors, what)
    model = parts.build_model(config, source=source)
    reading.check_fits(model, tensors, what)
    model.load_state_dict(tensors, strict=True)
    transform = imagenet_transform(
        size=config.transform["size"], resize=config.transform["resize"], mean=config.transform["mean"],
        std=config.transform["std"], interpolation=InterpolationMode(config.transform["interpolation"]))
    return Classifier(model.to(device or "cpu").eval(), config.classes, transform, config=config,
                      directory=path)
