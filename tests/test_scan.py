"""The folder scan under links and strays (issue 13.5, 13.7, 13.15): every file under one class,
once; loops not followed; dangling links are broken files; run folders are not classes; fewer
than two classes is refused before anything is decoded."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from transferlearn import ImageReadError, load_image_folder
from transferlearn.data import folder as folder_module

SMALL = dict(size=16, resize=16)


def make_folder(root: Path, sizes: dict[str, int]) -> Path:
    for c, (name, n) in enumerate(sizes.items()):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            pixels = np.random.default_rng(100 * c + i).integers(0, 256, (20, 24, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i:03d}.png")
    return root


def used(data) -> list[str]:
    return sorted(p for p, _ in data.train.samples + (data.val.samples if data.val is not None else []))


def test_a_folder_link_into_another_class_is_refused_naming_both_paths(tmp_path):
    """issue 13.7: cat/extra -> ../dog put the dog images under two classes and in train and val."""
    make_folder(tmp_path, {"cat": 4, "dog": 4})
    os.symlink("../dog", tmp_path / "cat" / "extra")
    with pytest.raises(ValueError, match=rf"'{tmp_path / 'cat' / 'extra'}/000.png' \(cat\) and "
                                         rf"'{tmp_path / 'dog'}/000.png' \(dog\) are the same file \(through a link\): "
                                         r"a file can have only one label"):
        load_image_folder(tmp_path, **SMALL)


def test_a_file_link_into_another_class_and_a_hard_link_are_refused(tmp_path):
    make_folder(tmp_path, {"cat": 3, "dog": 3})
    os.symlink(tmp_path / "dog" / "001.png", tmp_path / "cat" / "alias.png")
    with pytest.raises(ValueError, match=r"\(cat\) and .*dog/001.png' \(dog\) are the same file"):
        load_image_folder(tmp_path, **SMALL)
    (tmp_path / "cat" / "alias.png").unlink()
    os.link(tmp_path / "dog" / "002.png", tmp_path / "cat" / "hard.png")
    with pytest.raises(ValueError, match=r"are the same file \(through a link\)"):
        load_image_folder(tmp_path, **SMALL)


def test_the_same_file_in_train_and_val_is_refused(tmp_path):
    make_folder(tmp_path / "train", {"cat": 3, "dog": 3})
    make_folder(tmp_path / "val", {"cat": 1, "dog": 1})
    os.symlink(tmp_path / "train" / "cat" / "002.png", tmp_path / "val" / "cat" / "leak.png")
    with pytest.raises(ValueError, match=r"train/cat/002.png' \(train/cat\) and '.*val/cat/leak.png' \(val/cat\) "
                                         r"are the same file.*be in only one split"):
        load_image_folder(tmp_path, **SMALL)


def test_a_link_inside_its_own_class_counts_once_and_is_noted(tmp_path):
    make_folder(tmp_path, {"cat": 5, "dog": 5})
    os.symlink("000.png", tmp_path / "cat" / "again.png")                  # a file link, same class
    (tmp_path / "dog" / "sub").mkdir()
    os.rename(tmp_path / "dog" / "004.png", tmp_path / "dog" / "sub" / "004.png")
    os.symlink("sub", tmp_path / "dog" / "view")                           # a folder link, same class
    data = load_image_folder(tmp_path, **SMALL)
    assert len(used(data)) == 10 and not {p for p, _ in data.train.samples} & {p for p, _ in data.val.samples}
    assert str(tmp_path / "cat" / "again.png") not in used(data)           # the real file is kept
    assert str(tmp_path / "dog" / "sub" / "004.png") in used(data)
    assert dict(data.skipped) == {
        str(tmp_path / "cat" / "again.png"): f"the same file as '{tmp_path / 'cat' / '000.png'}' (a link): counted once",
        str(tmp_path / "dog" / "view"): f"the same folder as '{tmp_path / 'dog' / 'sub'}' (through a link), already "
                                        "read: not read again"}


@pytest.mark.parametrize("target, same_as", [(".", "cat/deep"), ("..", "cat")])
def test_a_folder_loop_is_never_followed(tmp_path, target, same_as):
    """issue 13.15: a loop (cat/deep/loop -> . or ..) was read 40 levels deep, then an OSError."""
    root = make_folder(tmp_path / "data", {"cat": 3, "dog": 3})
    (root / "cat" / "deep").mkdir()
    os.rename(root / "cat" / "002.png", root / "cat" / "deep" / "002.png")
    os.symlink(target, root / "cat" / "deep" / "loop")
    data = load_image_folder(root, **SMALL)
    assert len(used(data)) == 6 and str(root / "cat" / "deep" / "002.png") in used(data)
    assert data.skipped == [(str(root / "cat" / "deep" / "loop"),
                             f"the same folder as '{root / same_as}' (through a link), already read: not read again")]


def test_a_loop_up_to_the_root_reaches_the_other_class_and_is_refused(tmp_path):
    root = make_folder(tmp_path / "data", {"cat": 3, "dog": 3})
    os.symlink("..", root / "cat" / "up")                  # cat/up/dog/... is dog's files under cat
    with pytest.raises(ValueError, match=r"'.*cat/up/dog/000.png' \(cat\) and '.*data/dog/000.png' \(dog\) are "
                                         r"the same file"):
        load_image_folder(root, **SMALL)


def test_a_dangling_link_is_a_broken_file_and_a_link_loop_too(tmp_path):
    """issue 13.15: a dangling link aborted the scan with a raw FileNotFoundError, skip_broken or not."""
    make_folder(tmp_path, {"cat": 3, "dog": 3})
    os.symlink(tmp_path / "gone.png", tmp_path / "cat" / "ghost.png")
    with pytest.raises(ImageReadError, match=rf"cannot read image '{tmp_path / 'cat' / 'ghost.png'}': a symbolic link "
                                             rf"to '{tmp_path / 'gone.png'}', which does not exist \(skip_broken=True"):
        load_image_folder(tmp_path, **SMALL)
    os.symlink("b.png", tmp_path / "dog" / "a.png")
    os.symlink("a.png", tmp_path / "dog" / "b.png")
    data = load_image_folder(tmp_path, skip_broken=True, **SMALL)
    assert dict(data.skipped) == {
        str(tmp_path / "cat" / "ghost.png"): f"a symbolic link to '{tmp_path / 'gone.png'}', which does not exist",
        str(tmp_path / "dog" / "a.png"): "a symbolic link loop (the link leads back to itself)",
        str(tmp_path / "dog" / "b.png"): "a symbolic link loop (the link leads back to itself)"}
    assert len(used(data)) == 6


def test_a_class_of_only_dangling_links_is_named(tmp_path):
    make_folder(tmp_path, {"cat": 3})
    (tmp_path / "dog").mkdir()
    os.symlink(tmp_path / "nowhere.png", tmp_path / "dog" / "x.png")
    with pytest.raises(ValueError, match=rf"class folder '{tmp_path / 'dog'}' has no readable images \(1 skipped as "
                                         r"broken, e.g. \"a symbolic link to"):
        load_image_folder(tmp_path, skip_broken=True, **SMALL)


def test_a_run_folder_inside_the_data_is_not_a_class(tmp_path):
    """issue 13.5: `fit data --out data/run` then `fit data` trained on a class `run` (the report PNGs)."""
    make_folder(tmp_path, {"cat": 3, "dog": 3})
    make_folder(tmp_path, {"run": 2})                        # curves.png, confusion_matrix.png, ...
    (tmp_path / "run" / "classifier.json").write_text("{}")
    make_folder(tmp_path / "cat", {"old_run": 2})            # a run inside a class folder too
    (tmp_path / "cat" / "old_run" / "classifier.json").write_text("{}")
    with pytest.warns(UserWarning, match=r"left out 2 folder\(s\) holding classifier.json .*'.*run'.*Keep run folders "
                                         r"outside the data folder"):
        data = load_image_folder(tmp_path, **SMALL)
    assert data.classes == ["cat", "dog"] and len(used(data)) == 6
    reason = "a transferlearn run or classifier folder (it has classifier.json), not images of a class: not read"
    assert sorted(data.skipped) == sorted([(str(tmp_path / "cat" / "old_run"), reason), (str(tmp_path / "run"), reason)])


def test_fewer_than_two_classes_is_refused_with_the_counts_before_any_decoding(tmp_path, monkeypatch):
    """issue 13.15: a one-class folder failed only after training had run."""
    make_folder(tmp_path, {"cat": 4})
    monkeypatch.setattr(folder_module, "_check_files", lambda *a: pytest.fail("decoded before the class check"))
    with pytest.raises(ValueError, match=r"found 1 class folder\(s\) \('cat': 4 images\); a classifier needs at "
                                         r"least 2 classes"):
        load_image_folder(tmp_path, **SMALL)
    monkeypatch.undo()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_image_folder(tmp_path, min_classes=1, **SMALL).classes == ["cat"]
    with pytest.raises(ValueError, match=r"min_classes must be an int >= 1, got 0"):
        load_image_folder(tmp_path, min_classes=0, **SMALL)
