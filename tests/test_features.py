"""extract_features and the determinism check behind the Trainer's feature cache."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import ConcatDataset, DataLoader, Subset, TensorDataset
from torchvision import transforms as T
from torchvision.datasets import FakeData
from torchvision.models import ResNet18_Weights

from transferlearn import extract_features, imagenet_transform, replace_head
from transferlearn.train.feature_cache import FeatureCache
from transferlearn.train.features import is_deterministic

from .conftest import TinyNet


def test_features_are_what_the_head_receives():
    torch.manual_seed(0)
    m = TinyNet()
    x, y = torch.randn(10, 3, 8, 8), torch.arange(10)
    m.train()
    feats = extract_features(m, DataLoader(TensorDataset(x, y), batch_size=4))
    assert m.training                                       # mode restored
    expected = replace_head(TinyNet(), 0)
    expected.load_state_dict({k: v for k, v in m.state_dict().items() if not k.startswith("fc")})
    torch.testing.assert_close(feats.tensors[0], expected.eval()(x))
    assert torch.equal(feats.tensors[1], y)


def test_unlabelled_loader_gives_features_only():
    feats = extract_features(TinyNet(), DataLoader(torch.randn(5, 3, 8, 8), batch_size=2))
    assert len(feats.tensors) == 1 and feats.tensors[0].shape == (5, 8)


def test_errors():
    with pytest.raises(TypeError, match=r"loader must be an iterable of batches \(a DataLoader\), got 3"):
        extract_features(TinyNet(), 3)
    with pytest.raises(ValueError, match="loader yielded no batches"):
        extract_features(TinyNet(), [])
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        extract_features("model", [])


def fake(transform):
    return FakeData(size=4, image_size=(3, 16, 16), transform=transform)


@pytest.mark.parametrize("dataset, expected", [
    (TensorDataset(torch.zeros(2)), True),
    (fake(imagenet_transform(size=8, resize=8)), True),
    (fake(imagenet_transform(True, size=8)), False),
    (fake(T.Compose([T.Resize(8), T.CenterCrop(8), T.ToTensor(), T.Normalize([0.5] * 3, [0.2] * 3)])), True),
    (fake(T.Compose([T.RandomCrop(8), T.ToTensor()])), False),
    (fake(ResNet18_Weights.IMAGENET1K_V1.transforms()), True),
    (fake(T.Lambda(lambda x: x)), False),
    (Subset(fake(T.ToTensor()), [0, 1]), True),
    (ConcatDataset([fake(T.ToTensor()), fake(T.RandomHorizontalFlip())]), False),
    (list(range(3)), False),
])
def test_is_deterministic(dataset, expected):
    assert is_deterministic(dataset) is expected


@pytest.mark.parametrize("shuffle, drop_last", [(False, False), (True, True), (True, False)])
def test_feature_cache_replays_exactly_the_batches_of_the_loader(shuffle, drop_last):
    data = TensorDataset(torch.arange(10.0), torch.arange(10))
    like = DataLoader(data, batch_size=4, shuffle=shuffle, drop_last=drop_last,
                      generator=torch.Generator().manual_seed(3))
    cache = FeatureCache(data.tensors[0] * 10, data.tensors[1], torch.arange(10))
    state = like.generator.get_state()
    expected = [(x * 10, y) for x, y in like]
    after_loader = like.generator.get_state()
    like.generator.set_state(state)
    got = list(cache.batches(like))
    assert len(got) == len(expected)
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(got, expected))
    assert torch.equal(like.generator.get_state(), after_loader)     # the same random numbers were drawn


def test_feature_cache_refuses_an_index_it_did_not_extract():
    data = TensorDataset(torch.arange(4.0), torch.arange(4))
    cache = FeatureCache(torch.zeros(2), torch.zeros(2), torch.tensor([0, 1, -1, -1]))
    with pytest.raises(ValueError, match="yielded an index whose features were not cached"):
        list(cache.batches(DataLoader(data, batch_size=4)))


def test_dropout_between_backbone_and_head_is_inactive_on_cached_features():
    m = nn.Sequential(nn.Flatten(), nn.Linear(4, 4), nn.Dropout(0.9), nn.Linear(4, 2))
    x = torch.ones(3, 4)
    feats = extract_features(m, DataLoader(TensorDataset(x, torch.zeros(3)), batch_size=3))
    torch.testing.assert_close(feats.tensors[0], m[1](x).detach())
