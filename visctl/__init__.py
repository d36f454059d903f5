"""visctl: look inside PyTorch vision models and their data, from one command line or from Python.

The functions (``visctl.cam``, ``visctl.featmap``, ``visctl.boxam``, ``visctl.slice_detect``, ``visctl.embed``,
``visctl.reconstruct``, ``visctl.schedule``, ``visctl.pipeline_views``, ``visctl.browse``) are imported on first
use, so ``import visctl`` stays light (no torch).
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    from visctl.library import EXPORTS

    if name not in EXPORTS:
        raise AttributeError(f"module 'visctl' has no attribute {name!r}")
    import importlib

    module, attr = EXPORTS[name]
    value = getattr(importlib.import_module(f"visctl.library.{module}"), attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    from visctl.library import EXPORTS

    return sorted([*globals(), *EXPORTS])
