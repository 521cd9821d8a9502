"""imagenet_transform against torchvision's own presets; every PIL mode; properties."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image
from torchvision.models import ResNet18_Weights, ResNet50_Weights, ViT_B_16_Weights
from torchvision.transforms import InterpolationMode
from torchvision.transforms._presets import ImageClassification

from transferlearn import IMAGENET_MEAN, IMAGENET_STD, imagenet_transform


def photo(h: int = 300, w: int = 417, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))


@pytest.mark.parametrize("shape", [(300, 417), (417, 300), (256, 256), (100, 90)])
def test_eval_equals_resnet18_preset(shape):
    img = photo(*shape)
    ours = imagenet_transform()(img)
    theirs = ResNet18_Weights.IMAGENET1K_V1.transforms()(img)
    assert (ours - theirs).abs().max() <= 1e-4


def test_real_photo_equals_preset():
    from skimage import data
    img = Image.fromarray(data.chelsea())
    diff = imagenet_transform()(img) - ResNet18_Weights.IMAGENET1K_V1.transforms()(img)
    assert diff.abs().max() <= 1e-4


@pytest.mark.parametrize("weights, size", [(ResNet50_Weights.IMAGENET1K_V2, 224),
                                           (ViT_B_16_Weights.IMAGENET1K_V1, 224),
                                           ("ResNet50_Weights.IMAGENET1K_V2", 224)])
def test_weights_metadata_is_used(weights, size):
    tf = imagenet_transform(weights=weights)
    enum = weights if not isinstance(weights, str) else ResNet50_Weights.IMAGENET1K_V2
    preset = enum.transforms()
    assert (tf.resize, tf.size) == (preset.resize_size[0], preset.crop_size[0])
    img = photo()
    assert (tf(img) - preset(img)).abs().max() <= 1e-4


def test_resnet50_v2_uses_232_and_explicit_arguments_win():
    assert imagenet_transform(weights=ResNet50_Weights.IMAGENET1K_V2).resize == 232
    tf = imagenet_transform(weights=ResNet50_Weights.IMAGENET1K_V2, size=64, resize=72,
                            interpolation=InterpolationMode.BICUBIC)
    assert (tf.size, tf.resize, tf.interpolation) == (64, 72, InterpolationMode.BICUBIC)


@pytest.mark.parametrize("weights, size, resize", [(None, 64, 73), (None, 112, 128), (None, 224, 256),
                                                   (ResNet50_Weights.IMAGENET1K_V2, 112, 116),
                                                   (ResNet50_Weights.IMAGENET1K_V2, 14, 15)])   # 14.5 rounds up
def test_size_alone_keeps_the_presets_resize_ratio(weights, size, resize):
    tf = imagenet_transform(size=size, weights=weights)
    assert (tf.size, tf.resize) == (size, resize)
    preset = ImageClassification(crop_size=size, resize_size=resize,
                                 interpolation=tf.interpolation)
    img = photo(150, 190)
    assert (tf(img) - preset(img)).abs().max() <= 1e-4


def test_resize_alone_keeps_the_default_size():
    assert (imagenet_transform(resize=300).size, imagenet_transform(resize=300).resize) == (224, 300)


def test_resize_acts_on_the_shorter_side():
    tf = imagenet_transform(size=50, resize=50)
    wide = Image.new("RGB", (200, 100), "white")
    wide.paste((0, 0, 0), (0, 0, 40, 100))             # black only at the far left
    out = tf(wide)                                      # 100x50 after resize, crop keeps the middle
    ref = tf(Image.new("RGB", (200, 100), "white"))
    assert torch.equal(out, ref)


MODES = ["1", "L", "LA", "P", "RGB", "RGBA", "CMYK", "I;16", "I", "F", "YCbCr"]


@pytest.mark.parametrize("mode", MODES)
def test_every_pil_mode_gives_three_finite_channels(mode, tmp_path):
    img = photo(40, 30)
    if mode == "I;16":
        img = Image.fromarray(np.random.default_rng(0).integers(0, 65536, (40, 30)).astype(np.uint16))
    elif mode == "I":       # mode I has a known range only from its file (here a 16-bit PGM): integer_top
        Image.fromarray(np.random.default_rng(0).integers(0, 65536, (40, 30)).astype(np.uint16)).save(tmp_path / "i.pgm")
        img = Image.open(tmp_path / "i.pgm")
    elif mode == "F":       # float images are intensities in [0, 1]
        img = Image.fromarray((np.asarray(img.convert("F")) / 255).astype(np.float32), mode="F")
    elif mode == "P":
        img = img.convert("P", palette=Image.Palette.ADAPTIVE)
        img.info["transparency"] = 0
    else:
        img = img.convert(mode)
    assert img.mode == mode
    out = imagenet_transform(size=24, resize=28)(img)
    assert out.shape == (3, 24, 24) and out.dtype == torch.float32 and torch.isfinite(out).all()


def test_grayscale_becomes_three_equal_channels_before_normalising():
    img = photo(40, 40).convert("L")
    out = imagenet_transform(size=32, resize=32)(img)
    raw = out * torch.tensor(IMAGENET_STD)[:, None, None] + torch.tensor(IMAGENET_MEAN)[:, None, None]
    torch.testing.assert_close(raw[0], raw[1])
    torch.testing.assert_close(raw[1], raw[2])


def test_sixteen_bit_uses_the_full_range():
    ramp = (np.linspace(0, 65535, 64 * 64).reshape(64, 64)).astype(np.uint16)
    out = imagenet_transform(size=64, resize=64, mean=(0, 0, 0), std=(1, 1, 1))(Image.fromarray(ramp))
    assert out.min() < 0.05 and out.max() > 0.95          # not clipped to white


@pytest.mark.parametrize("tensor", [torch.rand(1, 40, 30), torch.rand(3, 40, 30), torch.rand(40, 30),
                                    torch.randint(0, 256, (3, 40, 30), dtype=torch.uint8)])
def test_tensors_with_one_or_three_channels(tensor):
    out = imagenet_transform(size=24, resize=28)(tensor)
    assert out.shape == (3, 24, 24) and torch.isfinite(out).all()


def test_uint8_tensor_matches_pil_path_closely():
    img = photo(64, 80)
    from_tensor = imagenet_transform(size=32, resize=40)(torch.from_numpy(np.array(img)).permute(2, 0, 1))
    from_pil = imagenet_transform(size=32, resize=40)(img)
    assert (from_tensor - from_pil).abs().mean() < 0.05   # two resamplers, same picture


def test_numpy_arrays_are_accepted():
    arr = np.asarray(photo(40, 30))
    assert imagenet_transform(size=16, resize=20)(arr).shape == (3, 16, 16)


def test_train_transform_is_reproducible_under_manual_seed():
    tf = imagenet_transform(train=True, size=32)
    img = photo()
    torch.manual_seed(3)
    a = tf(img)
    torch.manual_seed(3)
    b = tf(img)
    torch.manual_seed(4)
    c = tf(img)
    assert torch.equal(a, b) and not torch.equal(a, c) and a.shape == (3, 32, 32)
    assert not tf.deterministic and imagenet_transform().deterministic


@given(h=st.integers(1, 64), w=st.integers(1, 64), size=st.integers(1, 48),
       train=st.booleans(), gray=st.booleans())
def test_output_shape_for_any_size_and_aspect(h, w, size, train, gray):
    img = photo(h, w)
    img = img.convert("L") if gray else img
    out = imagenet_transform(train, size=size, resize=size + 8)(img)
    assert out.shape == (3, size, size) and torch.isfinite(out).all()


@pytest.mark.parametrize("call, exc, pattern", [
    (lambda: imagenet_transform("yes"), TypeError, r"train must be True or False, got 'yes' \(str\)"),
    (lambda: imagenet_transform(size=0), ValueError, r"size must be an int >= 1, got 0"),
    (lambda: imagenet_transform(resize=2.5), TypeError, r"resize must be an int >= 1, got 2.5"),
    (lambda: imagenet_transform(mean=(0.5, 0.5)), ValueError, r"mean must be 3 finite per-channel numbers, got \(0.5, 0.5\)"),
    (lambda: imagenet_transform(std=(1, 0, 1)), ValueError, r"std must be 3 finite per-channel numbers > 0"),
    (lambda: imagenet_transform(mean=(float("nan"), 1, 1)), ValueError, r"mean must be 3 finite per-channel numbers, got \(nan, 1, 1\)"),
    (lambda: imagenet_transform(std=(1, float("inf"), 1)), ValueError, r"std must be 3 finite per-channel numbers > 0, got \(1, inf, 1\)"),
    (lambda: imagenet_transform(mean=(True, 0, 0)), ValueError, r"mean must be 3 finite per-channel numbers, got \(True, 0, 0\)"),
    (lambda: imagenet_transform(mean="abc"), ValueError, r"mean must be 3 finite per-channel numbers, got 'abc' \(str\)"),
    (lambda: imagenet_transform(size=0, resize=None), ValueError, r"size must be an int >= 1, got 0"),
    (lambda: imagenet_transform(size=True), TypeError, r"size must be an int >= 1, got True"),
    (lambda: imagenet_transform(weights="Nope.X"), ValueError, r"weights='Nope.X' is not a torchvision weights name"),
    (lambda: imagenet_transform(weights=3), TypeError, r"weights must be a torchvision WeightsEnum member or its name, got 3"),
    (lambda: imagenet_transform(weights="FCN_ResNet50_Weights.COCO_WITH_VOC_LABELS_V1"), ValueError,
     r"have no image-classification preprocessing \(their transforms\(\) has no 'crop_size'\)"),
    (lambda: imagenet_transform(interpolation="bilinear"), TypeError, r"interpolation must be a torchvision InterpolationMode"),
    (lambda: imagenet_transform()(torch.rand(4, 8, 8)), ValueError, r"image tensor must have shape .* got \(4, 8, 8\)"),
    (lambda: imagenet_transform(True, augment="heavy"), ValueError,
     r"augment must be one of 'none', 'light', 'trivial', 'randaugment', got 'heavy'"),
    (lambda: imagenet_transform(True, augment=True), TypeError, r"augment must be one of .*, got True"),
    (lambda: imagenet_transform(augment="trivial"), ValueError, r"augment='trivial' needs train=True"),
    (lambda: imagenet_transform()("cat.png"), TypeError, r"image must be a PIL image, a torch.Tensor or a numpy array, got 'cat.png'"),
])
def test_errors(call, exc, pattern):
    with pytest.raises(exc, match=pattern):
        call()


@pytest.mark.parametrize("make", [lambda: photo(90, 70), lambda: photo(50, 120).convert("L"),
                                  lambda: photo(60, 60).convert("RGBA"),
                                  lambda: Image.fromarray(np.random.default_rng(1).integers(0, 65536, (70, 50)).astype(np.uint16)),
                                  lambda: torch.rand(3, 64, 80)])
def test_prepare_then_finish_is_bitwise_the_eval_pipeline(make):
    tf = imagenet_transform(size=40)
    img = make()
    prepared = tf.prepare(img)
    assert min(prepared.shape[1:]) == tf.resize == 46
    assert prepared.dtype == (torch.uint8 if isinstance(img, Image.Image) and img.mode != "I;16" else torch.float32)
    assert torch.equal(tf.finish(prepared), tf(img))


def test_finish_on_train_pipeline_crops_and_flips_the_prepared_tensor():
    tf = imagenet_transform(True, size=32)
    prepared = tf.prepare(photo(80, 100))
    torch.manual_seed(0)
    a = tf.finish(prepared)
    torch.manual_seed(0)
    b = tf.finish(prepared)
    torch.manual_seed(1)
    c = tf.finish(prepared)
    assert a.shape == (3, 32, 32) and torch.equal(a, b) and not torch.equal(a, c)
    with pytest.raises(TypeError, match=r"img must be a tensor from prepare\(\), got <PIL"):
        tf.finish(photo(10, 10))


# --- augmentation presets -----------------------------------------------------------------------

def _oracle(ops, prepared: torch.Tensor, seed: int) -> torch.Tensor:
    """torchvision's own ops on the prepared tensor, then scaling and ImageNet normalisation."""
    from torchvision.transforms import functional as F
    torch.manual_seed(seed)
    out = ops(prepared)
    out = F.convert_image_dtype(out, torch.float) if not out.is_floating_point() else out
    return F.normalize(out, mean=list(IMAGENET_MEAN), std=list(IMAGENET_STD))


