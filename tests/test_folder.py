"""load_image_folder: layouts, the stratified split, broken files, the decoded-image cache, loaders."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from torchvision.datasets import ImageFolder

from transferlearn import IMAGENET_MEAN, IMAGENET_STD, ImageReadError, imagenet_transform, load_image, load_image_folder
from transferlearn.data import folder as folder_module
from transferlearn.data.folder import _split, split_counts
from transferlearn.data.imagefiles import ImageCache, ImageFiles
from transferlearn.train.features import is_deterministic

SMALL = dict(size=32, resize=36)


def picture(seed: int, h: int = 40, w: int = 48) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))


def make_folder(root: Path, sizes: dict[str, int], suffix: str = ".png") -> Path:
    for c, (name, n) in enumerate(sizes.items()):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            picture(100 * c + i).save(root / name / f"{i:03d}{suffix}")
    return root


def unnormalise(x: torch.Tensor) -> torch.Tensor:
    return x * torch.tensor(IMAGENET_STD)[:, None, None] + torch.tensor(IMAGENET_MEAN)[:, None, None]


def items(ds) -> list[tuple[torch.Tensor, int]]:
    return [ds[i] for i in range(len(ds))]


# --- the split ---------------------------------------------------------------------------

def test_split_layout_is_stratified_disjoint_and_complete(tmp_path):
    make_folder(tmp_path, {"dog": 10, "cat": 7, "ant": 2})
    data = load_image_folder(tmp_path, **SMALL)
    assert data.layout == "split" and data.classes == ["ant", "cat", "dog"]
    assert data.counts == {"train": {"ant": 1, "cat": 6, "dog": 8}, "val": {"ant": 1, "cat": 1, "dog": 2}}
    train, val = {p for p, _ in data.train.samples}, {p for p, _ in data.val.samples}
    assert not train & val and len(train | val) == 19
    for path, label in data.train.samples + data.val.samples:
        assert Path(path).parent.name == data.classes[label]
    assert data.train.targets == [label for _, label in data.train.samples]


def test_split_is_seeded_and_independent_of_listing_order(tmp_path, monkeypatch):
    make_folder(tmp_path, {"a": 12, "b": 9})
    first = load_image_folder(tmp_path, seed=3, **SMALL).val.samples
    assert load_image_folder(tmp_path, seed=3, **SMALL).val.samples == first
    assert load_image_folder(tmp_path, seed=4, **SMALL).val.samples != first
    real_walk, real_scandir = os.walk, os.scandir

    class Reversed:                                             # what scandir gives, backwards
        def __init__(self, entries):
            self.entries = iter(list(entries)[::-1])

        def __iter__(self):
            return self

        def __next__(self):
            return next(self.entries)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    def scandir(path="."):
        with real_scandir(path) as entries:
            return Reversed(entries)

    monkeypatch.setattr(folder_module.os, "scandir", scandir)   # os.walk uses it too
    monkeypatch.setattr(folder_module.os, "walk",
                        lambda *a, **k: ((t, d[::-1], f[::-1]) for t, d, f in real_walk(*a, **k)))
    assert load_image_folder(tmp_path, seed=3, **SMALL).val.samples == first


@settings(max_examples=60, deadline=None)
@given(sizes=st.lists(st.integers(1, 30), min_size=1, max_size=5), fraction=st.floats(0, 0.95),
       seed=st.integers(0, 2**32 - 1))
def test_split_rule_for_any_class_sizes_and_fraction(sizes, fraction, seed):
    files = {f"c{i}": [f"/d/c{i}/{j}.png" for j in range(n)] for i, n in enumerate(sizes)}
    train, val = _split(files, fraction, seed)
    assert (train, val) == _split(files, fraction, seed)
    assert not {p for p, _ in train} & {p for p, _ in val}
    assert sorted(train + val) == sorted((p, i) for i, ps in enumerate(files.values()) for p in ps)
    for label, n in enumerate(sizes):
        n_val = sum(lab == label for _, lab in val)
        assert n_val == split_counts(n, fraction)
        assert abs(n_val - n * fraction) <= 1 or n_val in (1, n - 1)
        if n >= 2 and fraction > 0:
            assert 1 <= n_val <= n - 1
        else:
            assert n_val == 0
    # one class's split does not depend on the other classes
    alone = _split({"c0": files["c0"]}, fraction, seed)[1]
    assert alone == [(p, lab) for p, lab in val if lab == 0]


def test_split_counts_rounds_half_up():
    assert [split_counts(n, 0.5) for n in (1, 2, 3, 5)] == [0, 1, 2, 3]   # 2.5 -> 3, not round()'s 2
    assert [split_counts(n, 0.2) for n in (1, 2, 3, 7, 8, 10)] == [0, 1, 1, 1, 2, 2]
    assert [split_counts(n, 0.9) for n in (2, 10)] == [1, 9] and split_counts(10, 0.0) == 0


def test_train_val_layout_is_used_as_given(tmp_path):
    make_folder(tmp_path / "train", {"x": 3, "y": 4})
    make_folder(tmp_path / "val", {"x": 2, "y": 1})
    make_folder(tmp_path / "test", {"z": 1})                      # other folders are ignored
    data = load_image_folder(tmp_path, val_fraction=0.5, **SMALL)
    assert data.layout == "train/val" and data.classes == ["x", "y"]
    assert data.counts == {"train": {"x": 3, "y": 4}, "val": {"x": 2, "y": 1}}
    assert all("/val/" in p for p, _ in data.val.samples) and all("/train/" in p for p, _ in data.train.samples)


def test_val_fraction_zero_gives_no_val(tmp_path):
    make_folder(tmp_path, {"a": 3, "b": 2})
    data = load_image_folder(tmp_path, val_fraction=0, **SMALL)
    assert data.val is None and data.counts["val"] == {"a": 0, "b": 0} and len(data.train) == 5
    train_loader, val_loader = data.loaders(batch_size=2, num_workers=0)
    assert val_loader is None and sum(len(y) for _, y in train_loader) == 5


def test_hidden_and_non_image_files_are_ignored(tmp_path):
    make_folder(tmp_path, {"a": 2, "b": 2})
    picture(9).save(tmp_path / "a" / ".hidden.png")
    picture(9).save(tmp_path / "a" / "upper.JPG", format="JPEG")
    (tmp_path / "a" / "notes.txt").write_text("not an image")
    (tmp_path / "a" / "deep" / ".ipynb_checkpoints").mkdir(parents=True)
    picture(9).save(tmp_path / "a" / "deep" / ".ipynb_checkpoints" / "x.png")
    picture(9).save(tmp_path / "a" / "deep" / "nested.png")
    (tmp_path / ".ipynb_checkpoints").mkdir()
    picture(9).save(tmp_path / "loose.png")                      # a file at the root is no class
    data = load_image_folder(tmp_path, val_fraction=0, **SMALL)
    assert data.classes == ["a", "b"]
    names = sorted(Path(p).name for p, _ in data.train.samples if Path(p).parent.name != "b")
    assert names == ["000.png", "001.png", "nested.png", "upper.JPG"]


# --- errors --------------------------------------------------------------------------------

def test_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"image folder '.*nope' does not exist"):
        load_image_folder(tmp_path / "nope")
    (tmp_path / "f.png").write_bytes(b"x")
    with pytest.raises(NotADirectoryError, match=r"image folder '.*f.png' is a file"):
        load_image_folder(tmp_path / "f.png")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"'.*empty' has no class folders; expected root/<class>/<image>"):
        load_image_folder(tmp_path / "empty")
    picture(0).save(tmp_path / "empty" / "x.png")
    with pytest.raises(ValueError, match=r"has no class folders \(it holds 1 images directly: put them in one"):
        load_image_folder(tmp_path / "empty")
    make_folder(tmp_path / "r", {"a": 2})
    (tmp_path / "r" / "b").mkdir()
    (tmp_path / "r" / "b" / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match=r"class folder '.*r/b' has no image files \(.jpg, .jpeg"):
        load_image_folder(tmp_path / "r")


def test_train_val_errors(tmp_path):
    make_folder(tmp_path / "tv" / "train", {"a": 1, "b": 1})
    make_folder(tmp_path / "tv" / "val", {"a": 1, "c": 1})
    with pytest.raises(ValueError, match=r"train and val have different classes \(only in train: \['b'\], "
                                         r"only in val: \['c'\]\)"):
        load_image_folder(tmp_path / "tv")
    make_folder(tmp_path / "t" / "train", {"a": 1})
    with pytest.raises(ValueError, match=r"has a 'train' folder but no 'val' folder"):
        load_image_folder(tmp_path / "t")


@pytest.mark.parametrize("kwargs, exc, pattern", [
    (dict(val_fraction=1.0), ValueError, r"val_fraction must be >= 0 and < 1 .*got 1.0"),
    (dict(val_fraction=-0.1), ValueError, r"val_fraction must be >= 0 and < 1 \(some images must train\), got -0.1"),
    (dict(val_fraction=1.5), ValueError, r"val_fraction must be >= 0 and < 1 \(some images must train\), got 1.5"),
    (dict(val_fraction=float("nan")), ValueError, r"val_fraction must be a finite number"),
    (dict(val_fraction="0.2"), TypeError, r"val_fraction must be a real number, got '0.2'"),
    (dict(seed=-1), ValueError, r"seed must be an int >= 0, got -1"),
    (dict(seed=1.5), TypeError, r"seed must be an int >= 0, got 1.5"),
    (dict(augment=1), TypeError,
     r"augment must be one of 'none', 'light', 'trivial', 'randaugment' or True / False, got 1 \(int\)"),
    (dict(augment="strong"), ValueError, r"augment must be one of 'none', .* or True / False, got 'strong'"),
    (dict(skip_broken="yes"), TypeError, r"skip_broken must be True or False, got 'yes'"),
    (dict(draft=0), TypeError, r"draft must be True or False, got 0"),
    (dict(check="full"), ValueError, r"check must be 'decode' \(full decode\) or 'header' \(Image.verify\), got 'full'"),
    (dict(cache_bytes=-1), ValueError, r"cache_bytes must be an int >= 0, got -1"),
    (dict(cache_bytes=1.5e9), TypeError, r"cache_bytes must be an int >= 0, got 1500000000.0"),
    (dict(max_imbalance=0.5), ValueError, r"max_imbalance must be a finite number >= 1.0, got 0.5"),
    (dict(workers=0), ValueError, r"workers must be an int >= 1, got 0"),
    (dict(size=0), ValueError, r"size must be an int >= 1, got 0"),
    (dict(weights="Nope.X"), ValueError, r"weights='Nope.X' is not a torchvision weights name"),
])
def test_option_errors(tmp_path, kwargs, exc, pattern):
    make_folder(tmp_path, {"a": 2})
    with pytest.raises(exc, match=pattern):
        load_image_folder(tmp_path, **kwargs)


def test_root_type_error():
    with pytest.raises(TypeError, match=r"root must be a str or os.PathLike, got 3 \(int\)"):
        load_image_folder(3)


# --- broken files ----------------------------------------------------------------------------

def cut_jpeg(path: Path) -> Path:
    picture(5, 120, 160).save(path, format="JPEG", quality=95)
    path.write_bytes(path.read_bytes()[:2000])
    return path


def test_broken_file_raises_naming_it(tmp_path):
    make_folder(tmp_path, {"a": 3, "b": 3})
    bad = cut_jpeg(tmp_path / "b" / "cut.jpg")
    (tmp_path / "a" / "empty.png").write_bytes(b"")
    with pytest.raises(ImageReadError, match=rf"cannot read image '{tmp_path / 'a' / 'empty.png'}': empty file "
                                             r"\(0 bytes\); 1 more unreadable \(skip_broken=True leaves them out"):
        load_image_folder(tmp_path, **SMALL)
    data = load_image_folder(tmp_path, skip_broken=True, **SMALL)
    assert [p for p, _ in data.skipped] == [str(tmp_path / "a" / "empty.png"), str(bad)]
    assert "truncated or corrupt image data" in data.skipped[1][1]
    used = {p for p, _ in data.train.samples + data.val.samples}
    assert len(used) == 6 and str(bad) not in used
    assert sum(data.counts["train"].values()) + sum(data.counts["val"].values()) == 6


def test_header_check_misses_a_cut_jpeg_which_then_fails_when_read(tmp_path):
    make_folder(tmp_path, {"a": 2})
    bad = cut_jpeg(tmp_path / "a" / "cut.jpg")
    data = load_image_folder(tmp_path, check="header", val_fraction=0, min_classes=1, **SMALL)
    index = [p for p, _ in data.train.samples].index(str(bad))
    with pytest.raises(ImageReadError, match=rf"cannot read image '{bad}': truncated"):
        data.train[index]


def test_class_with_only_broken_files(tmp_path):
    make_folder(tmp_path, {"a": 2})
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "x.png").write_text("not a png")
    with pytest.raises(ValueError, match=r"class folder '.*b' has no readable images \(1 skipped as broken, "
                                         r"e.g. 'not an image file"):
        load_image_folder(tmp_path, skip_broken=True, **SMALL)


# --- imbalance -------------------------------------------------------------------------------

def test_imbalance_warning(tmp_path):
    make_folder(tmp_path / "w", {"big": 11, "small": 1})
    with pytest.warns(UserWarning, match=r"class imbalance: 'big' has 11 images, 'small' has 1 \(ratio 11.0 > "
                                         r"max_imbalance=10\)"):
        load_image_folder(tmp_path / "w", **SMALL)
    make_folder(tmp_path / "ok", {"big": 10, "small": 1})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_image_folder(tmp_path / "ok", **SMALL)
        load_image_folder(tmp_path / "w", max_imbalance=None, **SMALL)


# --- what the datasets yield -------------------------------------------------------------------

def test_items_match_imagefolder_with_load_image(tmp_path):
    make_folder(tmp_path, {"a": 3, "b": 3}, suffix=".jpg")
    data = load_image_folder(tmp_path, val_fraction=0, cache_bytes=0, **SMALL)
    oracle = ImageFolder(tmp_path, loader=load_image, transform=imagenet_transform(**SMALL))
    assert data.train.samples == oracle.samples and data.classes == oracle.classes
    for (x, y), (ox, oy) in zip(items(data.train), items(oracle)):
        assert torch.equal(x, ox) and y == oy and x.shape == (3, 32, 32)


def test_exif_rotated_jpeg_comes_out_upright(tmp_path):
    (tmp_path / "a").mkdir()
    stored = Image.new("RGB", (64, 32), "white")
    stored.paste((255, 0, 0), (0, 0, 32, 32))                  # red left half as stored
    exif = Image.Exif()
    exif[0x0112] = 6                                           # shown turned 90 degrees clockwise
    stored.save(tmp_path / "a" / "turned.jpg", exif=exif, quality=95)
    data = load_image_folder(tmp_path, val_fraction=0, min_classes=1, size=32, resize=32)
    x = unnormalise(data.train[0][0])
    # turned clockwise, the stored left half is on top: red rows above white rows (unturned,
    # the red would be in the left columns instead)
    assert x[1, :16].mean() < 0.1 and x[1, 16:].mean() > 0.9 and x[0].mean() > 0.9


def test_sixteen_bit_png_keeps_full_range(tmp_path):
    (tmp_path / "a").mkdir()
    arr = np.linspace(0, 65535, 32 * 32).reshape(32, 32).astype(np.uint16)
    Image.fromarray(arr).save(tmp_path / "a" / "g.png")
    data = load_image_folder(tmp_path, val_fraction=0, min_classes=1, size=32, resize=32)
    x = unnormalise(data.train[0][0])
    torch.testing.assert_close(x, torch.from_numpy(arr / 65535).float().expand(3, -1, -1), atol=1e-5, rtol=0)


def test_weights_and_size_give_the_presets_pipeline(tmp_path):
    make_folder(tmp_path, {"a": 2, "b": 2})
    data = load_image_folder(tmp_path, weights="MobileNet_V2_Weights.IMAGENET1K_V1", size=24)
    assert (data.train.transform.size, data.train.transform.resize) == (24, 27)
    assert data.train[0][0].shape == (3, 24, 24) and data.val[0][0].shape == (3, 24, 24)


def test_default_train_split_is_deterministic_and_augment_is_not(tmp_path):
    make_folder(tmp_path, {"a": 3, "b": 3})
    data = load_image_folder(tmp_path, **SMALL)
    assert data.train.deterministic and is_deterministic(data.train) and is_deterministic(data.val)
    assert not data.train.transform.train
    assert torch.equal(data.train[0][0], data.train[0][0])
    aug = load_image_folder(tmp_path, augment=True, **SMALL)
    assert not aug.train.deterministic and not is_deterministic(aug.train) and is_deterministic(aug.val)
    torch.manual_seed(0)
    a = aug.train[0][0]
    assert a.shape == (3, 32, 32) and not torch.equal(a, aug.train[0][0])


# --- the decoded-image cache -------------------------------------------------------------------

def test_cache_gives_bitwise_the_uncached_items(tmp_path):
    make_folder(tmp_path, {"a": 4, "b": 3}, suffix=".jpg")
    cached = load_image_folder(tmp_path, **SMALL)
    plain = load_image_folder(tmp_path, cache_bytes=0, **SMALL)
    assert plain.cache is None and cached.cache.count == 7
    assert cached.cache.bytes == sum(cached.cache.get(p).untyped_storage().nbytes()
                                     for p, _ in cached.train.samples + cached.val.samples)
    for split in ("train", "val"):
        for (x, y), (px, py) in zip(items(getattr(cached, split)), items(getattr(plain, split))):
            assert torch.equal(x, px) and y == py


def test_cache_with_augmentation_crops_the_cached_tensor(tmp_path):
    make_folder(tmp_path, {"a": 3, "b": 3})
    cached = load_image_folder(tmp_path, augment=True, **SMALL)
    plain = load_image_folder(tmp_path, augment=True, cache_bytes=0, **SMALL)
    for i in range(len(cached.train)):
        torch.manual_seed(i)
        a = cached.train[i][0]
        torch.manual_seed(i)
        assert torch.equal(a, plain.train[i][0])


@pytest.mark.parametrize("augment, preset", [(False, "none"), ("none", "none"), (True, "light"), ("light", "light"),
                                            ("trivial", "trivial"), ("randaugment", "randaugment")])
def test_augment_names_the_training_preset_and_val_stays_eval(tmp_path, augment, preset):
    make_folder(tmp_path, {"a": 3, "b": 3})
    data = load_image_folder(tmp_path, augment=augment, **SMALL)
    assert data.train.transform.augment == preset and data.val.transform.augment == "none"
    assert is_deterministic(data.train) is (preset == "none") and is_deterministic(data.val)
    assert (data.train.transform.size, data.train.transform.resize) == (32, 36)
    if preset == "none":
        assert data.train.transform is data.val.transform


@pytest.mark.parametrize("augment", ["light", "trivial", "randaugment"])
def test_cached_epochs_augment_anew_and_repeat_under_the_seed(tmp_path, augment):
    """Random ops run on the cached decoded tensors: each epoch differs, a seeded rerun is identical,
    and the cache gives what decoding again would."""
    make_folder(tmp_path, {"a": 3, "b": 3})
    cached = load_image_folder(tmp_path, augment=augment, **SMALL)
    plain = load_image_folder(tmp_path, augment=augment, cache_bytes=0, **SMALL)
    assert cached.cache.count == 6

    def epochs(data, n=2):
        torch.manual_seed(0)
        loader, _ = data.loaders(batch_size=2, shuffle=False, num_workers=0)
        return [torch.cat([x for x, _ in loader]) for _ in range(n)]
    first, second = epochs(cached)
    assert first.shape == (4, 3, 32, 32) and not torch.equal(first, second)
    assert all(not torch.equal(a, b) for a, b in zip(first, second))          # every item, not just one
    again = epochs(cached)
    assert torch.equal(first, again[0]) and torch.equal(second, again[1])
    uncached = epochs(plain)
    assert torch.equal(first, uncached[0]) and torch.equal(second, uncached[1])


def test_cache_respects_its_cap(tmp_path):
    make_folder(tmp_path, {"a": 5, "b": 5})
    one = 3 * 36 * 43                                          # a 40x48 picture resized to 36 x 43, uint8
    data = load_image_folder(tmp_path, cache_bytes=3 * one + 10, **SMALL)
    assert data.cache.count == 3 and data.cache.bytes == 3 * one <= data.cache.max_bytes
    plain = load_image_folder(tmp_path, cache_bytes=0, **SMALL)
    assert all(torch.equal(x, px) for (x, _), (px, _) in zip(items(data.train), items(plain.train)))
    assert data.cache.count == 3
    assert "ImageCache(count=3, bytes=13932, max_bytes=13942)" in repr(data)


def test_header_check_fills_the_cache_at_first_read_in_the_main_process(tmp_path):
    make_folder(tmp_path, {"a": 3, "b": 3})
    data = load_image_folder(tmp_path, check="header", **SMALL)
    assert data.cache.count == 0
    for _ in data.loaders(batch_size=4, num_workers=2)[0]:     # workers do not fill the parent's cache
        pass
    assert data.cache.count == 0
    first = [x for x, _ in data.loaders(batch_size=4, num_workers=0, shuffle=False)[0]]
    assert data.cache.count == len(data.train)
    again = [x for x, _ in data.loaders(batch_size=4, num_workers=2, shuffle=False)[0]]   # read from the copy
    assert all(torch.equal(a, b) for a, b in zip(first, again))


def test_image_cache_alone():
    cache = ImageCache(100)
    assert cache.put("a", torch.zeros(60, dtype=torch.uint8)) and not cache.put("b", torch.zeros(60, dtype=torch.uint8))
    assert ("a" in cache, "b" in cache, len(cache), cache.bytes) == (True, False, 1, 60)
    cache.clear()
    assert (cache.count, cache.bytes) == (0, 0)
    with pytest.raises(ValueError, match=r"cache_bytes must be an int >= 0, got -5"):
        ImageCache(-5)


def test_image_files_errors():
    tf = imagenet_transform(**SMALL)
    with pytest.raises(TypeError, match=r"transform must be an ImagePreprocess from imagenet_transform\(\), got"):
        ImageFiles([], ["a"], transform=lambda x: x)
    with pytest.raises(ValueError, match=r"samples have label 2, outside 0..1 \(one per class in \['a', 'b'\]\)"):
        ImageFiles([("x.png", 2)], ["a", "b"], tf)
    with pytest.raises(TypeError, match=r"cache must be None or an ImageCache, got 5"):
        ImageFiles([], ["a"], tf, cache=5)
    with pytest.raises(TypeError, match=r"draft must be True or False, got 1"):
        ImageFiles([], ["a"], tf, draft=1)


# --- loaders -----------------------------------------------------------------------------------

def test_loaders_defaults_and_batches(tmp_path):
    make_folder(tmp_path, {"a": 6, "b": 5})
    data = load_image_folder(tmp_path, **SMALL)
    train, val = data.loaders(batch_size=4)
    assert train.num_workers == 0 and not train.persistent_workers     # everything is cached
    assert train.pin_memory == torch.cuda.is_available()
    assert isinstance(train.sampler, torch.utils.data.RandomSampler)
    assert isinstance(val.sampler, torch.utils.data.SequentialSampler)
    x, y = next(iter(val))
    assert x.shape == (len(data.val), 3, 32, 32) and y.tolist() == data.val.targets   # 1 + 1 images
    plain = load_image_folder(tmp_path, cache_bytes=0, **SMALL)
    train, _ = plain.loaders(batch_size=4, drop_last=True)
    assert train.num_workers == min(os.cpu_count(), 8) and train.persistent_workers and train.drop_last
    assert sum(len(y) for _, y in train) == len(plain.train) // 4 * 4


@pytest.mark.parametrize("kwargs, exc, pattern", [
    (dict(batch_size=0), ValueError, r"batch_size must be an int >= 1, got 0"),
    (dict(num_workers=-1), ValueError, r"num_workers must be an int >= 0, got -1"),
    (dict(pin_memory=1), TypeError, r"pin_memory must be True or False, got 1"),
    (dict(shuffle="no"), TypeError, r"shuffle must be True or False, got 'no'"),
])
def test_loader_errors(tmp_path, kwargs, exc, pattern):
    make_folder(tmp_path, {"a": 2})
    with pytest.raises(exc, match=pattern):
        load_image_folder(tmp_path, min_classes=1, **SMALL).loaders(**kwargs)


def test_trainer_caches_features_on_the_default_train_split_and_fits(tmp_path):
    from torch import nn

    from transferlearn import Trainer
    from transferlearn.train.recipe import use_feature_cache
    make_folder(tmp_path, {"a": 5, "b": 5})
    data = load_image_folder(tmp_path, **SMALL)
    train, val = data.loaders(batch_size=4)
    assert use_feature_cache("auto", train, 2)
    aug_train, _ = load_image_folder(tmp_path, augment=True, **SMALL).loaders(batch_size=4)
    assert not use_feature_cache("auto", aug_train, 2)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    history = Trainer(model, progress=False).fit(train, val, warmup_epochs=1, finetune_epochs=1)
    assert len(history) == 2 and all(0 <= r["val_accuracy"] <= 1 for r in history)


def test_draft_is_used_for_large_jpegs_and_draft_false_is_exact(tmp_path):
    from skimage import data as skdata
    (tmp_path / "a").mkdir()
    Image.fromarray(skdata.chelsea()).resize((1200, 800), Image.Resampling.BICUBIC).save(tmp_path / "a" / "big.jpg")
    oracle = imagenet_transform(**SMALL)(load_image(tmp_path / "a" / "big.jpg"))
    exact = load_image_folder(tmp_path, val_fraction=0, draft=False, min_classes=1, **SMALL)
    drafted = load_image_folder(tmp_path, val_fraction=0, min_classes=1, **SMALL)
    assert torch.equal(exact.train[0][0], oracle)
    assert not torch.equal(drafted.train[0][0], oracle)                  # decoded at 1/8: 150 x 100
    assert (unnormalise(drafted.train[0][0]) - unnormalise(oracle)).abs().mean() < 0.02


def test_datasets_pickle_with_their_cache(tmp_path):
    import pickle
    make_folder(tmp_path, {"a": 2, "b": 2})
    data = load_image_folder(tmp_path, val_fraction=0, **SMALL)
    copy = pickle.loads(pickle.dumps(data.train))                        # what a spawned worker gets
    assert copy.cache.count == 4 and copy.cache.bytes == data.cache.bytes
    assert all(torch.equal(a, b) for (a, _), (b, _) in zip(items(copy), items(data.train)))
