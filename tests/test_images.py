"""load_image: full range for 16-bit and float files, EXIF orientation, draft decoding, clear errors."""

from __future__ import annotations

import os
import pickle

import numpy as np
import psutil
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image, ImageFile
from torchvision.datasets import ImageFolder

from transferlearn import ImageReadError, imagenet_transform, load_image

PLAIN = dict(mean=(0, 0, 0), std=(1, 1, 1))   # no normalisation: the tensor is the [0, 1] image


def gradient16(h: int = 48, w: int = 64, top: int = 65535) -> np.ndarray:
    return np.linspace(0, top, h * w).reshape(h, w).astype(np.uint16)


def photo(h: int, w: int, seed: int = 0) -> Image.Image:
    from skimage import data
    from skimage.transform import resize
    big = resize(data.chelsea(), (h, w), preserve_range=True, anti_aliasing=True)
    return Image.fromarray(big.astype(np.uint8))


def test_sixteen_bit_png_keeps_full_range(tmp_path):
    arr = gradient16()
    Image.fromarray(arr).save(tmp_path / "g.png")
    img = load_image(tmp_path / "g.png")
    assert img.mode == "I;16"
    out = imagenet_transform(size=48, resize=48, **PLAIN)(img)
    oracle = torch.from_numpy(arr[:, 8:56] / 65535).float()   # the centre 48x48, three times
    for channel in out:
        torch.testing.assert_close(channel, oracle, atol=1e-6, rtol=0)


def test_torchvision_default_loader_saturates_where_ours_does_not(tmp_path):
    (tmp_path / "cls").mkdir()
    arr = gradient16()
    Image.fromarray(arr).save(tmp_path / "cls" / "g.png")
    tf = imagenet_transform(size=48, resize=48, **PLAIN)
    theirs, _ = ImageFolder(tmp_path, transform=tf)[0]
    ours, _ = ImageFolder(tmp_path, loader=load_image, transform=tf)[0]
    assert (theirs == 1).float().mean() > 0.9          # the pitfall: almost everything white
    assert ours.min() < 0.01 and 0.4 < ours.mean() < 0.6


def test_dark_sixteen_bit_stays_dark(tmp_path):
    arr = gradient16(top=200)                                # a dark scan: every value <= 200
    Image.fromarray(arr).save(tmp_path / "dark.png")
    out = imagenet_transform(size=48, resize=48, **PLAIN)(load_image(tmp_path / "dark.png"))
    torch.testing.assert_close(out[0], torch.from_numpy(arr[:, 8:56] / 65535).float(), atol=1e-6, rtol=0)


def _write_pgm(path, arr: np.ndarray, maxval: int = 65535, plain: bool = False) -> None:
    """A 16-bit PGM written by hand (P5 binary big-endian, or P2 plain text) with its own maxval."""
    h, w = arr.shape
    if plain:
        path.write_bytes(f"P2\n{w} {h}\n{maxval}\n".encode() + " ".join(map(str, arr.ravel())).encode())
    else:
        path.write_bytes(f"P5\n{w} {h}\n{maxval}\n".encode() + arr.astype(">u2").tobytes())


def _mean_of(path) -> float:
    return float(imagenet_transform(size=48, resize=48, **PLAIN)(load_image(path)).mean())


@pytest.mark.parametrize("bright_pixel", [None, 256, 65535])
def test_a_dark_sixteen_bit_pgm_reads_as_dark_as_the_same_png(tmp_path, bright_pixel):
    """issue 13.4: a PGM (Pillow mode I) was scaled by its content: all 200s read as 0.784."""
    arr = np.full((48, 64), 200, dtype=np.uint16)
    if bright_pixel is not None:
        arr[0, 0] = bright_pixel
    Image.fromarray(arr).save(tmp_path / "scan.pgm")
    Image.fromarray(arr).save(tmp_path / "scan.png")
    assert load_image(tmp_path / "scan.pgm").mode == "I" and load_image(tmp_path / "scan.png").mode == "I;16"
    oracle = float(torch.from_numpy(arr[:, 8:56] / 65535).float().mean())
    assert _mean_of(tmp_path / "scan.pgm") == pytest.approx(oracle, abs=1e-7)
    assert _mean_of(tmp_path / "scan.png") == pytest.approx(oracle, abs=1e-7)


