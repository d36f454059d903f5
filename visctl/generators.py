"""What visctl's transforms and the packages' transforms (:mod:`visctl.package_transforms`) share: the lock over
the process's global random generators, the draws from a per-sample generator, and the keys of built transforms.
Stdlib only."""

from __future__ import annotations

import threading
from typing import Any

_GENERATOR_LOCK = threading.Lock()


def generator_lock() -> threading.Lock:
    """The lock held while a thread seeds, uses and restores the process's global random generators (numpy's,
    Python's, torch's CPU one): the pipeline's seeded steps in the reader threads, and MIM masks drawn by a
    model's own code (:mod:`visctl.openmmlab_mim`) in the main thread."""
    return _GENERATOR_LOCK


def randint(rng: Any, lo: int, hi: int) -> int:
    """An int in [lo, hi): ``Generator.integers`` or, for a legacy ``RandomState``, ``randint`` (mmpretrain
    draws from ``np.random``, so a ``RandomState`` seeded like it gives its very crops)."""
    return int(rng.integers(lo, hi) if hasattr(rng, "integers") else rng.randint(lo, hi))


def frozen_key(value: Any) -> Any:
    """A hashable key for a transform's arguments, telling 1, 1.0 and True apart (TypeError: none)."""
    if isinstance(value, dict):
        return ("dict", tuple(sorted((k, frozen_key(v)) for k, v in value.items())))
    if isinstance(value, (list, tuple)):
        return (type(value).__name__, tuple(frozen_key(v) for v in value))
    hash(value)
    return (type(value).__qualname__, value)
