"""Every public name has a docstring and a line in docs/."""

from __future__ import annotations

from pathlib import Path

import pytest

import transferlearn

DOCS = "\n".join(p.read_text() for p in (Path(__file__).parents[1] / "docs").glob("*.md"))


@pytest.mark.parametrize("name", [n for n in transferlearn.__all__ if n != "__version__"])
def test_documented(name):
    obj = getattr(transferlearn, name)
    if callable(obj):
        doc = obj.__doc__ or ""
        assert len(doc) > 80, f"{name} has no real docstring"
        if not isinstance(obj, type):
            assert "Returns" in doc or "Return" in doc.split("\n")[0] or name.startswith("is_"), name
    assert f"`{name}" in DOCS, f"{name} is not in docs/"


def test_version():
    assert transferlearn.__version__.count(".") == 2