@pytest.mark.parametrize("plain", [False, True])
def test_a_pgm_is_scaled_by_its_maxval_not_by_its_content(tmp_path, plain):
    arr = np.array([[100, 250, 1000, 0]] * 4, dtype=np.uint16)     # maxval 1000: 1000 is full white
    _write_pgm(tmp_path / "m.pgm", arr, maxval=1000, plain=plain)
    out = imagenet_transform(size=4, resize=4, **PLAIN)(load_image(tmp_path / "m.pgm"))
    torch.testing.assert_close(out[0, 0], torch.tensor([0.1, 0.25, 1.0, 0.0]), atol=1e-4, rtol=0)


@pytest.mark.parametrize("dtype, top", [(np.int32, 2**31 - 1)])
def test_a_32_bit_integer_tiff_is_scaled_by_its_bit_depth(tmp_path, dtype, top):
    arr = np.array([[0, 200, 2**15 - 1, 7]] * 4, dtype=dtype)
    Image.fromarray(arr).save(tmp_path / "i.tif")               # Pillow writes 32-bit signed samples
    img = load_image(tmp_path / "i.tif")
    assert img.mode == "I"
    out = imagenet_transform(size=4, resize=4, **PLAIN)(img)
    torch.testing.assert_close(out[0, 0], torch.from_numpy(arr[0] / top).float(), atol=1e-9, rtol=0)


def test_a_signed_integer_tiff_with_negative_values_is_refused_like_a_float_outside_unit_range(tmp_path):
    """Second adversarial pass: a signed 32-bit TIFF's negative samples read as negative intensities,
    while a float image outside [0, 1] was refused."""
    Image.fromarray(np.array([[0, -5, 200, 7]] * 4, dtype=np.int32)).save(tmp_path / "s.tif")
    img = load_image(tmp_path / "s.tif")
    with pytest.raises(ValueError, match=r"the mode 'I' \(integer\) image '.*s\.tif' holds values in \[-.*, .*\]; "
                                         r"transferlearn takes integer images as intensities in \[0, 1\]"):
        imagenet_transform(size=4, resize=4, **PLAIN)(img)


def test_an_integer_image_of_unknown_range_is_refused_not_guessed(tmp_path):
    tf = imagenet_transform(size=4, resize=4)
    with pytest.raises(ValueError, match=r"a mode 'I' \(32-bit integer\) PIL image not read from a file has no "
                                         r"standard value range .*: read the file with load_image.*img.convert\('I;16'\)"):
        tf(Image.fromarray(np.full((4, 4), 200, dtype=np.int32)))
    for dtype in (torch.int32, torch.int64, torch.int16):
        with pytest.raises(TypeError, match=rf"an image tensor of dtype {dtype} has no standard value range"):
            tf(torch.full((3, 4, 4), 200, dtype=dtype))
    with pytest.raises(TypeError, match=r"dtype torch.int32 has no standard value range.*divide by 65535"):
        tf(np.asarray(load_image(_saved_pgm(tmp_path))))          # np.array of a PGM: int32


def _saved_pgm(tmp_path):
    Image.fromarray(np.full((4, 4), 200, dtype=np.uint16)).save(tmp_path / "s.pgm")
    return tmp_path / "s.pgm"


def test_uint16_arrays_and_tensors_are_scaled_by_65535():
    arr = np.full((8, 8), 200, dtype=np.uint16)
    tf = imagenet_transform(size=8, resize=8, **PLAIN)
    torch.testing.assert_close(tf(arr), torch.full((3, 8, 8), 200 / 65535), atol=1e-7, rtol=0)
    torch.testing.assert_close(tf(torch.from_numpy(arr)), torch.full((3, 8, 8), 200 / 65535), atol=1e-7, rtol=0)


def test_float_tiff_keeps_its_values(tmp_path):
    arr = np.linspace(0, 1, 32 * 40, dtype=np.float32).reshape(32, 40)
    Image.fromarray(arr, mode="F").save(tmp_path / "f.tif")
    img = load_image(tmp_path / "f.tif")
    assert img.mode == "F"
    out = imagenet_transform(size=32, resize=32, **PLAIN)(img)
    torch.testing.assert_close(out[1], torch.from_numpy(arr[:, 4:36]), atol=1e-6, rtol=0)


@pytest.mark.parametrize("orientation, turn", [(3, Image.Transpose.ROTATE_180),
                                               (6, Image.Transpose.ROTATE_270),
                                               (8, Image.Transpose.ROTATE_90)])