@pytest.mark.parametrize("augment", ["light", "trivial", "randaugment"])
@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_each_preset_is_torchvisions_ops_on_the_prepared_tensor(augment, dtype):
    from torchvision import transforms as T
    from torchvision.transforms import v2
    bilinear = T.InterpolationMode.BILINEAR                  # the policies resample as the crop does
    policy = {"light": [], "trivial": [v2.TrivialAugmentWide(interpolation=bilinear)],
              "randaugment": [v2.RandAugment(interpolation=bilinear)]}[augment]
    ops = T.Compose([T.RandomResizedCrop(32, antialias=True), T.RandomHorizontalFlip(), *policy])
    tf = imagenet_transform(True, size=32, augment=augment)
    assert (tf.train, tf.augment, tf.deterministic) == (True, augment, False)
    prepared = tf.prepare(photo(60, 80))
    prepared = prepared if dtype == torch.uint8 else prepared.float() / 255   # a 16-bit image is cached as float
    for seed in range(4):
        torch.manual_seed(seed)
        ours = tf.finish(prepared)
        assert ours.shape == (3, 32, 32) and torch.isfinite(ours).all()
        assert torch.equal(ours, _oracle(ops, prepared, seed))


def test_default_training_preset_is_light_and_light_is_the_0_1_pipeline():
    from torchvision import transforms as T
    assert imagenet_transform(True).augment == "light" and imagenet_transform().augment == "none"
    ops = T.Compose([T.RandomResizedCrop(32, antialias=True), T.RandomHorizontalFlip(),
                     T.PILToTensor()])                              # what 0.1 ran on a PIL image
    img = photo(60, 80)
    torch.manual_seed(5)
    ours = imagenet_transform(True, size=32)(img)
    assert torch.equal(ours, _oracle(ops, img, 5))


