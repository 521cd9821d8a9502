"""The documentation site: `mkdocs build --strict` passes and the API reference covers every module."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]

pytest.importorskip("mkdocs")
pytest.importorskip("mkdocstrings_handlers.python")


def test_mkdocs_build_strict(tmp_path):
    """Broken links, unparsable docstrings (griffe), pages left out of the nav: each fails the build."""
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                          cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    warnings = [line for line in done.stderr.splitlines() if not line.startswith("INFO")]
    assert done.returncode == 0, "\n".join(warnings[-20:])
    api = (tmp_path / "site" / "api" / "index.html").read_text()
    for name in ("transferlearn.ship.classifier.save_classifier", "transferlearn.ship.report.classification_report",
                 "transferlearn.ship.onnx_export.export_onnx", "transferlearn.model.load.load_model"):
        assert f'id="{name}"' in api, name                        # rendered from the docstrings
    assert (tmp_path / "site" / "shipping" / "index.html").is_file()


def public_modules() -> set[str]:
    """Every public module and package below transferlearn/, as a dotted name (``model.heads``, ``cli``)."""
    names = set()
    for path in (ROOT / "transferlearn").rglob("*.py"):
        parts = path.relative_to(ROOT / "transferlearn").with_suffix("").parts
        parts = parts[:-1] if parts[-1] == "__init__" else parts
        if parts and not any(part.startswith("_") for part in parts):
            names.add(".".join(parts))
    return names


def test_api_reference_has_every_public_module():
    blocks = set(re.findall(r"^::: transferlearn\.([\w.]+)$", (ROOT / "docs" / "api.md").read_text(), re.MULTILINE))
    modules = public_modules()
    assert {"model.heads", "train.trainer", "ship.classifier", "cli"} <= modules
    assert modules - blocks == set(), "add a '::: transferlearn.<module>' block to docs/api.md"
    assert blocks - modules == set()


def test_every_page_is_in_the_nav():
    config = (ROOT / "mkdocs.yml").read_text()
    pages = {p.name for p in (ROOT / "docs").glob("*.md")}
    assert {p for p in pages if f": {p}" not in config} == set()