def test_exif_orientation_is_applied(tmp_path, orientation, turn):
    stored = Image.new("RGB", (60, 30), "white")
    stored.paste((255, 0, 0), (0, 0, 20, 30))                 # red on the stored image's left
    exif = Image.Exif()
    exif[0x0112] = orientation
    stored.save(tmp_path / "o.jpg", exif=exif, quality=95)
    with Image.open(tmp_path / "o.jpg") as raw:                # the pixels as stored, unturned
        expected = raw.convert("RGB").transpose(turn)
    img = load_image(tmp_path / "o.jpg")
    assert img.size == expected.size
    assert np.array_equal(np.asarray(img), np.asarray(expected))


def test_modes_are_kept(tmp_path):
    base = photo(24, 32)
    for mode in ("L", "P", "RGBA", "CMYK", "RGB"):
        name = tmp_path / f"m.{'jpg' if mode == 'CMYK' else 'png'}"
        base.convert(mode).save(name)
        assert load_image(name).mode == mode


def test_file_is_closed_and_image_usable(tmp_path):
    path = tmp_path / "c.png"
    photo(24, 32).save(path)
    img = load_image(path)
    assert str(path) not in [f.path for f in psutil.Process().open_files()]
    assert img.getpixel((0, 0)) == photo(24, 32).getpixel((0, 0))


def test_works_as_imagefolder_loader(tmp_path):
    for cls in ("a", "b"):
        (tmp_path / cls).mkdir()
        photo(40, 50).save(tmp_path / cls / "x.jpg")
    ds = ImageFolder(tmp_path, loader=load_image, transform=imagenet_transform(size=32))
    x, y = ds[1]
    assert x.shape == (3, 32, 32) and y == 1


def test_draft_decodes_jpeg_at_reduced_scale(tmp_path):
    path = tmp_path / "big.jpg"
    photo(900, 1200).save(path, quality=90)
    assert load_image(path).size == (1200, 900)
    assert load_image(path, draft=(256, 256)).size == (600, 450)     # 1/2: 1/4 would give 225 < 256
    assert load_image(path, draft=(200, 200)).size == (300, 225)     # 1/4
    assert load_image(path, draft=(100, 100)).size == (150, 113)     # 1/8, sides rounded up
    assert load_image(path, draft=(2000, 2000)).size == (1200, 900)  # never upsized


def test_draft_is_ignored_for_png(tmp_path):
    photo(600, 800).save(tmp_path / "big.png")
    assert load_image(tmp_path / "big.png", draft=(64, 64)).size == (800, 600)


