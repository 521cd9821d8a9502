"""Class-activation maps: the formulas against hand computations, the default layer, the model left
exactly as it was, Classifier.explain's geometry, overlays, and a real network that looks at the
evidence (a coloured patch in a random corner) after a brief fine-tune."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from transferlearn import Trainer, anatomy, imagenet_transform, load_model
from transferlearn.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from transferlearn.ship.classifier import Classifier
from transferlearn.ship.explain import class_activation_map, default_layer
from transferlearn.ship.heatmap import heat_colors, overlay, save_overlay

from .conftest import TinyNet


class FlatHead(nn.Module):
    """A conv layer keeping the input's size, then a Linear on the flattened map (VGG-like head):
    the logit's gradient with respect to the map is the head's weight, by hand."""

    def __init__(self, side: int = 5, channels: int = 3, classes: int = 2) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, channels, 3, padding=1), nn.ReLU())
        self.fc = nn.Linear(channels * side * side, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.features(x), 1))


def _unit(maps: torch.Tensor) -> torch.Tensor:
    maps = maps.clamp(min=0)
    peak = maps.flatten(1).max(1).values
    assert torch.all(peak > 0)                                            # a case with evidence in every image
    return maps / peak.view(-1, 1, 1)


def test_hirescam_and_gradcam_match_their_definitions_by_hand():
    torch.manual_seed(1)
    model, x = FlatHead(), torch.randn(4, 3, 5, 5)
    activation = model.features(x).detach()                              # (4, C, 5, 5), the explained layer
    weight = model.fc.weight.detach().view(2, 3, 5, 5)                    # d logit_c / d activation = weight[c]
    target = [0, 1, 1, 0]
    grads = weight[target]
    hires = _unit((grads * activation).sum(1))                            # HiResCAM: element-wise, summed over k
    grad = _unit((grads.mean((2, 3), keepdim=True) * activation).sum(1))  # Grad-CAM: spatial mean of the gradient
    assert not torch.allclose(hires, grad)                                # the two differ for this head
    torch.testing.assert_close(class_activation_map(model, x, target=target), hires)
    torch.testing.assert_close(class_activation_map(model, x, target=target, method="gradcam"), grad)
    torch.testing.assert_close(class_activation_map(model, x, target=target, layer="features"), hires)


def test_for_a_pooled_linear_head_both_are_the_original_cam(tiny):
    x = torch.randn(3, 3, 6, 6)
    tiny.eval()
    features = tiny.stage2(tiny.stage1(tiny.stem(x))).detach()            # stride 1: the input's size
    cam = _unit(torch.einsum("k,nkhw->nhw", tiny.fc.weight.detach()[1], features))  # CAM, Zhou et al. 2016
    for method in ("hirescam", "gradcam"):
        torch.testing.assert_close(class_activation_map(tiny, x, target=1, method=method), cam)
    predicted = tiny(x).argmax(1).tolist()
    assert predicted == [0, 0, 0]                     # no positive evidence for class 0 in this random net:
    assert torch.equal(class_activation_map(tiny, x), torch.zeros(3, 6, 6))      # the predicted class's map is 0
    one = class_activation_map(tiny, x[1], target=1)                      # one (C, H, W) image -> one (H, W) map
    assert one.shape == (6, 6) and float(one.max()) == 1.0 and float(one.min()) >= 0.0


def test_maps_are_upsampled_to_the_input_and_scaled_to_unit_peak():
    model = torchvision.models.resnet18(num_classes=3).eval()
    maps = class_activation_map(model, torch.randn(2, 3, 70, 50))
    assert maps.shape == (2, 70, 50) and maps.dtype == torch.float32
    assert torch.all(maps >= 0) and torch.all(maps <= 1)
    assert [float(m.max()) for m in maps] == [1.0, 1.0]


def test_a_map_with_no_positive_evidence_is_all_zeros():
    model = FlatHead()
    with torch.no_grad():
        model.fc.weight.fill_(-1.0)
        model.features[0].bias.fill_(1.0)                                 # ReLU output > 0, every weight < 0
    assert torch.equal(class_activation_map(model, torch.rand(1, 3, 5, 5), target=0), torch.zeros(1, 5, 5))


@pytest.mark.parametrize("build, expected", [
    (lambda: TinyNet(), "stage2"),
    (lambda: torchvision.models.resnet18(), "layer4"),               # avgpool (a global pool) is passed over
    (lambda: torchvision.models.mobilenet_v2(), "features"),
])
def test_default_layer_is_the_last_feature_map_before_the_head(build, expected):
    assert default_layer(build(), torch.rand(1, 3, 64, 64)) == expected


class Twice(nn.Module):
    """Runs ``block`` twice: a module that runs more than once cannot be explained."""

    def __init__(self) -> None:
        super().__init__()
        self.block = nn.Conv2d(3, 3, 3, padding=1)
        self.last = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.last(self.block(self.block(x))).mean((2, 3)))


def test_layer_errors():
    x = torch.rand(1, 3, 8, 8)
    assert default_layer(Twice(), x) == "last"
    with pytest.raises(ValueError, match=r"layer='block' must return one 4-D feature map per forward; it ran 2"):
        class_activation_map(Twice(), x, layer="block")
    with pytest.raises(ValueError, match=r"layer='nope' is not a submodule of Twice"):
        class_activation_map(Twice(), x, layer="nope")
    with pytest.raises(ValueError, match=r"layer='fc' must return one 4-D feature map.*ran 1 times and returned"):
        class_activation_map(Twice(), x, layer="fc")
    with pytest.raises(TypeError, match=r"layer must be None or a dotted module name, got 3"):
        class_activation_map(Twice(), x, layer=3)
    with pytest.raises(ValueError, match=r"no layer with a 4-D feature map larger than 1x1"):
        default_layer(nn.Sequential(nn.Flatten(), nn.Linear(192, 2)), x)


class SideProbe(nn.Module):
    """A 4-D side output (the input, passed through a probe for logging) after the backbone:
    the last 4-D map before the head, but not the backbone's."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.stage = nn.Sequential(nn.Conv2d(4, 6, 3, padding=1), nn.ReLU())
        self.probe = nn.Identity()
        self.fc = nn.Linear(6, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.stage(self.stem(x))
        self.probe(x)
        return self.fc(features.mean((2, 3)))


def test_default_layer_is_the_anatomys_last_stage_when_that_is_a_cnn_stage():
    x = torch.rand(1, 3, 8, 8)
    model = SideProbe()
    assert anatomy(model).stages[-1][0] == "stage"
    assert default_layer(model, x) == "stage"                  # with its ReLU; not the side output "probe"
    assert default_layer(model, x, anatomy=anatomy(model)) == "stage"
    assert default_layer(FlatHead(), torch.rand(1, 3, 5, 5)) == "features"  # the stage's conv and the ReLU after it
    squeezenet = torchvision.models.squeezenet1_0()            # its last stage, not the Dropout in front of the head
    assert default_layer(squeezenet, torch.rand(1, 3, 64, 64)) == "features"


def test_argument_errors(tiny):
    x = torch.rand(2, 3, 6, 6)
    with pytest.raises(TypeError, match=r"model must be a torch.nn.Module"):
        class_activation_map("model", x)
    with pytest.raises(TypeError, match=r"inputs must be a float tensor of preprocessed images"):
        class_activation_map(tiny, x.to(torch.uint8))
    with pytest.raises(ValueError, match=r"inputs must be shaped \(C, H, W\) or \(N, C, H, W\).*\(6, 6\)"):
        class_activation_map(tiny, x[0, 0])
    with pytest.raises(ValueError, match=r"method must be one of \['hirescam', 'gradcam'\], got 'cam'"):
        class_activation_map(tiny, x, method="cam")
    with pytest.raises(ValueError, match=r"target must hold class indices in \[0, 2\], got \[3, 3\]"):
        class_activation_map(tiny, x, target=3)
    with pytest.raises(TypeError, match=r"one class index per image \(2\), got \[0\]"):
        class_activation_map(tiny, x, target=[0])
    with pytest.raises(TypeError, match=r"target must be None, a class index"):
        class_activation_map(tiny, x, target=True)


def _snapshot(model: nn.Module) -> dict:
    return {"modes": {n: m.training for n, m in model.named_modules()},
            "flags": {n: p.requires_grad for n, p in model.named_parameters()},
            "grads": {n: None if p.grad is None else p.grad.clone() for n, p in model.named_parameters()},
            "state": {k: v.clone() for k, v in model.state_dict().items()}}


def _same(a: dict, b: dict) -> None:
    assert a["modes"] == b["modes"] and a["flags"] == b["flags"]
    assert a["grads"].keys() == b["grads"].keys() and a["state"].keys() == b["state"].keys()
    for name, grad in a["grads"].items():
        assert (grad is None and b["grads"][name] is None) or torch.equal(grad, b["grads"][name]), name
    for key, value in a["state"].items():
        assert torch.equal(value, b["state"][key]), key                  # BatchNorm buffers bitwise


@pytest.mark.parametrize("context", [torch.enable_grad, torch.no_grad, torch.inference_mode])
def test_the_model_is_left_exactly_as_it_was(tiny, context):
    for bn in (tiny.stem[1], tiny.stage1[1], tiny.stage2[1]):
        bn.running_mean.uniform_(-1, 1), bn.running_var.uniform_(0.5, 2)
    tiny.train()
    tiny.stage1.eval()                                                    # mixed modes
    tiny.stem.requires_grad_(False)                                       # some parameters frozen
    tiny.fc.weight.grad = torch.full_like(tiny.fc.weight, 0.25)           # a gradient the user accumulated
    before = _snapshot(tiny)
    with context():
        maps = class_activation_map(tiny, torch.rand(2, 3, 6, 6))
    assert maps.shape == (2, 6, 6)
    _same(before, _snapshot(tiny))


def test_a_fully_frozen_model_is_explained(tiny):
    tiny.requires_grad_(False)
    maps = class_activation_map(tiny, torch.rand(2, 3, 6, 6), target=1)
    assert [float(m.max()) for m in maps] == [1.0, 1.0]
    assert all(not p.requires_grad and p.grad is None for p in tiny.parameters())


# ----------------------------------------------------------------------------- Classifier.explain
def _classifier(size: int, resize: int) -> Classifier:
    torch.manual_seed(0)
    return Classifier(TinyNet(num_classes=2), ["cat", "dog"], imagenet_transform(size=size, resize=resize))


def test_explain_without_a_crop_is_the_map_of_the_input():
    clf = _classifier(16, 16)
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8))
    maps = clf.explain([image, image], target=["dog", 0])
    expected = class_activation_map(clf.model, clf.transform(image), target=1)
    torch.testing.assert_close(maps[0], expected)
    torch.testing.assert_close(maps[1], class_activation_map(clf.model, clf.transform(image), target=0))


