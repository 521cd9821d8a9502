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


# ------------------------------------------------------------------- the 0.1.0 surface is kept
def _old_surface() -> dict:
    import json
    return json.loads((Path(__file__).parent / "fixtures" / "api_v0_1.json").read_text())


def _current_surface() -> dict:
    import importlib.util
    spec = importlib.util.spec_from_file_location("make_api", Path(__file__).parent / "fixtures" / "make_api_v0_1.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.surface()


def test_every_public_name_of_0_1_is_still_exported():
    old, new = _old_surface(), _current_surface()
    assert set(old["all"]) - set(new["all"]) == set()
    assert transferlearn.__version__ == "0.2.0"


def test_signatures_of_0_1_still_accept_the_same_calls():
    """Each 0.1.0 parameter is still there, with the same kind and default, in the same order;
    new parameters may only be added as keyword-only options with a default (or after ``**``)."""
    old, new = _old_surface()["signatures"], _current_surface()["signatures"]
    for name, params in old.items():
        current = {p[0]: p for p in new[name]}
        assert [p for p in params if p[0] not in current] == [], f"{name} lost parameters"
        assert [current[p[0]] for p in params] == params, f"{name} changed a parameter's kind or default"
        positional_old = [p[0] for p in params if p[1].startswith("POSITIONAL")]
        positional_new = [p[0] for p in new[name] if p[1].startswith("POSITIONAL")]
        assert positional_new[:len(positional_old)] == positional_old, f"{name} reordered positional parameters"
        added = [p for p in new[name] if p[0] not in {q[0] for q in params}]
        assert all(p[1] in ("KEYWORD_ONLY", "VAR_KEYWORD") for p in added), f"{name}: new parameters {added}"


def test_strategy_fields_and_cli_flags_of_0_1_are_kept():
    old, new = _old_surface(), _current_surface()
    assert new["strategy_fields"] == old["strategy_fields"]
    for command, options in old["cli"].items():
        assert command in new["cli"], f"CLI sub-command {command} is gone"
        assert set(options) - set(new["cli"][command]) == set(), f"transferlearn {command} lost options"
