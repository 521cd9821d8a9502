"""Griffe extension for the API reference: render ``Example:`` sections as code examples.

The project's docstrings use Google style with a singular ``Example:`` heading. Griffe reads
only the plural ``Examples:`` as an examples section; a singular one becomes an admonition
whose ``>>>`` lines are parsed as Markdown (so ``x["a"]["b"]`` looks like a reference link).
This extension renames the heading before the docstring is parsed.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_SINGULAR = re.compile(r"^(\s*)Example:[ \t]*$", re.MULTILINE)


class SingularExamples(griffe.Extension):
    """Rewrite a line ``Example:`` to ``Examples:`` in every docstring."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = _SINGULAR.sub(r"\1Examples:", obj.docstring.value)