def test_explain_puts_the_crop_back_into_the_image(tmp_path):
    clf = _classifier(16, 16)
    path = tmp_path / "wide.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (40, 80, 3), dtype=np.uint8)).save(path)
    cam, = clf.explain(path)                                               # resized to 16x32, centre crop 16x16
    assert cam.shape == (40, 80)                                           # the image as load_image reads it
    assert float(cam[:, :18].abs().max()) == 0.0 and float(cam[:, 62:].abs().max()) == 0.0  # never seen
    assert float(cam[:, 22:58].max()) > 0.9
    with pytest.raises(ValueError, match=r"target='cow' is not one of the classes \['cat', 'dog'\]"):
        clf.explain(path, target="cow")
    with pytest.raises(ValueError, match=r"target has 2 entries for 1 images"):
        clf.explain(path, target=["cat", "dog"])


# ----------------------------------------------------------------------------- overlays
def test_heat_colors_are_matplotlibs_jet():
    matplotlib = pytest.importorskip("matplotlib")
    values = np.linspace(0, 1, 256)
    np.testing.assert_allclose(heat_colors(values), matplotlib.colormaps["jet"](values)[:, :3], atol=1e-6)


def test_overlay_blends_the_heat_map_onto_the_image(tmp_path):
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (20, 30, 3), dtype=np.uint8))
    cam = torch.rand(20, 30)
    assert np.array_equal(np.asarray(overlay(image, cam, alpha=0.0)), np.asarray(image))
    heat = np.round(heat_colors(cam.numpy()) * 255).astype(np.uint8)
    assert np.array_equal(np.asarray(overlay(image, cam, alpha=1.0)), heat)
    half = np.asarray(overlay(image, torch.ones(5, 5), alpha=0.5)).astype(float)   # resized to the image
    expected = 0.5 * np.asarray(image, dtype=float) + 0.5 * 255 * heat_colors(np.ones((20, 30)))
    assert np.abs(half - expected).max() <= 0.5 + 1e-9
    tensor = torch.from_numpy(np.array(image)).permute(2, 0, 1)
    assert np.array_equal(np.asarray(overlay(tensor, cam)), np.asarray(overlay(image, cam)))
    written = save_overlay(image, cam, tmp_path / "o.png")
    assert np.array_equal(np.asarray(Image.open(written)), np.asarray(overlay(image, cam)))
    image.save(tmp_path / "i.png")
    assert np.array_equal(np.asarray(Image.open(save_overlay(tmp_path / "i.png", cam, tmp_path / "p.png"))),
                          np.asarray(overlay(image, cam)))


