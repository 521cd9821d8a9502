"""Hypothesis strategy: random small Conv/BN/Linear classifiers and a choice of head."""

from __future__ import annotations

from hypothesis import strategies as st
from torch import nn


@st.composite
def conv_stacks(draw):
    """A (model, head) pair: a Conv/BN stack, pooled, then 1-3 Linear layers.

    ``head`` is None (found automatically: the last Linear) or the explicit dotted name of
    the last Linear.
    """
    channels = [3] + draw(st.lists(st.integers(1, 5), min_size=1, max_size=4))
    layers: list[nn.Module] = []
    for a, b in zip(channels, channels[1:]):
        block = [nn.Conv2d(a, b, 3, padding=1, bias=draw(st.booleans()))]
        if draw(st.booleans()):
            block.append(nn.BatchNorm2d(b))
        layers.append(nn.Sequential(*block, nn.ReLU()))
    widths = [channels[-1]] + draw(st.lists(st.integers(1, 5), max_size=2)) + [draw(st.integers(1, 4))]
    mlp: list[nn.Module] = []
    for a, b in zip(widths, widths[1:]):
        mlp += [nn.Linear(a, b), nn.ReLU()]
    model = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), *mlp[:-1])
    head = str(len(model) - 1) if draw(st.booleans()) else None
    return model, head
