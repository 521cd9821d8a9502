"""find_head / replace_head on hand-built models, with every error checked."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from transferlearn import find_head, replace_head
from transferlearn.model.heads import DropoutHead


def test_find_head_falls_back_to_last_linear(tiny):
    name, module = find_head(tiny)
    assert name == "fc" and module is tiny.fc


def test_explicit_head_wins(tiny):
    assert find_head(tiny, head="stage2.0")[0] == "stage2.0"


def test_explicit_head_missing_names_candidates(tiny):
    with pytest.raises(ValueError, match=r"head='nope' is not a submodule of TinyNet; candidates include \[.*'fc'"):
        find_head(tiny, head="nope")


def test_no_head_found_names_candidates():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Conv2d(4, 5, 1))
    with pytest.raises(ValueError, match=r"could not find a classification head in Sequential.*\['0', '1'\]"):
        find_head(model)


@pytest.mark.parametrize("bad, exc, pattern", [
    (3, TypeError, r"model must be a torch.nn.Module, got 3 \(int\)"),
])
def test_find_head_rejects_non_modules(bad, exc, pattern):
    with pytest.raises(exc, match=pattern):
        find_head(bad)


def test_head_option_type_is_checked(tiny):
    with pytest.raises(TypeError, match="head must be None or a non-empty dotted module name"):
        find_head(tiny, head=1)


def test_replace_head_keeps_in_features_dtype_device(tiny):
    tiny = tiny.double()
    out = replace_head(tiny, 7)
    assert out is tiny
    assert isinstance(tiny.fc, nn.Linear) and tiny.fc.in_features == 8 and tiny.fc.out_features == 7
    assert tiny.fc.weight.dtype == torch.float64 and tiny.fc.weight.requires_grad
    assert tiny(torch.randn(2, 3, 8, 8, dtype=torch.float64)).shape == (2, 7)


def test_replace_head_without_bias_keeps_no_bias():
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 4, bias=False))
    replace_head(model, 2)
    assert model[1].bias is None


def test_num_classes_zero_returns_pooled_features(tiny):
    replace_head(tiny, 0)
    assert isinstance(tiny.fc, nn.Identity)
    assert tiny(torch.randn(2, 3, 8, 8)).shape == (2, 8)


def test_dropout_head_and_second_replacement(tiny):
    replace_head(tiny, 5, dropout=0.3)
    assert isinstance(tiny.fc, DropoutHead)
    assert tiny.fc[0].p == 0.3 and tiny.fc[1].out_features == 5
    assert find_head(tiny)[0] == "fc"          # the pair, not its inner layer
    replace_head(tiny, 2)                        # replacing again swaps the whole pair
    assert isinstance(tiny.fc, nn.Linear) and tiny.fc.in_features == 8


def test_explicit_container_head_is_replaced_whole():
    model = nn.Sequential(nn.Flatten(), nn.Sequential(nn.Linear(12, 6), nn.ReLU(), nn.Linear(6, 4)))
    replace_head(model, 3, head="1")
    assert isinstance(model[1], nn.Linear) and model[1].in_features == 12


def test_identity_head_cannot_be_replaced_without_a_width(tiny):
    replace_head(tiny, 0)
    with pytest.raises(ValueError, match="cannot tell the input width of head"):
        replace_head(tiny, 3, head="fc")


@pytest.mark.parametrize("kwargs, exc, pattern", [
    ({"num_classes": -1}, ValueError, r"num_classes must be an int >= 0, got -1"),
    ({"num_classes": 2.0}, TypeError, r"num_classes must be an int >= 0, got 2.0 \(float\)"),
    ({"num_classes": True}, TypeError, r"num_classes must be an int >= 0, got True \(bool\)"),
    ({"num_classes": 3, "dropout": 1.0}, ValueError, r"dropout must be in \[0, 1\)"),
    ({"num_classes": 3, "dropout": -0.1}, ValueError, r"dropout must be a finite number >= 0.0"),
    ({"num_classes": 0, "dropout": 0.2}, ValueError, r"needs num_classes > 0"),
    ({"num_classes": 3, "dropout": "0.2"}, TypeError, r"dropout must be a real number"),
])
def test_replace_head_errors(tiny, kwargs, exc, pattern):
    with pytest.raises(exc, match=pattern):
        replace_head(tiny, **kwargs)


def test_every_parameter_gets_a_gradient_after_replacement(tiny):
    replace_head(tiny, 4)
    tiny(torch.randn(2, 3, 8, 8)).sum().backward()
    assert all(p.grad is not None for p in tiny.parameters())


@given(hidden=st.lists(st.integers(1, 6), max_size=3), n=st.integers(0, 9), drop=st.booleans())
def test_replace_head_property(hidden, n, drop):
    """For any MLP, the new head keeps the last layer's input width and has n outputs."""
    widths = [5] + hidden
    layers: list[nn.Module] = []
    for a, b in zip(widths, widths[1:]):
        layers += [nn.Linear(a, b), nn.ReLU()]
    model = nn.Sequential(*layers, nn.Linear(widths[-1], 11))
    replace_head(model, n, dropout=0.1 if drop and n else None)
    out = model(torch.randn(3, 5))
    assert out.shape == (3, n if n else widths[-1])
