"""The library's one reader of image files.

``load_image`` returns a fully decoded PIL image with its file closed, its EXIF orientation
applied and its own mode kept: 16-bit (``I;16``), 32-bit (``I``) and float (``F``) images are
not squeezed into 8-bit RGB here, so ``imagenet_transform`` can scale them by their format's
full range (``integer_top``: a 16-bit PGM, PNG or TIFF by 65535), never by content.
A file that is not an image, is empty or is cut short raises ``ImageReadError`` (a
``ValueError``) naming the path and the reason, instead of PIL's bare message.
"""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path
from typing import IO, Any, Iterator

from PIL import Image, ImageOps

from ..base import check_int, check_path, describe

__all__ = ["IMAGE_EXTENSIONS", "ImageReadError", "integer_top", "load_image"]

# torchvision's IMG_EXTENSIONS (which already has .tif/.tiff); compared case-insensitively.
IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif",
                                     ".tiff", ".webp")


class ImageReadError(ValueError):
    """A file exists but cannot be read as an image.

    Raised in a DataLoader worker, it reaches the main process as an ``ImageReadError`` too
    (its message then also holds the worker's traceback).

    Attributes:
        path: the file.
        reason: why it could not be read (e.g. ``"empty file"``, ``"truncated or corrupt
            image data: ..."``).
    """

    def __init__(self, path: str | os.PathLike, reason: str | None = None) -> None:
        if reason is None:
            # One argument: a whole message, as a DataLoader re-raises a worker's error (with
            # the worker's traceback). Keep the type; recover path and reason from the text.
            found = re.findall(r"cannot read image '(.*?)': (.*)", str(path))
            self.path, self.reason = found[-1] if found else (None, str(path))
            super().__init__(str(path))
            return
        self.path, self.reason = str(path), reason
        super().__init__(f"cannot read image {self.path!r}: {reason}")

    def __reduce__(self) -> tuple[Any, ...]:  # keeps (path, reason) across DataLoader workers
        return (type(self), (self.path, self.reason))


def _check_path(path: Any) -> Path:
    return check_path("path", path)


def _check_draft(draft: Any) -> tuple[int, int] | None:
    if draft is None:
        return None
    if not isinstance(draft, (tuple, list)) or len(draft) != 2:
        raise TypeError(f"draft must be None or a (width, height) pair of ints >= 1, got {describe(draft)}")
    return (check_int("draft width", draft[0], minimum=1), check_int("draft height", draft[1], minimum=1))


def _reason(exc: BaseException) -> str:
    if isinstance(exc, Image.UnidentifiedImageError):
        return "not an image file (no known image format recognised)"
    if isinstance(exc, Image.DecompressionBombError):
        return f"too many pixels ({exc})"
    return f"truncated or corrupt image data ({type(exc).__name__}: {exc})"


def _check_pixels(img: Image.Image) -> None:
    """Refuse, before decoding, an image over ``PIL.Image.MAX_IMAGE_PIXELS`` (Pillow itself only
    warns up to twice that); ``None`` turns the bound off, as in Pillow."""
    limit = Image.MAX_IMAGE_PIXELS
    width, height = img.size
    if limit is not None and width * height > limit:
        raise Image.DecompressionBombError(
            f"{width} x {height} = {width * height} pixels, over PIL.Image.MAX_IMAGE_PIXELS = {limit}; raise "
            "that limit if you trust the file")


def _tiff_top(img: Image.Image) -> float | None:
    """Full range of a TIFF's integer samples from its tags (BitsPerSample, SampleFormat)."""
    tags = getattr(img, "tag_v2", None)
    bits = tags.get(258) if tags is not None else None
    bits = bits[0] if isinstance(bits, tuple) and bits else bits
    if not isinstance(bits, int) or not 1 <= bits <= 32:
        return None
    signed = tags.get(339, 1) in (2, (2,))
    return float(2 ** (bits - 1) - 1 if signed else 2 ** bits - 1)


