"""The README's first example runs as written (with the real cached checkpoint)."""

from __future__ import annotations

import re
from pathlib import Path

import torch

README = (Path(__file__).parents[1] / "README.md").read_text()


def test_first_readme_example_runs(mobilenet_weights):
    code = re.findall(r"```python\n(.*?)```", README, flags=re.S)[0]
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)  # noqa: S102 - our own README
    model, opt, tf = scope["model"], scope["opt"], scope["tf"]
    assert model.classifier[1].out_features == 5
    assert {n for n, p in model.named_parameters() if p.requires_grad} == {"classifier.1.weight", "classifier.1.bias"}
    assert isinstance(opt, torch.optim.AdamW) and opt.param_groups[0]["lr"] == 1e-5
    assert tf.size == 224 and tf.resize == 256