@settings(max_examples=25, deadline=None)
@given(w=st.integers(16, 400), h=st.integers(16, 400), rw=st.integers(1, 200), rh=st.integers(1, 200))
def test_draft_is_the_largest_reduction_that_keeps_the_requested_size(tmp_path_factory, w, h, rw, rh):
    path = tmp_path_factory.mktemp("d") / "x.jpg"
    Image.new("RGB", (w, h), (10, 120, 200)).save(path)
    got = load_image(path, draft=(rw, rh)).size
    scale = next(s for s in (8, 4, 2, 1) if s == 1 or (w // s >= rw and h // s >= rh))
    assert got == (-(-w // scale), -(-h // scale))
    assert scale == 1 or (got[0] >= rw and got[1] >= rh)


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.jpg"):
        load_image(tmp_path / "nope.jpg")
    with pytest.raises(IsADirectoryError, match=str(tmp_path)):
        load_image(tmp_path)


def truncated(tmp_path, suffix: str) -> str:
    path = tmp_path / f"cut{suffix}"
    photo(120, 160).save(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return str(path)


@pytest.mark.parametrize("make, pattern", [
    (lambda p: (p / "empty.png").write_bytes(b"") and None or str(p / "empty.png"), r"empty file"),
    (lambda p: (p / "notes.jpg").write_text("hello") and None or str(p / "notes.jpg"), r"not an image file"),
    (lambda p: truncated(p, ".jpg"), r"truncated or corrupt image data"),
    (lambda p: truncated(p, ".png"), r"truncated or corrupt image data"),
])
def test_broken_files_raise_an_error_naming_the_path(tmp_path, make, pattern):
    path = make(tmp_path)
    with pytest.raises(ImageReadError, match=rf"cannot read image '{path}': {pattern}") as info:
        load_image(path)
    assert isinstance(info.value, ValueError) and info.value.path == path
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False
    copy = pickle.loads(pickle.dumps(info.value))          # survives a DataLoader worker
    assert (copy.path, copy.reason, str(copy)) == (info.value.path, info.value.reason, str(info.value))


@pytest.mark.parametrize("kwargs, exc, pattern", [
    (dict(path=3), TypeError, r"path must be a str or os.PathLike, got 3 \(int\)"),
    (dict(path=b"x.jpg"), TypeError, r"path must be a str or os.PathLike, got b'x.jpg' \(bytes\)"),
    (dict(path="x.jpg", draft=256), TypeError, r"draft must be None or a \(width, height\) pair"),
    (dict(path="x.jpg", draft=(0, 10)), ValueError, r"draft width must be an int >= 1, got 0"),
    (dict(path="x.jpg", draft=(10, 2.5)), TypeError, r"draft height must be an int >= 1, got 2.5"),
])
def test_argument_errors(kwargs, exc, pattern):
    with pytest.raises(exc, match=pattern):
        load_image(kwargs.pop("path"), **kwargs)


def test_no_fd_leak_on_error(tmp_path):
    path = truncated(tmp_path, ".jpg")
    before = len(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else None
    for _ in range(5):
        with pytest.raises(ImageReadError):
            load_image(path)
    if before is not None:
        assert len(os.listdir("/proc/self/fd")) == before


def test_error_in_a_dataloader_worker_keeps_its_type_and_path(tmp_path):
    from torch.utils.data import DataLoader
    path = truncated(tmp_path, ".jpg")

    class Files(torch.utils.data.Dataset):
        def __len__(self):
            return 1

        def __getitem__(self, i):
            return imagenet_transform(size=16)(load_image(path))

    with pytest.raises(ImageReadError, match=rf"cannot read image '{path}': truncated") as info:
        next(iter(DataLoader(Files(), num_workers=1)))
    assert info.value.path == path and info.value.reason.startswith("truncated or corrupt image data")
    assert "worker process" in str(info.value)


@pytest.mark.parametrize("values, pattern", [
    ([0.0, 0.2, 3.5], r"holds values in \[0, 3.5\]; transferlearn takes float images as intensities in \[0, 1\] "
                      r"\(never a scale guessed from the pixels\): rescale it first"),
    ([0.0, 0.2, 300.0], r"holds values in \[0, 300\]"),
    ([-0.5, 0.2, 0.9], r"holds values in \[-0.5, 0.9\]"),
    ([0.0, float("nan"), 0.5], r"holds 1 NaN or infinite value\(s\) of \d+"),
    ([0.0, float("inf"), 0.5], r"holds 1 NaN or infinite value\(s\) of \d+"),
])
def test_a_float_image_outside_unit_range_is_refused_naming_it_never_rescaled(tmp_path, values, pattern):
    arr = np.zeros((8, 8), np.float32)
    arr[0, :3] = values
    Image.fromarray(arr, mode="F").save(tmp_path / "f.tif")
    tf = imagenet_transform(size=8, resize=8, **PLAIN)
    with pytest.raises(ValueError, match=r"the mode 'F' \(float\) image '.*f.tif' " + pattern):
        tf(load_image(tmp_path / "f.tif"))
    with pytest.raises(ValueError, match=r"a mode 'F' \(float\) PIL image " + pattern):
        tf(Image.fromarray(arr, mode="F"))


def test_a_dim_float_image_stays_dim():
    arr = np.full((8, 8), 0.002, np.float32)             # was stretched by its content before: no longer
    out = imagenet_transform(size=8, resize=8, **PLAIN)(Image.fromarray(arr, mode="F"))
    torch.testing.assert_close(out, torch.full((3, 8, 8), 0.002), atol=1e-7, rtol=0)


def test_an_image_over_max_image_pixels_is_refused_before_decoding_naming_it(tmp_path, monkeypatch):
    Image.new("RGB", (40, 30)).save(tmp_path / "big.png")      # 1200 pixels: over 1000, under Pillow's 2 x 1000
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(ImageReadError, match=r"big.png.*too many pixels \(40 x 30 = 1200 pixels, over "
                                             r"PIL.Image.MAX_IMAGE_PIXELS = 1000"):
        load_image(tmp_path / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1200)
    assert load_image(tmp_path / "big.png").size == (40, 30)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
    assert load_image(tmp_path / "big.png").size == (40, 30)


def test_a_sixteen_bit_image_is_converted_in_float32_not_float64():
    import tracemalloc
    img = Image.fromarray(np.full((1000, 1000), 5000, np.uint16))
    tf = imagenet_transform(size=32, resize=32, **PLAIN)
    tracemalloc.start()
    out = tf(img)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 1000 * 1000 * 7, peak                    # uint16 copy + float32 (6 bytes a pixel), not + float64
    torch.testing.assert_close(out, torch.full((3, 32, 32), 5000 / 65535), atol=1e-6, rtol=0)