def integer_top(img: Image.Image) -> float:
    """The value that means full intensity in an integer PIL image (``I;16*`` or ``I``), by format.

    ``imagenet_transform`` divides by it. ``I;16`` (16-bit PNG and TIFF): 65535. ``I`` read
    from a file: PGM/PPM 65535 (Pillow rescales a PGM's ``maxval`` to 65535 when it
    decodes), PNG 65535 (at most 16 bits), TIFF ``2**bits - 1`` (``2**(bits - 1) - 1`` when
    signed) from its tags. Never the content: a dark scan stays dark.

    Raises:
        ValueError: a mode ``I`` image not read from one of those files (made in memory, or
            changed by an operation that drops ``img.format``) has no known range.

    Example:
        >>> integer_top(load_image("scan.pgm"))     # a 16-bit PGM opens in mode I
        65535.0
    """
    if img.mode.startswith("I;16"):
        return 65535.0
    top = {"PPM": 65535.0, "PNG": 65535.0}.get(img.format or "")
    if top is None and img.format == "TIFF":
        top = _tiff_top(img)
    if top is None:
        source = f"read from a {img.format} file" if img.format else "not read from a file"
        raise ValueError(f"a mode 'I' (32-bit integer) PIL image {source} has no standard value range (it is "
                         "never guessed from the pixel values): read the file with load_image (PGM, PNG, TIFF), "
                         "or convert it first, e.g. img.convert('I;16') for 16-bit values")
    return top


@contextlib.contextmanager
def _reading(path: Path) -> Iterator[IO[bytes]]:
    """Open ``path``; any failure inside the block becomes an ``ImageReadError`` naming it."""
    with open(path, "rb") as file:   # FileNotFoundError / IsADirectoryError name the path
        if os.fstat(file.fileno()).st_size == 0:
            raise ImageReadError(path, "empty file (0 bytes)")
        try:
            yield file
        except Exception as exc:  # any decoder failure is a property of this file
            raise ImageReadError(path, _reason(exc)) from exc


def check_header(path: str | os.PathLike) -> None:
    """Cheap check that a file is an image: open it and run ``Image.verify`` (no full decode).

    Finds empty files, non-images and (for PNG) corrupt chunks; a JPEG cut short in its pixel
    data passes (only a full decode finds that). Raises as ``load_image`` does.
    """
    with _reading(_check_path(path)) as file, Image.open(file) as img:
        img.verify()


def load_image(path: str | os.PathLike, *, draft: tuple[int, int] | None = None) -> Image.Image:
    """Read an image file completely and return it upright, in its own mode.

    The file is decoded at once (``Image.load``) and closed before returning, so no file
    handle leaks into DataLoader workers. The EXIF orientation tag is applied
    (``ImageOps.exif_transpose``), so a phone photo taken sideways comes out upright. The
    mode is kept: ``I;16``/``I``/``F`` stay high bit depth (``imagenet_transform`` scales
    integer ones by their format's full range, ``integer_top``, never by content; a 16-bit
    PGM reads as Pillow's mode ``I`` with its ``maxval`` rescaled to 65535); palette, RGBA,
    CMYK and grayscale stay as they are. PIL's global ``ImageFile.LOAD_TRUNCATED_IMAGES``
    is not touched: a truncated file is an error.

    Args:
        path: the image file.
        draft: ``(width, height)``: JPEGs are decoded at the smallest power-of-two reduction
            (1/2, 1/4, 1/8) whose size is still at least ``width`` x ``height``
            (``Image.draft``); much faster for large photos going to a small model input.
            Other formats ignore it. ``None`` decodes at full size.

    Returns:
        The decoded ``PIL.Image.Image``.

    Raises:
        TypeError: ``path`` is not a str/PathLike, or ``draft`` is not a pair of ints.
        ValueError: ``draft`` has a side < 1.
        FileNotFoundError: no file at ``path`` (``IsADirectoryError`` for a folder,
            ``PermissionError`` when it cannot be opened); the message names the path.
        ImageReadError: the file is empty, not an image, or truncated/corrupt (a
            ``ValueError``; ``.path`` and ``.reason`` say which and why).

    Example:
        >>> img = load_image("photos/cat.jpg", draft=(256, 256))
        >>> img.mode, min(img.size) >= 256
        ('RGB', True)
    """
    path = _check_path(path)
    size = _check_draft(draft)
    with _reading(path) as file:
        img = Image.open(file)
        if size is not None and img.format == "JPEG":
            img.draft(None, size)
        _check_pixels(img)
        img.load()
        ImageOps.exif_transpose(img, in_place=True)   # no copy when there is nothing to turn
    img.filename = str(path)      # opened from a handle: named so that later errors can say which file
    return img
