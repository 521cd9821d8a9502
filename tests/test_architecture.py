"""The package's layers: imports run base -> model -> data -> train -> ship -> cli, never back up."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).parents[1] / "transferlearn"
LAYERS = ["base", "model", "data", "train", "ship", "cli"]


def layer_of(dotted: str) -> int | None:
    """The layer index of ``transferlearn.<sub>...``; None for the package root (``__init__``, ``__main__``)."""
    parts = dotted.split(".")
    return LAYERS.index(parts[1]) if len(parts) > 1 and parts[1] in LAYERS else None


def module_name(path: Path) -> str:
    parts = ("transferlearn",) + path.relative_to(PKG).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module) for every transferlearn import in ``path``, relative ones resolved."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            targets = [target] if node.module else [f"{target}.{a.name}" for a in node.names]
            found += [(node.lineno, t) for t in targets if t.startswith("transferlearn")]
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.startswith("transferlearn")]
    return found


MODULES = sorted(p for p in PKG.rglob("*.py") if layer_of(module_name(p)) is not None)


def test_every_module_is_in_a_layer():
    top = {p.name for p in PKG.glob("*.py")} - {"__init__.py", "__main__.py", "base.py"}
    assert top == set(), f"modules outside the layers: {sorted(top)}"
    assert {module_name(p).split(".")[1] for p in MODULES} == set(LAYERS)


@pytest.mark.parametrize("path", MODULES, ids=lambda p: module_name(p))
def test_imports_run_down_the_layers(path):
    own = layer_of(module_name(path))
    upward = [(line, target) for line, target in imported(path)
              if (layer_of(target) if layer_of(target) is not None else len(LAYERS)) > own]
    assert upward == [], f"{module_name(path)} imports from a layer above it: {upward}"


def test_the_check_resolves_relative_imports():
    heads = PKG / "model" / "heads.py"
    assert any(t.startswith("transferlearn.base") for _, t in imported(heads))
    assert layer_of("transferlearn.ship.classifier") > layer_of("transferlearn.model.heads")
    assert layer_of("transferlearn") is None  # the root re-exports everything; it sits above all layers


def _code_lines(function: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    """Lines of a function's body after its docstring."""
    body = function.body
    has_doc = isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant) \
        and isinstance(body[0].value.value, str)
    start = body[1].lineno if has_doc and len(body) > 1 else body[0].lineno
    return function.end_lineno - start + 1


def test_modules_and_functions_stay_small():
    """About 300 lines a module, about 40 lines of code a function (docstrings not counted)."""
    big = {module_name(p): n for p in PKG.rglob("*.py") if (n := p.read_text().count("\n")) > 310}
    assert big == {}, f"modules over ~300 lines: {big}"
    long = [f"{module_name(p)}.{node.name}: {_code_lines(node)}" for p in PKG.rglob("*.py")
            for node in ast.walk(ast.parse(p.read_text()))
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and _code_lines(node) > 40]
    assert long == [], f"functions over ~40 lines of code: {long}"
