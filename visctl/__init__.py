"""visctl: look inside PyTorch vision models and their data, from one command line or from Python.

The functions are named like the commands (``visctl.cam``, ``visctl.featmap``, ``visctl.boxam``, ``visctl.slice``,
``visctl.tsne``, ``visctl.recon``, ``visctl.lr``, ``visctl.pipeline``, ``visctl.browse``), and ``visctl.open``
builds a model once for many calls. They are imported on first use, so ``import visctl`` stays light (no torch).
The names of release 0.1 (``slice_detect``, ``embed``, ``reconstruct``, ``schedule``, ``pipeline_views``) still
work, with a DeprecationWarning naming the new one.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    from visctl.library import DEPRECATED, EXPORTS

    if name in DEPRECATED:  # not cached: every use of the old name is pointed at the new one
        import warnings

        new = DEPRECATED[name]
        warnings.warn(f"visctl.{name} is deprecated and goes in the next release: use visctl.{new} (the same "
                      "function)", DeprecationWarning, stacklevel=2)
        return __getattr__(new)
    if name not in EXPORTS:
        raise AttributeError(f"module 'visctl' has no attribute {name!r}")
    import importlib

    module, attr = EXPORTS[name]
    value = getattr(importlib.import_module(module if module.startswith("visctl.") else f"visctl.library.{module}"),
                    attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    from visctl.library import EXPORTS

    return sorted([*globals(), *EXPORTS])