def test_overlay_errors():
    image = Image.new("RGB", (4, 4))
    with pytest.raises(ValueError, match=r"alpha must be a finite number >= 0.0 and <= 1.0, got 2"):
        overlay(image, torch.zeros(4, 4), alpha=2)
    with pytest.raises(ValueError, match=r"cam must be one \(H, W\) map, got shape \(1, 4, 4\)"):
        overlay(image, torch.zeros(1, 4, 4))
    with pytest.raises(TypeError, match=r"image must be a PIL image, an image tensor or an array, got 'x'"):
        overlay("x", torch.zeros(4, 4))
    with pytest.raises(ValueError, match=r"image must be shaped \(C, H, W\) with C in \(1, 3\), got \(2, 4, 4\)"):
        overlay(torch.zeros(2, 4, 4), torch.zeros(4, 4))
    with pytest.raises(TypeError, match=r"path must be a str or os.PathLike, got 3"):
        save_overlay(image, torch.zeros(4, 4), 3)


# ----------------------------------------------------------------------------- a real network
SIDE, PATCH = 128, 24
_COLOURS = ((0.95, 0.15, 0.1), (0.1, 0.25, 0.95))


def corner_patches(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Grey textured images (smooth blobs + pixel noise), each with one small bright patch near a
    random corner; the class is the patch's colour (0 red, 1 blue), so the patch is the only evidence.

    Returns:
        Normalised images ``(n, 3, SIDE, SIDE)``, labels, and the quarter of each patch
        (0 top-left, 1 top-right, 2 bottom-left, 3 bottom-right).
    """
    g = torch.Generator().manual_seed(seed)
    blobs = torch.rand(n, 1, SIDE // 16, SIDE // 16, generator=g)
    images = 0.25 + 0.35 * nn.functional.interpolate(blobs, size=(SIDE, SIDE), mode="bilinear", align_corners=False)
    images = (images + 0.12 * torch.randn(n, 1, SIDE, SIDE, generator=g)).expand(n, 3, SIDE, SIDE).clone()
    labels, quarters = torch.arange(n) % 2, torch.randint(0, 4, (n,), generator=g)
    for i in range(n):
        row, col = divmod(int(quarters[i]), 2)
        dy, dx = (int(v) for v in torch.randint(3, SIDE // 8, (2,), generator=g))   # distance from the corner
        top, left = (dy if row == 0 else SIDE - PATCH - dy), (dx if col == 0 else SIDE - PATCH - dx)
        colour = torch.tensor(_COLOURS[int(labels[i])]).view(3, 1, 1)
        images[i, :, top:top + PATCH, left:left + PATCH] = colour + 0.05 * torch.randn(3, PATCH, PATCH, generator=g)
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (images.clamp(0, 1) - mean) / std, labels, quarters


def peak_quarters(maps: torch.Tensor) -> torch.Tensor:
    peak = maps.flatten(1).argmax(1)
    rows, cols = peak // maps.shape[-1], peak % maps.shape[-1]
    return (rows >= maps.shape[-2] // 2).long() * 2 + (cols >= maps.shape[-1] // 2).long()


@pytest.mark.pretrained
def test_a_fine_tuned_mobilenet_looks_at_the_patch(mobilenet_weights):
    """48 training images, 2 head-only + 2 fine-tune epochs at 128 px (about 10 s on one thread);
    on 40 held-out images the map's peak is in the patch's quarter (chance: 25 %)."""
    x, y, _ = corner_patches(48, seed=0)
    test_x, test_y, quarters = corner_patches(40, seed=1)
    model = load_model("mobilenet_v2", weights="IMAGENET1K_V1", num_classes=2)
    loader = DataLoader(TensorDataset(x, y), batch_size=16, shuffle=True, generator=torch.Generator().manual_seed(0))
    Trainer(model, seed=0, progress=False).fit(loader, warmup_epochs=2, finetune_epochs=2)
    with torch.inference_mode():
        accuracy = float((model.eval()(test_x).argmax(1) == test_y).double().mean())
    maps = class_activation_map(model, test_x)                             # the predicted class's map
    hits = float((peak_quarters(maps) == quarters).double().mean())
    assert accuracy >= 0.9
    assert hits >= 0.9, f"the map peaks in the patch's quarter for {hits:.0%} of the held-out images"


# ----------------------------------------------------------------------------- the command line
def test_cli_explain_writes_one_overlay_per_image_and_never_overwrites(tmp_path, capsys):
    from transferlearn.cli import main
    from transferlearn.ship.classifier import load_classifier, save_classifier

    torch.manual_seed(0)
    save_classifier(load_model("mobilenet_v2", weights=None, num_classes=2), tmp_path / "run", classes=["a", "b"],
                    transform=imagenet_transform(size=32))
    rng = np.random.default_rng(0)
    images = [tmp_path / "one" / "x.png", tmp_path / "two" / "x.jpg"]
    for path in images:
        path.parent.mkdir()
        Image.fromarray(rng.integers(0, 256, (40, 60, 3), dtype=np.uint8)).save(path)
    args = ["explain", str(tmp_path / "run"), *map(str, images), "--out", str(tmp_path / "cams")]
    assert main(args) == 0
    lines = [line.split("\t") for line in capsys.readouterr().out.splitlines()]
    written = [tmp_path / "cams" / "x.cam.png", tmp_path / "cams" / "x-2.cam.png"]   # same stem: both kept
    assert [(row[0], row[3]) for row in lines] == [(str(i), str(w)) for i, w in zip(images, written)]
    clf = load_classifier(tmp_path / "run")
    for image, file, row in zip(images, written, lines):
        assert row[1] == clf.predict(image)[0]["class"]
        expected = overlay(Image.open(image), clf.explain(image, target=row[1])[0])
        assert np.array_equal(np.asarray(Image.open(file)), np.asarray(expected))
    before = written[0].read_bytes()
    assert main(args) == 2
    assert "already holds" in capsys.readouterr().err and written[0].read_bytes() == before
    assert main([*args[:-1], str(tmp_path / "other"), "--target", "c"]) == 2
    assert "--target 'c' is not one of the classifier's classes ['a', 'b']" in capsys.readouterr().err
    assert main([*args[:-1], str(images[0])]) == 2
    assert "is a file" in capsys.readouterr().err
    assert main([*args[:-1], str(tmp_path / "b"), "--target", "b", "--method", "gradcam"]) == 0
    expected = overlay(Image.open(images[0]), clf.explain(images[0], target="b", method="gradcam")[0])
    assert np.array_equal(np.asarray(Image.open(tmp_path / "b" / "x.cam.png")), np.asarray(expected))


def test_cli_explain_never_plants_training_images_in_the_data(tmp_path, capsys):
    """review finding 5: `explain --out data/cams` made a class "cams"; `--out data/cat` added overlays to cat."""
    from transferlearn.cli import main
    from transferlearn.data.folder import load_image_folder
    from transferlearn.ship.classifier import save_classifier

    torch.manual_seed(0)
    save_classifier(load_model("mobilenet_v2", weights=None, num_classes=2), tmp_path / "run", classes=["cat", "dog"],
                    transform=imagenet_transform(size=32))
    rng = np.random.default_rng(0)
    data = tmp_path / "data"
    for name in ("cat", "dog"):
        (data / name).mkdir(parents=True)
        for k in range(3):
            Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(data / name / f"{k}.png")
    image = str(data / "cat" / "0.png")
    cat_before = sorted(p.name for p in (data / "cat").iterdir())
    assert main(["explain", str(tmp_path / "run"), image, "--out", str(data / "cat")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and re.search(r"--out '.*cat' holds image files explain did not write \('0.png', 3 in "
                                              r"all\): it may be a class folder of your data", err), err
    assert sorted(p.name for p in (data / "cat").iterdir()) == cat_before
    assert main(["explain", str(tmp_path / "run"), image, "--out", str(data / "cams")]) == 0
    assert main(["explain", str(tmp_path / "run"), str(data / "dog" / "1.png"), "--out", str(data / "cams")]) == 0
    capsys.readouterr()                                    # its own folder: more overlays may join it
    assert sorted(p.name for p in (data / "cams").iterdir()) == [".transferlearn-overlays", "0.cam.png", "1.cam.png"]
    with pytest.warns(UserWarning, match=r"left out 1 folder\(s\) holding classifier.json or .transferlearn-overlays "
                                         r".*'.*cams'.*listed in .skipped"):
        found = load_image_folder(data, val_fraction=0.0, max_imbalance=None)
    assert found.classes == ["cat", "dog"] and len(found.train) == 6
    assert found.skipped == [(str(data / "cams"), "a transferlearn explain overlays folder (it has "
                                                  ".transferlearn-overlays), not images of a class: not read")]