def test_preset_none_is_the_eval_pipeline_even_for_training():
    tf = imagenet_transform(True, size=32, augment="none")
    assert (tf.train, tf.augment, tf.deterministic) == (False, "none", True)
    img = photo(60, 80)
    assert torch.equal(tf(img), imagenet_transform(size=32)(img))
    assert "augment='none'" in repr(tf) and "augment='trivial'" in repr(imagenet_transform(True, augment="trivial"))


@pytest.mark.parametrize("augment", ["trivial", "randaugment"])
def test_policies_draw_anew_on_each_call_and_repeat_under_a_seed(augment):
    tf = imagenet_transform(True, size=32, augment=augment)
    prepared = tf.prepare(photo(60, 80))
    torch.manual_seed(0)
    first = [tf.finish(prepared) for _ in range(3)]
    torch.manual_seed(0)
    again = [tf.finish(prepared) for _ in range(3)]
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not torch.equal(first[0], first[1]) and not torch.equal(first[1], first[2])


def test_imagepreprocess_refuses_a_preset_that_contradicts_train():
    from torchvision.transforms import InterpolationMode

    from transferlearn.data.transforms import ImagePreprocess
    common = dict(size=8, resize=9, mean=IMAGENET_MEAN, std=IMAGENET_STD, interpolation=InterpolationMode.BILINEAR)
    with pytest.raises(ValueError, match=r"augment='none' does not fit train=True"):
        ImagePreprocess(train=True, augment="none", **common)
    with pytest.raises(ValueError, match=r"augment='light' does not fit train=False"):
        ImagePreprocess(train=False, augment="light", **common)


@pytest.mark.parametrize("make, deterministic", [
    (lambda: imagenet_transform(True, augment="trivial"), False),
    (lambda: imagenet_transform(True, augment="randaugment"), False),
    (lambda: imagenet_transform(True, augment="none"), True),
    (lambda: __import__("torchvision").transforms.v2.Compose(
        [__import__("torchvision").transforms.v2.TrivialAugmentWide()]), False),
    (lambda: __import__("torchvision").transforms.v2.RandAugment(), False),
    (lambda: __import__("torchvision").transforms.v2.AutoAugment(), False),
])
def test_the_feature_cache_sees_the_random_ops(make, deterministic):
    from torchvision.datasets import FakeData

    from transferlearn.train.features import is_deterministic
    assert is_deterministic(FakeData(size=2, transform=make())) is deterministic
