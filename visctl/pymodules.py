"""Facts about Python module names, shared by the config reader and the model builder (stdlib only)."""

from __future__ import annotations

import sys


def is_stdlib_module(name: str) -> bool:
    """Whether a dotted module name belongs to Python's standard library (``os.path``, ``subprocess``, ...)."""
    return name.split(".")[0] in sys.stdlib_module_names
